"""A server's JSON-RPC messages as the gateway reads and relays them: rebuilt from JSON-RPC's
own fields, an id or method only while identifier-shaped, and SSE events written anew."""

from __future__ import annotations

import json
from typing import Any

from guardproxy.api.mcp import jsonrpc
from guardproxy.core.fields import IDENTIFIER
from guardproxy.upstreams.mcp import McpReply

JSONRPC_FIELDS = ("jsonrpc", "id", "method", "params", "result", "error")


def rebuilt(message: dict[str, Any]) -> dict[str, Any] | None:
    """`message` with JSON-RPC's fields alone, or None when it is not JSON-RPC, carries text
    that is not text, or names itself with words rather than an identifier."""
    if jsonrpc.invalid(message) is not None or jsonrpc.holds_lone_surrogate(message):
        return None
    for key in ("id", "method"):
        if key in message and isinstance(message[key], str) and not identifier(message[key]):
            return None
    return {key: message[key] for key in JSONRPC_FIELDS if key in message}


def identifier(value: Any) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def bare_initialize(result: dict[str, Any]) -> dict[str, Any]:
    """An initialize result with no text: the protocol version, the capabilities' flags and
    the server's identifier-shaped name and version."""
    bare: dict[str, Any] = {"capabilities": _flags(result.get("capabilities", {}))}
    if identifier(result.get("protocolVersion")):
        bare["protocolVersion"] = result["protocolVersion"]
    info = result.get("serverInfo")
    if isinstance(info, dict):
        bare["serverInfo"] = {k: info[k] for k in ("name", "version") if identifier(info.get(k))}
    return bare


def _flags(value: Any) -> Any:
    """Nested objects of booleans and numbers, as capabilities are; strings dropped."""
    if isinstance(value, dict):
        return {
            k: _flags(v)
            for k, v in value.items()
            if identifier(k) and not isinstance(v, str | list)
        }
    return value


def parsed(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def answers(message: dict[str, Any], request: dict[str, Any] | None) -> bool:
    return request is not None and "method" not in message and message.get("id") == request["id"]


def request_id(request: dict[str, Any] | None) -> Any:
    return request.get("id") if request is not None else None


def entry_name(entry: Any, index: int) -> str:
    if isinstance(entry, dict):
        for key in ("name", "uri", "uriTemplate"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return str(index)


def sse_event(message: dict[str, Any], id: str | None) -> bytes:
    head = f"id: {id}\n" if id else ""
    return f"event: message\n{head}data: {json.dumps(message, ensure_ascii=False)}\n\n".encode()


async def first_answer(reply: McpReply) -> dict[str, Any] | None:
    """The response a request of the gateway's own gets, JSON or the first of a stream."""
    try:
        if not 200 <= reply.status < 300:
            return None
        if not reply.streams:
            return parsed(await reply.body())
        async for event in reply.events():
            message = parsed(event.data.encode()) if event.data else None
            if message is not None and "method" not in message:
                return message
        return None
    finally:
        await reply.aclose()
