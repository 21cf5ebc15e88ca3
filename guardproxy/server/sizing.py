"""How many worker processes this pod can hold (`serve --workers auto`).

`os.cpu_count()` counts the node's CPUs: on a 32-core node a pod limited to 2 CPUs and 1 GiB
would start 32 workers and be OOM-killed. So the count is the smallest of: the CPUs this
process may run on (its affinity, which `taskset` sets), the cgroup's CPU quota (v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, rounded up), and the cgroup's memory
limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) over what one worker needs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
# One worker's resident memory: 115 MiB measured idle (`ps -o rss` of each `serve
# --workers 2` process, the test config), plus room for its traffic's buffers.
WORKER_BYTES = 160 * 2**20
UNLIMITED = 2**62  # what cgroup v1 reports for "no limit" is near this


@dataclass(frozen=True)
class Sizing:
    workers: int
    cpus: int  # the process's affinity
    cpu_quota: float | None  # CPUs the cgroup allows, None: no quota
    memory_bytes: int | None  # the cgroup's memory limit, None: no limit

    def describe(self) -> str:
        quota = "none" if self.cpu_quota is None else f"{self.cpu_quota:g}"
        memory = "none" if self.memory_bytes is None else f"{self.memory_bytes / 2**20:.0f} MiB"
        return (
            f"{self.workers} worker(s): {self.cpus} CPU(s) in affinity, CPU quota {quota}, "
            f"memory limit {memory} at {WORKER_BYTES // 2**20} MiB per worker"
        )


def auto_workers(root: Path = CGROUP) -> Sizing:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    quota, memory = cpu_quota(root), memory_limit(root)
    limits = [cpus]
    if quota is not None:
        limits.append(max(math.ceil(quota), 1))
    if memory is not None:
        limits.append(max(memory // WORKER_BYTES, 1))
    return Sizing(min(limits), cpus, quota, memory)


def cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup allows (`quota / period`), or None without a quota."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" else int(quota) / int(period or "100000")
    quota_v1, period_v1 = (
        _read(root / "cpu" / "cpu.cfs_quota_us"),
        _read(root / "cpu" / "cpu.cfs_period_us"),
    )
    if quota_v1 is None or period_v1 is None or int(quota_v1) <= 0:
        return None
    return int(quota_v1) / int(period_v1)


def memory_limit(root: Path = CGROUP) -> int | None:
    """The cgroup's memory limit in bytes, or None without one."""
    value = _read(root / "memory.max") or _read(root / "memory" / "memory.limit_in_bytes")
    if value is None or value == "max" or not value.isdigit() or int(value) >= UNLIMITED:
        return None
    return int(value)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
