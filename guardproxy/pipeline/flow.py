"""The request path: input guard -> upstream -> output guard -> decision, for one tenant,
whatever the API: the codec that came with it (`Incoming.codec`) reads and writes the wire shapes.

client ──► input check ──► [mask] ──► upstream LLM ──► output check ──► [mask] ──► client
              │ unsafe                                    │ unsafe
              └──────────────────► block shape ◄──────────┘
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import JSONResponse, Response

from guardproxy.core.conversation import Conversation
from guardproxy.core.fields import hosted_tools
from guardproxy.errors import (
    RequestError,
    UpstreamError,
)
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.request import NO_MEDIA, RequestMedia, prepare_media
from guardproxy.observe.tracing import NO_TRACING, Tracing, client_attributes
from guardproxy.pipeline.answers import (
    ClosedStream,
    answer_texts,
    mask_answer,
    upstream_error_names,
)
from guardproxy.pipeline.chain import Chain
from guardproxy.pipeline.checks import OFF
from guardproxy.pipeline.codec import Codec, StreamCodec
from guardproxy.pipeline.content import ContentCapture
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.enforce import Enforcer
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.replies import (
    with_verdicts,
)
from guardproxy.pipeline.shadow import Judged, ShadowRoute
from guardproxy.pipeline.streamed import StreamedAnswer
from guardproxy.pipeline.usage import usage_of
from guardproxy.policy.model import TenantPolicy
from guardproxy.policy.profile import Profile, select_profile
from guardproxy.upstreams.base import Upstream, UpstreamReply


@dataclass(frozen=True)
class Route:
    """What one tenant's requests go through; built once per policy set."""

    tenant: TenantPolicy
    chain: Chain  # the tenant's guards
    upstream: Upstream
    profiles: dict[str, Profile]
    masker: Masker
    tracing: Tracing = NO_TRACING
    shadow: ShadowRoute | None = None

    def profile(self, region: str | None) -> Profile:
        return select_profile(self.profiles, region)


@dataclass(frozen=True)
class Incoming:
    """A decoded request and what came with it: its wire API's codec, the client headers
    the upstream may receive, and the region it asked for."""

    codec: Codec
    request: Conversation
    headers: dict[str, str]
    region: str | None = None


async def handle_chat(
    route: Route, incoming: Incoming, exchange: Exchange, fetcher: ImageFetcher
) -> Response:
    tenant, request, region = route.tenant, incoming.request, incoming.region
    profile = route.profile(region)
    exchange.regions = profile.regions
    exchange.expose_reasoning = tenant.expose_reasoning
    exchange.upstream, exchange.guard = tenant.upstream, tenant.guard
    exchange.monitor = tenant.mode == "monitor"
    _refuse_unjudged(request, tenant, exchange)
    _refuse_hosted_tools(request, tenant)
    media = await prepare_media(request, tenant.images, tenant.video, fetcher)
    if tenant.audit_content != "none":
        image = bool(media.guard_images())
        exchange.content = ContentCapture(tenant.audit_content, route.masker, request.prompt, image)
    forwarded = replace(incoming, request=media.forwarded(request, tenant.images.forward))
    if route.shadow is not None:
        images, context = media.guard_images(), media.context_image()
        exchange.judged = Judged(request.prompt, request.history, images, context, region)
    return await ChatFlow(route, profile, forwarded, exchange, media).run()


class ChatFlow:
    """One request through one tenant's pipeline."""

    def __init__(
        self,
        route: Route,
        profile: Profile,
        incoming: Incoming,
        exchange: Exchange,
        media: RequestMedia = NO_MEDIA,
    ) -> None:
        self.route, self.tenant, self.profile = route, route.tenant, profile
        self.request, self.headers, self.exchange = incoming.request, incoming.headers, exchange
        self.codec = incoming.codec
        self.masker = route.masker.counting(exchange.tally("input"))
        self.media = media
        self.enforcer = Enforcer(
            self.tenant, profile, self.codec, self.request, exchange, media, route.masker
        )
        # Every string of each event is judged, not only the API's text deltas (answers.py).
        self.stream_codec: StreamCodec = ClosedStream(
            self.codec.stream(self.request), self.codec.answer_fields, self.request
        )

    async def run(self) -> Response:
        parallel = self.tenant.input.enabled and self.tenant.input.mode == "parallel"
        reply = await (self._input_in_parallel() if parallel else self._input_first())
        if isinstance(reply, Response):
            return reply
        self.masker = self.route.masker.counting(self.exchange.tally("output"))
        if not reply.ok:
            return self._relay_error(reply)
        if not self.request.stream:
            return await self._complete(reply)
        if not reply.content_type.startswith("text/event-stream"):
            await reply.aclose()  # a "stream" that is not SSE cannot be checked as one
            raise UpstreamError("The upstream LLM answered a streaming request without SSE.")
        streamed = StreamedAnswer(self.enforcer, self.stream_codec, self.route.chain, self.masker)
        if self.tenant.output.enabled and self._buffer_stream():
            return await streamed.buffered(reply)
        return await streamed.moderated(reply)

    def _buffer_stream(self) -> bool:
        """Windows judge one text; with several choices (`n` > 1) the stream is buffered so
        each choice is judged as its own answer."""
        return self.tenant.output.stream == "buffer" or self.codec.buffers_streams(self.request)

    # -- input ------------------------------------------------------------------------------

    async def _input_first(self) -> UpstreamReply | Response:
        body = await self._check_input(self._always_masked())
        return body if isinstance(body, Response) else await self._call_upstream(body)

    async def _input_in_parallel(self) -> UpstreamReply | Response:
        """The upstream starts at once; nothing it says is used before the input verdict."""
        sent = self._always_masked()
        call = asyncio.create_task(self._call_upstream(sent))
        try:
            body = await self._check_input(sent)
        except BaseException:
            await _abandon(call)
            raise
        if isinstance(body, Response) or body != sent:
            await _abandon(call)  # blocked, or the verdict asked for more masking
            return body if isinstance(body, Response) else await self._call_upstream(body)
        try:
            return await call
        except BaseException:
            await _abandon(call)  # cancelled as the call finished: close what it returned
            raise

    def _always_masked(self) -> bytes:
        body, found = self.codec.mask_request(self.request, self.masker, self.masker.always)
        self.enforcer.count_redactions("input", found)
        return body

    async def _check_input(self, body: bytes) -> bytes | Response:
        """The body to send upstream, or the block response."""
        if not self.tenant.input.enabled:
            self.exchange.input = OFF
            return body
        rules, chain = self.profile.input, self.route.chain
        images, history = self.media.guard_images(), self.request.history
        limits = self.tenant.input  # window_chars, and the cap: past it a 400, nothing sent
        result = await chain.judge_input(self.request.prompt, images, history, rules, limits)
        self.exchange.input = result
        turns = chain.judged_turns(history, limits.judge_system)
        texts = [self.request.prompt, *(turn.text for turn in turns)]
        ruling = self.enforcer.act(result, rules, "input", texts)
        if ruling.action is Action.REDACT:
            return self._redact_input(ruling.redact)
        return self.enforcer.blocked() if ruling.action is Action.BLOCK else body

    def _redact_input(self, types: frozenset[str]) -> bytes:
        body, found = self.codec.mask_request(self.request, self.masker, types)
        self.exchange.redacted["input"] = found
        return body

    # -- upstream ---------------------------------------------------------------------------

    async def _call_upstream(self, body: bytes) -> UpstreamReply:
        started = time.perf_counter()
        tracing = self.route.tracing
        url = self.route.upstream.url(self.request)
        upstream = {
            "guardproxy.upstream": self.tenant.upstream,
            **client_attributes(url, self.request.model),
        }
        try:
            with tracing.span("guardproxy.upstream", "client", **upstream) as span:
                headers = tracing.inject(self.headers)
                reply = await self.route.upstream.send(self.request, body, headers)
                span.set(**{"http.response.status_code": reply.status})
        finally:
            self.exchange.upstream_ms = (time.perf_counter() - started) * 1000
        if reply.stream is not None:
            reply.stream = FirstBytes(reply.stream, self.exchange)
        return reply

    def _relay_error(self, reply: UpstreamReply) -> Response:
        """The upstream's status, and its error's identifiers (type, code, param) in the
        API's shape, never its message: that text is unjudged, may echo the prompt, or name
        the provider's hosts and accounts."""
        self.exchange.conclude(reply.status, "error", f"upstream answered HTTP {reply.status}")
        type_, code, param = upstream_error_names(reply.body, reply.status)
        message = f"The upstream LLM refused the request (HTTP {reply.status}"
        message += f", {code})." if code else ")."
        body = self.codec.error(message, reply.status, type_, param, code)
        headers = {**reply.headers, **self.exchange.headers()}
        return JSONResponse(body, reply.status, headers)

    # -- output, whole ----------------------------------------------------------------------

    async def _complete(self, reply: UpstreamReply) -> Response:
        completion = _decode_completion(reply.body)
        self.exchange.usage = usage_of(completion.get("usage"))
        types = self.masker.always
        texts = answer_texts(self.codec, self.request, completion)
        self.enforcer.capture(texts)
        if self.tenant.output.enabled:
            rules = self.profile.output
            answers = self.enforcer.output_checks(texts)
            result = await self.route.chain.judge_output(answers)
            self.exchange.output = result
            ruling = self.enforcer.act(result, rules, "output", texts)
            if ruling.action is Action.BLOCK:
                return self.enforcer.blocked(completion.get("usage"))
            types = ruling.redact or types
        else:
            self.exchange.output = OFF
        completion, found = mask_answer(self.codec, completion, self.masker, types)
        self.enforcer.count_redactions("output", found)
        self.exchange.conclude(reply.status)
        return with_verdicts(completion, self.exchange)


def _refuse_unjudged(request: Conversation, tenant: TenantPolicy, exchange: Exchange) -> None:
    """A part no guard can judge is refused (400), never passed on unchecked, unless the
    tenant allows it; then the audit record names it."""
    if not request.unjudged or not tenant.input.enabled:
        return
    if tenant.input.unjudged_parts == "allow":
        exchange.notes.append(f"unjudged parts allowed: {', '.join(request.unjudged)}")
        return
    path = request.unjudged[0]
    message = f"'{path}' has a content type the guard cannot judge, so it is not accepted."
    raise RequestError(message, path)


def _refuse_hosted_tools(request: Conversation, tenant: TenantPolicy) -> None:
    """`input.hosted_tools: refuse`: tools the provider runs are not switched on."""
    found = hosted_tools(request.body) if tenant.input.hosted_tools == "refuse" else []
    if found:
        message = f"'{found[0]}' switches on a tool the provider runs, which is not accepted."
        raise RequestError(message, found[0])


async def _abandon(call: asyncio.Task[UpstreamReply]) -> None:
    """Cancel an upstream call whose answer must not be used, and release its connection."""
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError, UpstreamError):
        await (await call).aclose()


def _decode_completion(body: bytes) -> dict[str, Any]:
    try:
        completion = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UpstreamError("The upstream LLM answered with invalid JSON.") from exc
    if not isinstance(completion, dict):
        raise UpstreamError("The upstream LLM answered with JSON that is not an object.")
    return completion


class FirstBytes:
    """An upstream stream as it comes, noting when its first bytes arrived: what the proxy
    adds to a stream's first byte is measured from there."""

    def __init__(self, stream: AsyncIterator[bytes], exchange: Exchange) -> None:
        self._stream, self._exchange = stream, exchange

    def __aiter__(self) -> FirstBytes:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._stream.__anext__()
        if self._exchange.upstream_first_byte_ms is None and chunk:
            self._exchange.upstream_first_byte_ms = self._exchange.elapsed_ms()
        return chunk
