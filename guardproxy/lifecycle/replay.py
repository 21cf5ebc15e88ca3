"""`guardproxy replay --tenant T --policy NEW.yaml`: the stored exchanges of a tenant that opted
into content capture, judged again under a candidate policy, as a decision diff.

The exchanges come from the audit database when one is configured, else from the JSON-lines
trail. Each finished exchange is appended to a state file at once, so an interrupted replay
resumes where it stopped (rerun the same command). `--max-rps` spaces the guard calls out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from tqdm import tqdm

from guardproxy.audit.schema import decisions
from guardproxy.audit.store import open_engine
from guardproxy.config import Settings
from guardproxy.errors import ConfigError
from guardproxy.lifecycle.judge import Judge, Outcome
from guardproxy.lifecycle.verdicts import VerdictFile
from guardproxy.media.fetch import ImageFetcher
from guardproxy.pipeline.judging import Case, guards_not_run, not_run_note
from guardproxy.policy.model import PolicySet, TenantPolicy


@dataclass(frozen=True)
class Stored:
    request_id: str
    time: datetime
    action: str  # what the live policy did (for a monitored tenant: what it would have done)
    categories: tuple[str, ...]
    prompt: str
    response: str | None


def recorded_action(record: dict[str, Any]) -> str:
    if record.get("action") == "monitor":
        would = record.get("would") or {}
        return "block" if record.get("would_block") else next(iter(would.values()), "allow")
    return str(record.get("action", "allow"))


def stored_of(record: dict[str, Any], content: dict[str, Any] | None) -> Stored | None:
    if not content or not content.get("prompt"):
        return None
    named = [c for d in ("input", "output") for c in (record.get(d) or {}).get("categories", ())]
    return Stored(
        record["request_id"],
        _utc(datetime.fromisoformat(record["time"])),
        recorded_action(record),
        tuple(dict.fromkeys(named)),
        str(content["prompt"]),
        content.get("response"),
    )


@dataclass(frozen=True)
class Trail:
    """A tenant's stored decisions: the exchanges with content, and how many have none (they
    were written under `audit_content: none`, which keeps no text to judge again)."""

    exchanges: list[Stored]
    without_content: int = 0


def from_trail(path: Path, tenant: str) -> Trail:
    exchanges, without = [], 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line) if line.strip() else {}
            if record.get("tenant") != tenant:
                continue
            found = stored_of(record, record.get("content"))
            exchanges += [found] if found else []
            without += found is None
    return Trail(exchanges, without)


async def from_database(url: str, tenant: str) -> Trail:
    engine = open_engine(url)
    mine = decisions.c.tenant == tenant
    query = (
        select(decisions.c.record, decisions.c.content)
        .where(mine, decisions.c.content.is_not(None))
        .order_by(decisions.c.time)
    )
    bare = select(func.count()).select_from(decisions).where(mine, decisions.c.content.is_(None))
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            without = (await connection.execute(bare)).scalar_one()
    finally:
        await engine.dispose()
    return Trail(
        [found for record, content in rows if (found := stored_of(record, content))], without
    )


def why_nothing(tenant: TenantPolicy, trail: Trail) -> str | None:
    """Why a replay has no exchange to judge, or which decisions it leaves out; None: all in."""
    name, bare = tenant.tenant, trail.without_content
    if trail.exchanges and not bare:
        return None
    if trail.exchanges:
        return f"left out: {bare} decisions of {name!r} keep no content (audit_content: none)"
    if tenant.audit_content == "none":
        return (
            f"nothing to replay: tenant {name!r} has audit_content: none, so its "
            f"{bare} stored decisions keep no text to judge again; set audit_content: redacted "
            "(or full) and replay the traffic that comes after"
        )
    if bare:
        return (
            f"nothing to replay: the {bare} stored decisions of {name!r} were written under "
            "audit_content: none and keep no text; only later ones can be replayed"
        )
    return f"nothing to replay: no stored decisions of tenant {name!r}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class RateLimit:
    """At most `rps` starts per second, evenly spaced; None: no limit."""

    def __init__(self, rps: float | None) -> None:
        self.interval = 1 / rps if rps else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = max(self.next_at - now, 0.0)
            self.next_at = max(self.next_at, now) + self.interval
        await asyncio.sleep(delay)


@dataclass(frozen=True)
class ReplayRun:
    settings: Settings
    policies: PolicySet
    candidate: TenantPolicy
    state: Path
    max_rps: float | None = None
    concurrency: int = 4
    progress: bool = True


def finished(state: Path) -> dict[str, dict[str, Any]]:
    if not state.exists():
        return {}
    entries = (json.loads(line) for line in state.read_text().splitlines() if line.strip())
    return {entry["request_id"]: entry for entry in entries}


async def replay(run: ReplayRun, exchanges: list[Stored]) -> dict[str, dict[str, Any]]:
    done = finished(run.state)
    todo = [e for e in exchanges if e.request_id not in done]
    limit, pace = asyncio.Semaphore(run.concurrency), RateLimit(run.max_rps)
    bar = tqdm(total=len(exchanges), initial=len(exchanges) - len(todo), desc="replay", unit="ex",
               disable=not run.progress)  # fmt: skip
    verdicts = VerdictFile(None)
    try:
        async with httpx.AsyncClient() as client, ImageFetcher() as fetcher:
            judge = Judge(
                run.settings, run.policies, run.candidate, client, fetcher, verdicts, pace.wait
            )
            with run.state.open("a", encoding="utf-8") as state:

                async def one(exchange: Stored) -> None:
                    async with limit:
                        entry = await _rejudge(judge, exchange)
                    state.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    state.flush()  # what is here survives an interruption
                    done[exchange.request_id] = entry
                    bar.update()

                await asyncio.gather(*(one(e) for e in todo))
    finally:
        bar.close()
    return done


async def _rejudge(judge: Judge, exchange: Stored) -> dict[str, Any]:
    """The stored exchange as the proxy would judge it now: the prompt, then the answer in
    context if the prompt passes (`--max-rps` paces each guard call the judge makes)."""
    outcome = await judge.judge(exchange.prompt, exchange.response)
    return {
        "request_id": exchange.request_id,
        "from": exchange.action,
        "to": _to(outcome),
        "categories": list(outcome.categories or exchange.categories),
    }


def _to(outcome: Outcome) -> str:
    return "error" if outcome.error is not None else outcome.action


def guards_never_run(candidate: TenantPolicy) -> tuple[str, ...]:
    """The candidate's guards a stored exchange gives no turn of theirs: the trail keeps the
    last user turn and the answer, not the tool results or other turns before them."""
    return guards_not_run(candidate, Case("").kinds)


def diff(entries: list[dict[str, Any]], not_run: Sequence[str] = ()) -> dict[str, Any]:
    """`not_run`: the candidate's guards the replay never called (`guards_never_run`), said
    only where there are some."""
    counts = Counter(f"{e['from']}->{e['to']}" for e in entries)
    changed = [e for e in entries if e["from"] != e["to"]]
    result = {"counts": dict(sorted(counts.items())), "changed": changed}
    return result | ({"not_run": list(not_run)} if not_run else {})


def summary(result: dict[str, Any]) -> str:
    lines = [f"{key}: {n}" for key, n in result["counts"].items()]
    per: dict[str, Counter[str]] = {}
    for entry in result["changed"]:
        move = f"{entry['from']}->{entry['to']}"
        per.setdefault(move, Counter()).update(entry["categories"] or ["(none)"])
    for move, categories in sorted(per.items()):
        lines.append(f"{move} by category: " + ", ".join(f"{c} {n}" for c, n in categories.items()))
        ids = [e["request_id"] for e in result["changed"] if f"{e['from']}->{e['to']}" == move]
        lines.append(f"  request ids: {', '.join(ids[:20])}" + (" …" if len(ids) > 20 else ""))
    if result.get("not_run"):
        lines.append(f"not judged again: {not_run_note(result['not_run'])} (the trail keeps none)")
    return "\n".join(lines)


def in_window(exchanges: list[Stored], since: str | None, until: str | None) -> list[Stored]:
    start = _utc(datetime.fromisoformat(since)) if since else None
    end = _utc(datetime.fromisoformat(until)) if until else None
    return [
        e for e in exchanges if (start is None or e.time >= start) and (end is None or e.time < end)
    ]


def load_exchanges(settings: Settings, tenant: str, trail: Path | None) -> Trail:
    if trail is None and settings.audit.database:
        return asyncio.run(from_database(settings.audit.database, tenant))
    path = trail or settings.audit_path()
    if path is None or not path.exists():
        raise ConfigError("no audit trail to replay: set audit.database, or pass --trail FILE")
    return from_trail(path, tenant)


def resumed(state: Path, exchanges: list[Stored]) -> int:
    """How many of `exchanges` an earlier, interrupted run has judged already."""
    done = finished(state)
    return sum(e.request_id in done for e in exchanges)
