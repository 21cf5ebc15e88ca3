"""Chunked output moderation: streamed text reaches the client window by window, each after its
check, with the checks pipelined against the upstream's generation.

    upstream SSE ──► WindowBuilder ──► window k: guard check ─┐   (window k+1 is read meanwhile)
                                                              ▼
    client ◄── events of window k, in order, once safe ◄──────┘   unsafe: cut off, refusal

The first window is `first_window` characters (a fast first release); each later one is at
least `growth` times the text released before it, up to the largest window, so an answer of
n characters takes about log(n) guard calls. Windows end on a word boundary (a blocked window
never leaves half a word behind) and are checked together with the text before them, at most
`overlap` characters and a quarter of the window. A stream has at most `checks_in_flight`
checks running (default 1): while they run, arriving text waits and joins the next window, up
to the largest; past that the reader waits for a check to finish, and through TCP backpressure
the upstream slows down. So a fast guard gets small windows and a slow or busy guard fewer,
larger ones, with no text ever released unchecked. The upstream's events are released byte
for byte; the API's end events (`[DONE]`, `response.completed`, `message_stop`) only after the
final check of the whole answer, which also gates the last window: the largest window is
judged once, not twice.
"""

from __future__ import annotations

import asyncio
import math
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field

from guardproxy.core.sse import SSEDecoder, SSEEvent, chunk_of, loose_text
from guardproxy.errors import GuardproxyError, UpstreamError
from guardproxy.pipeline.checks import CONTEXT_SHARE, CheckResult
from guardproxy.pipeline.codec import EventRewriter, StreamCodec
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.exchange import ModerationStats
from guardproxy.policy.model import OutputPolicy
from guardproxy.upstreams.base import UpstreamReply

# Windows read ahead of the client at most; bounds memory when the client is slow, and
# through TCP backpressure, slows the upstream down instead.
MAX_WINDOWS_IN_FLIGHT = 4
# A window is judged with at most a quarter of its own length of the text before it (and at
# most `overlap`), so the context costs a share of the window, not a fixed sum per check.
OVERLAP_SHARE = 4
# Text with no word boundary in sight (a long URL, a base64 blob) closes a window at twice
# its size, and not before this many characters.
BLOB_CHARS = 512


@dataclass(frozen=True)
class Moderation:
    """What the moderator asks, as functions so it can be tested alone: a window's check
    and action (a `WindowJudge`'s), and the stream codec's cut-off events. What the stream
    ended with is the moderator's to tell (`cut_off`, `failure`), never written back."""

    check: Callable[[str], Coroutine[None, None, CheckResult]]
    judge: Callable[[CheckResult, str], Action]  # (result, the text that was checked)
    blocked: Callable[[Action], list[bytes]]  # the cut-off events for BLOCK or FAIL


@dataclass(frozen=True)
class Check:
    task: asyncio.Task[CheckResult]
    text: str


@dataclass
class Window:
    events: list[SSEEvent]
    check: Check | None


@dataclass(frozen=True)
class StreamEnd:
    error: GuardproxyError | None = None


def is_boundary(char: str) -> bool:
    """A place where a window may end: after a space or punctuation, or any CJK character."""
    return (
        char.isspace()
        or unicodedata.category(char)[0] == "P"
        or (unicodedata.east_asian_width(char) in "WF")
    )


def largest_window(policy: OutputPolicy) -> int:
    """`window`, or what one guard call judges beside the overlap and the prompt's end
    (`output_checks` keeps a quarter window of a long prompt)."""
    if policy.window is not None:
        return policy.window
    chars = policy.window_chars
    return max(chars - chars // CONTEXT_SHARE - policy.overlap, policy.first_window)


def window_after(policy: OutputPolicy, released: int) -> int:
    """The next window's size once `released` characters are out: `growth` times them."""
    grown = max(policy.first_window, math.ceil(policy.growth * released))
    return min(grown, largest_window(policy))


@dataclass
class WindowBuilder:
    policy: OutputPolicy
    codec: StreamCodec
    size: int = 0
    events: list[SSEEvent] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    length: int = 0
    before: str = ""  # the answer's last `overlap` characters before this window
    released: int = 0  # characters in the windows closed so far
    answer: list[str] = field(default_factory=list)
    checked_windows: int = 0
    in_call: bool = False  # a tool call is being streamed: no window closes inside it
    judged_chars: int = 0  # what the window checks were sent, overlaps included

    def __post_init__(self) -> None:
        self.size = self.policy.first_window

    def add(self, event: SSEEvent, busy: bool = False) -> tuple[list[SSEEvent], str] | None:
        """Take one event; return (events, text to check) when a window closes.

        A full window closes after an event that ends a word, or before one that starts a
        new word (most tokenizers put the space first: "Hello", " world"). While the stream's
        checks are `busy`, a window is full only at `window` characters. Tool-call
        fragments are held until the call is complete (the next event that is not one, or the
        end), so a call is judged whole, name and arguments, and never released half-sent.
        """
        chunk = chunk_of(event)
        text = self.codec.text(chunk) if chunk else loose_text(event)
        call = self.codec.in_call(chunk) if chunk else False
        closed = None
        if call != self.in_call:
            closed = self.close()  # a call starts, or one is complete
            self.in_call = call
        if call:
            self.events.append(event)
            self.parts.append(text)
            self.length += len(text)
            return closed
        full = largest_window(self.policy) if busy else self.size
        if closed is None and text and self.length >= full and is_boundary(text[0]):
            closed = self.close()
        self.events.append(event)
        if text:
            self.parts.append(text)
            self.length += len(text)
        if closed is None and text and self.length >= full and is_boundary(text[-1]):
            closed = self.close()
        if closed is None and self.length >= 2 * max(full, BLOB_CHARS):
            closed = self.close()  # no boundary in sight (a long URL, a base64 blob)
        return closed

    def hold(self, event: SSEEvent) -> None:
        """An end event, held back until the final check: what it says joins the window
        being built, so that check judges it before the event is released."""
        chunk = chunk_of(event)
        text = self.codec.text(chunk) if chunk else loose_text(event)
        if text:
            self.parts.append(text)
            self.length += len(text)

    def close(self) -> tuple[list[SSEEvent], str] | None:
        closed = self.close_last()
        if closed is not None:
            self.count(closed[1])
        return closed

    def close_last(self) -> tuple[list[SSEEvent], str] | None:
        """Close the window without counting its check (the caller decides who judges it)."""
        if not self.events and not self.parts:
            return None
        new = "".join(self.parts)
        checked = self._in_context(new) if new.strip() else ""
        overlap = self.policy.overlap
        self.before = (self.before + new)[-overlap:] if overlap else ""
        self.answer.append(new)
        events, self.events, self.parts, self.length = self.events, [], [], 0
        self.released += len(new)
        self.size = window_after(self.policy, self.released)
        return events, checked

    def _in_context(self, new: str) -> str:
        """The window with the text before it: up to `overlap`, and a quarter of its length."""
        context = min(len(self.before), math.ceil(len(new) / OVERLAP_SHARE))
        return self.before[len(self.before) - context :] + new

    def count(self, checked: str) -> None:
        """A window check that is sent."""
        self.checked_windows += bool(checked)
        self.judged_chars += len(checked)

    def whole_answer(self) -> str:
        return "".join(self.answer)


class ChunkedModerator:
    """Releases an upstream stream window by window, each after its check (see module doc).

    `released` says whether any event reached the client; `cut_off` is the action that ended
    the stream early, if one did.
    """

    def __init__(
        self,
        reply: UpstreamReply,
        policy: OutputPolicy,
        moderation: Moderation,
        codec: StreamCodec,
        masking: EventRewriter | None = None,
    ) -> None:
        assert reply.stream is not None
        self.reply = reply
        self.stream = reply.stream
        self.policy = policy
        self.moderation = moderation
        self.codec = codec
        self.masking = masking
        self.held: list[SSEEvent] = []  # the end events, released after the final check
        self.final: Check | None = None
        self.tasks: list[asyncio.Task[CheckResult]] = []
        self.released = False
        self.cut_off: Action | None = None
        self.failure: GuardproxyError | None = None  # the upstream broke off mid-stream
        self.stats = ModerationStats()
        self.builder = WindowBuilder(policy, codec)
        self.windows_out = 0  # windows released: the first this many of `builder.answer`

    async def events(self) -> AsyncGenerator[bytes]:
        """The body sent to the client."""
        queue: asyncio.Queue[Window | StreamEnd] = asyncio.Queue(MAX_WINDOWS_IN_FLIGHT)
        reader = asyncio.create_task(self._read(queue))
        try:
            async for chunk in self._release(queue):
                yield chunk
        finally:
            for task in (reader, *self.tasks):
                task.cancel()

    async def _release(self, queue: asyncio.Queue[Window | StreamEnd]) -> AsyncIterator[bytes]:
        unchecked: list[Check] = []
        while not isinstance(item := await queue.get(), StreamEnd):
            if self.policy.stream_first:
                self.windows_out += 1
                yield self._outgoing(item.events)
                unchecked += [item.check] if item.check else []
                action = await self._first_failure(unchecked, wait=False)
            else:
                action = await self._judge(item.check)
                if action is Action.ALLOW:
                    self.windows_out += 1
                    yield self._outgoing(item.events)
            if action is not Action.ALLOW:
                for raw in await self._cut(action):
                    yield raw
                return
        async for raw in self._finish(item, unchecked):
            yield raw

    async def _finish(self, end: StreamEnd, unchecked: list[Check]) -> AsyncIterator[bytes]:
        if end.error is not None:
            self.failure = end.error
            yield self.codec.error_event(end.error)  # no end event: the answer is incomplete
            return
        final = [self.final] if self.final else []
        action = await self._first_failure([*unchecked, *final], wait=True)
        if action is not Action.ALLOW:
            for raw in await self._cut(action):
                yield raw
            return
        if self.masking is not None:
            yield self.masking.finish()
        if self.held:
            yield self._outgoing(self.held)

    def _outgoing(self, events: list[SSEEvent]) -> bytes:
        """A window's events as one write: one send per window, not one per token."""
        self.released = True
        self.codec.released(events)
        if self.masking is None:
            return b"".join(event.raw for event in events)
        return b"".join(self.masking.rewrite(event) for event in events)

    async def _judge(self, check: Check | None) -> Action:
        if check is None:
            return Action.ALLOW
        return self.moderation.judge(await check.task, check.text)

    async def _first_failure(self, checks: list[Check], wait: bool) -> Action:
        """The first (finished, unless `wait`) check whose action is not ALLOW, if any."""
        for check in list(checks):
            if wait or check.task.done():
                checks.remove(check)
                action = await self._judge(check)
                if action is not Action.ALLOW:
                    return action
        return Action.ALLOW

    async def _cut(self, action: Action) -> list[bytes]:
        self.cut_off = action
        builder = self.builder
        self.stats.released = "".join(builder.answer[: self.windows_out])
        if self.stats.answer is None:  # cut before the upstream ended: what was read so far
            self.stats.record(builder.checked_windows, builder.judged_chars, builder.whole_answer())
        await self.reply.aclose()  # stop the upstream generating
        return self.moderation.blocked(action)

    async def _read(self, queue: asyncio.Queue[Window | StreamEnd]) -> None:
        builder, decoder = self.builder, SSEDecoder()
        try:
            async for chunk in self.stream:
                for event in decoder.feed(chunk):
                    await self._take(event, builder, queue)
            for event in decoder.flush():
                await self._take(event, builder, queue)
        except GuardproxyError as exc:
            await queue.put(StreamEnd(exc))
            return
        except Exception as exc:  # a provider SDK error mid-stream: end it, never hang
            error = UpstreamError(f"The upstream stream failed: {type(exc).__name__}")
            await queue.put(StreamEnd(error))
            return
        await self._end(builder, queue)
        await queue.put(StreamEnd())

    async def _end(self, builder: WindowBuilder, queue: asyncio.Queue[Window | StreamEnd]) -> None:
        """The last window, and the final check of the whole answer. When there is one, the
        final check also gates the last window: it judges that text too, so the stream ends
        one guard call after the upstream, not two."""
        last = builder.close_last()
        final = self.policy.final_check and builder.checked_windows + bool(last and last[1]) > 1
        if not final:
            if last is not None:
                builder.count(last[1])
            await self._emit(last, queue)
            self.stats.record(builder.checked_windows, builder.judged_chars, builder.whole_answer())
            return
        await self._room()
        check = self._start(builder.whole_answer())
        if last is not None:
            await queue.put(Window(last[0], check))
        else:
            self.final = check
        answer = builder.whole_answer()
        self.stats.record(builder.checked_windows + 1, builder.judged_chars + len(answer), answer)

    async def _take(
        self, event: SSEEvent, builder: WindowBuilder, queue: asyncio.Queue[Window | StreamEnd]
    ) -> None:
        chunk = chunk_of(event)
        if self.codec.is_end(event, chunk):
            self.held.append(event)
            builder.hold(event)
            return
        if chunk is not None:
            self.codec.observe(chunk)
        await self._emit(builder.add(event, self._busy()), queue)

    async def _emit(
        self, closed: tuple[list[SSEEvent], str] | None, queue: asyncio.Queue[Window | StreamEnd]
    ) -> None:
        if closed is not None:
            events, text = closed
            if text:
                await self._room()
            await queue.put(Window(events, self._start(text) if text else None))

    def _running(self) -> list[asyncio.Task[CheckResult]]:
        return [task for task in self.tasks if not task.done()]

    def _busy(self) -> bool:
        return len(self._running()) >= self.policy.checks_in_flight

    async def _room(self) -> None:
        """Wait until this stream may start one more check."""
        while self._busy():
            await asyncio.wait(self._running(), return_when=asyncio.FIRST_COMPLETED)

    def _start(self, text: str) -> Check:
        task = asyncio.create_task(self._check(text))
        self.tasks.append(task)
        return Check(task, text)

    async def _check(self, text: str) -> CheckResult:
        result = await self.moderation.check(text)
        self.stats.add_guard_tokens(result.guard_tokens)
        return result
