"""The access log for admins: a page, the JSON API (`/admin/api/access`), and its export as
JSON lines (`?format=ndjson`), which is itself recorded as an export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.admin.decisions import page_number
from guardproxy.admin.pages import Pages
from guardproxy.audit import access
from guardproxy.audit.access import PAGE_SIZE, AccessLog

EXPORT_BATCH = 1000


class AccessPages:
    def __init__(self, log: AccessLog, pages: Pages) -> None:
        self.log, self.pages = log, pages

    async def listing(self, request: Request) -> Response:
        actor, number = _actor(request), page_number(request)
        found = await self.log.store().page(actor, PAGE_SIZE, (number - 1) * PAGE_SIZE)
        last = max((found.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        params = {"actor": actor} if actor else {}
        return self.pages.render(
            request, "access.html", events=found.events, total=found.total, actor=actor or "",
            number=number, last=last, page_link=lambda n: "?" + urlencode({**params, "page": n}),
        )  # fmt: skip

    async def api_listing(self, request: Request) -> Response:
        actor = _actor(request)
        if request.query_params.get("format") == "ndjson":
            await access.record(request, "export", None, {"what": "access_log", "actor": actor})
            headers = {"content-disposition": 'attachment; filename="access-log.ndjson"'}
            return StreamingResponse(
                self._lines(actor), media_type="application/x-ndjson", headers=headers
            )
        number = page_number(request)
        found = await self.log.store().page(actor, PAGE_SIZE, (number - 1) * PAGE_SIZE)
        data = [event.view() for event in found.events]
        return JSONResponse({"data": data, "page": number, "total": found.total})

    async def _lines(self, actor: str | None) -> AsyncIterator[bytes]:
        offset = 0
        while True:
            found = await self.log.store().page(actor, EXPORT_BATCH, offset)
            for event in found.events:
                yield (json.dumps(event.view()) + "\n").encode()
            if len(found.events) < EXPORT_BATCH:
                return
            offset += EXPORT_BATCH


def _actor(request: Request) -> str | None:
    return request.query_params.get("actor") or None
