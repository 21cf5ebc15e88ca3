"""MCP's Streamable HTTP transport through the tenant's guards.

    client ── POST /mcp/{name} ─► parse ─► tools/call: the arguments judged (the agent's
                                            output, the tenant's output rules), masked ─► server
    client ◄── JSON or SSE ◄──── every server message judged (the model's next input, the
                                  tenant's input rules and chain, injection classifiers too):
                                  listings filtered entry by entry, results blocked or masked,
                                  server requests for the client's model judged or refused

A blocked tool result is a tool error the agent reads (`on_block: refusal`) or a JSON-RPC
error (`on_block: error`); a blocked listing entry is absent, and a call to a tool removed
from a listing is refused without reaching the server. Nothing of a server's answer is
relayed unjudged: an HTTP error becomes the gateway's own JSON-RPC error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from weakref import WeakValueDictionary

from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.api.mcp import jsonrpc
from guardproxy.api.mcp.call import McpCall, own_headers, problem_for, session_headers, withheld
from guardproxy.api.mcp.jsonrpc import (
    BLOCKED,
    CANCELLED,
    INVALID_REQUEST,
    SERVER_FAILED,
    McpProblem,
)
from guardproxy.api.mcp.judging import blocked, carry, judge_inbound, judge_outbound, masked
from guardproxy.api.mcp.listings import ToolBook, judge_listing, refresh_tools
from guardproxy.api.mcp.messages import (
    answers,
    bare_initialize,
    identifier,
    parsed,
    rebuilt,
    request_id,
    sse_event,
)
from guardproxy.api.mcp.surfaces import LISTINGS, request_surface, result_surface, strings, surface
from guardproxy.errors import GuardproxyError, UpstreamError
from guardproxy.pipeline.judging import NOT_JUDGED, STOPS
from guardproxy.upstreams.mcp import EVENT_STREAM, McpReply, McpUpstream

JUDGED_REQUESTS = frozenset({"tools/call", "prompts/get", "completion/complete"})
# What else a client sends a server as text: the tenant's always-on detectors mask it.
CLIENT_TEXT = {"prompts/get": ("arguments",), "completion/complete": ("argument", "context")}


class McpGateway:
    """The configured MCP servers and what the gateway remembers across requests: which
    tools each tenant's listings removed, and which requests clients cancelled."""

    def __init__(self, servers: dict[str, McpUpstream]) -> None:
        self.servers = servers
        self._tools = ToolBook()
        # The requests this worker is answering now, by tenant, server, session and id (gone
        # with the call), so a cancellation reaches only its own tenant's call in flight.
        self._open: WeakValueDictionary[tuple[str, ...], McpCall] = WeakValueDictionary()

    # -- the client's POST ------------------------------------------------------------------

    async def post(self, call: McpCall, body: bytes) -> Response:
        message = jsonrpc.parse(body)
        try:
            return await self._post(call, message)
        except McpProblem:
            raise
        except GuardproxyError as exc:  # answered with the request's id, so the client can
            raise problem_for(exc, message.get("id")) from exc  # match it to its call

    async def _post(self, call: McpCall, message: dict[str, Any]) -> Response:
        kind, method = jsonrpc.kind(message), message.get("method")
        call.note(method=method or "response")
        if kind == "notification" and method in JUDGED_REQUESTS:
            # Sent without an id, its arguments would reach the server unjudged.
            raise McpProblem(400, INVALID_REQUEST, f"Invalid Request: {method} needs an 'id'.")
        if kind == "request":
            self._open[call.request_key(message["id"])] = call
        if kind == "request" and method == "tools/call":
            refused = await self._tool_call(call, message)
            if refused is not None:
                return await self._answer(call, refused)
        elif kind == "request" and method in CLIENT_TEXT:
            # Text the client sends a server for no model to read: masked, not judged.
            params = message.get("params", {})
            types = call.route.masker.always
            texts = {
                key: masked(call, params[key], types, "input", free=True)
                for key in CLIENT_TEXT[method]
                if key in params
            }
            if texts:
                message["params"] = params | texts
        elif kind == "response" and "result" in message:
            # The client's answer to the server's request (an elicitation's form, a sampling
            # result): not judged, as no model reads it through the gateway, but masked.
            types = call.route.masker.always
            message["result"] = masked(call, message["result"], types, "input", free=True)
        elif kind == "notification" and method == "notifications/cancelled":
            self._cancel(call, message.get("params", {}).get("requestId"))
        # Always the message as parsed and judged, never the client's bytes: a server whose
        # parser reads a duplicated key differently must not see another message.
        body = json.dumps(message, ensure_ascii=False).encode()
        reply = await call.send("POST", call.server_headers(), body)
        return await self._relay(call, reply, message if kind == "request" else None)

    async def get(self, call: McpCall) -> Response:
        """The server's own stream: requests and notifications, each judged. At most
        `max_streams` of a server at once in this worker."""
        call.note(method="GET")
        server = call.server
        if server.streams >= server.settings.max_streams:
            message = f"{server.streams} streams of this MCP server are open; try again later."
            raise McpProblem(429, SERVER_FAILED, message)
        server.streams += 1
        call.on_end = lambda: setattr(server, "streams", server.streams - 1)
        try:
            reply = await call.send("GET", call.server_headers(), stream=True)
            response = await self._relay(call, reply, None)
        except BaseException:
            call.ended()
            raise
        if not isinstance(response, StreamingResponse):
            call.ended()
        return response

    async def delete(self, call: McpCall) -> Response:
        call.note(method="DELETE")
        reply = await call.send("DELETE", call.server_headers())
        await reply.aclose()
        status = reply.status if reply.status < 500 else 502
        headers = session_headers(call, reply)  # the reply is closed: raising leaks nothing
        call.conclude(status)
        await call.done()
        return Response(status_code=status, headers=headers)

    # -- tools/call -------------------------------------------------------------------------

    async def _tool_call(self, call: McpCall, message: dict[str, Any]) -> dict[str, Any] | None:
        """None when the call goes on (its arguments masked in `message`), else the answer."""
        params = message.get("params", {})
        name = params.get("name")
        call.note(tool=name)
        if not isinstance(name, str) or not await self._tool_allowed(call, name):
            call.exchange.notes.append(f"tool {name!r} was removed from the listing")
            return blocked(call, message["id"], tool_result=True)
        arguments = params.get("arguments") or {}
        ruling = await judge_outbound(call, "\n".join(strings(arguments)))
        carried = carry(call, ruling, arguments, "input", free=True)
        if carried is None:
            return blocked(call, message["id"], tool_result=True, ruling=ruling)
        if arguments:
            params["arguments"] = carried
        return None

    async def _tool_allowed(self, call: McpCall, name: str) -> bool:
        """A tool this tenant's listings judged, or, when none did here (another worker
        served the listing), the server's listing fetched and judged now. A tool the
        listing does not hold is refused: its description was never judged."""
        key = (call.route.tenant.tenant, call.server.name, name)
        if key not in self._tools and await refresh_tools(call, self._tools):
            self._tools.remember(key, self._tools.allowed(key))
        return self._tools.allowed(key)

    # -- the server's answers ---------------------------------------------------------------

    async def _relay(
        self, call: McpCall, reply: McpReply, request: dict[str, Any] | None
    ) -> Response:
        try:
            headers = session_headers(call, reply) | own_headers(call.exchange)
        except UpstreamError:
            await reply.aclose()
            raise
        if not 200 <= reply.status < 300:
            await reply.aclose()
            status = reply.status if reply.status < 500 else 502
            message = f"The MCP server answered HTTP {reply.status}."
            return await self._answer(
                call, jsonrpc.error(request_id(request), SERVER_FAILED, message), status, headers
            )
        if reply.streams:
            events = self._events(call, reply, request)
            return StreamingResponse(events, media_type=EVENT_STREAM, headers=headers)
        try:
            body = await call.read(reply)
        finally:
            await reply.aclose()
        if not body.strip():
            call.conclude(reply.status)
            await call.done()
            return Response(status_code=reply.status, headers=headers)
        answer = parsed(body)
        if answer is None:
            error = jsonrpc.error(
                request_id(request), SERVER_FAILED, "The MCP server's answer is not JSON-RPC."
            )
            return await self._answer(call, error, 502, headers)
        try:
            judged = await self._judge_message(call, answer, request)
        except GuardproxyError as exc:  # judging it failed, or answering the server did
            status, message = withheld(call, exc)
            return await self._answer(
                call, jsonrpc.error(request_id(request), SERVER_FAILED, message), status, headers
            )
        if judged is None and request is not None:  # the answer itself was withheld
            message = "The MCP server's answer was withheld: it is not JSON-RPC."
            return await self._answer(
                call, jsonrpc.error(request["id"], SERVER_FAILED, message), 502, headers
            )
        if judged is None:
            call.conclude(202)
            await call.done()
            return Response(status_code=202, headers=headers)
        return await self._answer(call, judged, reply.status, headers)

    async def _events(
        self, call: McpCall, reply: McpReply, request: dict[str, Any] | None
    ) -> AsyncIterator[bytes]:
        answered, status = False, 200
        try:
            async for event in reply.events():
                answer = parsed(event.data.encode()) if event.data is not None else None
                if answer is None:
                    continue  # keep-alives, comments and anything else that is not JSON-RPC
                judged = await self._judge_message(call, answer, request)
                if judged is None and not answers(answer, request):
                    continue  # withheld: a request answered for the client, or not JSON-RPC
                if judged is None:
                    missing = "The MCP server's answer was withheld: it is not JSON-RPC."
                    judged = jsonrpc.error(request_id(request), SERVER_FAILED, missing)
                yield sse_event(judged, event.id if identifier(event.id) else None)
                if answers(answer, request):
                    answered = True
                    break  # the stream of a request ends with its answer
            if request is not None and not answered:
                ended = "The MCP server ended its answer without answering."
                yield sse_event(jsonrpc.error(request["id"], SERVER_FAILED, ended), None)
        except GuardproxyError as exc:  # the server failed, or its message cannot be judged
            status, message = withheld(call, exc)
            if request is not None and not answered:
                yield sse_event(jsonrpc.error(request["id"], SERVER_FAILED, message), None)
        finally:
            await reply.aclose()
            call.ended()  # before the record: whoever reads it sees the stream counted back
            call.conclude(status)
            await call.done()

    async def _judge_message(
        self, call: McpCall, received: dict[str, Any], request: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The server's message as the client may receive it, or None to withhold it. Only
        JSON-RPC's own fields are relayed, and an id or method name only while it is
        identifier-shaped: any other text of the message is judged, or it does not pass."""
        message = rebuilt(received)
        if message is None:
            call.exchange.notes.append("a message that is not JSON-RPC was withheld")
            return None
        kind = jsonrpc.kind(message)
        if kind == "request":
            return await self._server_request(call, message)
        if kind == "notification":
            if message["method"] == "notifications/tools/list_changed":
                self._tools.forget(
                    call.route.tenant.tenant, call.server.name
                )  # the next call to each tool is judged anew
            found = surface(message.get("params", {}), "params")
            ruling = await judge_inbound(call, found)
            carried: dict[str, Any] | None = carry(call, ruling, message, "output")
            return carried
        if call.cancelled.is_set() and request is not None and answers(message, request):
            return jsonrpc.error(message["id"], CANCELLED, "The request was cancelled.")
        if "error" in message:
            ruling = await judge_inbound(call, surface(message["error"], "error"))
            if ruling.action in STOPS:
                return jsonrpc.error(
                    message["id"], SERVER_FAILED, "The MCP server's error was withheld."
                )
            kept: dict[str, Any] | None = carry(call, ruling, message, "output")
            return kept
        if request is None or not answers(message, request):
            return await self._server_result(call, "", message)
        # The answer to the client's request: judged unless the client cancels it meanwhile,
        # which stops its guard calls where they are.
        judging = asyncio.ensure_future(self._server_result(call, request["method"], message))
        cancelled = asyncio.ensure_future(call.cancelled.wait())
        try:
            await asyncio.wait((judging, cancelled), return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if not judging.done():
                judging.cancel()
                await asyncio.wait((judging,))  # its guard calls closed; our own cancel kept
        if judging.cancelled():
            call.exchange.notes.append("cancelled by the client while it was judged")
            return jsonrpc.error(message["id"], CANCELLED, "The request was cancelled.")
        return judging.result()

    async def _server_result(
        self, call: McpCall, method: str, message: dict[str, Any]
    ) -> dict[str, Any] | None:
        result = message["result"]
        if method in LISTINGS and isinstance(result.get(LISTINGS[method]), list):
            message["result"] = await judge_listing(call, method, result, self._tools)
            return message
        ruling = await judge_inbound(call, result_surface(method, result))
        if ruling.action in STOPS and method == "initialize":
            # The session goes on, on the protocol's own values: every text of the result
            # (instructions, the server's description, experimental capabilities) withheld.
            message["result"] = bare_initialize(result)
            call.exchange.notes.append("the server's instructions and descriptions were withheld")
            return message
        carried = carry(call, ruling, result, "output")
        if carried is None:
            return blocked(call, message["id"], method == "tools/call", ruling)
        message["result"] = carried
        return message

    async def _server_request(
        self, call: McpCall, message: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A request for the client (its model, its user): judged, or refused on its behalf
        when the tenant says so; a refused one is answered to the server, never relayed."""
        method, params = message["method"], message.get("params", {})
        tenant = call.route.tenant
        refused = method == "sampling/createMessage" and tenant.mcp.sampling == "refuse"
        ruling = (
            NOT_JUDGED if refused else await judge_inbound(call, request_surface(method, params))
        )
        carried = None if refused else carry(call, ruling, params, "output")
        if carried is not None:
            return message | {"params": carried}
        why = "refused by the tenant's policy" if refused else "blocked by the tenant's policy"
        call.exchange.notes.append(f"the server's {method} was {why}")
        answer = jsonrpc.error(message["id"], BLOCKED, f"The request was {why}.")
        reply = await call.send("POST", call.server_headers(), json.dumps(answer).encode())
        await reply.aclose()
        return None

    # -- judging ----------------------------------------------------------------------------

    async def _answer(
        self,
        call: McpCall,
        message: dict[str, Any],
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        call.conclude(status)
        response = JSONResponse(
            message, status, headers=(headers or {}) | own_headers(call.exchange)
        )
        await call.done()  # once the answer exists: a failure to build it is recorded as such
        return response

    # -- sessions ---------------------------------------------------------------------------

    def _cancel(self, call: McpCall, request_id: Any) -> None:
        """Only a call in flight is cancelled, and nothing is remembered after it: a later
        request reusing the id is a new request."""
        if request_id is None:
            return
        cancelled = self._open.get(call.request_key(request_id))
        if cancelled is not None:
            cancelled.cancelled.set()
