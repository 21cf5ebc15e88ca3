"""The readiness probe shared by every `/readyz` request: one probe at a time, kept briefly."""

from __future__ import annotations

import asyncio

import pytest

from guardproxy.health import SharedProbe


@pytest.mark.anyio
async def test_concurrent_readiness_requests_share_one_probe_and_its_result_is_kept() -> None:
    now = [0.0]
    calls: list[int] = []
    release = asyncio.Event()

    async def probe() -> int:
        calls.append(1)
        await release.wait()
        return len(calls)

    shared = SharedProbe[int](ttl_s=1.0, clock=lambda: now[0])
    waiting = [asyncio.create_task(shared.get(probe)) for _ in range(50)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # one caller leaving does not cancel the probe for the others
    release.set()
    results = await asyncio.gather(*waiting[1:])
    assert results == [1] * 49
    assert await shared.get(probe) == 1  # still fresh
    now[0] = 1.5
    assert await shared.get(probe) == 2
    assert len(calls) == 2
