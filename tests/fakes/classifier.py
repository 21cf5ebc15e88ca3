"""Fake text classifiers: vLLM's pooling classification API and NemoGuard JailbreakDetect.

vLLM 0.32 (`vllm/entrypoints/pooling/classify/`): `POST /classify` at the server root, JSON
only, `input` a string, a list of strings or token ids, `model` (when given) the served name or
404, every text within `--max-model-len` or 400; the answer is a `list` of `{index, label,
probs, num_classes}` plus `usage`. NemoGuard JailbreakDetect NIM: `POST /v1/classify` with
`{"input": text}`, answering `{"jailbreak": bool, "score": float}`; a non-string input is
refused with 422, as a pydantic `str` field refuses it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.guard import tokens, vllm_error, vllm_usage

PROMPT_GUARD_LABELS = ("BENIGN", "INJECTION", "JAILBREAK")  # Prompt-Guard-86M's id2label
DEFAULT_PHRASES = {
    "ignore previous instructions": "INJECTION",
    "you are dan": "JAILBREAK",
}
WINNER_PROBABILITY = 0.96
SPECIAL_TOKENS = 2  # [CLS] and [SEP], which vLLM counts against the context
NIM_JAILBREAK_SCORE, NIM_BENIGN_SCORE = 0.83, -0.91


@dataclass
class ClassifierRequest:
    path: str
    body: Any


@dataclass
class FakeClassifierState:
    model: str = "meta-llama/Prompt-Guard-86M"
    labels: tuple[str, ...] = PROMPT_GUARD_LABELS  # labels[0] is the benign class
    phrases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PHRASES))
    max_model_len: int = 512
    requests: list[ClassifierRequest] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this status

    def label_of(self, text: str) -> str:
        folded = text.casefold()
        found = [label for phrase, label in self.phrases.items() if phrase in folded]
        return found[0] if found else self.labels[0]

    def probs(self, text: str) -> list[float]:
        winner = self.labels.index(self.label_of(text))
        rest = (1 - WINNER_PROBABILITY) / (len(self.labels) - 1)
        return [WINNER_PROBABILITY if i == winner else rest for i in range(len(self.labels))]


def _texts(body: Any) -> list[str] | str:
    """The request's texts, or why vLLM would refuse them (its pydantic union)."""
    value = body.get("input") if isinstance(body, dict) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(text, str) for text in value):
        return value
    return "input: must be a string, a list of strings or token ids"


def _refusal(state: FakeClassifierState, body: Any) -> JSONResponse | None:
    if not isinstance(body, dict):
        return vllm_error(400, "the body must be a JSON object")
    model = body.get("model")
    if model is not None and model != state.model:
        return vllm_error(404, f"The model `{model}` does not exist.", "model")
    texts = _texts(body)
    if isinstance(texts, str):
        return vllm_error(400, texts, "input")
    longest = max(tokens(text) + SPECIAL_TOKENS for text in texts)
    limit = state.max_model_len
    if longest > limit:
        message = (  # vLLM counts no further than one token past the limit
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains at least {limit + 1} input tokens, which exceeds this limit even without "
            f"any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={limit + 1})"
        )
        return vllm_error(400, message, "input_tokens")
    return None


async def _json_body(request: Request) -> Any:
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        raise ValueError("Unsupported Media Type: Only 'application/json' is allowed")
    return await request.json()


def _vllm_answer(state: FakeClassifierState, texts: list[str]) -> dict[str, Any]:
    data = [
        {
            "index": index,
            "label": state.label_of(text),
            "probs": state.probs(text),
            "num_classes": len(state.labels),
        }
        for index, text in enumerate(texts)
    ]
    count = sum(tokens(text) + SPECIAL_TOKENS for text in texts)
    return {
        "id": f"classify-{time.monotonic_ns()}",
        "object": "list",
        "created": int(time.time()),
        "model": state.model,
        "data": data,
        "usage": vllm_usage(count, 0),
    }


def _nim_answer(state: FakeClassifierState, text: str) -> dict[str, Any]:
    jailbreak = state.label_of(text) != state.labels[0]
    return {"jailbreak": jailbreak, "score": NIM_JAILBREAK_SCORE if jailbreak else NIM_BENIGN_SCORE}


def create_fake_classifier(state: FakeClassifierState) -> Starlette:
    """Both APIs on one server: vLLM's `/classify` and the NIM's `/v1/classify`."""

    async def vllm_classify(request: Request) -> Response:
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return vllm_error(400, str(exc))
        state.requests.append(ClassifierRequest("/classify", body))
        if state.fail_with is not None:
            return vllm_error(state.fail_with, "injected failure")
        refusal = _refusal(state, body)
        texts = _texts(body)
        if refusal is not None or isinstance(texts, str):
            return refusal or vllm_error(400, str(texts))
        return JSONResponse(_vllm_answer(state, texts))

    async def nim_classify(request: Request) -> Response:
        body = await request.json()
        state.requests.append(ClassifierRequest("/v1/classify", body))
        if state.fail_with is not None:
            return JSONResponse({"detail": "injected failure"}, status_code=state.fail_with)
        text = body.get("input") if isinstance(body, dict) else None
        if not isinstance(text, str):
            detail = [
                {
                    "type": "string_type",
                    "loc": ["body", "input"],
                    "msg": "Input should be a valid string",
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        return JSONResponse(_nim_answer(state, text))

    routes = [
        Route("/classify", vllm_classify, methods=["POST"]),
        Route("/v1/classify", nim_classify, methods=["POST"]),
    ]
    return Starlette(routes=routes)
