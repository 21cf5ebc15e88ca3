"""The reviewer's decisions: the filtered, paged list with its chart, one decision with its
labels, the same as JSON, the list as a CSV or NDJSON download, and labelling a decision."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from guardproxy.admin.chart import block_chart, traffic_chart
from guardproxy.admin.export import FORMATS, MEDIA_TYPES
from guardproxy.admin.pages import Pages
from guardproxy.admin.reviewers import Reviewer, reviewer_of
from guardproxy.api.wire import API_NAMES
from guardproxy.audit import access
from guardproxy.audit.labels import Label, LabelRefused, add_label, labels_of
from guardproxy.audit.query import (
    LABEL_CHOICES,
    SHADOW_CHOICES,
    DecisionFilter,
    blocks_per_category,
    facets,
    get_decision,
    list_decisions,
    traffic_per_tenant,
)
from guardproxy.audit.schema import LABELS

ACTIONS = ("allow", "flag", "block", "monitor", "fail", "reject", "error")
APIS = API_NAMES
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
            labels=LABEL_CHOICES,
            shadows=SHADOW_CHOICES,
            chart=block_chart(series),
            traffic=traffic_chart(traffic, start, CHART_HOURS),
            page_link=lambda n: "?" + urlencode({**params, "page": n}),
            query="?" + urlencode(params) if params else "",
        )

    async def one(self, request: Request) -> Response:
        row = await self._row(request)
        if row is None:
            return self.pages.render(
                request, "missing.html", 404, request_id=request.path_params["request_id"]
            )
        found = await self._labels(request, row["request_id"])
        return self.pages.render(
            request, "decision.html", row=row, record=row["record"], labels=found,
            choices=LABELS, may_label=reviewer_of(request).may("reviewer"),
            live_categories=_live_categories(row["record"]),
        )  # fmt: skip

    async def api_listing(self, request: Request) -> Response:
        if (store := self.store()) is None:
            return _no_store()
        if (chosen := request.query_params.get("format")) in FORMATS:
            return await self._export(request, store, chosen)
        found = await list_decisions(store, _filter(request), page_number(request))
        rows = [{**r, "time": r["time"].isoformat()} for r in found.rows]
        return JSONResponse({"data": rows, "page": found.number, "total": found.total})

    def api_export(self, chosen: str) -> Callable[[Request], Awaitable[Response]]:
        """`/admin/api/decisions.csv` and `.ndjson`: the list's `?format=` as a path."""

        async def export(request: Request) -> Response:
            if (store := self.store()) is None:
                return _no_store()
            return await self._export(request, store, chosen)

        return export

    async def _export(self, request: Request, store: AsyncEngine, chosen: str) -> Response:
        """The filtered list, streamed; recorded in the access log before a byte is sent."""
        where, reviewer = _filter(request), reviewer_of(request)
        detail = {"what": "decisions", "format": chosen, "filter": where.params()}
        await access.record(request, "export", None, detail | {"content": reviewer.may("reviewer")})
        name = f'attachment; filename="decisions.{chosen}"'
        return StreamingResponse(
            FORMATS[chosen](store, where, reviewer),
            media_type=MEDIA_TYPES[chosen],
            headers={"content-disposition": name},
        )

    async def api_one(self, request: Request) -> Response:
        row = await self._row(request)
        if row is None:
            return JSONResponse({"error": {"message": "No such decision."}}, 404)
        found = await self._labels(request, row["request_id"])
        return JSONResponse(
            {**row["record"], "content": row["content"], "shadow": row["shadow"]}
            | {"labels": [label.view() for label in found]}
        )

    # -- labels -----------------------------------------------------------------------------

    async def api_label(self, request: Request) -> Response:
        """`POST /admin/api/decisions/{id}/labels` with `{label, note, categories}`."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _refused("the body must be a JSON object")
        try:
            stored = await self.label(request, body)
        except LabelRefused as exc:
            return _refused(str(exc))
        if stored is None:
            return JSONResponse({"error": {"message": "No such decision."}}, 404)
        return JSONResponse(stored.view(), 201)

    async def form_label(self, request: Request, form: dict[str, str]) -> Response:
        """The decision page's label form: back to the page, which lists the new label."""
        try:
            stored = await self.label(request, form)
        except LabelRefused as exc:
            raise HTTPException(400, str(exc)) from exc
        if stored is None:
            return await self.one(request)  # its "missing" page
        return RedirectResponse(f"/admin/decisions/{stored.request_id}#labels", 303)

    async def label(self, request: Request, fields: dict[str, Any]) -> Label | None:
        """Store the reviewer's label on a decision they may see (None: no such decision, to
        them), and record it in the access log."""
        reviewer = reviewer_of(request)
        request_id = request.path_params["request_id"]
        label = Label.of(
            request_id, reviewer.name, str(fields.get("label", "")),
            fields.get("note"), fields.get("categories"),
        )  # fmt: skip
        row = await get_decision(self._engine(), request_id)
        if row is None or not reviewer.sees(row["tenant"]):
            return None
        stored = await add_label(self._engine(), label)
        await access.record(request, "label", request_id, {"label": stored.label})
        return stored

    def _engine(self) -> AsyncEngine:
        store = self.store()
        if store is None:
            raise HTTPException(503, "No audit database is configured.")
        return store

    async def _labels(self, request: Request, request_id: str) -> list[Label]:
        """A decision's labels as the reviewer may read them: a note is free text that may
        quote the prompt or answer, so a viewer gets none."""
        found = await labels_of(self._engine(), request_id)
        if reviewer_of(request).may("reviewer"):
            return found
        return [replace(label, note=None) for label in found]

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


def _live_categories(record: dict[str, Any]) -> list[str]:
    """What the guard named, in both directions: the label form starts from it."""
    named = [c for d in ("input", "output") for c in (record.get(d) or {}).get("categories") or ()]
    return list(dict.fromkeys(named))


def _no_store() -> Response:
    return JSONResponse({"error": {"message": "No audit database is configured."}}, 503)


def _refused(message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "invalid_request"}}, 400)


def _filter(request: Request) -> DecisionFilter:
    query = request.query_params
    named = ("tenant", "action", "direction", "category", "guard", "api", "label", "shadow")
    for name, allowed in (("label", LABEL_CHOICES), ("shadow", SHADOW_CHOICES)):
        if query.get(name) and query[name] not in allowed:
            raise HTTPException(400, f"{name} must be one of {', '.join(allowed)}")
    return DecisionFilter(
        **{k: query.get(k) or None for k in named},
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
