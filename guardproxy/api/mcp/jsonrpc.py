"""JSON-RPC 2.0 as MCP uses it: one message per POST, validated before anything is judged or
forwarded, and the gateway's own errors in JSON-RPC's shape."""

from __future__ import annotations

import json
from typing import Any, Literal

from guardproxy.errors import GuardproxyError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
# The implementation-defined range (-32000 to -32099), away from the codes MCP itself uses.
BLOCKED = -32010  # the tenant's policy blocked the call or its result
SERVER_FAILED = -32011  # the MCP server failed, timed out or answered past the size limit
CANCELLED = -32012  # the client cancelled the request; its result is not judged

LONE_SURROGATE = "a string holds a lone surrogate, which is not text"

Kind = Literal["request", "notification", "response"]
MessageId = str | int | None


class McpProblem(GuardproxyError):
    """A request the gateway answers itself: an HTTP status and a JSON-RPC error."""

    def __init__(self, status: int, code: int, message: str, id: MessageId = None) -> None:
        self.status, self.code, self.message, self.id = status, code, message, id
        super().__init__(message)


def parse(body: bytes) -> dict[str, Any]:
    """The one JSON-RPC message of a POST. Batches are refused: the current protocol has
    none, and one message per request keeps each call judged and recorded on its own."""
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise McpProblem(400, PARSE_ERROR, f"Parse error: the body is not JSON ({exc}).") from exc
    if isinstance(message, list):
        raise McpProblem(400, INVALID_REQUEST, "Batches are not supported; send one message.")
    problem = invalid(message) or (LONE_SURROGATE if holds_lone_surrogate(message) else None)
    if problem:
        id = message.get("id") if isinstance(message, dict) else None
        raise McpProblem(400, INVALID_REQUEST, f"Invalid Request: {problem}.", _id_or_none(id))
    return message  # type: ignore[no-any-return]


def invalid(message: Any) -> str | None:
    """Why `message` is not a JSON-RPC 2.0 request, notification or response, or None."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return "not a JSON-RPC 2.0 message"
    if "id" in message and not _valid_id(message["id"]):
        return "'id' must be a string or an integer"
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            return "'method' must be a non-empty string"
        if not isinstance(message.get("params", {}), dict):
            return "'params' must be an object"
        return None
    if "id" not in message or ("result" in message) == ("error" in message):
        return "a response needs an 'id' and exactly one of 'result' or 'error'"
    if "result" in message and not isinstance(message["result"], dict):
        return "'result' must be an object"
    if "error" in message and not isinstance(message["error"], dict):
        return "'error' must be an object"
    return None


def holds_lone_surrogate(value: Any) -> bool:
    """Text that is not text (a `\\ud800` escape) anywhere in `value`, keys included: no guard
    judges it and no UTF-8 carries it. ASCII strings, nearly all, cost one C call each."""
    if isinstance(value, str):
        if value.isascii():
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, list):
        return any(holds_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(holds_lone_surrogate(k) or holds_lone_surrogate(v) for k, v in value.items())
    return False


def kind(message: dict[str, Any]) -> Kind:
    if "method" not in message:
        return "response"
    return "request" if "id" in message else "notification"


def error(id: MessageId, code: int, message: str, data: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": body}


def result(id: MessageId, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "result": value}


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _id_or_none(value: Any) -> MessageId:
    return value if _valid_id(value) else None
