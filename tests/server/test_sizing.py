"""`serve --workers auto` sizes the pod: its CPU affinity, its cgroup's CPU quota (v2 and v1)
and its memory limit over a worker's measured size, and never more workers than a guard's
`max_concurrency` can be split between."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.common import children
from guardproxy.server.sizing import WORKER_BYTES, auto_workers
from tests.conftest import TENANT_KEY, write_config
from tests.fakes.server import free_port


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    return tmp_path


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("files", "workers"),
    [
        ({}, 8),  # no cgroup limits: the affinity
        ({"cpu.max": "max 100000", "memory.max": "max"}, 8),
        ({"cpu.max": "200000 100000", "memory.max": str(4 * 2**30)}, 2),  # v2: 2 CPUs
        ({"cpu.max": "150000 100000"}, 2),  # 1.5 CPUs, rounded up
        ({"memory.max": str(2 * WORKER_BYTES + 1)}, 2),  # v2: memory for two workers
        ({"memory.max": str(2**30)}, 6),  # 1 GiB: 6 workers of 160 MiB, not 32
        ({"memory.max": str(WORKER_BYTES // 2)}, 1),  # never fewer than one
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 8),  # v1: none
        ({"memory/memory.limit_in_bytes": "9223372036854771712"}, 8),  # v1: unlimited
        ({"memory/memory.limit_in_bytes": str(3 * WORKER_BYTES)}, 3),
    ],
)
def test_workers_auto_is_the_smallest_of_affinity_cpu_quota_and_memory(
    tmp_path: Path, files: dict[str, str], workers: int
) -> None:
    chosen = auto_workers(cgroup(tmp_path, files))
    assert chosen.workers == workers
    assert f"{chosen.workers} worker(s)" in chosen.describe()


def test_taskset_to_one_cpu_starts_one_worker(tmp_path: Path) -> None:
    """The issue's own check: `taskset -c 0 guardproxy serve --workers auto`."""
    config = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    port = free_port()
    argv = ["taskset", "-c", "0", sys.executable, "-m", "guardproxy", "serve"]
    argv += ["--config", str(config), "--port", str(port), "--workers", "auto"]
    log = tmp_path / "serve.log"
    with children() as group:
        env = {"TEST_TENANT_KEY": TENANT_KEY, "PATH": "/usr/bin:/bin"}
        group.launch(argv, log, f"http://127.0.0.1:{port}/healthz", env=env)
    assert "--workers auto: " in log.read_text()
    assert "1 CPU(s) in affinity" in log.read_text()
    assert "starting 1" in log.read_text()
