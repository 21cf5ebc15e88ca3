"""Listings (tools, resources, templates, prompts) judged entry by entry, and the tools'
verdicts each worker keeps, so a call to a tool removed from a listing is refused before the
server, and a call to one this worker never judged lists the server's tools first."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import OrderedDict
from typing import Any

from guardproxy.api.mcp.call import McpCall
from guardproxy.api.mcp.judging import carry, decided, judge_inbound, masked
from guardproxy.api.mcp.messages import entry_name, first_answer, identifier
from guardproxy.api.mcp.surfaces import (
    LISTINGS,
    STRUCTURAL,
    Piece,
    Surface,
    entry_text,
    result_surface,
)
from guardproxy.core.actions import Action
from guardproxy.pipeline.judging import STOPS

TOOLS_KEPT = 10_000  # tool verdicts remembered per worker, the oldest forgotten first
LISTING_PAGES = 20  # pages of a server's tool listing the gateway reads for itself
ENTRY_KEPT = STRUCTURAL | {"name"}  # a listing entry's name is how it is called


class ToolBook:
    """(tenant, server, tool) -> allowed, as this worker's listings judged them."""

    def __init__(self) -> None:
        self._tools: OrderedDict[tuple[str, str, str], bool] = OrderedDict()

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self._tools

    def allowed(self, key: tuple[str, str, str]) -> bool:
        return self._tools.get(key, False)

    def remember(self, key: tuple[str, str, str], allowed: bool) -> None:
        self._tools[key] = allowed
        self._tools.move_to_end(key)
        while len(self._tools) > TOOLS_KEPT:
            self._tools.popitem(last=False)

    def forget(self, tenant: str, server: str) -> None:
        """A server's `list_changed`: the next call to each of its tools is judged anew."""
        for key in [key for key in self._tools if key[:2] == (tenant, server)]:
            del self._tools[key]


async def judge_listing(
    call: McpCall, method: str, result: dict[str, Any], book: ToolBook, record: bool = True
) -> dict[str, Any]:
    """Each entry judged on its own: an unsafe one is removed, the rest kept as sent. Past
    the tenant's `max_guard_calls`, neighbouring entries are judged together, and an
    unsafe group is removed whole. The rest of the result is judged as one.
    `record`: the listing is the client's answer (not one the gateway asked for itself)."""
    key = LISTINGS[method]
    entries: list[Any] = result[key]
    names = [entry_name(entry, index) for index, entry in enumerate(entries)]
    size = max(-(-len(entries) // call.route.tenant.input.max_guard_calls), 1)  # a check
    groups = [
        range(start, min(start + size, len(entries))) for start in range(0, len(entries), size)
    ]
    rest = {k: v for k, v in result.items() if k != key}
    judged = await asyncio.gather(
        judge_inbound(call, result_surface(method, rest)),
        *(
            judge_inbound(
                call,
                Surface([Piece(f"{key}[{names[i]}]", entry_text(key, entries[i])) for i in group]),
            )
            for group in groups
        ),
    )
    kept: list[Any] = []
    removed: list[str] = []
    masker = call.route.masker
    for group, ruling in zip(groups, judged[1:], strict=True):
        allowed = decided(call, ruling, "output") not in STOPS
        types = ruling.redact if ruling.action is Action.REDACT else masker.always
        for index in group:
            entry = entries[index]
            if key == "tools" and isinstance(entry, dict) and isinstance(entry.get("name"), str):
                book.remember((call.route.tenant.tenant, call.server.name, entry["name"]), allowed)
            if allowed:  # its name stays: it is what the client calls the entry by
                kept.append(masked(call, entry, types, "output", ENTRY_KEPT))
            else:
                removed.append(names[index])
    if removed and record:
        call.note(removed=removed)
        call.exchange.action = "block"
    carried: dict[str, Any] | None = carry(call, judged[0], rest, "output")
    if carried is None:  # the listing's own text (a note beside the entries) withheld
        cursor = rest.get("nextCursor")
        carried = {"nextCursor": cursor} if identifier(cursor) else {}
    return carried | {key: kept}


async def refresh_tools(call: McpCall, book: ToolBook) -> bool:
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
        reply = await call.send("POST", call.server_headers(), json.dumps(request).encode())
        answer = await first_answer(reply)
        listed = answer.get("result") if answer else None
        if not isinstance(listed, dict) or not isinstance(listed.get("tools"), list):
            return False
        await judge_listing(call, "tools/list", listed, book, record=False)
        cursor = listed.get("nextCursor")
        if not isinstance(cursor, str):
            return True
    return False
