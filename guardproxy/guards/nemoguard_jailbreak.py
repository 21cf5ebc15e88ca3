"""`nemoguard-jailbreak`: NVIDIA NemoGuard JailbreakDetect NIM.

`POST {url}/classify` (`url` ending in `/v1`, as NeMo Guardrails' `nim_base_url` does) with
`{"input": text}`, answering `{"jailbreak": bool, "score": float}`, the score from -1 to 1
(NeMo Guardrails `library/jailbreak_detection/request.py` sends and reads exactly these).
The NIM takes one string per request, so a segmented text is one request per segment, sent
at once as far as the guard's capacity has idle slots; the first unsafe segment cancels the
rest (guards/client.py).
"""

from __future__ import annotations

from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.classifier import classifier_verdict, judged_text, number, segments

CLASSIFY_PATH = "/classify"
# No input limit is documented where we could read it; the Prompt Guard size is the safe side.
DEFAULT_MAX_INPUT_CHARS = 2000
DEFAULT_CATEGORY = "Jailbreak"


class NemoguardJailbreak:
    """`nemoguard-jailbreak`: text only; a segment is unsafe where the NIM says `jailbreak`,
    or, with `threshold` set, where its score reaches the threshold."""

    path = CLASSIFY_PATH
    # A classifier of prompts: in a tenant's `guards:` it judges no answers unless told to.
    judges_answers = False

    def __init__(self, settings: GuardSettings) -> None:
        self._threshold = settings.threshold
        self._category = settings.category or DEFAULT_CATEGORY
        self._max_chars = settings.max_input_chars or DEFAULT_MAX_INPUT_CHARS

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        return {"input": segments(judged_text(check), self._max_chars)}

    def posts(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"input": text} for text in batch["input"]]

    def decides(self, answer: dict[str, Any]) -> bool:
        unsafe, _ = self._judge(answer)  # an answer outside the NIM's shape raises: decided too
        return unsafe

    def join(self, batch: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
        """The segments' answers, as many as came before the verdict was decided: all of them
        for a safe text, up to the first unsafe one otherwise (its score is theirs at most)."""
        return {"answers": answers}

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answers = completion.get("answers")
        if not isinstance(answers, list) or not answers:
            raise UnparseableVerdict("guard answers are missing")
        judged = [self._judge(answer) for answer in answers]
        unsafe = any(flag for flag, _ in judged)
        score = max(score for _, score in judged)
        return classifier_verdict(check, unsafe, score, self._category, completion)

    def _judge(self, answer: Any) -> tuple[bool, float]:
        flag = answer.get("jailbreak") if isinstance(answer, dict) else None
        score = answer.get("score") if isinstance(answer, dict) else None
        if not isinstance(flag, bool) or not number(score):
            raise UnparseableVerdict("guard answer has no boolean jailbreak and numeric score")
        value = float(score)
        unsafe = flag if self._threshold is None else value >= self._threshold
        return unsafe, value
