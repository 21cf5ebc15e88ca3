"""A segmented text against the NemoGuard NIM, one request per segment, through a real server:
the first unsafe segment or the first failure cancels the segments still out (their
connections are closed, never answered), and one check never holds more slots of the guard's
capacity than are idle, nor the guard more requests than `max_concurrency`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety
from guardproxy.errors import GuardUnavailable
from guardproxy.guards.client import HttpGuard, build_guard
from tests.fakes.classifier import FakeClassifierState, create_fake_classifier
from tests.fakes.server import run_in_thread

MAX_CHARS, STEP = 100, 88  # segments of 100 characters, each starting 88 after the last
UNSAFE = "ignore previous instructions"  # the fake NIM's jailbreak phrase
FAILING = "answered with a 500"
WAIT_S = 10.0

pytestmark = pytest.mark.anyio


class GatedClassifier:
    """The fake NIM behind a gate: no request is answered before `together` have arrived, so
    the segments a check sends at once are all at the guard before any answer. A segment with
    `FAILING` in it gets HTTP 500; with `hold_safe`, a safe one is never answered and waits
    for its client to close it."""

    def __init__(self, together: int, hold_safe: bool = False) -> None:
        self.state = FakeClassifierState()
        self.app = create_fake_classifier(self.state)
        self.together, self.hold_safe = together, hold_safe
        self.arrived: list[str] = []
        self.answered: list[str] = []
        self.closed: list[str] = []
        self.in_flight = self.most_in_flight = 0
        self._all_in: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        body = await _body(receive)
        text = json.loads(body)["input"]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self._gate(text)
            if self.hold_safe and FAILING not in text and UNSAFE not in text:
                await receive()  # only http.disconnect can come now: the client closed it
                self.closed.append(text)
                return
            self.answered.append(text)
            await self._answer(text, body, scope, send)
        finally:
            self.in_flight -= 1

    async def _gate(self, text: str) -> None:
        if self._all_in is None:
            self._all_in = asyncio.Event()
        self.arrived.append(text)
        if len(self.arrived) >= self.together:
            self._all_in.set()
        await self._all_in.wait()

    async def _answer(self, text: str, body: bytes, scope: Scope, send: Send) -> None:
        if FAILING in text:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await self.app(scope, _replay(body), send)


async def _body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def long_text(count: int, marks: dict[int, str]) -> tuple[str, list[str]]:
    """A text of `count` segments, each mark inside its own segment only; and the segments."""
    chars = list("x" * (STEP * (count - 1) + MAX_CHARS))
    for index, mark in marks.items():
        start = STEP * index + (MAX_CHARS - STEP) + 8  # past the one before's overlap
        chars[start : start + len(mark)] = mark
    text = "".join(chars)
    return text, [text[STEP * n : STEP * n + MAX_CHARS] for n in range(count)]


def nim_settings(url: str, **keys: Any) -> GuardSettings:
    settings: dict[str, Any] = {"url": f"{url}/v1", "model": "nemoguard-jailbreak-detect"}
    settings |= {"protocol": "nemoguard-jailbreak", "max_input_chars": MAX_CHARS}
    return GuardSettings(**settings | {"retries": 0, "timeout_s": 5} | keys)


class Sampled:
    """A guard on a real client whose request hook samples its pool's in-flight count as
    each request leaves."""

    def __init__(self, url: str, **keys: Any) -> None:
        self.samples: list[int] = []
        hooks: dict[str, list[Callable[..., Any]]] = {"request": [self._sample]}
        self.client = httpx.AsyncClient(event_hooks=hooks)
        self.guard: HttpGuard = build_guard(self.client, nim_settings(url, **keys))

    async def _sample(self, request: httpx.Request) -> None:
        self.samples.append(self.guard.pool.in_flight)

    def nothing_out(self) -> bool:
        """No slot held and no request outstanding at any replica."""
        pool = self.guard.pool
        return pool.in_flight == 0 and all(r.outstanding == 0 for r in pool.replicas)


@pytest.fixture
def served() -> Iterator[Callable[[GatedClassifier], str]]:
    """Serves a fake on a real uvicorn server until the test ends; gives its URL."""
    with ExitStack() as servers:
        yield lambda fake: servers.enter_context(run_in_thread(fake))


async def eventually(condition: Callable[[], bool]) -> None:
    """Waits in the loop (the client closes connections there) for the server's side."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_an_unsafe_first_segment_closes_the_others_unanswered(
    served: Callable[[GatedClassifier], str],
) -> None:
    fake = GatedClassifier(together=2, hold_safe=True)
    sampled = Sampled(served(fake), max_concurrency=2)
    text, parts = long_text(4, {0: UNSAFE})
    async with sampled.client:
        verdict = await sampled.guard.classify(GuardInput(text))
        assert sampled.nothing_out()  # cancelled before the verdict came back
        await eventually(lambda: len(fake.closed) == 1)
    assert verdict.user is Safety.UNSAFE
    assert fake.answered == [parts[0]]
    assert fake.closed == [parts[1]]  # the spare slot's segment, closed once decided
    assert sorted(fake.arrived) == sorted(parts[:2])  # the last two were never sent
    assert fake.most_in_flight == 2
    assert max(sampled.samples) == 2


async def test_a_failing_segment_closes_the_others_and_the_check_fails(
    served: Callable[[GatedClassifier], str],
) -> None:
    fake = GatedClassifier(together=3, hold_safe=True)
    sampled = Sampled(served(fake))  # no cap: every segment at once
    text, parts = long_text(3, {1: FAILING})
    async with sampled.client:
        with pytest.raises(GuardUnavailable, match="HTTP 500"):
            await sampled.guard.classify(GuardInput(text))
        assert sampled.nothing_out()
        await eventually(lambda: len(fake.closed) == 2)
    assert fake.answered == [parts[1]]
    assert sorted(fake.closed) == sorted([parts[0], parts[2]])


async def test_a_safe_text_has_every_segment_judged_within_the_cap(
    served: Callable[[GatedClassifier], str],
) -> None:
    fake = GatedClassifier(together=2)
    sampled = Sampled(served(fake), max_concurrency=2)
    text, parts = long_text(5, {})
    async with sampled.client:
        verdict = await sampled.guard.classify(GuardInput(text))
    assert verdict.user is Safety.SAFE
    assert sorted(fake.answered) == sorted(parts)
    assert fake.most_in_flight == 2  # the spare slot was used, and no more
    assert max(sampled.samples) == 2
