"""The Responses API's shapes: what an item says, how one is masked, and the response objects a
refusal or a cut-off stream is told in."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from guardproxy.core.conversation import Conversation, text_of
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker, mask_strings
from guardproxy.pipeline.usage import TokenUsage

TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
CALL_ITEMS = {"function_call": "arguments", "custom_tool_call": "input"}
NO_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 0,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 0,
}


def message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = [
        part.get(TEXT_PARTS[kind])
        for part in content
        if isinstance(part, dict) and (kind := part.get("type")) in TEXT_PARTS
    ]
    return "\n".join(t for t in texts if isinstance(t, str))


def item_text(item: Any) -> str:
    """What one output (or input) item says: message text and refusals, a call's name and
    arguments, a reasoning summary and text."""
    if not isinstance(item, dict):
        return ""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        return message_text(content) if isinstance(content, str | list) else ""
    if kind in CALL_ITEMS:
        return "".join(v for k in ("name", CALL_ITEMS[kind]) if isinstance(v := item.get(k), str))
    if kind == "reasoning":
        return text_of(item.get("summary")) + text_of(item.get("content"))
    return ""


def mask_item(item: Any, masker: Masker, types: Collection[str]) -> tuple[Any, int]:
    if not isinstance(item, dict):
        return item, 0
    fields = ("content", "arguments", "input", "summary")
    masked, found = dict(item), 0
    for name in fields:
        if name in item:
            masked[name], count = mask_strings(item[name], masker, types)
            found += count
    if found and isinstance(masked.get("content"), list):
        for part in masked["content"]:
            if isinstance(part, dict) and part.get("logprobs"):
                part["logprobs"] = []  # token by token, they would spell out what was masked
    return (masked if found else item), found


def base_response(request: Conversation, exchange: Exchange) -> dict[str, Any]:
    """A Response object as `POST /v1/responses` returns one, before its output."""
    body = request.body
    return {
        "id": f"resp_gp{exchange.request_id}",
        "object": "response",
        "created_at": int(exchange.started or time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": request.model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "temperature": body.get("temperature"),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p"),
        "usage": None,
    }


def refusal_item(exchange: Exchange, refusal: str) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": refusal}
    return {
        "id": f"msg_gp{exchange.request_id}",
        "type": "message",
        "status": "incomplete",
        "role": "assistant",
        "content": [part],
    }


def incomplete_response(response: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    """A block: `status: incomplete` for the content filter, the refusal as its last item."""
    return {
        **response,
        "status": "incomplete",
        "incomplete_details": {"reason": "content_filter"},
        "output": output,
    }


def responses_usage(usage: TokenUsage | None) -> dict[str, Any]:
    """What a blocked answer consumed, as `response.usage` tells it (none: nothing)."""
    return (
        NO_USAGE if usage is None else {**NO_USAGE, **usage.counts("input_tokens", "output_tokens")}
    )
