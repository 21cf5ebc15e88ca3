"""OpenAI's error shapes: an error body, a block as a content-filter error, a mid-stream error
event. Which shape is sent, and when, is `pipeline/replies.py`'s."""

from __future__ import annotations

from typing import Any

from guardproxy.core.sse import encode_event
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.replies import public_message, status_of

# Clients read blocks by these words too: litellm maps "rejected as a result of the safety
# system" (and `content_policy_violation`) to ContentPolicyViolationError, also mid-stream,
# where only the message reaches it.
BLOCKED_MESSAGE = (
    "The request was rejected as a result of the safety system: it was blocked by the "
    "content policy (content_policy_violation)."
)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def content_filter_error(exchange: Exchange, param: str) -> dict[str, Any]:
    """A block as an OpenAI-shaped error, after Azure OpenAI's content-filter convention
    (`code: content_filter`, an `innererror` with the filter result per category). Its inner
    code is OpenAI's `content_policy_violation`, which litellm maps to
    ContentPolicyViolationError, so a litellm client's `content_policy_fallbacks` trigger."""
    body = error_body(BLOCKED_MESSAGE, "invalid_request_error", param, "content_filter")
    categories = (*exchange.input.categories, *exchange.output.categories)
    result = {name: {"filtered": True} for name in dict.fromkeys(categories)}
    body["error"]["innererror"] = {
        "code": "content_policy_violation",
        "content_filter_result": result,
    }
    return body


def stream_error_event(exc: GuardproxyError) -> bytes:
    """A failure once a 200 OpenAI-shaped stream has begun: an error event, and no [DONE]."""
    _, type_, code = status_of(exc)
    return encode_event(error_body(public_message(exc), type_, None, code))
