"""What stalls a proxy's event loop, measured from inside its process: loop lag, GC pauses and
the audit trail's batch writes. Recorded only while a measurement window is open, so idle
time between a target's rounds (when other targets are loaded) is not counted.

Used by `bench.stalls`, the launcher `bench.tail` starts its proxies with.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TICK_S = 0.005  # the lag probe sleeps this long and records how late it woke
STALL_MS = 10.0
LONG_STALL_MS = 50.0
MAX_SAMPLES = 200_000  # per kind; a 3-minute run at 200 ticks/s stays far below
MAX_WINDOW_S = 600.0  # the lag probe stops by itself after this long
OFF_CPU_SHARE = 0.5  # a stall in which the loop's thread ran less than this was not its work


@dataclass(frozen=True)
class Tick:
    started: float  # perf_counter when the probe went to sleep
    lag_ms: float  # how much later than TICK_S it woke
    cpu_ms: float  # CPU time the loop's thread used meanwhile


@dataclass(frozen=True)
class Pause:
    generation: int
    started: float
    ms: float


@dataclass
class Recorder:
    """Everything measured while windows were open, summed over all of them."""

    ticks: list[Tick] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)
    flushes: list[tuple[float, int]] = field(default_factory=list)  # (ms, lines)
    open_s: float = 0.0
    cpu_s: float = 0.0
    switches: dict[str, int] = field(default_factory=lambda: {"involuntary": 0, "voluntary": 0})


class Probes:
    """Opens and closes windows; owns the lag task, the GC callback and the flush timer."""

    def __init__(self) -> None:
        self.recorded = Recorder()
        self._task: asyncio.Task[None] | None = None
        self._opened: tuple[float, float, resource.struct_rusage] | None = None
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    @property
    def is_open(self) -> bool:
        return self._opened is not None

    def open(self) -> None:
        if self._opened is None:
            self._opened = (time.perf_counter(), time.process_time(), _rusage())
            self._task = asyncio.get_running_loop().create_task(self._lag_probe())

    async def close(self) -> None:
        if self._opened is None or self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        wall, cpu, usage = self._opened
        self._opened, self._task = None, None
        self.recorded.open_s += time.perf_counter() - wall
        self.recorded.cpu_s += time.process_time() - cpu
        now = _rusage()
        self.recorded.switches["involuntary"] += now.ru_nivcsw - usage.ru_nivcsw
        self.recorded.switches["voluntary"] += now.ru_nvcsw - usage.ru_nvcsw

    async def _lag_probe(self) -> None:
        deadline = time.perf_counter() + MAX_WINDOW_S
        while time.perf_counter() < deadline and len(self.recorded.ticks) < MAX_SAMPLES:
            started, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(TICK_S)
            lag_ms = (time.perf_counter() - started - TICK_S) * 1000
            cpu_ms = (time.thread_time() - cpu) * 1000
            self.recorded.ticks.append(Tick(started, max(lag_ms, 0.0), cpu_ms))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # A collection holds the GIL: every thread of the process waits for it.
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self.is_open and len(self.recorded.pauses) < MAX_SAMPLES:
            ms = (time.perf_counter() - self._gc_started) * 1000
            self.recorded.pauses.append(Pause(info["generation"], self._gc_started, ms))

    def timed_flush(self, write: Callable[[Any, list[bytes]], None]) -> Callable[..., None]:
        """Wrap the trail's batch write (run in its worker thread) to time each batch."""

        def timed(sink: Any, lines: list[bytes]) -> None:
            started = time.perf_counter()
            try:
                write(sink, lines)
            finally:
                if self.is_open and lines and len(self.recorded.flushes) < MAX_SAMPLES:
                    ms = (time.perf_counter() - started) * 1000
                    self.recorded.flushes.append((ms, len(lines)))

        return timed

    def report(self) -> dict[str, Any]:
        recorded = self.recorded
        return {
            "window_s": round(recorded.open_s, 2),
            "cpu_s": round(recorded.cpu_s, 2),
            "context_switches": dict(recorded.switches),
            "lag": lag_summary(recorded.ticks, recorded.pauses),
            "gc": gc_summary(recorded.pauses),
            "flush": flush_summary(recorded.flushes),
            "threads": threading.active_count(),
        }


def _rusage() -> resource.struct_rusage:
    return resource.getrusage(resource.RUSAGE_SELF)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lag_summary(ticks: list[Tick], pauses: list[Pause]) -> dict[str, Any]:
    """Loop lag percentiles; for stalls over STALL_MS, how many happened while the loop's
    thread was off the CPU (preempted, or waiting for the GIL) and how much GC was inside."""
    lags = [t.lag_ms for t in ticks]
    stalls = [t for t in ticks if t.lag_ms > STALL_MS]
    stall_ms = sum(t.lag_ms for t in stalls)
    off_cpu = [t for t in stalls if t.cpu_ms < OFF_CPU_SHARE * (t.lag_ms + TICK_S * 1000)]
    gc_inside = sum(_overlap_ms(t, pauses) for t in stalls)
    return {
        "ticks": len(ticks),
        "p50_ms": round(_quantile(lags, 0.50), 2),
        "p99_ms": round(_quantile(lags, 0.99), 2),
        "max_ms": round(max(lags, default=0.0), 2),
        f"over_{STALL_MS:.0f}ms": len(stalls),
        f"over_{LONG_STALL_MS:.0f}ms": sum(t.lag_ms > LONG_STALL_MS for t in ticks),
        "stall_ms": round(stall_ms, 1),
        "stalls_off_cpu": len(off_cpu),
        "stall_ms_off_cpu": round(sum(t.lag_ms for t in off_cpu), 1),
        "gc_ms_inside_stalls": round(gc_inside, 1),
    }


def _overlap_ms(tick: Tick, pauses: list[Pause]) -> float:
    end = tick.started + TICK_S + tick.lag_ms / 1000
    inside = (
        min(end, p.started + p.ms / 1000) - max(tick.started, p.started)
        for p in pauses
        if p.started < end and p.started + p.ms / 1000 > tick.started
    )
    return sum(inside) * 1000


def gc_summary(pauses: list[Pause]) -> dict[str, dict[str, float]]:
    return {
        str(gen): _pause_stats([p.ms for p in pauses if p.generation == gen]) for gen in range(3)
    }


def _pause_stats(ms: list[float]) -> dict[str, float]:
    return {"count": len(ms), "total_ms": round(sum(ms), 1), "max_ms": round(max(ms, default=0), 2)}


def flush_summary(flushes: list[tuple[float, int]]) -> dict[str, float]:
    times, lines = [f[0] for f in flushes], [f[1] for f in flushes]
    return {
        "batches": len(flushes),
        "lines": sum(lines),
        "lines_p50": statistics.median(lines) if lines else 0,
        "lines_max": max(lines, default=0),
        "total_ms": round(sum(times), 1),
        "p99_ms": round(_quantile(times, 0.99), 2),
        "max_ms": round(max(times, default=0.0), 2),
    }
