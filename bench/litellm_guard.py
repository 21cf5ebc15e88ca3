"""The LiteLLM side of bench.streaming: a CustomGuardrail that asks the same fake Nemotron guard.

LiteLLM loads this file from its config folder and runs it inside its own virtualenv, so only
litellm and httpx are imported. It mirrors guardproxy's `sequential` + `buffer` path:
  pre_call   `async_pre_call_hook`: judge the last user turn before the LLM is called.
  post_call  `async_post_call_streaming_iterator_hook` (litellm/integrations/custom_logger.py,
             chained by `ProxyLogging.async_post_call_streaming_iterator_hook` in
             litellm/proxy/utils.py): collect every chunk of the stream, judge prompt + whole
             answer in one guard call, then yield the chunks unchanged.
The guard URL and a call-log file come from the environment: this process has no other channel.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any

import httpx
from litellm.integrations.custom_guardrail import CustomGuardrail

GUARD_URL_ENV = "BENCH_GUARD_URL"
CALL_LOG_ENV = "BENCH_GUARD_CALL_LOG"
GUARD_TIMEOUT_S = 5.0
# guardproxy's nemotron-content-safety defaults (guardproxy/guards/nemotron_content_safety.py).
GUARD_PARAMS = {"max_tokens": 100, "temperature": 0.01, "top_p": 0.95}
TEMPLATE_KWARGS = {"request_categories": "/categories", "enable_thinking": False}


class GuardrailBlocked(Exception):
    """The guard judged the prompt or the answer unsafe, or gave no usable verdict."""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content if isinstance(content, str) else ""


def chunk_text(chunk: Any) -> str:
    """The content a ModelResponseStream chunk adds (all choices)."""
    choices = getattr(chunk, "choices", None) or []
    texts = (getattr(getattr(c, "delta", None), "content", None) for c in choices)
    return "".join(t for t in texts if isinstance(t, str))


def read_verdict(answer: str, field: str) -> str:
    """The value of the `field: value` line of a Nemotron Content Safety answer."""
    values = [line.partition(":")[2].strip() for line in answer.splitlines() if ":" in line]
    names = [line.partition(":")[0].strip() for line in answer.splitlines() if ":" in line]
    if names.count(field) != 1:
        raise GuardrailBlocked(f"guard answer has no single {field!r} line")
    return values[names.index(field)].lower()


class NemotronGuardrail(CustomGuardrail):
    def __init__(self, **kwargs: Any) -> None:
        self.guard_url = os.environ[GUARD_URL_ENV].rstrip("/") + "/chat/completions"
        self.call_log = os.environ.get(CALL_LOG_ENV)
        self.client = httpx.AsyncClient(timeout=GUARD_TIMEOUT_S, trust_env=False)
        super().__init__(**kwargs)

    async def check(self, prompt: str, answer: str | None) -> None:
        """One guard call; raise GuardrailBlocked unless the judged turn is safe."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        body = {"model": "fake-guard", "messages": messages, **GUARD_PARAMS}
        body["chat_template_kwargs"] = TEMPLATE_KWARGS
        self.log_call("post" if answer is not None else "pre")
        response = await self.client.post(self.guard_url, json=body)
        if response.status_code != 200:
            raise GuardrailBlocked(f"guard answered HTTP {response.status_code}")
        text = response.json()["choices"][0]["message"]["content"]
        field = "Response Safety" if answer is not None else "User Safety"
        if read_verdict(text, field) != "safe":
            raise GuardrailBlocked(f"{field}: unsafe")

    def log_call(self, kind: str) -> None:
        if self.call_log:
            with open(self.call_log, "a", encoding="utf-8") as sink:
                sink.write(kind + "\n")

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        await self.check(last_user_text(data.get("messages") or []), None)
        return data

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        chunks = [chunk async for chunk in response]
        prompt = last_user_text(request_data.get("messages") or [])
        await self.check(prompt, "".join(chunk_text(c) for c in chunks))
        for chunk in chunks:
            yield chunk

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        """A non-streamed answer, judged in context like guardproxy's output check."""
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        answer = getattr(message, "content", None) or ""
        await self.check(last_user_text(data.get("messages") or []), answer)
        return response
