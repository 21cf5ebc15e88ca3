"""Gauges of this process's live state: each guard replica's breaker and the verdict cache.

With one process they are read at scrape time. With `serve --workers N` a scrape reaches one
worker, and its own view would flap from scrape to scrape; each worker then samples its state
into prometheus-client's multiprocess files every SAMPLE_INTERVAL_S, and the exposition merges
them: the worst breaker state a live worker sees (`livemax`), cache entries summed over the
live workers, and lookups as a counter summed over all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from guardproxy.observe.metrics import BREAKER_STATES, Metrics

SAMPLE_INTERVAL_S = 1.0
BREAKER = (
    "guardproxy_guard_breaker_state",
    "Each guard replica's breaker: 0 closed, 1 half-open, 2 open.",
)
ENTRIES = ("guardproxy_cache_entries", "Verdicts held in process.")
# A counter (`guardproxy_cache_lookups_total`), so `rate()` and `increase()` read it.
LOOKUPS = ("guardproxy_cache_lookups", "Verdict cache lookups since start.")

Pools = Callable[[], dict[str, Any]]  # guard name -> GuardPool, read when sampled


def breaker_states(pools: dict[str, Any]) -> Iterator[tuple[tuple[str, str], int]]:
    for name, pool in pools.items():
        for replica in pool.replicas:
            yield (name, replica.url), BREAKER_STATES[replica.breaker.state]


def cache_lookups(cache: Any) -> dict[str, int]:
    return {"hit": cache.hits, "miss": cache.misses, "shared_hit": cache.shared_hits}


@contextlib.asynccontextmanager
async def watching(metrics: Metrics, pools: Pools, cache: Any) -> AsyncIterator[None]:
    """Expose the breakers and the cache for as long as the app runs."""
    if not metrics.multiprocess:
        metrics.registry.register(_ScrapeTime(pools, cache))
        yield
        return
    sampled = _Sampled(pools, cache)
    task = asyncio.get_running_loop().create_task(sampled.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _ScrapeTime:
    """One process: the gauges computed when scraped."""

    def __init__(self, pools: Pools, cache: Any) -> None:
        self._pools, self._cache = pools, cache

    def collect(self) -> Iterator[Metric]:
        breakers = GaugeMetricFamily(*BREAKER, labels=["guard", "replica"])
        for labels, state in breaker_states(self._pools()):
            breakers.add_metric(list(labels), state)
        yield breakers
        if self._cache is None:
            return
        entries = GaugeMetricFamily(*ENTRIES)
        entries.add_metric([], self._cache.size)
        yield entries
        lookups = CounterMetricFamily(*LOOKUPS, labels=["result"])
        for result, value in cache_lookups(self._cache).items():
            lookups.add_metric([result], value)
        yield lookups


class _Sampled:
    """Several workers: each writes its state into the shared files, merged at scrape."""

    def __init__(self, pools: Pools, cache: Any) -> None:
        self._pools, self._cache = pools, cache
        # registry=None: in multiprocess mode the values live in files, read by the collector.
        replica = ["guard", "replica"]
        self._breakers = Gauge(*BREAKER, replica, registry=None, multiprocess_mode="livemax")
        self._entries = Gauge(*ENTRIES, registry=None, multiprocess_mode="livesum")
        self._lookups = Counter(*LOOKUPS, ["result"], registry=None)
        self._counted = {"hit": 0, "miss": 0, "shared_hit": 0}

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def sample(self) -> None:
        for labels, state in breaker_states(self._pools()):
            self._breakers.labels(*labels).set(state)
        if self._cache is None:
            return
        self._entries.set(self._cache.size)
        for result, value in cache_lookups(self._cache).items():
            self._lookups.labels(result).inc(value - self._counted[result])
            self._counted[result] = value
