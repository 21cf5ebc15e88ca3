"""Guard capacity: admission with a queue deadline and shedding, the consecutive-failure
breaker with its half-open probe, and pools of replicas spread by least outstanding calls."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import pytest

from guardproxy.errors import GuardOverloaded
from guardproxy.guards.capacity import Breaker, GuardPool
from tests.conftest import Proxy, ProxyFactory
from tests.test_e2e_policies import wait_for

ASK: Any = [{"role": "user", "content": "Hello there"}]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = Breaker(failures_to_open=3, open_s=30, clock=clock)
    for _ in range(2):
        breaker.failed()
    breaker.succeeded()  # consecutive: a success resets the count
    for _ in range(3):
        assert breaker.allows()
        breaker.failed()
    assert breaker.state == "open"
    assert not breaker.allows()
    clock.now += 30
    assert breaker.allows()  # half-open: one probe
    breaker.started()
    assert not breaker.allows()  # ...and only one
    breaker.failed()
    assert breaker.state == "open"  # a failed probe opens it again
    clock.now += 30
    assert breaker.allows()
    breaker.started()
    breaker.succeeded()
    assert (breaker.state, breaker.allows()) == ("closed", True)


def test_a_pool_picks_the_least_busy_allowed_replica_not_yet_tried() -> None:
    pool = GuardPool.of(["http://a", "http://b", "http://c"], breaker_failures=1)
    a, b, c = pool.replicas
    a.outstanding, b.outstanding, c.outstanding = 2, 1, 1
    c.breaker.failed()  # ejected
    picked = pool.pick(set())
    assert picked is b
    assert pool.pick({"http://b"}) is a  # a retry goes elsewhere
    b.breaker.failed()
    a.breaker.failed()
    assert pool.pick(set()) is None
    assert pool.all_ejected


@pytest.mark.anyio
async def test_a_call_without_a_slot_is_shed_at_its_queue_deadline() -> None:
    pool = GuardPool.of(["http://a"], max_concurrency=1, queue_timeout_s=0.05)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with pool.admitted(10):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(GuardOverloaded):
        async with pool.admitted(10):
            pytest.fail("admitted past the cap")
    assert pool.shed == 1
    release.set()
    await holder
    async with pool.admitted(10):
        assert pool.in_flight == 1


@pytest.mark.anyio
async def test_a_spare_slot_is_taken_only_while_idle_and_never_from_a_waiting_call() -> None:
    pool = GuardPool.of(["http://a"], max_concurrency=2, queue_timeout_s=5)
    async with pool.admitted(10):
        async with pool.spare() as taken:
            assert (taken, pool.in_flight) == (True, 2)
            async with pool.spare() as more:
                assert not more  # full: a spare never waits
        assert pool.in_flight == 1
        async with pool.spare() as held:
            assert held
            waiter = asyncio.create_task(_admitted_once(pool))
            await asyncio.sleep(0)  # it queues for the slot held here
        async with pool.spare() as taken_from_waiter:
            assert not taken_from_waiter  # the freed slot is the waiting call's
        await waiter
    assert pool.in_flight == 0


async def _admitted_once(pool: GuardPool) -> None:
    async with pool.admitted(10):
        pass


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens here


def test_a_shed_request_gets_503_guard_overloaded_with_retry_after(
    start_proxy: ProxyFactory,
) -> None:
    """Even with `on_guard_error: allow`, overload is never turned into unchecked traffic."""
    settings = {"max_concurrency": 1, "queue_timeout_s": 0.1, "timeout_s": 1, "retries": 0}
    proxy = start_proxy(guard_settings=settings, on_guard_error="allow")
    proxy.guard.hold_until = 2  # the first call holds the only slot until its deadline
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(reply=post(proxy)))
    thread.start()
    wait_for(lambda: proxy.guard.in_flight == 1)
    shed = post(proxy)
    proxy.guard.hold_until = 0
    thread.join(10)
    assert shed.status_code == 503
    assert shed.json()["error"]["code"] == "guard_overloaded"
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["x-guardproxy-action"] == "fail"
    assert first["reply"].status_code == 200  # on_guard_error: allow, for a guard timeout


def post(proxy: Proxy) -> httpx.Response:
    with proxy.http() as http:
        return http.post("/v1/chat/completions", json={"model": "m", "messages": ASK}, timeout=10)


def test_a_pool_routes_around_a_dead_replica_and_ejects_it(start_proxy: ProxyFactory) -> None:
    dead = closed_port_url()
    proxy = start_proxy()
    pool = {"url": [dead, proxy.guard_url], "breaker_failures": 2, "retries": 2}
    pooled = start_proxy(guard_settings=pool)  # ties go round-robin: both get tried
    client = pooled.client()
    for number in range(6):  # each one new, so the verdict cache does not answer
        ask: Any = [{"role": "user", "content": f"Hello number {number}"}]
        answer = client.chat.completions.create(model="m", messages=ask)
        assert answer.choices[0].finish_reason == "stop"
    with pooled.ops() as http:
        ready = http.get("/readyz").json()
    replicas = ready["guard_pools"]["nemotron"]["replicas"]
    assert replicas[dead]["state"] == "open"
    assert replicas[proxy.guard_url]["state"] == "closed"
    assert ready["guards"]["nemotron"] == "ok"  # one replica answers


def test_with_every_replica_ejected_calls_fail_fast_into_on_guard_error(
    start_proxy: ProxyFactory,
) -> None:
    settings = {"url": [closed_port_url()], "breaker_failures": 1, "retries": 0}
    proxy = start_proxy(guard_settings=settings, on_guard_error="allow")
    client = proxy.client()
    client.chat.completions.create(model="m", messages=ASK)  # the failure that opens it
    again: Any = [{"role": "user", "content": "Hello again"}]
    answer = client.chat.completions.create(model="m", messages=again)
    assert answer.choices[0].finish_reason == "stop"  # allowed, as the tenant asked
    assert "circuit open" in proxy.audit.records[-1]["input"]["error"]
    with proxy.ops() as http:
        ready = http.get("/readyz")
    assert ready.status_code == 200  # the pod still serves: here, as the tenant allows
    assert ready.json()["dependencies"] == "degraded"
    assert ready.json()["guards"]["nemotron"] == "circuit open"
