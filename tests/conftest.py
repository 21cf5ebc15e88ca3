"""Shared fixtures: fake guard and upstream servers, and a proxy wired to them on real sockets."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from guardproxy.audit.sinks import MemoryAuditSink
from guardproxy.config import load_settings
from guardproxy.media.fetch import ImageFetcher
from guardproxy.policy.loader import load_policies
from guardproxy.server.app import create_app
from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

REPO = Path(__file__).resolve().parent.parent
TENANT_KEY = "sk-tenant-test-key"
UPSTREAM_KEY = "sk-upstream-secret"
OPS_KEY = "sk-ops-test-key"  # the admin key: `/readyz` says what is down only to it
GUARD_MODEL = "nvidia/Nemotron-3.5-Content-Safety"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Proxy:
    """A running proxy plus the fakes behind it, and what they saw."""

    url: str
    guard: FakeGuardState
    upstream: FakeUpstreamState
    audit: MemoryAuditSink
    key: str = TENANT_KEY
    policies_dir: Path = Path()
    clients: list[openai.OpenAI | anthropic.Anthropic] = field(default_factory=list)
    guard_url: str = ""
    upstream_url: str = ""

    def client(self, key: str | None = None) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def anthropic(self, key: str | None = None) -> anthropic.Anthropic:
        """The official Anthropic client, with the proxy key as its `x-api-key`."""
        client = anthropic.Anthropic(base_url=self.url, api_key=key or self.key, max_retries=0)
        self.clients.append(client)
        return client

    def record(self, number: int) -> dict[str, Any]:
        """The `number`-th audit record (from 1), waiting for it: a stream's record is
        written after its last byte reaches the client."""
        deadline = time.monotonic() + 10
        while len(self.audit.records) < number:
            assert time.monotonic() < deadline, f"audit record {number} was never written"
            time.sleep(0.01)
        return self.audit.records[number - 1]

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.key}"})

    def ops(self) -> httpx.Client:
        """A client with the admin key, as an operator reads `/readyz`."""
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {OPS_KEY}"})


ProxyFactory = Callable[..., Proxy]


def write_config(
    folder: Path,
    guard_url: str,
    upstream_url: str,
    protocol: str,
    tenant: dict[str, Any],
    guard_settings: dict[str, Any] | None = None,
    via_litellm: bool = False,
    config_extra: dict[str, Any] | None = None,
) -> Path:
    guard = {
        "url": f"{guard_url}/v1",
        "model": GUARD_MODEL,
        "protocol": protocol,
        "timeout_s": 5,
        "retries": 1,
    }
    upstream: dict[str, Any] = {"url": f"{upstream_url}/v1", "api_key": UPSTREAM_KEY}
    if via_litellm:  # litellm, pointed at the fake as an OpenAI provider
        params = {"api_base": f"{upstream_url}/v1"}
        upstream = {"litellm_model": "openai/fake-llm", "litellm_params": params}
        upstream["api_key"] = UPSTREAM_KEY
    config = {
        "guards": {"nemotron": guard | (guard_settings or {})},
        "upstreams": {"app": upstream},
        "policies": "policies",
        "audit": {"path": "-"},
        "admin": {"keys": [OPS_KEY]},
        **(config_extra or {}),
    }
    policy = {
        "tenant": "acme",
        "keys": ["${TEST_TENANT_KEY}"],
        "guard": "nemotron",
        "upstream": "app",
        **tenant,
    }
    (folder / "policies").mkdir(exist_ok=True)
    (folder / "policies" / "acme.yaml").write_text(yaml.safe_dump(policy))
    regions = folder / "policies" / "regions"
    if not regions.exists():
        shutil.copytree(REPO / "policies" / "regions", regions)
    path = folder / "guardproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """Start fakes and a proxy: `start_proxy(protocol=..., upstream_url=..., **tenant_keys)`."""
    with ExitStack() as stack:

        def start(
            protocol: str = "nemotron-content-safety",
            upstream_url: str = "",
            reload: bool = False,
            fetcher: ImageFetcher | None = None,
            guard_settings: dict[str, Any] | None = None,
            via_litellm: bool = False,
            config_extra: dict[str, Any] | None = None,
            tracer_provider: Any = None,
            **tenant: Any,
        ) -> Proxy:
            guard, upstream = FakeGuardState(protocol=protocol), FakeUpstreamState()
            guard_url = stack.enter_context(run_in_thread(create_fake_guard(guard)))
            if not upstream_url:
                upstream_url = stack.enter_context(run_in_thread(create_fake_upstream(upstream)))
            path = write_config(
                tmp_path,
                guard_url,
                upstream_url,
                protocol,
                tenant,
                guard_settings,
                via_litellm,
                config_extra,
            )
            env = {"TEST_TENANT_KEY": TENANT_KEY}
            settings = load_settings(path, env)
            audit = MemoryAuditSink()
            policies = load_policies(settings, env)
            loader = (lambda: load_policies(settings, env)) if reload else None
            app = create_app(
                settings,
                policies,
                audit=audit,
                reload=loader,
                fetcher=fetcher,
                tracer_provider=tracer_provider,
            )
            url = stack.enter_context(run_in_thread(app))
            proxy = Proxy(url, guard, upstream, audit, policies_dir=tmp_path / "policies")
            proxy.guard_url = f"{guard_url}/v1"
            proxy.upstream_url = f"{upstream_url}/v1"
            stack.callback(close_all, proxy.clients)
            return proxy

        yield start


def write_embedded_config(folder: Path, guard: dict[str, Any], upstream_url: str) -> Path:
    """guardproxy.yaml with one guard, `embedded`, and one tenant on it."""
    config = {
        "guards": {"embedded": guard},
        "upstreams": {"app": {"url": f"{upstream_url}/v1"}},
        "policies": "policies",
        "audit": {"path": "-"},
    }
    config["admin"] = {"keys": [OPS_KEY]}
    tenant = {"tenant": "acme", "keys": [TENANT_KEY], "guard": "embedded", "upstream": "app"}
    (folder / "policies").mkdir()
    (folder / "policies" / "acme.yaml").write_text(yaml.safe_dump(tenant))
    (folder / "guardproxy.yaml").write_text(yaml.safe_dump(config))
    return folder / "guardproxy.yaml"


def close_all(clients: Sequence[openai.OpenAI | anthropic.Anthropic]) -> None:
    for client in clients:
        client.close()


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy()
