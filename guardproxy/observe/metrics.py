"""Prometheus metrics: one registry per app, recorded where the audit record is written.

The metric names and labels are public interface (see the README). No label ever holds
prompt text or a key: tenants, guards and upstreams are names from the config, so their
cardinality is bounded by the policy set. With `serve --workers N` the registry runs in
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the CLI).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from guardproxy import __version__

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
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
        self.guard_calls = Counter(
            "guardproxy_guard_calls_total", "Guard verdicts asked for, by how they came back.",
            ["guard", "direction", "result"], registry=registry,
        )  # fmt: skip
        self.guard_duration = Histogram(
            "guardproxy_guard_duration_seconds", "Guard call latency (calls made, not cached).",
            ["guard", "direction"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.guard_in_flight = Gauge(
            "guardproxy_guard_in_flight", "Guard calls in flight.", ["guard"],
            registry=registry, multiprocess_mode="livesum",
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
            "Shadow-policy judgements after the response: judged, dropped (load) or error.",
            ["tenant", "result"], registry=registry,
        )  # fmt: skip
        self.audit_dropped = Counter(
            "guardproxy_audit_dropped_total", "Audit records a sink did not take.",
            ["sink", "reason"], registry=registry,
        )  # fmt: skip

    def watch(self, state: Callable[[], Iterator[Metric]]) -> None:
        """Add gauges read at scrape time (breakers, cache): this process's view."""
        self.registry.register(_Live(state))

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

    def shadow_check(self, tenant: str, result: str) -> None:
        self.shadow_checks.labels(tenant, result).inc()

    def audit_lost(self, reason: str, records: int) -> None:
        self.audit_dropped.labels("database", reason).inc(records)

    def trail_lost(self, reason: str, records: int) -> None:
        self.audit_dropped.labels("jsonl", reason).inc(records)

    def guard_call(self, guard: str, direction: str, result: str, seconds: float | None) -> None:
        self.guard_calls.labels(guard, direction, result).inc()
        if seconds is not None:
            self.guard_duration.labels(guard, direction).observe(seconds)

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


class _Live:
    """A collector whose metrics are computed at scrape time."""

    def __init__(self, state: Callable[[], Iterator[Metric]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._state()


def breaker_gauges(pools: dict[str, Any]) -> Iterator[Metric]:
    """`guardproxy_guard_breaker_state{guard,replica}`: 0 closed, 1 half-open, 2 open."""
    family = GaugeMetricFamily(
        "guardproxy_guard_breaker_state",
        "Each guard replica's breaker: 0 closed, 1 half-open, 2 open (this process).",
        labels=["guard", "replica"],
    )
    for name, pool in pools.items():
        for replica in pool.replicas:
            family.add_metric([name, replica.url], BREAKER_STATES[replica.breaker.state])
    yield family


def cache_gauges(cache: Any) -> Iterator[Metric]:
    """The verdict cache's size and hits (this process)."""
    if cache is None:
        return
    size = GaugeMetricFamily("guardproxy_cache_entries", "Verdicts held in process.")
    size.add_metric([], cache.size)
    yield size
    # A counter (`guardproxy_cache_lookups_total`), so `rate()` and `increase()` read it.
    hits = CounterMetricFamily(
        "guardproxy_cache_lookups", "Verdict cache lookups since start.", labels=["result"]
    )
    counts = {"hit": cache.hits, "miss": cache.misses, "shared_hit": cache.shared_hits}
    for result, value in counts.items():
        hits.add_metric([result], value)
    yield hits


class GuardObserver:
    """What one guard reports to the metrics: each verdict asked for, and calls in flight."""

    def __init__(self, metrics: Metrics, guard: str) -> None:
        self._metrics, self._guard = metrics, guard
        self._in_flight = metrics.guard_in_flight.labels(guard)

    def called(self, direction: str, result: str, seconds: float | None) -> None:
        self._metrics.guard_call(self._guard, direction, result, seconds)

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self) -> None:
        self._in_flight.dec()
