"""The verdict cache: in-process LRU with expiry, and the Redis tier replicas share."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fakeredis import TcpFakeServer

from guardproxy.config import CacheSettings
from guardproxy.core.verdict import Safety, Verdict
from guardproxy.guards.cache import RedisTier, VerdictCache, verdict_from_json, verdict_to_json
from tests.conftest import ProxyFactory

UNSAFE = Verdict(Safety.SAFE, Safety.UNSAFE, ("Violence",), reasoning="a trace", mode="taxonomy")
SEPARATE = Verdict(Safety.UNSAFE, None, ("Violence",), calls=(UNSAFE, Verdict(Safety.SAFE)))


def test_a_verdict_survives_its_round_trip_through_json() -> None:
    for verdict in (UNSAFE, SEPARATE, Verdict(None, raw="x", refusal=True)):
        assert verdict_from_json(verdict_to_json(verdict)) == verdict


class BrokenTier:
    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("redis is down")

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        raise ConnectionError("redis is down")

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
async def test_replicas_share_verdicts_through_redis() -> None:
    server = fakeredis.FakeServer()
    settings = CacheSettings(redis="redis://shared")

    def replica() -> VerdictCache:
        return VerdictCache(settings, RedisTier(fakeredis.FakeAsyncRedis(server=server)))

    first, second = replica(), replica()
    key = VerdictCache.key("http://guard/v1", {"messages": ["x"]})
    await first.put(key, UNSAFE)
    shared = await second.get(key)
    assert shared is not None
    assert shared.cached
    assert (shared.response, shared.categories) == (Safety.UNSAFE, ("Violence",))
    assert second.shared_hits == 1
    other = VerdictCache.key("http://guard/v1", {"messages": ["y"]})
    assert await second.get(other) is None


@pytest.mark.anyio
async def test_a_redis_outage_is_a_miss_never_an_error() -> None:
    cache = VerdictCache(CacheSettings(redis="redis://down"), BrokenTier())
    key = VerdictCache.key("http://guard/v1", {"messages": ["x"]})
    assert await cache.get(key) is None
    await cache.put(key, UNSAFE)  # still cached in-process
    hit = await cache.get(key)
    assert hit is not None
    assert hit.cached
    assert cache.shared_errors == 2


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis-protocol server on a real socket (fakeredis's TCP server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_second_replica_serves_the_first_ones_verdicts(
    start_proxy: ProxyFactory, redis_url: str
) -> None:
    extra: dict[str, Any] = {"cache": {"redis": redis_url, "redis_timeout_s": 2}}
    first = start_proxy(config_extra=extra)
    second = start_proxy(config_extra=extra, guard_settings={"url": first.guard_url})
    messages: Any = [{"role": "user", "content": "Hello there"}]
    first.client().chat.completions.create(model="m", messages=messages)
    second.client().chat.completions.create(model="m", messages=messages)
    assert len(first.guard.requests) == 2  # input and output, judged once for both replicas
    assert second.guard.requests == []
    record = second.audit.records[-1]
    assert (record["input"]["cached"], record["output"]["cached"]) == (1, 1)
