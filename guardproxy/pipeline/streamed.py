"""A streamed answer: relayed as it comes (output checks off), moderated window by window (the
default), or buffered and judged whole (`stream: buffer`, or several choices).

The moderator asks a `WindowJudge` for each window's check and action and the stream codec
for the cut-off events; what it ends with (a cut-off, an upstream failure) is a value read
here, so nothing in `moderation.py` calls back into the flow.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from functools import partial

from starlette.responses import Response

from guardproxy.pipeline.chain import Chain
from guardproxy.pipeline.checks import OFF, PENDING, CheckResult
from guardproxy.pipeline.codec import StreamCodec
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.enforce import Enforcer, guard_failure
from guardproxy.pipeline.judging import STOPS
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.moderation import ChunkedModerator, Moderation
from guardproxy.pipeline.replies import cut_off_events, status_of
from guardproxy.pipeline.streams import (
    BUFFER_LIMIT_BYTES,
    buffer_stream,
    relay_response,
    replay_response,
    sse_response,
    tally,
)
from guardproxy.upstreams.base import UpstreamReply


@dataclass
class WindowJudge:
    """One stream's window checks: the tenant's output check on its guards, and its ruling
    through the judging core. The masker already runs every `redact` category's detectors on
    the stream, so a `redact` it can act on passes."""

    enforcer: Enforcer
    chain: Chain

    async def check(self, text: str) -> CheckResult:
        result = await self.chain.judge_output(self.enforcer.output_checks([text]))
        exchange = self.enforcer.exchange
        exchange.output = exchange.output.merge(result)
        return result

    def judge(self, result: CheckResult, text: str) -> Action:
        rules = self.enforcer.profile.output
        ruling = self.enforcer.ruling(result, rules, "output", [text])
        exchange = self.enforcer.exchange
        if ruling.action is Action.FLAG and "output" not in exchange.flags:
            exchange.flag("output")
        return ruling.action if ruling.action in STOPS else Action.ALLOW


@dataclass
class StreamedAnswer:
    enforcer: Enforcer
    codec: StreamCodec
    chain: Chain  # the tenant's guards that judge answers
    masker: Masker  # the output direction's, counting what it masks

    async def moderated(self, reply: UpstreamReply) -> Response:
        """Relay the stream as it comes, or moderate it window by window (the default).

        The response starts only with the first released window: a block or guard failure
        before it is answered with the tenant's block shape or a 503, never a 200.
        """
        enforcer, exchange = self.enforcer, self.enforcer.exchange
        exchange.conclude(reply.status)
        masking = self.codec.masking(self.masker, enforcer.stream_mask_types(self.masker))
        if not enforcer.tenant.output.enabled:
            exchange.output = OFF
            return relay_response(reply, exchange, self.codec, masking)
        exchange.output = PENDING
        judge = WindowJudge(enforcer, self.chain)
        moderation = Moderation(judge.check, judge.judge, self._cut_off_events)
        moderator = ChunkedModerator(reply, enforcer.tenant.output, moderation, self.codec, masking)
        exchange.moderation = moderator.stats
        events = moderator.events()
        try:
            first = await anext(events, b"")
        except BaseException:
            await reply.aclose()
            raise
        if moderator.cut_off is not None and not moderator.released:
            return await self._blocked_before_release(moderator.cut_off, events, reply)
        response = sse_response(_prepend(first, events), reply, exchange, True)
        response.closers.append(reply.aclose)
        response.closers.append(partial(self._record_failure, moderator))
        response.closers.append(self._record_usage)
        return response

    async def buffered(self, reply: UpstreamReply) -> Response:
        """Collect the whole stream, check it once, then send it on with its original framing."""
        enforcer, exchange = self.enforcer, self.enforcer.exchange
        buffered = await buffer_stream(reply, BUFFER_LIMIT_BYTES)
        tally(self.codec, buffered.events)
        exchange.usage = self.codec.consumed()
        texts = self.codec.texts(buffered.events)
        enforcer.capture(texts)
        result = await self.chain.judge_output(enforcer.output_checks(texts))
        exchange.output = result
        ruling = enforcer.act(result, enforcer.profile.output, "output", texts)
        if ruling.action is Action.BLOCK:
            return enforcer.blocked()
        types = enforcer.stream_mask_types(self.masker) | ruling.redact
        exchange.conclude(reply.status)
        masking = self.codec.masking(self.masker, types)
        return replay_response(buffered.events, reply, exchange, masking)

    def _cut_off_events(self, action: Action) -> list[bytes]:
        exchange, tenant = self.enforcer.exchange, self.enforcer.tenant
        return cut_off_events(self.codec, exchange, tenant, action, exchange.output.error)

    async def _blocked_before_release(
        self, action: Action, events: AsyncGenerator[bytes], reply: UpstreamReply
    ) -> Response:
        await events.aclose()
        await reply.aclose()
        if action is Action.FAIL:
            raise guard_failure(self.enforcer.exchange.output)
        return self.enforcer.blocked()

    async def _record_usage(self) -> None:
        """What the stream consumed, once it ends (a cut-off has recorded it already)."""
        exchange = self.enforcer.exchange
        exchange.usage = exchange.usage or self.codec.consumed()

    async def _record_failure(self, moderator: ChunkedModerator) -> None:
        """An upstream that broke off mid-stream: the record says so, once the stream ends."""
        if moderator.failure is not None:
            exchange = self.enforcer.exchange
            exchange.conclude(status_of(moderator.failure)[0], error=str(moderator.failure))


async def _prepend(first: bytes, rest: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
