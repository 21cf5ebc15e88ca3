"""The reviewer's decisions: the filtered, paged list with its chart, one decision, and the
same as JSON, read from the audit database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from guardproxy.admin.chart import block_chart, traffic_chart
from guardproxy.admin.pages import Pages
from guardproxy.admin.reviewers import Reviewer, reviewer_of
from guardproxy.api.wire import WIRE_APIS
from guardproxy.audit import access
from guardproxy.audit.query import (
    DecisionFilter,
    blocks_per_category,
    facets,
    get_decision,
    list_decisions,
    traffic_per_tenant,
)

ACTIONS = ("allow", "flag", "block", "error")
APIS = tuple(api.name for api in WIRE_APIS)
CHART_HOURS = 24
MAX_PAGE = 100_000


class DecisionPages:
    def __init__(self, store: Callable[[], AsyncEngine | None], pages: Pages) -> None:
        self.store, self.pages = store, pages

    async def listing(self, request: Request) -> Response:
        if (store := self.store()) is None:
            return self.pages.render(request, "no_store.html", 503)
        where, page = _filter(request), page_number(request)
        found = await list_decisions(store, where, page)
        start = _hour(datetime.now(UTC)) - timedelta(hours=CHART_HOURS - 1)
        series = await blocks_per_category(store, where, start, timedelta(hours=1), CHART_HOURS)
        traffic = await traffic_per_tenant(store, start, CHART_HOURS, where)
        params = where.params()
        return self.pages.render(
            request,
            "decisions.html",
            where=where,
            params=params,
            page=found,
            choices=_seen_facets(await facets(store), reviewer_of(request)),
            actions=ACTIONS,
            apis=APIS,
            chart=block_chart(series),
            traffic=traffic_chart(traffic, start, CHART_HOURS),
            page_link=lambda n: "?" + urlencode({**params, "page": n}),
        )

    async def one(self, request: Request) -> Response:
        row = await self._row(request)
        if row is None:
            return self.pages.render(
                request, "missing.html", 404, request_id=request.path_params["request_id"]
            )
        return self.pages.render(request, "decision.html", row=row, record=row["record"])

    async def api_listing(self, request: Request) -> Response:
        if (store := self.store()) is None:
            return JSONResponse({"error": {"message": "No audit database is configured."}}, 503)
        found = await list_decisions(store, _filter(request), page_number(request))
        rows = [{**r, "time": r["time"].isoformat()} for r in found.rows]
        return JSONResponse({"data": rows, "page": found.number, "total": found.total})

    async def api_one(self, request: Request) -> Response:
        row = await self._row(request)
        if row is None:
            return JSONResponse({"error": {"message": "No such decision."}}, 404)
        return JSONResponse({**row["record"], "content": row["content"], "shadow": row["shadow"]})

    async def _row(self, request: Request) -> dict[str, Any] | None:
        """The decision as the reviewer may read it; one of a tenant they may not see is
        missing to them. Reading its content is recorded in the access log."""
        if (store := self.store()) is None:
            return None
        row = await get_decision(store, request.path_params["request_id"])
        reviewer = reviewer_of(request)
        if row is None or not reviewer.sees(row["tenant"]):
            return None
        if reviewer.may("reviewer"):
            await access.record(request, "content_view", row["request_id"])
        return reviewer.shown(row)


def _filter(request: Request) -> DecisionFilter:
    query = request.query_params
    text = {k: query.get(k) or None for k in ("tenant", "action", "direction", "category")}
    return DecisionFilter(
        **text,
        guard=query.get("guard") or None,
        api=query.get("api") or None,
        since=_time(query.get("since")),
        until=_time(query.get("until")),
        scope=reviewer_of(request).scope,
    )


def _seen_facets(found: dict[str, list[str]], reviewer: Reviewer) -> dict[str, list[str]]:
    """The filter form's choices, naming no tenant the reviewer may not see."""
    return {**found, "tenant": [t for t in found["tenant"] if reviewer.sees(t)]}


def _time(value: str | None) -> datetime | None:
    """An ISO time from the filter form (`datetime-local` has no zone: UTC is meant)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def page_number(request: Request) -> int:
    """`?page=N`, 1 to `MAX_PAGE`; anything else is the client's mistake, a 400."""
    value = request.query_params.get("page", "1") or "1"
    if not (value.isascii() and value.isdigit() and len(value) <= 6 and 0 < int(value) <= MAX_PAGE):
        raise HTTPException(400, f"page must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
