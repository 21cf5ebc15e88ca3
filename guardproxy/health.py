"""Readiness: are the policies loaded, and can the guards and upstreams be reached?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import httpx

from guardproxy.config import GuardSettings

if TYPE_CHECKING:
    from guardproxy.upstreams.base import Upstream

PROBE_TIMEOUT_S = 2.0
# A load balancer probes every few seconds per proxy; the guards and upstreams behind it
# should not see each probe (and a flood of `/readyz` must not become a flood of them).
PROBE_CACHE_S = 1.0

T = TypeVar("T")


class SharedProbe(Generic[T]):
    """One probe at a time, its result kept for `ttl_s`: concurrent callers await the same
    one, and a caller that leaves does not cancel it for the others."""

    def __init__(
        self, ttl_s: float = PROBE_CACHE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._result: tuple[float, T] | None = None
        self._running: asyncio.Future[T] | None = None

    async def get(self, probe: Callable[[], Awaitable[T]]) -> T:
        if self._result is not None and self.clock() - self._result[0] < self.ttl_s:
            return self._result[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._run(probe))
        return await asyncio.shield(self._running)

    async def _run(self, probe: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await probe()
            self._result = (self.clock(), result)
            return result
        finally:
            self._running = None


async def probe_models(
    client: httpx.AsyncClient, base_url: str, api_key: str, healthy_below: int
) -> str | None:
    """None when an OpenAI-compatible server answers `GET /models` with a status under
    `healthy_below`, else why not."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await client.get(
            f"{base_url.rstrip('/')}/models", headers=headers, timeout=PROBE_TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    return None if response.status_code < healthy_below else f"HTTP {response.status_code}"


async def probe_guard(client: httpx.AsyncClient, settings: GuardSettings) -> str | None:
    """A pool is ready while one replica answers. Our own guard must accept our key: a 401 is
    a misconfiguration, so only 2xx is ready."""
    results = await asyncio.gather(
        *(probe_models(client, url, settings.api_key, 300) for url in settings.urls)
    )
    if any(result is None for result in results):
        return None
    return results[0] if len(results) == 1 else f"every replica is down ({results[0]}, …)"


async def probe_all(
    client: httpx.AsyncClient, guards: dict[str, GuardSettings], upstreams: dict[str, Upstream]
) -> tuple[dict[str, str], dict[str, str]]:
    guard_names, upstream_names = list(guards), list(upstreams)
    results = await asyncio.gather(
        *(probe_guard(client, guards[name]) for name in guard_names),
        *(upstreams[name].probe() for name in upstream_names),
    )
    states = [result or "ok" for result in results]
    return (
        dict(zip(guard_names, states[: len(guard_names)], strict=True)),
        dict(zip(upstream_names, states[len(guard_names) :], strict=True)),
    )
