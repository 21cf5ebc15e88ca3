"""The embedded guard engine's supervisor, driven with a stand-in for vLLM's OpenAI server:
readiness, log relay, restart after a crash, clean shutdown, and the proxy end to end."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from guardproxy.audit.sinks import MemoryAuditSink
from guardproxy.config import GuardSettings, Settings, UpstreamSettings, load_settings
from guardproxy.engine import vllm
from guardproxy.engine.vllm import VllmEngine, build_engines, engine_url, free_port, running
from guardproxy.policy.loader import load_policies
from guardproxy.server.app import create_app
from guardproxy.server.runtime import app_state
from tests.conftest import OPS_KEY, REPO, TENANT_KEY, write_embedded_config
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

OPS = {"authorization": f"Bearer {OPS_KEY}"}

pytestmark = pytest.mark.anyio
WAIT_S = 30.0  # generous: each start imports starlette and uvicorn afresh
FAKE_SERVER = "tests.fakes.vllm_server"


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm, "SERVER_MODULE", FAKE_SERVER)
    monkeypatch.setattr(vllm, "BACKOFF_S", (0.1,))
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _settings(port: int, **extra: Any) -> GuardSettings:
    values: dict[str, Any] = {"engine_python": sys.executable, **extra}
    return GuardSettings(url=engine_url(port), model="tiny", engine="vllm", **values)


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def test_engine_arguments_become_vllm_flags() -> None:
    args = {
        "max_model_len": 4096,
        "dtype": "bfloat16",
        "trust_remote_code": True,
        "enforce_eager": False,
        "limit_mm_per_prompt": {"image": 1},
    }
    argv = vllm.server_argv(_settings(8123, engine_args=args, engine_python="/v/bin/python"), 8123)
    assert argv == [
        "/v/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "tiny", "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", "8123",
        "--max-model-len", "4096", "--dtype", "bfloat16", "--trust-remote-code",
        "--limit-mm-per-prompt", '{"image": 1}',
    ]  # fmt: skip


def test_an_embedded_classifier_is_reached_at_the_root_beside_the_chat_guard() -> None:
    """vLLM serves its pooling `/classify` at the root, the chat routes under `/v1`: one proxy
    can embed both, each on a loopback port of its own."""
    chat = {"engine": "vllm", "model": "tiny"}
    classifier = {
        "engine": "vllm", "model": "tiny-classifier", "protocol": "vllm-classify",
        "labels": ["BENIGN", "INJECTION"], "unsafe_labels": ["INJECTION"],
        "engine_args": {"runner": "pooling"},
    }  # fmt: skip
    guards = {"chat": GuardSettings(**chat), "injection": GuardSettings(**classifier)}
    upstreams = {"u": UpstreamSettings(url="http://u/v1")}
    settings = vllm.resolve_engine_urls(Settings(guards=guards, upstreams=upstreams))
    chat_url, classifier_url = (settings.guards[name].url for name in ("chat", "injection"))
    assert str(chat_url).endswith("/v1")
    assert not str(classifier_url).endswith("/v1")
    assert chat_url != f"{classifier_url}/v1"  # two engines, two ports
    engines = build_engines(settings.guards)
    assert "--runner" in engines["injection"].argv


def test_a_guard_needs_a_url_or_an_engine() -> None:
    with pytest.raises(ValueError, match="set 'url', or 'engine: vllm'"):
        GuardSettings(model="m")


async def test_engine_becomes_ready_relays_its_log_and_restarts_after_a_crash(
    fake_vllm: None, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    engines = build_engines({"g": _settings(port)})
    engine = engines["g"]
    with caplog.at_level(logging.INFO, logger="guardproxy.engine.vllm"):
        async with running(engines):
            await _until(lambda: engine.status.state == "ready")
            first = engine.status.pid
            assert first is not None
            os.killpg(first, signal.SIGKILL)
            await _until(lambda: engine.status.restarts == 1 and engine.status.state == "ready")
            assert engine.status.pid != first
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200
    assert engine.status.state == "stopped"
    assert any("[engine g] INFO fake vLLM serving tiny" in r.getMessage() for r in caplog.records)
    assert engine.status.view()["last_exit"] == -signal.SIGKILL


async def test_shutdown_stops_the_whole_process_group(fake_vllm: None) -> None:
    engine = VllmEngine("g", vllm.server_argv(_settings(free_port()), free_port()), "http://x")
    async with running({"g": engine}):
        await _until(lambda: engine.status.pid is not None)
        pid = engine.status.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def _write_config(folder: Path, upstream_url: str) -> Path:
    guard = {
        "model": "tiny",
        "engine": "vllm",
        "engine_python": sys.executable,
        "engine_args": {"max_model_len": 2048},
        "timeout_s": 5,
        "retries": 0,
    }
    return write_embedded_config(folder, guard, upstream_url)


def test_the_proxy_serves_with_an_embedded_guard_and_fails_over_while_it_is_down(
    fake_vllm: None, tmp_path: Path
) -> None:
    upstream = FakeUpstreamState()
    with run_in_thread(create_fake_upstream(upstream)) as upstream_url:
        settings = load_settings(_write_config(tmp_path, upstream_url), {})
        app = create_app(settings, load_policies(settings, {}), audit=MemoryAuditSink())
        with run_in_thread(app) as url, httpx.Client(base_url=url) as http:
            asyncio.run(_ready(http))
            engine = app_state(app).engines["embedded"]
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=TENANT_KEY, max_retries=0)
            with client:
                answer = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
                assert answer.choices[0].message.content == upstream.reply
                assert engine.status.pid is not None
                os.killpg(engine.status.pid, signal.SIGKILL)
                asyncio.run(_until(lambda: engine.status.state != "ready"))
                with pytest.raises(openai.InternalServerError) as caught:
                    # New text: a cached verdict would be served without the guard.
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "hi again"}]
                    )
                assert caught.value.status_code == 503  # on_guard_error: block
                asyncio.run(_ready(http))
            assert http.get("/readyz", headers=OPS).json()["engines"]["embedded"]["restarts"] == 1


async def _ready(http: httpx.Client) -> None:
    await _until(lambda: http.get("/readyz").status_code == 200)
