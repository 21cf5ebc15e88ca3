"""The embedded guard on a real vLLM: `engine: vllm` in guardproxy.yaml, nothing else to start.
Readiness waits for the engine, a killed engine is restarted while requests fail closed, and
shutdown stops it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from bench.engine_start import group_rss_mb
from guardproxy.audit.sinks import MemoryAuditSink
from guardproxy.config import load_settings
from guardproxy.engine.vllm import group_alive
from guardproxy.policy.loader import load_policies
from guardproxy.server.app import create_app
from guardproxy.server.runtime import app_state
from tests.conftest import OPS_KEY, TENANT_KEY, write_embedded_config
from tests.engine.conftest import ENGINE_ENV, engine_env, engine_python, forced
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

OPS = {"authorization": f"Bearer {OPS_KEY}"}

READY_S = 300.0
HI: list[Any] = [{"role": "user", "content": "hi"}]
HI_AGAIN: list[Any] = [{"role": "user", "content": "hi again"}]
HI_ONCE_MORE: list[Any] = [{"role": "user", "content": "hi once more"}]


def wait_for(condition: Callable[[], bool], timeout_s: float = READY_S) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, "condition not reached"
        time.sleep(0.25)
    return time.monotonic() - started


def _config(folder: Path, model: Path, upstream_url: str) -> Path:
    cache = {
        k: v for k, v in engine_env().items() if k in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")
    }
    guard = {
        "engine": "vllm",
        "model": str(model),
        "engine_python": engine_python(),
        "engine_args": {"max_model_len": 2048, "dtype": "float32", "enforce_eager": True},
        "engine_env": {**ENGINE_ENV, **cache},
        "params": forced("User Safety: safe\nResponse Safety: safe"),
        "timeout_s": 30,
        "retries": 0,
    }
    return write_embedded_config(folder, guard, upstream_url)


def test_an_embedded_vllm_guard_starts_serves_restarts_and_stops(
    tiny_model: Path, tmp_path: Path, report: dict[str, Any]
) -> None:
    upstream = FakeUpstreamState()
    with run_in_thread(create_fake_upstream(upstream)) as upstream_url:
        settings = load_settings(_config(tmp_path, tiny_model, upstream_url), {})
        app = create_app(settings, load_policies(settings, {}), audit=MemoryAuditSink())
        with run_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
            start_s = wait_for(lambda: http.get("/readyz").status_code == 200)
            engine = app_state(app).engines["embedded"]
            pid = engine.status.pid
            assert pid is not None
            report["embedded_guard"] = {
                "start_s": round(start_s, 1),
                "rss_mb": round(group_rss_mb(pid)),
            }
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=TENANT_KEY, max_retries=0)
            with client:
                answer = client.chat.completions.create(model="m", messages=HI)
                assert answer.choices[0].message.content == upstream.reply
                os.killpg(pid, signal.SIGKILL)
                wait_for(lambda: engine.status.state != "ready", 30)
                with pytest.raises(openai.InternalServerError) as caught:
                    # New text: a cached verdict would be served without the guard.
                    client.chat.completions.create(model="m", messages=HI_AGAIN)
                assert caught.value.status_code == 503
                restart_s = wait_for(lambda: http.get("/readyz").status_code == 200)
                report["embedded_guard"]["restart_s"] = round(restart_s, 1)
                again = client.chat.completions.create(model="m", messages=HI_ONCE_MORE)
                assert again.choices[0].message.content == upstream.reply
            assert http.get("/readyz", headers=OPS).json()["engines"]["embedded"]["restarts"] == 1
            last = engine.status.pid
    assert last is not None
    wait_for(lambda: not group_alive(last), 30)
