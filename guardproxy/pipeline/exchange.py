"""One request as it moves through the pipeline: the source of its audit record."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from guardproxy.core.actions import Action, Outcome
from guardproxy.pipeline.checks import SKIPPED, CheckResult, CheckStatus
from guardproxy.pipeline.usage import TokenUsage

if TYPE_CHECKING:
    from guardproxy.pipeline.content import ContentCapture
    from guardproxy.pipeline.shadow import Judged
    from guardproxy.policy.refusals import Refusals


@dataclass
class Exchange:
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    api: str = "chat.completions"
    tenant: str | None = None
    model: str | None = None
    stream: bool = False
    input: CheckResult = SKIPPED
    output: CheckResult = SKIPPED
    action: Outcome = "allow"  # set with the status, by `conclude`
    status: int | None = None
    error: str | None = None
    upstream_ms: float | None = None
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # directions whose verdict was `flag`
    redacted: dict[str, int] = field(default_factory=dict)  # direction -> spans masked
    # direction -> detector type -> spans masked, streams included (for the metrics)
    redaction_types: dict[str, Counter[str]] = field(default_factory=dict)
    regions: tuple[str, ...] = ()
    expose_reasoning: bool = False
    moderation: ModerationStats | None = None  # a chunked stream's cost
    upstream: str | None = None  # the tenant's upstream, by its config name
    first_byte_ms: float | None = None  # a stream's first body bytes reached the client
    guard: str | None = None  # the tenant's guard, by its config name
    content: ContentCapture | None = None  # the judged text, where the tenant opted in
    monitor: bool = False  # the tenant's `mode: monitor`: nothing is enforced
    would: dict[str, str] = field(default_factory=dict)  # direction -> unenforced action
    judged: Judged | None = None  # what the live checks judged, for a shadow policy
    trace_id: str | None = None  # the request's OpenTelemetry trace, when traced
    usage: TokenUsage | None = None  # what the answer consumed, as billing reads it
    upstream_first_byte_ms: float | None = None  # a stream's first upstream bytes arrived
    key_id: str | None = None  # which of the tenant's keys (policy.model.key_id), never the key
    client_address: str | None = None  # the peer, or the client its trusted proxies name
    refusals: Refusals | None = None  # the tenant's refusal texts by language
    accept_language: str | None = None  # the request's Accept-Language
    refusal_language: str | None = None  # the language the refusal was told in
    mcp: dict[str, Any] | None = None  # an MCP exchange: server, method, tool, removed entries

    def conclude(
        self, status: int, action: Outcome | None = None, error: str | None = None
    ) -> None:
        """How the exchange ended: the one place its status (and, when it is not the
        checks' own, its action and error) is written."""
        self.status = status
        if action is not None:
            self.action = action
        if error is not None:
            self.error = error

    def headers(self) -> dict[str, str]:
        return {
            "x-guardproxy-request-id": self.request_id,
            "x-guardproxy-input": self.input.status.value,
            "x-guardproxy-output": self.output.status.value,
            "x-guardproxy-action": "monitor" if self.monitor else self.action,
            "x-guardproxy-overhead-ms": f"{self.overhead_ms():.3f}",
        }

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_perf) * 1000

    def overhead_ms(self) -> float:
        """Time spent in the proxy itself so far: elapsed minus guard and upstream waits."""
        waits = (self.input.latency_ms, self.output.latency_ms, self.upstream_ms)
        elapsed = (time.perf_counter() - self.started_perf) * 1000
        return max(elapsed - sum(w for w in waits if w is not None), 0.0)

    def client_view(self) -> dict[str, Any]:
        """The `guardproxy` object added to JSON bodies; reasoning only if the tenant says so."""
        view: dict[str, Any] = {
            "request_id": self.request_id,
            "action": self.action,
            "input": self.input.summary(self.expose_reasoning),
            "output": self.output.summary(self.expose_reasoning),
        }
        if self.flags:
            view["flagged"] = list(self.flags)
        if self.redacted:
            view["redacted"] = dict(self.redacted)
        return view

    def tally(self, direction: str) -> Counter[str]:
        return self.redaction_types.setdefault(direction, Counter())

    def monitored(self, direction: str, action: str) -> None:
        """What a monitored tenant's check would have done; the worst one per direction."""
        known = self.would.get(direction)
        if known is None or Action(action).severity > Action(known).severity:
            self.would[direction] = action

    def flag(self, direction: str) -> None:
        self.flags.append(direction)
        if self.action == "allow":
            self.action = "flag"

    def guard_error_allowed(self) -> bool:
        return self.action in ("allow", "flag") and CheckStatus.ERROR in (
            self.input.status,
            self.output.status,
        )

    def audit_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            "request_id": self.request_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "client_address": self.client_address,
            "api": self.api,
            "guard": self.guard,
            "model": self.model,
            "stream": self.stream,
            "action": self.action,
            "status": self.status,
            "input": self.input.summary(reasoning=True, detail=True),
            "output": self.output.summary(reasoning=True, detail=True),
            "upstream_ms": _round(self.upstream_ms),
            "total_ms": _round((time.perf_counter() - self.started_perf) * 1000),
        }
        if self.monitor:
            record["action"] = "monitor"
            record["would_block"] = any(a in ("block", "fail") for a in self.would.values())
            record["would"] = dict(self.would)
        if self.error:
            record["error"] = self.error
        if self.first_byte_ms is not None:
            record["first_byte_ms"] = _round(self.first_byte_ms)
        if self.upstream_first_byte_ms is not None:
            record["upstream_first_byte_ms"] = _round(self.upstream_first_byte_ms)
        if self.trace_id is not None:
            record["trace_id"] = self.trace_id
        if self.regions:
            record["regions"] = list(self.regions)
        if self.flags:
            record["flagged"] = list(self.flags)
        if self.redacted:
            record["redacted"] = dict(self.redacted)
        masked = {d: dict(c) for d, c in self.redaction_types.items() if c}
        if masked:
            record["redaction_types"] = masked
        if self.usage is not None:
            record["usage"] = self.usage.record()
        if self.moderation is not None and self.moderation.checks:
            record["moderation"] = self.moderation.view()
        released = self.moderation.released if self.moderation is not None else None
        if released is not None:  # only its length: the text is content (audit_content)
            record["released"] = {"chars": len(released)}
        if self.refusal_language is not None:
            record["refusal_language"] = self.refusal_language
        if self.mcp is not None:
            record["mcp"] = dict(self.mcp)
        if self.guard_error_allowed():
            self.notes.append("guard error: allowed by on_guard_error=allow")
        if self.notes:
            record["notes"] = self.notes
        if self.content is not None:
            answer = self.moderation.answer if self.moderation is not None else None
            record["content"] = self.content.view(answer, released)
        return record


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class ModerationStats:
    """What moderating one stream cost: guard checks, and the characters judged (overlaps and
    the final check included) against the characters answered (`amplification`), and the
    guard's own prompt tokens over the checks it answered (`guard_tokens`, where it says)."""

    checks: int = 0
    judged_chars: int = 0
    answer_chars: int = 0
    answer: str | None = field(default=None, repr=False)  # for the audit's content capture
    guard_tokens: int | None = None
    # A cut-off stream's answer text that reached the client before the cut; None: not cut.
    released: str | None = field(default=None, repr=False)

    def record(self, checks: int, judged_chars: int, answer: str) -> None:
        self.checks, self.judged_chars = checks, judged_chars
        self.answer, self.answer_chars = answer, len(answer)

    def add_guard_tokens(self, tokens: int | None) -> None:
        if tokens is not None:
            self.guard_tokens = (self.guard_tokens or 0) + tokens

    def view(self) -> dict[str, object]:
        amplification = self.judged_chars / self.answer_chars if self.answer_chars else 0.0
        view: dict[str, object] = {
            "checks": self.checks,
            "judged_chars": self.judged_chars,
            "answer_chars": self.answer_chars,
            "amplification": round(amplification, 3),
        }
        if self.guard_tokens is not None:
            view["guard_tokens"] = self.guard_tokens
        return view
