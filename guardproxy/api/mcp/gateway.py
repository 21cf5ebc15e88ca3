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
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any
from weakref import WeakValueDictionary

from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.api.mcp import jsonrpc
from guardproxy.api.mcp.jsonrpc import (
    BLOCKED,
    CANCELLED,
    INVALID_REQUEST,
    SERVER_FAILED,
    McpProblem,
)
from guardproxy.api.mcp.sessions import SessionSeal
from guardproxy.api.mcp.surfaces import (
    LISTINGS,
    STRUCTURAL,
    Piece,
    Surface,
    entry_text,
    has_lone_surrogates,
    mask_tree,
    request_surface,
    result_surface,
    strings,
    surface,
)
from guardproxy.core.actions import Action
from guardproxy.core.conversation import Turn
from guardproxy.core.fields import IDENTIFIER
from guardproxy.errors import (
    AuthenticationError,
    GuardproxyError,
    PayloadTooLarge,
    RequestError,
    UpstreamError,
    UpstreamTimeout,
)
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.images import prepare_image
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.checks import SKIPPED, CheckResult, output_checks
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.flow import Route
from guardproxy.pipeline.judging import NOT_JUDGED, STOPS, Ruling, rule
from guardproxy.pipeline.replies import refusal_for
from guardproxy.policy.profile import Profile
from guardproxy.upstreams.mcp import (
    EVENT_STREAM,
    SESSION_HEADER,
    McpReply,
    McpUpstream,
    ServerUnavailable,
)

# What of the client's request the server sees besides the body: its session, protocol
# version and stream resumption point. Its Authorization (the tenant key) never.
PASSED_HEADERS = ("mcp-session-id", "mcp-protocol-version", "last-event-id")
ACCEPT = "application/json, text/event-stream"
TOOLS_KEPT = 10_000  # tool verdicts remembered per worker, the oldest forgotten first
LISTING_PAGES = 20  # pages of a server's tool listing the gateway reads for itself
JSONRPC_FIELDS = ("jsonrpc", "id", "method", "params", "result", "error")
SESSION_ID = re.compile(r"[\x21-\x7e]{1,1024}")
JUDGED_REQUESTS = frozenset({"tools/call", "prompts/get", "completion/complete"})
# What else a client sends a server as text: the tenant's always-on detectors mask it.
CLIENT_TEXT = {"prompts/get": ("arguments",), "completion/complete": ("argument", "context")}
ENTRY_KEPT = STRUCTURAL | {"name"}  # a listing entry's name is how it is called


@dataclass
class McpCall:
    """One HTTP exchange with the gateway: the tenant's wiring, the server, the record."""

    route: Route
    profile: Profile
    server: McpUpstream
    exchange: Exchange
    fetcher: ImageFetcher
    headers: dict[str, str]  # for the server: the client's session headers, unsealed
    seal: SessionSeal  # the server's session ids, as this client's key holds them
    done: Callable[[], Awaitable[None]]  # writes the audit record, once
    judged_in: list[CheckResult] = field(default_factory=list)
    judged_out: list[CheckResult] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # by the client
    on_end: Callable[[], None] | None = None  # run once when its answer has ended

    def ended(self) -> None:
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end()

    @property
    def session(self) -> str:
        return self.headers.get(SESSION_HEADER, "")

    def request_key(self, request_id: Any) -> tuple[str, ...]:
        """A request of this tenant's session with this server, by its id."""
        return (self.route.tenant.tenant, self.server.name, self.session, str(request_id))

    async def send(
        self, method: str, headers: dict[str, str], body: bytes | None = None, stream: bool = False
    ) -> McpReply:
        """The server asked, the wait counted as upstream time (not the proxy's overhead)."""
        started = time.perf_counter()
        try:
            return await self.server.send(method, headers, body, stream)
        finally:
            self._waited(started)

    async def read(self, reply: McpReply) -> bytes:
        started = time.perf_counter()
        try:
            return await reply.body()
        finally:
            self._waited(started)

    def _waited(self, started: float) -> None:
        waited = (time.perf_counter() - started) * 1000
        self.exchange.upstream_ms = (self.exchange.upstream_ms or 0.0) + waited

    def note(self, **details: Any) -> None:
        record = self.exchange.mcp if self.exchange.mcp is not None else {}
        self.exchange.mcp = record | details

    def conclude(self, status: int) -> None:
        """The record's verdicts: each direction's checks as one."""
        exchange = self.exchange
        if self.judged_out:
            exchange.input = reduce(CheckResult.merge, self.judged_out)
        if self.judged_in:
            exchange.output = reduce(CheckResult.merge, self.judged_in)
        exchange.conclude(status)


class McpGateway:
    """The configured MCP servers and what the gateway remembers across requests: which
    tools each tenant's listings removed, and which requests clients cancelled."""

    def __init__(self, servers: dict[str, McpUpstream]) -> None:
        self.servers = servers
        # (tenant, server, tool) -> allowed; the oldest verdicts forgotten past TOOLS_KEPT.
        self._tools: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
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
            masked = {
                key: self._masked(call, params[key], types, "input", free=True)
                for key in CLIENT_TEXT[method]
                if key in params
            }
            if masked:
                message["params"] = params | masked
        elif kind == "response" and "result" in message:
            # The client's answer to the server's request (an elicitation's form, a sampling
            # result): not judged, as no model reads it through the gateway, but masked.
            types = call.route.masker.always
            message["result"] = self._masked(call, message["result"], types, "input", free=True)
        elif kind == "notification" and method == "notifications/cancelled":
            self._cancel(call, message.get("params", {}).get("requestId"))
        # Always the message as parsed and judged, never the client's bytes: a server whose
        # parser reads a duplicated key differently must not see another message.
        body = json.dumps(message, ensure_ascii=False).encode()
        reply = await call.send("POST", self._headers(call), body)
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
            reply = await call.send("GET", self._headers(call), stream=True)
            response = await self._relay(call, reply, None)
        except BaseException:
            call.ended()
            raise
        if not isinstance(response, StreamingResponse):
            call.ended()
        return response

    async def delete(self, call: McpCall) -> Response:
        call.note(method="DELETE")
        reply = await call.send("DELETE", self._headers(call))
        await reply.aclose()
        status = reply.status if reply.status < 500 else 502
        headers = _session_headers(call, reply)  # the reply is closed: raising leaks nothing
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
            return self._blocked(call, message["id"], tool_result=True)
        arguments = params.get("arguments") or {}
        ruling = await self._judge_outbound(call, "\n".join(strings(arguments)))
        carried = self._carry(call, ruling, arguments, "input", free=True)
        if carried is None:
            return self._blocked(call, message["id"], tool_result=True, ruling=ruling)
        if arguments:
            params["arguments"] = carried
        return None

    async def _tool_allowed(self, call: McpCall, name: str) -> bool:
        """A tool this tenant's listings judged, or, when none did here (another worker
        served the listing), the server's listing fetched and judged now. A tool the
        listing does not hold is refused: its description was never judged."""
        key = (call.route.tenant.tenant, call.server.name, name)
        if key not in self._tools and await self._refresh_tools(call):
            self._remember(key, self._tools.get(key, False))
        return self._tools.get(key, False)

    def _remember(self, key: tuple[str, str, str], allowed: bool) -> None:
        self._tools[key] = allowed
        self._tools.move_to_end(key)
        while len(self._tools) > TOOLS_KEPT:
            self._tools.popitem(last=False)

    async def _refresh_tools(self, call: McpCall) -> bool:
        """The server's whole listing judged; False when it could not be read whole."""
        cursor: str | None = None
        for _ in range(LISTING_PAGES):  # a server paging without end is not followed for ever
            params = {"cursor": cursor} if cursor else {}
            request = {
                "jsonrpc": "2.0",
                # Not recognisable as the gateway's own: a server must not be able to answer
                # it differently from the client's listing.
                "id": uuid.uuid4().hex,
                "method": "tools/list",
                "params": params,
            }
            reply = await call.send("POST", self._headers(call), json.dumps(request).encode())
            answer = await _first_answer(reply)
            listed = answer.get("result") if answer else None
            if not isinstance(listed, dict) or not isinstance(listed.get("tools"), list):
                return False
            await self._listing(call, "tools/list", listed, record=False)
            cursor = listed.get("nextCursor")
            if not isinstance(cursor, str):
                return True
        return False

    # -- the server's answers ---------------------------------------------------------------

    async def _relay(
        self, call: McpCall, reply: McpReply, request: dict[str, Any] | None
    ) -> Response:
        try:
            headers = _session_headers(call, reply) | own_headers(call.exchange)
        except UpstreamError:
            await reply.aclose()
            raise
        if not 200 <= reply.status < 300:
            await reply.aclose()
            status = reply.status if reply.status < 500 else 502
            message = f"The MCP server answered HTTP {reply.status}."
            return await self._answer(
                call, jsonrpc.error(_id(request), SERVER_FAILED, message), status, headers
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
        answer = _message(body)
        if answer is None:
            error = jsonrpc.error(
                _id(request), SERVER_FAILED, "The MCP server's answer is not JSON-RPC."
            )
            return await self._answer(call, error, 502, headers)
        try:
            judged = await self._judge_message(call, answer, request)
        except GuardproxyError as exc:  # judging it failed, or answering the server did
            status, message = _withheld(call, exc)
            return await self._answer(
                call, jsonrpc.error(_id(request), SERVER_FAILED, message), status, headers
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
                answer = _message(event.data.encode()) if event.data is not None else None
                if answer is None:
                    continue  # keep-alives, comments and anything else that is not JSON-RPC
                judged = await self._judge_message(call, answer, request)
                if judged is None and not _answers(answer, request):
                    continue  # withheld: a request answered for the client, or not JSON-RPC
                if judged is None:
                    withheld = "The MCP server's answer was withheld: it is not JSON-RPC."
                    judged = jsonrpc.error(_id(request), SERVER_FAILED, withheld)
                yield _event(judged, event.id if _identifier(event.id) else None)
                if _answers(answer, request):
                    answered = True
                    break  # the stream of a request ends with its answer
            if request is not None and not answered:
                ended = "The MCP server ended its answer without answering."
                yield _event(jsonrpc.error(request["id"], SERVER_FAILED, ended), None)
        except GuardproxyError as exc:  # the server failed, or its message cannot be judged
            status, message = _withheld(call, exc)
            if request is not None and not answered:
                yield _event(jsonrpc.error(request["id"], SERVER_FAILED, message), None)
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
        message = _rebuilt(received)
        if message is None:
            call.exchange.notes.append("a message that is not JSON-RPC was withheld")
            return None
        kind = jsonrpc.kind(message)
        if kind == "request":
            return await self._server_request(call, message)
        if kind == "notification":
            if message["method"] == "notifications/tools/list_changed":
                self._forget_tools(call)  # the next call to each tool is judged anew
            found = surface(message.get("params", {}), "params")
            ruling = await self._judge_inbound(call, found)
            carried: dict[str, Any] | None = self._carry(call, ruling, message, "output")
            return carried
        if call.cancelled.is_set() and request is not None and _answers(message, request):
            return jsonrpc.error(message["id"], CANCELLED, "The request was cancelled.")
        if "error" in message:
            ruling = await self._judge_inbound(call, surface(message["error"], "error"))
            if ruling.action in STOPS:
                return jsonrpc.error(
                    message["id"], SERVER_FAILED, "The MCP server's error was withheld."
                )
            kept: dict[str, Any] | None = self._carry(call, ruling, message, "output")
            return kept
        if request is None or not _answers(message, request):
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
            message["result"] = await self._listing(call, method, result)
            return message
        ruling = await self._judge_inbound(call, result_surface(method, result))
        if ruling.action in STOPS and method == "initialize":
            # The session goes on, on the protocol's own values: every text of the result
            # (instructions, the server's description, experimental capabilities) withheld.
            message["result"] = _bare_initialize(result)
            call.exchange.notes.append("the server's instructions and descriptions were withheld")
            return message
        carried = self._carry(call, ruling, result, "output")
        if carried is None:
            return self._blocked(call, message["id"], method == "tools/call", ruling)
        message["result"] = carried
        return message

    async def _listing(
        self, call: McpCall, method: str, result: dict[str, Any], record: bool = True
    ) -> dict[str, Any]:
        """Each entry judged on its own: an unsafe one is removed, the rest kept as sent. Past
        the tenant's `max_guard_calls`, neighbouring entries are judged together, and an
        unsafe group is removed whole. The rest of the result is judged as one.
        `record`: the listing is the client's answer (not one the gateway asked for itself)."""
        key = LISTINGS[method]
        entries: list[Any] = result[key]
        names = [_entry_name(entry, index) for index, entry in enumerate(entries)]
        size = max(-(-len(entries) // call.route.tenant.input.max_guard_calls), 1)  # a check
        groups = [
            range(start, min(start + size, len(entries))) for start in range(0, len(entries), size)
        ]
        rest = {k: v for k, v in result.items() if k != key}
        judged = await asyncio.gather(
            self._judge_inbound(call, result_surface(method, rest)),
            *(
                self._judge_inbound(
                    call,
                    Surface(
                        [Piece(f"{key}[{names[i]}]", entry_text(key, entries[i])) for i in group]
                    ),
                )
                for group in groups
            ),
        )
        kept: list[Any] = []
        removed: list[str] = []
        masker = call.route.masker
        for group, ruling in zip(groups, judged[1:], strict=True):
            allowed = self._decided(call, ruling, "output") not in STOPS
            types = ruling.redact if ruling.action is Action.REDACT else masker.always
            for index in group:
                entry = entries[index]
                if (
                    key == "tools"
                    and isinstance(entry, dict)
                    and isinstance(entry.get("name"), str)
                ):
                    self._remember(
                        (call.route.tenant.tenant, call.server.name, entry["name"]), allowed
                    )
                if allowed:  # its name stays: it is what the client calls the entry by
                    kept.append(self._masked(call, entry, types, "output", ENTRY_KEPT))
                else:
                    removed.append(names[index])
        if removed and record:
            call.note(removed=removed)
            call.exchange.action = "block"
        carried: dict[str, Any] | None = self._carry(call, judged[0], rest, "output")
        if carried is None:  # the listing's own text (a note beside the entries) withheld
            cursor = rest.get("nextCursor")
            carried = {"nextCursor": cursor} if _identifier(cursor) else {}
        return carried | {key: kept}

    async def _server_request(
        self, call: McpCall, message: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A request for the client (its model, its user): judged, or refused on its behalf
        when the tenant says so; a refused one is answered to the server, never relayed."""
        method, params = message["method"], message.get("params", {})
        tenant = call.route.tenant
        refused = method == "sampling/createMessage" and tenant.mcp.sampling == "refuse"
        ruling = (
            NOT_JUDGED
            if refused
            else await self._judge_inbound(call, request_surface(method, params))
        )
        carried = None if refused else self._carry(call, ruling, params, "output")
        if carried is not None:
            return message | {"params": carried}
        why = "refused by the tenant's policy" if refused else "blocked by the tenant's policy"
        call.exchange.notes.append(f"the server's {method} was {why}")
        answer = jsonrpc.error(message["id"], BLOCKED, f"The request was {why}.")
        reply = await call.send("POST", self._headers(call), json.dumps(answer).encode())
        await reply.aclose()
        return None

    # -- judging ----------------------------------------------------------------------------

    async def _judge_inbound(self, call: McpCall, found: Surface) -> Ruling:
        """What the agent's model will read next, under the tenant's input rules, on its
        chain as a tool turn (so an injection classifier with `turns: [tool]` judges it)."""
        tenant, rules = call.route.tenant, call.profile.input
        if found.unjudged and tenant.input.unjudged_parts == "refuse":
            call.exchange.notes.append(f"parts no guard can judge: {', '.join(found.unjudged)}")
            return Ruling(SKIPPED, Action.BLOCK, Action.BLOCK)
        text, images = found.text(), await self._images(call, found)
        if not tenant.input.enabled or (not text and not images):
            return NOT_JUDGED
        turns = [Turn("result", "tool", text)] if text else []
        chain = call.route.chain
        result = await chain.judge_input("", images, turns, rules, tenant.input)
        call.judged_in.append(result)
        masker, monitor = call.route.masker, tenant.mode == "monitor"
        return rule(result, tenant, rules, [text], masker, monitor)

    async def _judge_outbound(self, call: McpCall, text: str) -> Ruling:
        """The agent's tool arguments, as its output, under the tenant's output rules."""
        tenant, rules = call.route.tenant, call.profile.output
        if not tenant.output.enabled or not text.strip():
            return NOT_JUDGED
        checks = output_checks("", None, [text], rules, tenant.output.window_chars)
        result = await call.route.chain.judge_output(checks)
        call.judged_out.append(result)
        masker, monitor = call.route.masker, tenant.mode == "monitor"
        return rule(result, tenant, rules, [text], masker, monitor)

    async def _images(self, call: McpCall, found: Surface) -> list[GuardImage]:
        images = []
        for piece in found.images():
            assert piece.image is not None
            try:
                prepared = await prepare_image(
                    piece.image, piece.label, call.route.tenant.images, call.fetcher
                )
            except GuardproxyError as exc:
                raise McpProblem(200, BLOCKED, f"An image could not be judged: {exc}") from exc
            images.append(GuardImage(piece.label, prepared.guard_data_url()))
        return images

    def _decided(self, call: McpCall, ruling: Ruling, direction: str) -> Action:
        exchange = call.exchange
        if ruling.monitored:
            exchange.monitor = True
            exchange.monitored(direction, ruling.decided.value)
        if ruling.action is Action.FLAG and direction not in exchange.flags:
            exchange.flag(direction)
        return ruling.action

    def _carry(
        self, call: McpCall, ruling: Ruling, value: Any, direction: str, free: bool = False
    ) -> Any:
        """`value` as the ruling lets it through (masked), or None when it stops here. The
        tenant's always-on detectors mask every judged string, whatever the verdict."""
        action = self._decided(call, ruling, direction)
        if action in STOPS:
            call.exchange.action = "fail" if action is Action.FAIL else "block"
            return None
        types = ruling.redact if action is Action.REDACT else call.route.masker.always
        return self._masked(call, value, types, direction, free=free)

    def _masked(
        self,
        call: McpCall,
        value: Any,
        types: frozenset[str],
        direction: str,
        keep: frozenset[str] = STRUCTURAL,
        free: bool = False,
    ) -> Any:
        """`value` with the detectors `types` run on its strings, the masks counted; `free`:
        free-form data (a tool's arguments), where no value is structural."""
        if not types:
            return value
        counting = call.route.masker.counting(call.exchange.tally(direction))
        masked, count = mask_tree(value, lambda text: counting.mask(text, types), keep, free)
        if count:
            redacted = call.exchange.redacted
            redacted[direction] = redacted.get(direction, 0) + count
        return masked

    def _blocked(
        self, call: McpCall, id: Any, tool_result: bool, ruling: Ruling | None = None
    ) -> dict[str, Any]:
        """A blocked tool call or result as the agent reads it: a tool error it can tell the
        user about (`on_block: refusal`), or a JSON-RPC error."""
        exchange, tenant = call.exchange, call.route.tenant
        if exchange.action in ("allow", "flag", "redact"):
            exchange.action = "block"
        if ruling is not None and ruling.action is Action.FAIL:
            message = "The content-safety check could not run, so the message was withheld."
            return jsonrpc.error(id, BLOCKED, message, {"guardproxy": exchange.client_view()})
        refusal = refusal_for(exchange, tenant)
        if tool_result and tenant.on_block == "refusal":
            content = [{"type": "text", "text": refusal}]
            return jsonrpc.result(id, {"isError": True, "content": content})
        return jsonrpc.error(id, BLOCKED, refusal, {"guardproxy": exchange.client_view()})

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

    def _headers(self, call: McpCall) -> dict[str, str]:
        return {"content-type": "application/json", "accept": ACCEPT, **call.headers}

    def _forget_tools(self, call: McpCall) -> None:
        scope = (call.route.tenant.tenant, call.server.name)
        for key in [key for key in self._tools if key[:2] == scope]:
            del self._tools[key]

    def _cancel(self, call: McpCall, request_id: Any) -> None:
        """Only a call in flight is cancelled, and nothing is remembered after it: a later
        request reusing the id is a new request."""
        if request_id is None:
            return
        cancelled = self._open.get(call.request_key(request_id))
        if cancelled is not None:
            cancelled.cancelled.set()


def passed_headers(headers: Any, seal: SessionSeal) -> dict[str, str]:
    """The client's headers the server sees, its session id opened (or refused, 404)."""
    passed = {name: headers[name] for name in PASSED_HEADERS if name in headers}
    if SESSION_HEADER in passed:
        passed[SESSION_HEADER] = seal.open(passed[SESSION_HEADER])
    return passed


def problem_for(exc: GuardproxyError, id: Any = None) -> McpProblem:
    """The HTTP status and JSON-RPC error a failure is answered with, carrying the request's
    id where there is one."""
    if isinstance(exc, McpProblem):
        return exc if id is None else McpProblem(exc.status, exc.code, exc.message, id)
    if isinstance(exc, AuthenticationError):
        return McpProblem(401, INVALID_REQUEST, str(exc), id)
    if isinstance(exc, PayloadTooLarge):
        return McpProblem(413, INVALID_REQUEST, exc.message, id)
    if isinstance(exc, RequestError):
        return McpProblem(400, INVALID_REQUEST, exc.message, id)
    if isinstance(exc, ServerUnavailable):
        return McpProblem(503, SERVER_FAILED, exc.message, id)
    if isinstance(exc, UpstreamTimeout):
        return McpProblem(504, SERVER_FAILED, exc.message, id)
    if isinstance(exc, UpstreamError):
        return McpProblem(502, SERVER_FAILED, exc.message, id)
    return McpProblem(503, SERVER_FAILED, "guardproxy could not judge this message.", id)


def problem_response(problem: McpProblem, exchange: Exchange) -> Response:
    body = jsonrpc.error(problem.id, problem.code, problem.message)
    return JSONResponse(body, problem.status, headers=own_headers(exchange))


def _rebuilt(message: dict[str, Any]) -> dict[str, Any] | None:
    """`message` with JSON-RPC's fields alone, or None when it is not JSON-RPC, carries text
    that is not text, or names itself with words rather than an identifier."""
    if jsonrpc.invalid(message) is not None or has_lone_surrogates(message):
        return None
    for key in ("id", "method"):
        if key in message and isinstance(message[key], str) and not _identifier(message[key]):
            return None
    return {key: message[key] for key in JSONRPC_FIELDS if key in message}


def _identifier(value: Any) -> bool:
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def _bare_initialize(result: dict[str, Any]) -> dict[str, Any]:
    """An initialize result with no text: the protocol version, the capabilities' flags and
    the server's identifier-shaped name and version."""
    bare: dict[str, Any] = {"capabilities": _flags(result.get("capabilities", {}))}
    if _identifier(result.get("protocolVersion")):
        bare["protocolVersion"] = result["protocolVersion"]
    info = result.get("serverInfo")
    if isinstance(info, dict):
        bare["serverInfo"] = {k: info[k] for k in ("name", "version") if _identifier(info.get(k))}
    return bare


def _flags(value: Any) -> Any:
    """Nested objects of booleans and numbers, as capabilities are; strings dropped."""
    if isinstance(value, dict):
        return {
            k: _flags(v)
            for k, v in value.items()
            if _identifier(k) and not isinstance(v, str | list)
        }
    return value


def own_headers(exchange: Exchange) -> dict[str, str]:
    return {
        "x-guardproxy-request-id": exchange.request_id,
        "x-guardproxy-overhead-ms": f"{exchange.overhead_ms():.3f}",
    }


def _withheld(call: McpCall, exc: GuardproxyError) -> tuple[int, str]:
    """The status and message of an answer that ends in `exc`: the server failed (502), or
    its message could not be judged and is withheld (200, a JSON-RPC error)."""
    if isinstance(exc, UpstreamError):
        status, message = 502, exc.message
    else:
        status, message = 200, f"The MCP server's message was withheld: {exc}"
    call.exchange.error = message
    return status, message


def _session_headers(call: McpCall, reply: McpReply) -> dict[str, str]:
    session = reply.session_id
    if not session:
        return {}
    if not SESSION_ID.fullmatch(session):  # the protocol's visible ASCII, 0x21 to 0x7E
        raise UpstreamError("The MCP server sent a session id the protocol does not allow.")
    return {SESSION_HEADER: call.seal.seal(session)}


def _message(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def _answers(message: dict[str, Any], request: dict[str, Any] | None) -> bool:
    return request is not None and "method" not in message and message.get("id") == request["id"]


def _id(request: dict[str, Any] | None) -> Any:
    return request.get("id") if request is not None else None


def _entry_name(entry: Any, index: int) -> str:
    if isinstance(entry, dict):
        for key in ("name", "uri", "uriTemplate"):
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return str(index)


def _event(message: dict[str, Any], id: str | None) -> bytes:
    head = f"id: {id}\n" if id else ""
    return f"event: message\n{head}data: {json.dumps(message, ensure_ascii=False)}\n\n".encode()


async def _first_answer(reply: McpReply) -> dict[str, Any] | None:
    """The response a request of the gateway's own gets, JSON or the first of a stream."""
    try:
        if not 200 <= reply.status < 300:
            return None
        if not reply.streams:
            return _message(await reply.body())
        async for event in reply.events():
            message = _message(event.data.encode()) if event.data else None
            if message is not None and "method" not in message:
                return message
        return None
    finally:
        await reply.aclose()
