"""`guardproxy serve --workers N`: N processes behind one port, one audit trail without
interleaved or lost lines, one guard concurrency cap split between them."""

from __future__ import annotations

import json
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.common import children, free_port
from guardproxy.cli import main
from guardproxy.config import load_settings
from guardproxy.errors import ConfigError
from tests.conftest import TENANT_KEY, write_config
from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

REQUESTS = 60


def test_two_workers_serve_one_port_and_write_one_clean_trail(tmp_path: Path) -> None:
    guard, upstream = FakeGuardState(), FakeUpstreamState()
    with (
        run_in_thread(create_fake_guard(guard)) as guard_url,
        run_in_thread(create_fake_upstream(upstream)) as upstream_url,
    ):
        config = write_config(tmp_path, guard_url, upstream_url, "nemotron-content-safety", {})
        audit = tmp_path / "audit.jsonl"
        document = yaml.safe_load(config.read_text())
        document["audit"] = {"path": str(audit)}
        config.write_text(yaml.safe_dump(document))
        port = free_port()
        argv = [sys.executable, "-m", "guardproxy", "serve", "--config", str(config)]
        argv += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
        url = f"http://127.0.0.1:{port}"
        with children() as group:
            env = {"TEST_TENANT_KEY": TENANT_KEY, "PATH": "/usr/bin:/bin"}
            group.launch(argv, tmp_path / "serve.log", f"{url}/healthz", env=env)
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda n: ask(url, n), range(REQUESTS)))
            exposition = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
            # Each worker samples its cache and breakers into the shared files: every scrape,
            # whichever worker answers it, shows the sum over both, and one series per replica.
            lookups = wait_for_lookups(url, 2 * REQUESTS)
    assert statuses == [200] * REQUESTS
    assert lookups["breakers"] == 1  # one replica, one series: no per-worker copies
    counted = sum(  # both workers' counts, merged by the multiprocess collector
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "guardproxy_requests_total"
    )
    assert counted == REQUESTS
    lines = audit.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # each line whole: nothing interleaved
    assert len(records) == REQUESTS
    assert len({r["request_id"] for r in records}) == REQUESTS
    assert all(r["action"] == "allow" for r in records)


def wait_for_lookups(url: str, expected: int) -> dict[str, float]:
    """Scrape until the cache lookups of both workers add up to `expected` (each samples its
    own every second); then the breaker series found, from the same scrape."""
    deadline = time.monotonic() + 30
    while True:
        exposition = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
        samples = [s for f in text_string_to_metric_families(exposition) for s in f.samples]
        looked = sum(s.value for s in samples if s.name == "guardproxy_cache_lookups_total")
        breakers = [s for s in samples if s.name == "guardproxy_guard_breaker_state"]
        if looked == expected:
            return {"lookups": looked, "breakers": len(breakers)}
        assert looked < expected, f"{looked} lookups"
        assert time.monotonic() < deadline, f"{looked} lookups"
        time.sleep(0.2)


def ask(url: str, number: int) -> int:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"Hi {number}"}]}
    headers = {"authorization": f"Bearer {TENANT_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as client:
        return client.post("/v1/chat/completions", json=body).status_code


def test_a_guard_cap_is_split_between_the_workers(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "http://g", "http://u", "nemotron-content-safety", {}, {"max_concurrency": 9}
    )
    settings = load_settings(config, {"TEST_TENANT_KEY": TENANT_KEY})
    assert settings.per_worker(2).guards["nemotron"].max_concurrency == 4
    assert settings.per_worker(9).guards["nemotron"].max_concurrency == 1
    with pytest.raises(ConfigError, match="max_concurrency 9 cannot be split over 20 workers"):
        settings.per_worker(20)  # one call each would be 20 in flight: never past the cap


def test_workers_refuse_a_shared_embedded_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    engine = {"engine": "vllm", "url": ""}
    config = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {}, engine)
    code = main(["serve", "--config", str(config), "--workers", "2"])
    assert code == 1
    assert "cannot share the embedded engine" in capsys.readouterr().err


def test_workers_auto_is_sized_once_the_config_is_read() -> None:
    from guardproxy.cli import _workers

    assert _workers("auto") == "auto"  # server/sizing.py decides (tests/server/test_sizing.py)
    assert _workers("3") == 3


def test_sigterm_drains_in_flight_streams_and_refuses_new_connections(tmp_path: Path) -> None:
    guard, upstream = FakeGuardState(), FakeUpstreamState()
    upstream.reply = " ".join(f"word{i}" for i in range(40))
    upstream.token_interval_s = 0.05  # a stream of about 2 s
    with (
        run_in_thread(create_fake_guard(guard)) as guard_url,
        run_in_thread(create_fake_upstream(upstream)) as upstream_url,
    ):
        config = write_config(tmp_path, guard_url, upstream_url, "nemotron-content-safety", {})
        port = free_port()
        argv = [sys.executable, "-m", "guardproxy", "serve", "--config", str(config)]
        argv += ["--port", str(port), "--graceful-shutdown-s", "30", "--log-level", "warning"]
        url = f"http://127.0.0.1:{port}"
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
        headers = {"authorization": f"Bearer {TENANT_KEY}"}
        with children() as group:
            env = {"TEST_TENANT_KEY": TENANT_KEY, "PATH": "/usr/bin:/bin"}
            server = group.launch(argv, tmp_path / "serve.log", f"{url}/healthz", env=env)
            with (
                httpx.Client(base_url=url, headers=headers, timeout=30, trust_env=False) as http,
                http.stream("POST", "/v1/chat/completions", json=body) as stream,
            ):
                lines = stream.iter_lines()
                first = next(line for line in lines if line.startswith("data: {"))
                server.terminate()  # SIGTERM while the answer is still streaming
                rest = list(lines)
            # uvicorn re-raises the signal once it has drained, as a signalled process should
            assert server.wait(timeout=30) == -signal.SIGTERM
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/healthz", timeout=2, trust_env=False)
    assert first
    assert [line for line in rest if line][-1] == "data: [DONE]"  # the stream finished
    assert upstream.streams_completed == 1


def test_workers_refuse_a_metrics_port_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    config = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    document = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**document, "metrics": {"port": 9464}}))
    assert main(["serve", "--config", str(config), "--workers", "2"]) == 1
    assert "metrics.port needs --workers 1" in capsys.readouterr().err


def test_the_metrics_folder_the_workers_shared_is_removed_on_a_clean_shutdown(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    port = free_port()
    argv = [sys.executable, "-m", "guardproxy", "serve", "--config", str(config)]
    argv += ["--port", str(port), "--workers", "2", "--log-level", "warning"]
    env = {"TEST_TENANT_KEY": TENANT_KEY, "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    with children() as group:
        server = group.launch(argv, tmp_path / "serve.log", f"http://127.0.0.1:{port}/healthz", env)
        assert list(tmp_path.glob("guardproxy-metrics-*"))  # made for these workers
        server.terminate()
        assert server.wait(timeout=30) == 0
    assert not list(tmp_path.glob("guardproxy-metrics-*"))
