"""A guard's capacity: how many calls it takes at once, which replica gets each, and when a
replica is ejected.

    call ─► admission (max_concurrency; wait up to queue_timeout_s, else shed: 503
            guard_overloaded) ─► replica with the fewest calls outstanding whose breaker is
            closed (or half-open, for its one probe) ─► on failure, the next attempt goes to
            another replica, within the call's deadline

A call with several requests to send (a long text's segments, for a classifier that takes one
string per request) waits for one slot and takes `spare` ones only where they are idle.

The breaker is Envoy's consecutive-failure outlier ejection: after `breaker_failures`
consecutive failures (connect errors, timeouts, 5xx) a replica is ejected for
`breaker_open_s`, then one half-open probe decides whether it comes back. With every replica
ejected a call fails at once, into the tenant's `on_guard_error`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Literal

from guardproxy.errors import GuardOverloaded

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    failures_to_open: int = 5
    open_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def allows(self) -> bool:
        """Whether a call may go to this replica now; an open breaker past its time lets
        exactly one probe through."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self.opened_at >= self.open_s:
            self.state = "half_open"
        return self.state == "half_open" and not self.probing

    def started(self) -> None:
        if self.state == "half_open":
            self.probing = True

    def succeeded(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False

    def failed(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failures_to_open:
            self.state, self.opened_at, self.probing = "open", self.clock(), False

    @property
    def ejected(self) -> bool:
        """Open and not yet due for its probe."""
        return self.state == "open" and self.clock() - self.opened_at < self.open_s

    def view(self) -> dict[str, object]:
        view: dict[str, object] = {"state": self.state, "consecutive_failures": self.failures}
        if self.state == "open":
            view["retry_in_s"] = round(max(self.open_s - (self.clock() - self.opened_at), 0), 1)
        return view


@dataclass
class Replica:
    url: str  # the replica's base URL (…/v1)
    breaker: Breaker
    outstanding: int = 0


@dataclass
class GuardPool:
    """The replicas of one guard and the admission in front of them."""

    replicas: list[Replica]
    max_concurrency: int | None = None
    queue_timeout_s: float = 1.0
    _slots: asyncio.Semaphore | None = field(default=None, init=False)
    in_flight: int = 0
    shed: int = 0
    _turn: int = field(default=0, init=False)  # ties go round-robin

    @classmethod
    def of(
        cls,
        urls: list[str],
        max_concurrency: int | None = None,
        queue_timeout_s: float = 1.0,
        breaker_failures: int = 5,
        breaker_open_s: float = 30.0,
    ) -> GuardPool:
        replicas = [Replica(url, Breaker(breaker_failures, breaker_open_s)) for url in urls]
        return cls(replicas, max_concurrency, queue_timeout_s)

    @asynccontextmanager
    async def admitted(self, deadline_s: float) -> AsyncIterator[None]:
        """A slot for one call, waited for at most `queue_timeout_s` (and never past the
        call's own deadline); else `GuardOverloaded`: shed, never left hanging."""
        if self.max_concurrency is not None and self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        if self._slots is not None:
            try:
                async with asyncio.timeout(min(self.queue_timeout_s, deadline_s)):
                    await self._slots.acquire()
            except TimeoutError as exc:
                self.shed += 1
                raise GuardOverloaded(
                    f"guard at capacity ({self.max_concurrency} calls in flight)",
                    retry_after_s=self.queue_timeout_s,
                ) from exc
        with self._held():
            yield

    @asynccontextmanager
    async def spare(self) -> AsyncIterator[bool]:
        """An idle slot, taken without waiting, for a call that already holds one and has more
        to send at once (a long text's segments); False when none is idle or a call waits
        for one, so a spare never delays an admission."""
        if self._slots is not None and self._slots.locked():
            yield False
            return
        if self._slots is not None:
            await self._slots.acquire()  # not locked: returns at once, never waits
        with self._held():
            yield True

    @contextmanager
    def _held(self) -> Iterator[None]:
        """A slot already acquired, counted in flight until given back."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    def pick(self, tried: set[str]) -> Replica | None:
        """The replica with the fewest calls outstanding among those whose breaker allows a
        call, preferring ones this call has not tried; None when every one is ejected."""
        allowed = [r for r in self.replicas if r.breaker.allows()]
        fresh = [r for r in allowed if r.url not in tried] or allowed
        if not fresh:
            return None
        fewest = min(r.outstanding for r in fresh)
        ties = [r for r in fresh if r.outstanding == fewest]
        self._turn += 1
        return ties[self._turn % len(ties)]

    def view(self) -> dict[str, object]:
        view: dict[str, object] = {"in_flight": self.in_flight, "shed": self.shed}
        if self.max_concurrency is not None:
            view["max_concurrency"] = self.max_concurrency
        view["replicas"] = {r.url: {**r.breaker.view(), "outstanding": r.outstanding}
                            for r in self.replicas}  # fmt: skip
        return view

    @property
    def all_ejected(self) -> bool:
        return all(r.breaker.ejected for r in self.replicas)
