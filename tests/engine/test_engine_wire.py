"""The engine's own wire behaviour, each against the fake that claims to copy it: where they
differ, the fake is wrong (and is fixed, with its test in tests/fakes/test_fakes.py)."""

from __future__ import annotations

import json

import httpx

from tests.engine.conftest import MODEL, Engine

HI = [{"role": "user", "content": "Hi"}]


def _post(engine: Engine, body: dict[str, object]) -> httpx.Response:
    with httpx.Client(base_url=engine.v1, timeout=60, trust_env=False) as client:
        return client.post("/chat/completions", json=body)


def test_stream_finish_rides_on_the_last_content_chunk_and_usage_only_at_the_end(
    engine: Engine,
) -> None:
    body = {"model": MODEL, "messages": HI, "stream": True, "max_tokens": 4,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response = _post(engine, body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = response.content.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    first, *content, usage = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert content[-1]["choices"][0]["finish_reason"] == "length"
    assert content[-1]["choices"][0]["delta"].get("content") is not None
    assert all("usage" not in chunk for chunk in [first, *content])
    assert usage["choices"] == []
    assert set(usage["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_unknown_model_error_shape(engine: Engine) -> None:
    response = _post(engine, {"model": "nope", "messages": HI})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": f"The model `nope` does not exist. Valid aliases: {MODEL}.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


def test_structured_outputs_force_an_exact_verdict(engine: Engine) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 64,
            "structured_outputs": {"regex": "User Safety: (safe|unsafe)"}}  # fmt: skip
    choice = _post(engine, body).json()["choices"][0]
    assert choice["message"]["content"] in ("User Safety: safe", "User Safety: unsafe")
    assert choice["finish_reason"] == "stop"


def test_chat_template_kwargs_reach_the_template(engine: Engine) -> None:
    body = {"messages": HI, "chat_template_kwargs": {"custom_taxonomy": "- X (y)"}}
    assert "[taxonomy=- X (y)]\n<|user|>Hi\n" in engine.render(body)
