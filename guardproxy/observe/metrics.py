"""Prometheus metrics: one registry per app, recorded where the audit record is written.

The metric names and labels are public interface (see the README). No label ever holds
prompt text or a key: tenants, guards and upstreams are names from the config, so their
cardinality is bounded by the policy set. With `serve --workers N` the registry runs in
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the CLI).
"""

from __future__ import annotations

import itertools
import platform
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    start_http_server,
)

from guardproxy import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
DIRECTIONS = ("input", "output")
GUARD_RESULTS = ("safe", "unsafe", "cached", "error", "shed")
AUDIT_DROP_REASONS = ("invalid", "error", "queue_full")
# The audit record's `usage` (pipeline/usage.py: one shape for every API), by the kind counted.
TOKEN_KINDS = {"input_tokens": "prompt", "output_tokens": "completion"}
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client itself


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # `*_created` series double every counter and histogram, and nothing reads them
        # (prometheus-client's switch is per process, as the metrics are).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_dir is not None
        # In multiprocess mode the values live in files; the registry only serves them.
        self.registry = CollectorRegistry()
        registry = None if self.multiprocess else self.registry
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        # The serving process's own memory, CPU and file descriptors, and the Python it runs.
        if not self.multiprocess:  # with workers, a scrape would show whichever one answered
            ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build = Gauge(
            "guardproxy_build_info", "The guardproxy and Python versions serving: always 1.",
            ["version", "python"], registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.build.labels(__version__, platform.python_version()).set(1)
        self.requests = Counter(
            "guardproxy_requests_total", "Requests answered.",
            ["tenant", "api", "action", "status"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "guardproxy_request_duration_seconds", "Time to the last byte of an answer.",
            ["tenant", "api", "stream"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "guardproxy_time_to_first_token_seconds", "Time to a stream's first byte.",
            ["tenant", "api"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        # `purpose`: "live" for the checks that decide, "shadow" for a shadow policy's.
        self.guard_calls = Counter(
            "guardproxy_guard_calls_total", "Guard verdicts asked for, by how they came back.",
            ["guard", "direction", "result", "purpose"], registry=registry,
        )  # fmt: skip
        self.guard_duration = Histogram(
            "guardproxy_guard_duration_seconds", "Guard call latency (calls made, not cached).",
            ["guard", "direction", "purpose"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.guard_in_flight = Gauge(
            "guardproxy_guard_in_flight", "Guard calls in flight.", ["guard"],
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.added = Histogram(
            "guardproxy_added_latency_seconds",
            "Time the proxy added to the upstream's: whole answers, the total less the upstream's"
            " time; streams, the first byte to the client less the upstream's first byte.",
            ["tenant", "api", "stream"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "guardproxy_tokens_total", "Tokens the upstream reported: prompt, completion.",
            ["tenant", "kind"], registry=registry,
        )  # fmt: skip
        self.upstream_duration = Histogram(
            "guardproxy_upstream_duration_seconds", "Time to the upstream's response headers.",
            ["upstream"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.blocks = Counter(
            "guardproxy_blocks_total", "Blocked exchanges, by direction and category.",
            ["tenant", "direction", "category"], registry=registry,
        )  # fmt: skip
        self.redactions = Counter(
            "guardproxy_redactions_total", "Spans masked.",
            ["tenant", "direction", "type"], registry=registry,
        )  # fmt: skip
        self.cutoffs = Counter(
            "guardproxy_stream_cutoffs_total", "Streams cut off after text was released.",
            ["tenant"], registry=registry,
        )  # fmt: skip
        self.reloads = Counter(
            "guardproxy_policy_reloads_total", "Policy reloads, by result.",
            ["result"], registry=registry,
        )  # fmt: skip
        self.monitored_blocks = Counter(
            "guardproxy_monitored_blocks_total",
            "Blocks a monitored tenant would have had (not enforced), by direction and category.",
            ["tenant", "direction", "category"], registry=registry,
        )  # fmt: skip
        self.shadow_checks = Counter(
            "guardproxy_shadow_checks_total",
            "Shadow-policy judgements after the response: judged, dropped (load) or error; the"
            " outcome is the shadow policy's action (none when it did not judge).",
            ["tenant", "result", "outcome"], registry=registry,
        )  # fmt: skip
        self.audit_dropped = Counter(
            "guardproxy_audit_dropped_total", "Audit records a sink did not take.",
            ["sink", "reason"], registry=registry,
        )  # fmt: skip
        self.audit_queue = Gauge(
            "guardproxy_audit_queue_depth", "Audit records queued for a sink, not yet written.",
            ["sink"], registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.audit_flush = Histogram(
            "guardproxy_audit_flush_seconds", "Time to write one batch of audit records.",
            ["sink"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        # 1 when this pod's last readiness probe found the guard or upstream answering.
        self.dependency_up = Gauge(
            "guardproxy_dependency_up", "Whether a guard or upstream answered the last probe.",
            ["kind", "name"], registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip

    def record(self, record: dict[str, Any], upstream: str | None) -> None:
        """One exchange, from its audit record."""
        tenant = record.get("tenant") or "-"
        api = str(record.get("api", "chat.completions"))
        action, status = str(record.get("action")), str(record.get("status"))
        self.requests.labels(tenant, api, action, status).inc()
        total_ms = record.get("total_ms")
        if isinstance(total_ms, int | float):
            stream = "true" if record.get("stream") else "false"
            self.duration.labels(tenant, api, stream).observe(total_ms / 1000)
        ttft_ms = record.get("first_byte_ms")
        if isinstance(ttft_ms, int | float):
            self.ttft.labels(tenant, api).observe(ttft_ms / 1000)
        upstream_ms = record.get("upstream_ms")
        if upstream and isinstance(upstream_ms, int | float):
            self.upstream_duration.labels(upstream).observe(upstream_ms / 1000)
        added = added_seconds(record)
        if added is not None:
            stream = "true" if record.get("stream") else "false"
            self.added.labels(tenant, api, stream).observe(added)
        for kind, count in (record.get("usage") or {}).items():
            if kind in TOKEN_KINDS and isinstance(count, int) and count > 0:
                self.tokens.labels(tenant, TOKEN_KINDS[kind]).inc(count)
        if record.get("tenant") is not None:
            self._decisions(tenant, record)

    def _decisions(self, tenant: str, record: dict[str, Any]) -> None:
        would = record.get("would") or {}
        for direction in ("input", "output"):
            check = record.get(direction) or {}
            if would.get(direction) == "block":
                for category in check.get("categories") or ["(none)"]:
                    self.monitored_blocks.labels(tenant, direction, category).inc()
            if record.get("action") == "block" and check.get("status") == "unsafe":
                for category in check.get("categories") or ["(none)"]:
                    self.blocks.labels(tenant, direction, category).inc()
            for kind, spans in ((record.get("redaction_types") or {}).get(direction) or {}).items():
                self.redactions.labels(tenant, direction, kind).inc(spans)
        output = record.get("output") or {}
        cut = record.get("action") == "block" and output.get("status") == "unsafe"
        if record.get("stream") and cut and record.get("first_byte_ms") is not None:
            self.cutoffs.labels(tenant).inc()

    def shadow_check(self, tenant: str, result: str, outcome: str = "none") -> None:
        self.shadow_checks.labels(tenant, result, outcome).inc()

    def audit_lost(self, reason: str, records: int) -> None:
        self.audit_dropped.labels("database", reason).inc(records)

    def trail_lost(self, reason: str, records: int) -> None:
        self.audit_dropped.labels("jsonl", reason).inc(records)

    def guard_call(
        self, guard: str, direction: str, result: str, seconds: float | None, purpose: str = "live"
    ) -> None:
        self.guard_calls.labels(guard, direction, result, purpose).inc()
        if seconds is not None:
            self.guard_duration.labels(guard, direction, purpose).observe(seconds)

    def sink(self, name: str) -> SinkObserver:
        """What one audit sink reports: its queue and each batch's write time."""
        return SinkObserver(self, name)

    def dependency(self, kind: str, name: str, up: bool) -> None:
        self.dependency_up.labels(kind, name).set(1 if up else 0)

    def prime(self, tenants: Iterable[str], guards: Iterable[str], sinks: Iterable[str]) -> None:
        """Create the label sets alerts read at 0, so `increase()` sees their first event
        (a series that appears at 1 has no increase)."""
        for result in ("ok", "error"):
            self.reloads.labels(result)
        for sink, reason in itertools.product(sinks, AUDIT_DROP_REASONS):
            self.audit_dropped.labels(sink, reason)
        for guard, direction, result in itertools.product(guards, DIRECTIONS, GUARD_RESULTS):
            self.guard_calls.labels(guard, direction, result, "live")
        for tenant in tenants:
            self.cutoffs.labels(tenant)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve the exposition on a port of its own (prometheus-client's own threaded
        server); returns the function that stops it."""
        server, thread = start_http_server(port, host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop


class GuardObserver:
    """What one guard reports to the metrics: each verdict asked for, and calls in flight."""

    def __init__(self, metrics: Metrics, guard: str, purpose: str = "live") -> None:
        self._metrics, self._guard, self._purpose = metrics, guard, purpose
        self._in_flight = metrics.guard_in_flight.labels(guard)

    def for_purpose(self, purpose: str) -> GuardObserver:
        return GuardObserver(self._metrics, self._guard, purpose)

    def called(self, direction: str, result: str, seconds: float | None) -> None:
        self._metrics.guard_call(self._guard, direction, result, seconds, self._purpose)

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self) -> None:
        self._in_flight.dec()


class SinkObserver:
    """One audit sink's queue depth and batch write times."""

    def __init__(self, metrics: Metrics, sink: str) -> None:
        self._depth = metrics.audit_queue.labels(sink)
        self._flush = metrics.audit_flush.labels(sink)

    def queued(self, depth: int) -> None:
        self._depth.set(depth)

    def flushed(self, seconds: float) -> None:
        self._flush.observe(seconds)


def added_seconds(record: dict[str, Any]) -> float | None:
    """What the proxy added: a whole answer's total less the upstream's time; a stream's
    first byte less the upstream's first byte. None when the upstream was not reached."""
    if record.get("stream"):
        first, upstream = record.get("first_byte_ms"), record.get("upstream_first_byte_ms")
    else:
        first, upstream = record.get("total_ms"), record.get("upstream_ms")
    if not isinstance(first, int | float) or not isinstance(upstream, int | float):
        return None
    return max(first - upstream, 0.0) / 1000
