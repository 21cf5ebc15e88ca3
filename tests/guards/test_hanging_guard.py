"""A guard that accepts connections and never answers (a wedged GPU) trips its breaker: each
call that the deadline ends on it counts as a failure, so after `breaker_failures` of them
calls fail fast instead of each waiting out the timeout, and `/readyz` and the breaker gauge
say so."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import ProxyFactory
from tests.observe.test_metrics import scrape

TIMEOUT_S = 0.3
FAILURES = 3


@dataclass
class Hanging:
    url: str
    held: list[socket.socket] = field(default_factory=list)  # every connection it accepted


@pytest.fixture
def hanging_guard() -> Iterator[Hanging]:
    """A server on loopback that accepts, reads, and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    hanging = Hanging(f"http://127.0.0.1:{server.getsockname()[1]}/v1")
    held = hanging.held
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield hanging
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def test_a_guard_that_never_answers_trips_its_breaker(
    start_proxy: ProxyFactory, hanging_guard: Hanging
) -> None:
    settings = {
        "url": [hanging_guard.url],
        "timeout_s": TIMEOUT_S,
        "retries": 0,
        "breaker_failures": FAILURES,
        "breaker_open_s": 300,
    }
    proxy = start_proxy(guard_settings=settings, on_guard_error="allow", output={"enabled": False})
    client = proxy.client()
    for number in range(FAILURES):  # each new, so no verdict comes from the cache
        ask: Any = [{"role": "user", "content": f"Hello number {number}"}]
        client.chat.completions.create(model="m", messages=ask)
        assert "timed out" in proxy.audit.records[-1]["input"]["error"]
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "And now?"}])
    # Failed fast: the pool sent nothing to the replica, so nobody waits out its timeout.
    assert "circuit open" in proxy.audit.records[-1]["input"]["error"]
    with proxy.ops() as http:
        ready = http.get("/readyz", timeout=30).json()
    replica = ready["guard_pools"]["nemotron"]["replicas"][hanging_guard.url]
    assert (replica["state"], replica["consecutive_failures"]) == ("open", FAILURES)
    assert ready["guards"]["nemotron"] == "circuit open"
    _, samples = scrape(proxy)
    assert samples["guardproxy_guard_breaker_state"][0][1] == 2  # open
