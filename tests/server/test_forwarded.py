"""The client address the audit record names: the peer, or what trusted proxies forwarded."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import IPvAnyNetwork, TypeAdapter

from bench.common import children, free_port
from guardproxy.server.forwarded import client_address
from tests.conftest import OPS_KEY, TENANT_KEY, write_config
from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

NETWORKS = TypeAdapter(tuple[IPvAnyNetwork, ...])
LB = NETWORKS.validate_python(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("203.0.113.7", ["198.51.100.1"], (), "203.0.113.7"),  # trust none by default
        ("203.0.113.7", ["198.51.100.1"], LB, "203.0.113.7"),  # an untrusted peer's header
        ("10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], LB, "198.51.100.1"),  # a chain of two
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1"], LB, "198.51.100.1"),  # a spoofed left part
        ("10.0.0.2", ["1.2.3.4", "198.51.100.1"], LB, "198.51.100.1"),  # two header lines
        ("10.0.0.2", ["10.0.0.5, 10.0.0.9"], LB, "10.0.0.5"),  # all inside: the first
        ("10.0.0.2", [], LB, "10.0.0.2"),  # no header: the proxy itself
        ("10.0.0.2", ["unknown"], LB, "unknown"),  # not an address: nobody vouches for it
        ("::ffff:10.0.0.2", ["198.51.100.1"], LB, "198.51.100.1"),  # a dual-stack socket
        ("2001:db8::1", ["2001:db8::5, 2a00::1"], LB, "2a00::1"),
        (None, ["198.51.100.1"], LB, None),  # no socket (an in-process test client)
    ],
)
def test_the_nearest_untrusted_address_is_the_client(
    peer: str | None, forwarded: list[str], trusted: tuple[IPvAnyNetwork, ...], client: str | None
) -> None:
    assert client_address(peer, forwarded, trusted) == client
    # The edge has applied it once; a handler applying it again to that answer changes nothing.
    assert client_address(client, forwarded, trusted) == client


PROTOCOL = "nemotron-content-safety"
FORGED = "198.51.100.9"
FORWARDED = {"x-forwarded-for": FORGED, "x-forwarded-proto": "https"}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


@contextmanager
def served(folder: Path, argv: list[str], env: Mapping[str, str]) -> Iterator[str]:
    """`guardproxy ARGV --port P` as a process of its own, until the block ends (then its
    files are flushed and closed)."""
    url = f"http://127.0.0.1:{(port := free_port())}"
    command = [sys.executable, "-m", "guardproxy", *argv, "--port", str(port)]
    environment = {"TEST_TENANT_KEY": TENANT_KEY, "PATH": "/usr/bin:/bin", **env}
    with children() as group:
        group.launch(command, folder / "serve.log", f"{url}/healthz", env=environment)
        yield url


@pytest.mark.parametrize(("trusted", "recorded"), [([], "127.0.0.1"), (["127.0.0.1/32"], FORGED)])
def test_serve_records_a_forwarded_client_only_behind_a_trusted_proxy(
    tmp_path: Path, trusted: list[str], recorded: str
) -> None:
    """`guardproxy serve` as shipped: uvicorn's own variable trusting everyone changes nothing;
    `trusted_proxies` alone decides the audit record's client and the scheme a page sees."""
    guard, upstream = FakeGuardState(), FakeUpstreamState()
    with (
        run_in_thread(create_fake_guard(guard)) as guard_url,
        run_in_thread(create_fake_upstream(upstream)) as upstream_url,
    ):
        extra = {"trusted_proxies": trusted, "audit": {"path": str(tmp_path / "audit.jsonl")}}
        config = write_config(tmp_path, guard_url, upstream_url, PROTOCOL, {}, config_extra=extra)
        argv = ["serve", "--config", str(config)]
        with served(tmp_path, argv, {"FORWARDED_ALLOW_IPS": "*"}) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key=TENANT_KEY, max_retries=0)
            client.chat.completions.create(model="m", messages=HELLO, extra_headers=FORWARDED)
            client.close()
            login = httpx.post(f"{url}/admin/login", data={"key": OPS_KEY}, headers=FORWARDED)
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["client_address"] == recorded
    assert ("; secure" in login.headers["set-cookie"].lower()) == bool(trusted)
