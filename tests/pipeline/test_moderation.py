"""The chunked stream moderator, driven without a network: scripted events, scripted checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from guardproxy.api.chat.codec import CHAT, parse_chat_request
from guardproxy.core.sse import SSEDecoder, encode_event
from guardproxy.pipeline.checks import CheckResult, CheckStatus
from guardproxy.pipeline.codec import StreamCodec
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.moderation import ChunkedModerator, Moderation, WindowBuilder, is_boundary
from guardproxy.policy.model import OutputPolicy
from guardproxy.upstreams.base import UpstreamReply

SAFE = CheckResult(CheckStatus.SAFE)
UNSAFE = CheckResult(CheckStatus.UNSAFE, ("Violence",))
REFUSAL = b"data: refusal\n\n"


def delta(text: str) -> bytes:
    return encode_event({"choices": [{"index": 0, "delta": {"content": text}}]})


def stream_of(words: list[str]) -> list[bytes]:
    role = encode_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    return [role, *(delta(w) for w in words), encode_event("[DONE]")]


class Upstream:
    """A scripted upstream stream; `gate` (if set) must open before each chunk after the first."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent = 0
        self.closed = False
        self.gates: dict[int, asyncio.Event] = {}

    async def stream(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i in self.gates:
                await self.gates[i].wait()
            self.sent = i + 1
            yield chunk

    async def aclose(self) -> None:
        self.closed = True

    def reply(self) -> UpstreamReply:
        return UpstreamReply(200, stream=self.stream(), aclose=self.aclose)


class Guard:
    """Answers checks from a script; records what it was asked."""

    def __init__(self, unsafe_words: tuple[str, ...] = ()) -> None:
        self.unsafe_words = unsafe_words
        self.asked: list[str] = []

    async def check(self, text: str) -> CheckResult:
        self.asked.append(text)
        return UNSAFE if any(w in text for w in self.unsafe_words) else SAFE


def chat_stream() -> StreamCodec:
    return CHAT.stream(parse_chat_request(b'{"model": "m", "messages": [{"role": "user"}]}'))


def moderation(guard: Guard) -> Moderation:
    def judge(result: CheckResult, text: str) -> Action:
        return Action.BLOCK if result.status is CheckStatus.UNSAFE else Action.ALLOW

    return Moderation(guard.check, judge, lambda action: [REFUSAL])


async def run(upstream: Upstream, guard: Guard, **policy: object) -> list[bytes]:
    moderator = ChunkedModerator(
        upstream.reply(), OutputPolicy.model_validate(policy), moderation(guard), chat_stream()
    )
    return [chunk async for chunk in moderator.events()]


def texts(chunks: list[bytes]) -> str:
    events = SSEDecoder().feed(b"".join(chunks))
    out = []
    for event in events:
        if event.data and event.data.startswith("{"):
            for choice in json.loads(event.data)["choices"]:
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


WORDS = ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog. "] * 3


@pytest.mark.anyio
async def test_a_safe_stream_is_released_byte_for_byte() -> None:
    upstream = Upstream(stream_of(WORDS))
    chunks = await run(upstream, Guard(), first_window=8, window=32)
    assert b"".join(chunks) == b"".join(upstream.chunks)


@pytest.mark.anyio
async def test_windows_grow_end_on_words_and_carry_overlap() -> None:
    guard = Guard()
    await run(
        Upstream(stream_of(WORDS)), guard, first_window=8, window=32, overlap=4, final_check=False
    )
    assert guard.asked[0] == "The quick "
    assert guard.asked[1].startswith("ick brown fox ")  # 4 characters of overlap
    assert all(is_boundary(text[-1]) for text in guard.asked)
    assert "".join(t[4:] if i else t for i, t in enumerate(guard.asked)) == "".join(WORDS)


@pytest.mark.anyio
async def test_an_unsafe_window_is_never_released_and_the_upstream_is_closed() -> None:
    words = ["Hello ", "there. ", "Now ", "the ", "secret: ", "kill ", "them ", "all. ", "Bye."]
    upstream = Upstream(stream_of(words))
    chunks = await run(upstream, Guard(("kill",)), first_window=8, window=16, overlap=0)
    released = texts(chunks)
    assert "kill" not in released
    assert released.startswith("Hello there. ")
    assert chunks[-1] == REFUSAL
    assert b"[DONE]" not in b"".join(chunks)
    assert upstream.closed


@pytest.mark.anyio
async def test_done_waits_for_the_final_check_of_the_whole_answer() -> None:
    # Each window alone is fine; only the whole answer says "bomb recipe".
    words = ["A ", "bomb ", "is ", "in ", "the ", "movie; ", "the ", "recipe ", "is ", "not."]
    guard = Guard(("bomb is in the movie; the recipe",))
    chunks = await run(Upstream(stream_of(words)), guard, first_window=4, window=8, overlap=0)
    assert chunks[-1] == REFUSAL
    assert guard.asked[-1] == "".join(words)


@pytest.mark.anyio
async def test_stream_first_releases_before_checking_and_cuts_off_later() -> None:
    guard = Guard(("dog",))
    chunks = await run(
        Upstream(stream_of(WORDS)), guard, first_window=8, window=16, stream_first=True
    )
    assert "dog" in texts(chunks)  # leaked: that is what stream_first means
    assert chunks[-1] == REFUSAL


@pytest.mark.anyio
async def test_checks_overlap_with_reading_the_next_window_when_allowed() -> None:
    upstream = Upstream(stream_of(["one ", "two ", "three ", "four "]))
    read_ahead = asyncio.Event()
    upstream.gates[3] = asyncio.Event()  # noticing when the reader asks for "three "

    async def check(text: str) -> CheckResult:
        if text.startswith("one"):
            # Pipelined: while this check is pending, the reader goes on to the next window.
            # A stop-and-wait moderator never would, and this would time out.
            upstream.gates[3].set()
            await asyncio.wait_for(read_ahead.wait(), timeout=10)
        return SAFE

    async def watch() -> None:
        while upstream.sent < 4:  # noqa: ASYNC110 - polling plain state set by the fake
            await asyncio.sleep(0)
        read_ahead.set()

    watcher = asyncio.create_task(watch())
    mod = Moderation(check, lambda r, t: Action.ALLOW, lambda a: [REFUSAL])
    policy = OutputPolicy(
        first_window=4, window=4, overlap=0, final_check=False, checks_in_flight=2
    )
    moderator = ChunkedModerator(upstream.reply(), policy, mod, chat_stream())
    chunks = [c async for c in moderator.events()]
    await watcher
    assert texts(chunks) == "one two three four "


@pytest.mark.anyio
async def test_a_slow_check_makes_the_next_window_everything_that_arrived_meanwhile() -> None:
    words = [f"w{i} " for i in range(30)]
    upstream = Upstream(stream_of(words))
    asked: list[str] = []
    in_flight, most = 0, 0

    async def check(text: str) -> CheckResult:
        nonlocal in_flight, most
        asked.append(text)
        in_flight += 1
        most = max(most, in_flight)
        if len(asked) == 1:  # the first window's check finishes only once every word is read
            while upstream.sent < len(words):  # noqa: ASYNC110 - plain state set by the fake
                await asyncio.sleep(0)
        in_flight -= 1
        return SAFE

    mod = Moderation(check, lambda r, t: Action.ALLOW, lambda a: [REFUSAL])
    policy = OutputPolicy(first_window=1, window=1000, overlap=0)
    moderator = ChunkedModerator(upstream.reply(), policy, mod, chat_stream())
    chunks = [c async for c in moderator.events()]
    assert texts(chunks) == "".join(words)
    whole = "".join(words)
    assert asked[0] == "w0 "
    # Everything else arrived during the first check: one last window, which the final check
    # of the whole answer judges (and releases), so the stream ends one guard call later.
    assert asked[1:] == [whole]
    assert most == 1
    assert moderator.stats.view() == {
        "checks": 2, "judged_chars": len("w0 ") + len(whole), "answer_chars": len(whole),
        "amplification": round((len("w0 ") + len(whole)) / len(whole), 3),
    }  # fmt: skip


@pytest.mark.anyio
async def test_a_stream_never_has_more_checks_in_flight_than_allowed() -> None:
    upstream = Upstream(stream_of([f"w{i} " for i in range(200)]))
    in_flight, most = 0, 0

    async def check(text: str) -> CheckResult:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return SAFE

    mod = Moderation(check, lambda r, t: Action.ALLOW, lambda a: [REFUSAL])
    policy = OutputPolicy(first_window=2, window=16, overlap=4)
    moderator = ChunkedModerator(upstream.reply(), policy, mod, chat_stream())
    chunks = [c async for c in moderator.events()]
    assert texts(chunks) == "".join(f"w{i} " for i in range(200))
    assert most == 1


@pytest.mark.anyio
async def test_reading_ahead_is_bounded_when_the_client_is_slow() -> None:
    upstream = Upstream(stream_of([f"w{i} " for i in range(200)]))
    moderator = ChunkedModerator(
        upstream.reply(),
        OutputPolicy(first_window=3, window=3, overlap=0),
        moderation(Guard()),
        chat_stream(),
    )
    events = moderator.events()
    assert isinstance(events, AsyncGenerator)
    await anext(events)  # the client reads one chunk, then stalls
    for _ in range(20):
        await asyncio.sleep(0)
    assert upstream.sent < 20  # a few windows ahead, not the whole answer
    await events.aclose()


def test_window_builder_never_ends_inside_a_word() -> None:
    builder = WindowBuilder(OutputPolicy(first_window=2, window=4, overlap=0), chat_stream())
    decoder = SSEDecoder()
    closed = [
        builder.add(e)
        for c in (delta("unbre"), delta("akable "), delta("x"))
        for e in decoder.feed(c)
    ]
    assert closed[0] is None
    assert closed[1] is not None
    assert closed[1][1] == "unbreakable "


def test_cjk_characters_are_boundaries() -> None:
    assert is_boundary("。")
    assert is_boundary("猫")
    assert not is_boundary("a")


@pytest.mark.anyio
async def test_an_upstream_failure_mid_stream_ends_with_an_error_event_not_a_hang() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield delta("Hello ")
        raise RuntimeError("provider went away")

    mod = Moderation(Guard().check, lambda r, t: Action.ALLOW, lambda a: [REFUSAL])
    reply = UpstreamReply(200, stream=broken())
    moderator = ChunkedModerator(reply, OutputPolicy(), mod, chat_stream())
    chunks = [c async for c in moderator.events()]
    assert b'"code": "upstream_error"' in chunks[-1]
    assert str(moderator.failure) == "The upstream stream failed: RuntimeError"
