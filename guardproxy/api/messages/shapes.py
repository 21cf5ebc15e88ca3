"""Anthropic Messages' shapes: its error body, what a content block says, and the message a
refusal or a cut-off stream is told in."""

from __future__ import annotations

import json
from typing import Any

from guardproxy.core.conversation import Conversation
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.usage import TokenUsage

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
# A block, as Anthropic's error: litellm's `anthropic/` provider maps a Messages error whose
# message says "content filtering policy" to ContentPolicyViolationError (its
# `_map_anthropic_exception`), mid-stream too, where it would otherwise see a retryable 500;
# the rest keeps the words its OpenAI mapping and people read.
BLOCKED_MESSAGE = (
    "The request was rejected as a result of the safety system: it was blocked by the "
    "content filtering policy (content_policy_violation)."
)
TEXT_BLOCKS = {"text": "text", "thinking": "thinking"}
SKIPPED_BLOCKS = frozenset({"redacted_thinking"})  # encrypted: nothing a guard could read


def anthropic_error(message: str, status: int) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def blocks_text(content: Any) -> str:
    """The text of a content: a string, or its text and thinking blocks joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [block_text(b) for b in content if isinstance(b, dict) and b.get("type") in TEXT_BLOCKS]
    return "\n".join(t for t in texts if t)


def block_text(block: dict[str, Any]) -> str:
    """What one answer block says: its text or thinking, or a tool call's name and input."""
    kind = block.get("type")
    if kind in TEXT_BLOCKS:
        text = block.get(TEXT_BLOCKS[str(kind)])
        return text if isinstance(text, str) else ""
    if kind == "tool_use":
        return str(block.get("name", "")) + json.dumps(block.get("input", {}), ensure_ascii=False)
    return ""


def message_shell(request: Conversation, exchange: Exchange) -> dict[str, Any]:
    return {
        "id": f"msg_gp{exchange.request_id}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_of(None),
    }


def usage_of(usage: Any) -> dict[str, Any]:
    return usage if isinstance(usage, dict) else {"input_tokens": 0, "output_tokens": 0}


def delta_usage(usage: TokenUsage | None) -> dict[str, int]:
    """What a blocked stream consumed, as the closing `message_delta` tells it (none: nothing)."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}
