"""`vllm-classify`: a sequence-classification model (Prompt Guard and its kind) behind vLLM's
pooling API.

vLLM 0.32 (`vllm/entrypoints/pooling/classify/`): `POST /classify` at the server root (not
under `/v1`), body `{"model", "input": str | [str]}`, answer `data[]` of `{index, label, probs,
num_classes}` with `probs` in class-index order and `label` the winning class's name from the
model's `id2label`. Only the winner is named, so the guard is told the labels in index order
(`labels`) and sums the probabilities of `unsafe_labels`. Segments go in one batched request.
"""

from __future__ import annotations

from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.classifier import classifier_verdict, judged_text, number, segments

CLASSIFY_PATH = "/classify"
DEFAULT_MAX_INPUT_CHARS = 2000  # Prompt Guard reads 512 tokens, about 4 characters each
DEFAULT_THRESHOLD = 0.5
DEFAULT_CATEGORY = "Prompt Injection"


class VllmClassify:
    """`vllm-classify`: text only; unsafe where the unsafe labels' summed probability reaches
    `threshold` in any segment."""

    path = CLASSIFY_PATH
    # A classifier of prompts: in a tenant's `guards:` it judges no answers unless told to.
    judges_answers = False

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings
        self._labels = settings.labels
        self._unsafe = [settings.labels.index(name) for name in settings.unsafe_labels]
        self._threshold = DEFAULT_THRESHOLD if settings.threshold is None else settings.threshold
        self._category = settings.category or DEFAULT_CATEGORY
        self._max_chars = settings.max_input_chars or DEFAULT_MAX_INPUT_CHARS

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        texts = segments(judged_text(check), self._max_chars)
        return {"model": self._settings.model, "input": texts}

    def posts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        return [batch]

    def decides(self, answer: dict[str, Any]) -> bool:
        return False  # one batched post: nothing else is out to cancel

    def join(self, batch: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
        """The one answer, checked against the batch's segments (counted where they were cut,
        never cut again)."""
        [completion] = answers
        items, expected = completion.get("data"), len(batch["input"])
        if not isinstance(items, list) or len(items) != expected:
            raise UnparseableVerdict(f"guard answer has no data[] of {expected} item(s)")
        return completion

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        items = completion.get("data")
        if not isinstance(items, list) or not items:
            raise UnparseableVerdict("guard answer has no data[]")
        score = max(self._unsafe_probability(item) for item in items)
        unsafe = score >= self._threshold
        return classifier_verdict(check, unsafe, score, self._category, completion)

    def _unsafe_probability(self, item: Any) -> float:
        probs = item.get("probs") if isinstance(item, dict) else None
        if not isinstance(probs, list) or not all(number(p) for p in probs):
            raise UnparseableVerdict("guard answer has an item without numeric probs")
        if len(probs) != len(self._labels):
            message = f"guard answered {len(probs)} classes; 'labels' names {len(self._labels)}"
            raise UnparseableVerdict(message)
        self._check_label(item.get("label"), probs)
        return float(sum(probs[index] for index in self._unsafe))

    def _check_label(self, label: Any, probs: list[float]) -> None:
        """The model's own name for its winner must be ours: a label we do not know, or one
        at another index, means `labels` does not match the model (never guess which)."""
        if label is None:  # a model without id2label: vLLM names no label
            return
        winner = self._labels[probs.index(max(probs))]
        if label not in self._labels:
            raise UnparseableVerdict(f"guard answered label {label!r}, which 'labels' lacks")
        if label != winner:
            message = f"guard answered label {label!r} where 'labels' puts {winner!r}"
            raise UnparseableVerdict(f"{message}: are 'labels' in id2label order?")
