"""Readiness: are the policies loaded, and can the guards and upstreams be reached?"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from guardproxy.config import GuardSettings

if TYPE_CHECKING:
    from guardproxy.upstreams.base import Upstream

PROBE_TIMEOUT_S = 2.0


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
