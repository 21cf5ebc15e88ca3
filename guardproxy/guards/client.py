"""The network side of a guard: POST the protocol's body, retry what is worth it, one deadline.

Foreign errors are translated here: httpx failures become `GuardUnavailable`, a body that is not
a JSON object becomes `UnparseableVerdict`; the protocol's `parse` raises the rest.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Any, Protocol

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Verdict, combine_separate
from guardproxy.errors import GuardError, GuardOverloaded, GuardUnavailable, UnparseableVerdict
from guardproxy.guards.cache import VerdictCache
from guardproxy.guards.capacity import GuardPool
from guardproxy.guards.classifier import ClassifierProtocol
from guardproxy.guards.completion import prompt_tokens, wants_reasoning
from guardproxy.guards.protocols import (
    CLASSIFIER_PROTOCOLS,
    GUARD_PROTOCOLS,
    GuardProtocol,
    guard_calls,
    known_names,
)
from guardproxy.observe.tracing import NO_TRACING, Tracing, client_attributes

logger = logging.getLogger(__name__)

RETRY_MULTIPLIER_S = 0.05
RETRY_MAX_WAIT_S = 1.0
# An attempt never gets a zero or negative httpx timeout; the overall deadline still rules.
MIN_ATTEMPT_TIMEOUT_S = 0.001
RAW_BODY_LIMIT = 2000
# Failures where the guard cannot have judged anything yet. Classification has no side
# effects, so retrying after a dropped connection is safe too.
RETRYABLE_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
CHAT_PATH = "/chat/completions"


class GuardObserver(Protocol):
    """Where a guard reports its calls (the metrics)."""

    def called(self, direction: str, result: str, seconds: float | None) -> None: ...

    def started(self) -> None: ...

    def finished(self) -> None: ...

    def for_purpose(self, purpose: str) -> GuardObserver:
        """The same guard's observer for calls made for another purpose (a shadow policy)."""
        ...


class _Unobserved:
    def called(self, direction: str, result: str, seconds: float | None) -> None:
        return None

    def started(self) -> None:
        return None

    def finished(self) -> None:
        return None

    def for_purpose(self, purpose: str) -> GuardObserver:
        return self


class HttpGuard:
    """A guard model behind an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: GuardSettings,
        protocol: GuardProtocol,
        cache: VerdictCache | None = None,
        observer: GuardObserver | None = None,
        tracing: Tracing = NO_TRACING,
        name: str = "",
    ) -> None:
        self._observer: GuardObserver = observer or _Unobserved()
        self._tracing, self._name = tracing, name or settings.model
        self._purpose = "live"
        self._settings = settings
        self._protocol = protocol
        self._cache = cache
        self._url = f"{settings.url.rstrip('/')}{CHAT_PATH}"  # the cache key's guard
        self.pool = GuardPool.of(
            settings.urls,
            settings.max_concurrency,
            settings.queue_timeout_s,
            settings.breaker_failures,
            settings.breaker_open_s,
        )
        self._transport = GuardTransport(client, settings, self.pool)
        self._warned_no_trace = False
        # Category names no taxonomy here knows (Nemotron 3.5's S24), counted per guard.
        self.unknown_categories: Counter[str] = Counter()

    def for_shadow(self) -> HttpGuard:
        """This guard (its pool, breakers and cache) with its calls counted and traced as a
        shadow policy's, apart from the live checks'."""
        view = copy.copy(self)
        view._purpose = "shadow"
        view._observer = self._observer.for_purpose("shadow")
        return view

    async def classify(self, check: GuardInput) -> Verdict:
        """Judge one check. Raises `GuardUnavailable` or `UnparseableVerdict`, never guesses."""
        calls = guard_calls(check)
        if len(calls) == 1:
            return await self._classify_one(calls[0])
        # policy_mode: separate. Both calls at once, so latency is the slower one, not the sum.
        return combine_separate(*await self._both(calls[0], calls[1]), check.direction)

    async def _both(self, first: GuardInput, second: GuardInput) -> tuple[Verdict, Verdict]:
        """Both verdicts, for the audit. An unsafe one wins over the other call's failure."""
        results = await asyncio.gather(
            self._classify_one(first), self._classify_one(second), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        verdicts = [r for r in results if isinstance(r, Verdict)]
        for error in errors:
            if not isinstance(error, GuardError):
                raise error
        if errors and not any(v.is_unsafe(first.direction) for v in verdicts):
            raise errors[0]
        unrated = Verdict(user=None, response=None, raw=str(errors[0]) if errors else "")
        pair = [r if isinstance(r, Verdict) else unrated for r in results]
        return pair[0], pair[1]

    async def _classify_one(self, check: GuardInput) -> Verdict:
        direction = check.direction
        attributes = {
            "guardproxy.guard": self._name,
            "guardproxy.direction": direction.value,
            "guardproxy.purpose": self._purpose,
            **client_attributes(self._url, self._settings.model),
        }
        with self._tracing.span("guardproxy.guard", "client", **attributes) as span:
            verdict = await self._verdict(check)
            span.set(
                **{
                    "guardproxy.verdict": "unsafe" if verdict.is_unsafe(direction) else "safe",
                    "guardproxy.categories": verdict.categories,
                    "guardproxy.cached": verdict.cached,
                }
            )
            return verdict

    async def _verdict(self, check: GuardInput) -> Verdict:
        body = self._protocol.build_request(check)
        if self._cache is None:
            return await self._observed(check, body)
        key = VerdictCache.key(self._url, body)
        cached = await self._cache.get(key)
        if cached is not None:
            self._observer.called(check.direction.value, "cached", None)
            return cached
        verdict = await self._observed(check, body)
        await self._cache.put(key, verdict)  # only a parsed verdict gets here, never an error
        return verdict

    async def _observed(self, check: GuardInput, body: dict[str, Any]) -> Verdict:
        direction, started = check.direction.value, time.perf_counter()
        self._observer.started()
        try:
            verdict = await self._call(check, body)
        except GuardError as exc:
            result = "shed" if isinstance(exc, GuardOverloaded) else "error"
            self._observer.called(direction, result, None)
            raise
        finally:
            self._observer.finished()
        result = "unsafe" if verdict.is_unsafe(check.direction) else "safe"
        self._observer.called(direction, result, time.perf_counter() - started)
        return verdict

    async def _call(self, check: GuardInput, body: dict[str, Any]) -> Verdict:
        reasoning = wants_reasoning(check, self._settings)
        logger.debug("guard %r request: %s", self._settings.model, body)
        completion = await self._answer(body, self._timeout(reasoning))
        verdict = self._protocol.parse(completion, check)
        verdict = replace(verdict, prompt_tokens=prompt_tokens(completion))
        self._count_unknown(verdict, check)
        if reasoning and verdict.reasoning is None:
            return self._without_trace(verdict)
        return verdict

    async def _answer(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        response = await self._transport.post(body, timeout_s)
        logger.debug("guard %r answer: %s", self._settings.model, response.text)
        return _decode(response)

    def _count_unknown(self, verdict: Verdict, check: GuardInput) -> None:
        known = known_names(check.policy)
        for name in (c for c in verdict.categories if c not in known):
            if not self.unknown_categories[name]:
                logger.warning(
                    "guard %r returned category %r, which no taxonomy here knows: it takes the "
                    "default action (list it in a tenant's extra_categories to give it one)",
                    self._settings.model,
                    name,
                )
            self.unknown_categories[name] += 1

    def _timeout(self, reasoning: bool) -> float:
        settings = self._settings
        return settings.reasoning_timeout_s if reasoning else settings.timeout_s

    def _without_trace(self, verdict: Verdict) -> Verdict:
        """A trace was asked for and none came (build.nvidia.com ignores `enable_thinking`)."""
        if not self._warned_no_trace:
            self._warned_no_trace = True
            logger.warning(
                "guard %r returned no reasoning trace although one was asked for; its verdicts "
                "are reasoning-off verdicts (the audit records reasoning: unavailable)",
                self._settings.model,
            )
        return replace(verdict, reasoning_unavailable=True)


class _Decided(Exception):
    """A segment's answer settled the check's verdict: the segments still out are cancelled."""


class ClassifierGuard(HttpGuard):
    """A text classifier: its own path, and a check's segments sent as its protocol says
    (one batched request, or one request per segment).

    One request per segment is one call to the capacity, as a batched request is: it waits
    for one slot and takes spare ones only where they are idle, each sending the next
    segment not yet sent. Separate slots per segment would let one long text crowd out the
    checks behind it and, once some of its segments were shed, fail after the guard had
    judged the others; a single slot run strictly in turn would make a long text's latency
    the sum of its segments' even on an idle guard. With spares, an idle guard sees every
    segment at once, a busy one one at a time, and never more requests than
    `max_concurrency`.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: GuardSettings,
        protocol: ClassifierProtocol,
        cache: VerdictCache | None = None,
        observer: GuardObserver | None = None,
        tracing: Tracing = NO_TRACING,
        name: str = "",
    ) -> None:
        super().__init__(client, settings, protocol, cache, observer, tracing, name)
        self._classifier = protocol
        self._url = f"{settings.url.rstrip('/')}{protocol.path}"

    async def _answer(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        posts = self._classifier.posts(body)
        async with self.pool.admitted(timeout_s):
            answers = await self._each(posts, timeout_s)
        logger.debug("guard %r answers: %s", self._settings.model, answers)
        return self._classifier.join(body, answers)

    async def _each(self, posts: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
        """The posts' answers, in order, up to the one that decided the verdict; the first
        unsafe answer or the first failure cancels the posts still out (closed, unanswered)."""
        answers: list[dict[str, Any] | None] = [None] * len(posts)
        pending = iter(enumerate(posts))  # shared: each sender takes the next post unsent

        async def send() -> None:
            for index, post in pending:
                response = await self._transport.send(post, timeout_s, self._classifier.path)
                answers[index] = answer = _decode(response)
                if self._classifier.decides(answer):
                    raise _Decided

        async def send_if_spare() -> None:
            async with self.pool.spare() as taken:
                if taken:
                    await send()

        try:
            async with asyncio.TaskGroup() as senders:
                senders.create_task(send())  # on the admitted slot
                for _ in posts[1:]:
                    senders.create_task(send_if_spare())
        except BaseExceptionGroup as stopped:
            _raise_unless_decided(stopped)
        return [answer for answer in answers if answer is not None]


class GuardTransport:
    """POSTs to a guard pool: admission (the pool's capacity), a deadline for the whole call,
    retries on another replica (tenacity), and each replica's breaker."""

    def __init__(self, client: httpx.AsyncClient, settings: GuardSettings, pool: GuardPool) -> None:
        self._client, self._settings, self.pool = client, settings, pool

    async def post(
        self, body: dict[str, Any], timeout_s: float, path: str = CHAT_PATH
    ) -> httpx.Response:
        async with self.pool.admitted(timeout_s):
            return await self.send(body, timeout_s, path)

    async def send(self, body: dict[str, Any], timeout_s: float, path: str) -> httpx.Response:
        """`post` for a caller that already holds a slot of the pool."""
        deadline = _now() + timeout_s  # the loop's clock: the same instant for both
        try:
            async with asyncio.timeout_at(deadline) as timer:
                return await self._post_with_retries(body, timer, timeout_s, path)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise GuardUnavailable(f"guard timed out after {timeout_s} s") from exc
        except httpx.HTTPStatusError as exc:
            raise GuardUnavailable(f"guard returned HTTP {exc.response.status_code}") from exc
        except httpx.RequestError as exc:
            name = self._settings.model
            raise GuardUnavailable(f"guard {name!r} unreachable: {_describe(exc)}") from exc

    async def _post_with_retries(
        self, body: dict[str, Any], timer: asyncio.Timeout, timeout_s: float, path: str
    ) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            wait=wait_random_exponential(multiplier=RETRY_MULTIPLIER_S, max=RETRY_MAX_WAIT_S),
            stop=(stop_after_attempt(self._settings.retries + 1) | stop_before_delay(timeout_s)),
            before_sleep=self._log_retry,
            reraise=True,
        )
        tried: set[str] = set()
        async for attempt in retrying:
            with attempt:
                return await self._attempt(body, timer, tried, path)
        raise AssertionError("tenacity stopped without an outcome")  # reraise=True prevents this

    async def _attempt(
        self, body: dict[str, Any], timer: asyncio.Timeout, tried: set[str], path: str
    ) -> httpx.Response:
        """One try, on the least busy replica this call has not tried yet; its breaker
        counts connect errors, timeouts (its own, or the call's deadline running out on it)
        and 5xx."""
        replica = self.pool.pick(tried)
        if replica is None:
            raise GuardUnavailable("every guard replica is ejected (circuit open)")
        tried.add(replica.url)
        remaining = max((timer.when() or _now()) - _now(), MIN_ATTEMPT_TIMEOUT_S)
        replica.breaker.started()
        replica.outstanding += 1
        try:
            response = await self._client.post(
                f"{replica.url.rstrip('/')}{path}",
                json=body,
                headers=self._headers(),
                timeout=remaining,
            )
            response.raise_for_status()
        except (httpx.HTTPStatusError, httpx.RequestError) as exc:
            failed = not isinstance(exc, httpx.HTTPStatusError) or exc.response.is_server_error
            (replica.breaker.failed if failed else replica.breaker.succeeded)()
            raise
        except asyncio.CancelledError:
            # The call's deadline ran out while this replica held it: a guard that accepts
            # and never answers. That is its failure (Envoy counts gateway timeouts); a
            # caller that went away before the deadline is not.
            if timer.expired():
                replica.breaker.failed()
            raise
        finally:
            replica.outstanding -= 1
            replica.breaker.probing = False  # a cancelled probe must not block the next one
        replica.breaker.succeeded()
        return response

    def _headers(self) -> dict[str, str]:
        api_key = self._settings.api_key
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "guard %r attempt %d failed (%s); retrying",
            self._settings.model,
            state.attempt_number,
            _describe(error),
        )


def build_guard(
    client: httpx.AsyncClient,
    settings: GuardSettings,
    cache: VerdictCache | None = None,
    observer: GuardObserver | None = None,
    tracing: Tracing = NO_TRACING,
    name: str = "",
) -> HttpGuard:
    """The guard for a config entry, speaking the protocol its `protocol:` names."""
    classifier = CLASSIFIER_PROTOCOLS.get(settings.protocol)
    if classifier is not None:
        return ClassifierGuard(
            client, settings, classifier(settings), cache, observer, tracing, name
        )
    protocol = GUARD_PROTOCOLS[settings.protocol](settings)
    return HttpGuard(client, settings, protocol, cache, observer, tracing, name)


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.is_server_error
    return isinstance(error, RETRYABLE_ERRORS)


def _raise_unless_decided(stopped: BaseExceptionGroup) -> None:
    """An unsafe segment wins over another's failure in the same instant; else the first
    failure is the check's, unwrapped, as a single request's would be."""
    decided, failed = stopped.split(_Decided)
    if decided is None and failed is not None:
        raise failed.exceptions[0]


def _decode(response: httpx.Response) -> dict[str, Any]:
    raw = response.text[:RAW_BODY_LIMIT]
    try:
        document = response.json()
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise UnparseableVerdict("guard answered with a body that is not JSON", raw) from exc
    if not isinstance(document, dict):
        raise UnparseableVerdict("guard answered with JSON that is not an object", raw)
    return document


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return str(error) or type(error).__name__


def _now() -> float:
    return asyncio.get_running_loop().time()
