"""Every string of an answer the client receives: judged, structural, or an echo of the request.

The codecs read an answer's text the way its API defines it (message content, refusals, tool
calls, reasoning). That is an allow-list, and an answer carries more: hosted-tool outputs
(Responses `mcp_call`, `web_search_call`, code interpreter and file search results,
annotations; Messages `mcp_tool_result`, web search and fetch results, code execution output,
citations), `logprobs` tokens, a thinking block's text in `content_block_start`, `*.done` and
`response.completed` summaries, mid-stream `error` events, SSE lines that are not JSON. So,
as on the request side (`fields.py`), the answer is walked whole, with one table per API:

- a string the codec already reads, or one contained in what it read (a `.done` event that
  repeats the deltas), is judged with the answer;
- a structural value (an id, a model name, a finish reason, usage counts) is not text;
- a string the client itself sent (the Responses API echoes `instructions`, `tools` and
  `metadata`) tells the client nothing new, and was judged on the way in;
- anything else is judged too, as part of the answer, before the client gets it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Container, Iterable, Sequence
from typing import Any

from guardproxy.core.conversation import Conversation
from guardproxy.core.fields import IDENTIFIER, FieldMap, Leaf
from guardproxy.core.fields import Field as F
from guardproxy.core.sse import SSEEvent, chunk_of, loose_text
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.codec import Codec, EventRewriter, StreamCodec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.usage import TokenUsage

SEPARATOR = "\n"


def sent_strings(request: Conversation) -> frozenset[str]:
    """Every string of the client's request (values and keys): echoed back, it is no news."""
    found: set[str] = set()
    _strings(request.body, found)
    return frozenset(text for text in found if text.strip())


class Sent:
    """Every string of the client's request, walked only the first time an answer string
    needs it: most answers hold nothing the codec does not read already."""

    def __init__(self, request: Conversation) -> None:
        self._request = request
        self._strings: frozenset[str] | None = None

    def __contains__(self, text: object) -> bool:
        if self._strings is None:
            self._strings = sent_strings(self._request)
        return text in self._strings


def unsaid(value: Any, table: FieldMap, said: str, sent: Container[str]) -> list[str]:
    """The judged strings of an answer (or one stream event) that `said` does not hold and
    the client did not send itself, in order."""
    return [text for text in _texts(table.leaves(value, strict=False)) if _new(text, said, sent)]


def answer_texts(codec: Codec, request: Conversation, answer: dict[str, Any]) -> list[str]:
    """What a whole answer says, one string per choice, plus one for every other string of
    it the codec does not read (hosted-tool outputs, logprobs tokens, annotations, ...)."""
    texts = codec.answer_texts(answer)
    table = codec.answer_fields
    extra = unsaid(answer, table, SEPARATOR.join(texts), Sent(request))
    return [*texts, SEPARATOR.join(extra)] if extra else texts


def mask_answer(
    codec: Codec, answer: dict[str, Any], masker: Masker, types: Collection[str]
) -> tuple[dict[str, Any], int]:
    """A whole answer with the tenant's redaction applied to every string that is judged:
    the codec's fields, then any other (a hosted tool's output that holds a key)."""
    answer, found = codec.mask_answer(answer, masker, types)
    if not types:
        return answer, found
    copied = False
    for leaf in codec.answer_fields.leaves(answer, strict=False):
        if leaf.kind is not F.JUDGED or leaf.is_key:
            continue
        masked, count = masker.mask(leaf.text, types)
        if count:
            answer = answer if copied else copy.deepcopy(answer)
            copied = True
            _put(answer, leaf.location, masked)
            found += count
    return answer, found


def upstream_error_names(body: bytes, status: int) -> tuple[str, str | None, str | None]:
    """An upstream error body's identifiers (type, code, param), OpenAI's or Anthropic's
    shape, where they are identifiers: its message is free text, and never relayed."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    names = error if isinstance(error, dict) else {}
    type_, code, param = (_identifier(names.get(key)) for key in ("type", "code", "param"))
    return type_ or ("api_error" if status >= 500 else "invalid_request_error"), code, param


class ClosedStream:
    """A stream codec whose `text` is everything of each event the client will receive that
    is not structural: the codec's deltas, and every other string, judged in its window.

    Strings a later event repeats (`*.done`, `response.completed`, `message_start`) are
    contained in what was judged before, and so are not judged twice.
    """

    def __init__(self, inner: StreamCodec, table: FieldMap, request: Conversation) -> None:
        self.inner = inner
        self.table = table
        self.sent = Sent(request)
        # What was judged so far: the API's deltas run on into each other ("Hel" + "lo"), so
        # a summary repeats a stretch of them; every other string stands alone.
        self._deltas: list[str] = []
        self._extras: list[str] = []
        self._joined, self._joined_count = "", 0

    def text(self, chunk: dict[str, Any]) -> str:
        own = self.inner.text(chunk)
        extra = [t for t in unsaid(chunk, self.table, own, self.sent) if not self._repeats(t)]
        self._deltas.append(own)
        self._extras += extra
        return SEPARATOR.join([own, *extra]) if extra else own

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        texts = self.inner.texts(events)
        said = SEPARATOR.join(texts)
        extra: list[str] = []
        for event in events:
            chunk = chunk_of(event)
            found = unsaid(chunk, self.table, said, self.sent) if chunk else [loose_text(event)]
            extra += [text for text in found if text and text not in extra]
        return [*texts, SEPARATOR.join(extra)] if extra else texts

    def _repeats(self, text: str) -> bool:
        if text in self._extras:
            return True
        if self._joined_count != len(self._deltas):
            self._joined, self._joined_count = "".join(self._deltas), len(self._deltas)
        return text in self._joined

    # -- the rest is the API's own ----------------------------------------------------------

    def in_call(self, chunk: dict[str, Any]) -> bool:
        return self.inner.in_call(chunk)

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        return self.inner.is_end(event, chunk)

    def observe(self, chunk: dict[str, Any]) -> None:
        self.inner.observe(chunk)

    def released(self, events: Sequence[SSEEvent]) -> None:
        self.inner.released(events)

    def consumed(self) -> TokenUsage:
        return self.inner.consumed()

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None:
        return self.inner.masking(masker, types)

    def block_error_events(self, exchange: Exchange) -> list[bytes]:
        return self.inner.block_error_events(exchange)

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]:
        return self.inner.refusal_after(exchange, refusal)

    def error_event(self, exc: GuardproxyError) -> bytes:
        return self.inner.error_event(exc)


def _texts(leaves: Iterable[Leaf]) -> Iterable[str]:
    for leaf in leaves:
        if leaf.kind is F.JUDGED and leaf.text.strip():
            yield leaf.text


def _new(text: str, said: str, sent: Container[str]) -> bool:
    return text not in said and text not in sent


def _strings(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, found)
    elif isinstance(value, dict):
        for key, item in value.items():
            found.add(key)
            _strings(item, found)


def _put(body: Any, location: tuple[str | int, ...], value: str) -> None:
    *parents, last = location
    for step in parents:
        body = body[step]
    body[last] = value


def _identifier(value: Any) -> str | None:
    """A string identifier; vLLM's `code` is the HTTP status again, an int, and says nothing."""
    return value if isinstance(value, str) and value and IDENTIFIER.fullmatch(value) else None
