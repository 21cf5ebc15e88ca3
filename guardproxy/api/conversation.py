"""The surface-neutral request every codec decodes into, and the seams a codec fills in.

A codec (one per wire API: `chat`, `openai_responses`, `anthropic_messages`) turns the client's
bytes into a `Conversation`, and turns the pipeline's outcomes (the answer's text, a
redaction, stream events, a block) back into its own wire shapes. The pipeline only ever
talks to these protocols.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from guardproxy.errors import RequestError

if TYPE_CHECKING:
    from guardproxy.api.sse import SSEEvent
    from guardproxy.decision import Action
    from guardproxy.errors import GuardproxyError
    from guardproxy.masking import Masker
    from guardproxy.observe.exchange import Exchange
    from guardproxy.policy.model import TenantPolicy

# Roles whose text is the operator's own, judged only with `input.judge_system: true`.
OPERATOR_ROLES = frozenset({"system", "developer"})

MediaKind = Literal["image", "video"]
Location = tuple[str | int, ...]  # a JSON path into the request body


@dataclass(frozen=True, slots=True)
class MediaPart:
    """An image or video the client sent, and where its content part sits in the body."""

    kind: MediaKind
    url: str  # an http(s) or data: URL
    location: Location

    @property
    def path(self) -> str:
        return json_path(self.location)


@dataclass(frozen=True, slots=True)
class Turn:
    """Text of the conversation the upstream will see, other than the last user turn's: an
    earlier user turn, a tool or function result, a client-supplied assistant turn (its tool
    calls included), a `name` field, or an operator message."""

    path: str  # "messages[3]" or "messages[3].name"
    role: str
    text: str
    context: str | None = None  # an assistant turn: the text of the message before it


@dataclass(frozen=True, slots=True)
class Conversation:
    """One request, as the pipeline sees it whatever API it came in by. The body is only
    read: the upstream gets the client's bytes as sent (`raw`), apart from redaction."""

    codec: Codec
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    prompt: str  # text of the last user turn
    prompt_at: str = ""  # where it sits: "messages[4]", "input"
    media: tuple[MediaPart, ...] = ()  # images and videos of the client's turns
    history: tuple[Turn, ...] = ()
    unjudged: tuple[str, ...] = ()  # paths of content parts no guard can judge
    texts: tuple[Location, ...] = ()  # where every judged string sits: redaction masks there

    def turns(self, operator: bool) -> tuple[Turn, ...]:
        """The history to judge; operator (system, developer) text only if asked."""
        return tuple(t for t in self.history if operator or t.role not in OPERATOR_ROLES)

    @property
    def images(self) -> tuple[str, ...]:
        return tuple(m.url for m in self.media if m.kind == "image")


@dataclass
class Found:
    """What decoding collects, part by part, before it becomes a `Conversation`."""

    prompt: str = ""
    prompt_at: str = ""
    media: list[MediaPart] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)
    texts: list[Location] = field(default_factory=list)

    def conversation(
        self, codec: Codec, raw: bytes, body: dict[str, Any], model: str, stream: bool
    ) -> Conversation:
        return Conversation(
            codec,
            raw,
            body,
            model,
            stream,
            self.prompt,
            self.prompt_at,
            tuple(self.media),
            tuple(self.history),
            tuple(self.unjudged),
            tuple(self.texts),
        )


class StreamCodec(Protocol):
    """One stream's events, read and written in its API's shapes (state per stream)."""

    def text(self, chunk: dict[str, Any]) -> str:
        """The new text an event carries for the output check (deltas only, never a
        summary of text already counted)."""
        ...

    def in_call(self, chunk: dict[str, Any]) -> bool:
        """Whether the event is part of a tool call streamed as fragments."""
        ...

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        """Events held back until the final check of the whole answer."""
        ...

    def observe(self, chunk: dict[str, Any]) -> None:
        """Note what a cut-off needs (ids, open blocks, sequence numbers) as events pass."""
        ...

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        """A whole buffered stream's answers, one per choice."""
        ...

    def released(self, events: Sequence[SSEEvent]) -> None:
        """Events that reached the client: a cut-off continues from what the client saw."""
        ...

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None: ...

    def cut_off(
        self, exchange: Exchange, tenant: TenantPolicy, action: Action, error: str | None
    ) -> list[bytes]:
        """How a stream already under way ends when a check fails: never retract, stop."""
        ...

    def error_event(self, exc: GuardproxyError) -> bytes:
        """A failure once a 200 stream has begun."""
        ...


class EventRewriter(Protocol):
    """Redaction of a stream, event by event, across event boundaries."""

    def rewrite(self, event: SSEEvent) -> bytes: ...

    def finish(self) -> bytes:
        """Whatever is still held back when the stream ends."""
        ...


class Codec(Protocol):
    """One wire API. Decoding is `decode(raw) -> Conversation`; the rest encodes."""

    api: str  # as the audit record names it
    upstream_path: str  # where the upstream serves it, below its base URL

    def decode(self, raw: bytes) -> Conversation: ...

    def mask_request(
        self, request: Conversation, masker: Masker, types: Collection[str]
    ) -> tuple[bytes, int]:
        """The body with every judged text masked, and the spans masked; with none, the
        client's bytes untouched."""
        ...

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]:
        """A media part carrying `data_url` (the judged bytes) instead of what it had."""
        ...

    def answer_texts(self, answer: dict[str, Any]) -> list[str]:
        """What a whole answer says, one string per choice."""
        ...

    def mask_answer(
        self, answer: dict[str, Any], masker: Masker, types: Collection[str]
    ) -> tuple[dict[str, Any], int]: ...

    def buffers_streams(self, request: Conversation) -> bool:
        """Streams that windows cannot judge as one text (several choices)."""
        ...

    def refusal(
        self, request: Conversation, exchange: Exchange, refusal: str, usage: Any
    ) -> dict[str, Any]:
        """A whole answer that is the tenant's refusal."""
        ...

    def refusal_events(
        self, request: Conversation, exchange: Exchange, refusal: str
    ) -> list[bytes]:
        """A stream that is the tenant's refusal, from its first event."""
        ...

    def content_filter_error(self, exchange: Exchange) -> dict[str, Any]:
        """A block as a 400 error body (`on_block: error`)."""
        ...

    def error(
        self, message: str, status: int, type_: str, param: str | None, code: str | None
    ) -> dict[str, Any]:
        """An error body in the API's shape."""
        ...

    def stream(self, request: Conversation) -> StreamCodec: ...


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different. RFC 8259 §4 only says names SHOULD be unique,
    and parsers differ on a repeated one (Python keeps the last, others the first)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        key = _first_repeated(key for key, _ in pairs)
        raise RequestError(f"The request body repeats the key {key!r} in one object.")
    return found


def _first_repeated(keys: Iterable[str]) -> str:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return ""


def decode_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what the parser refused (invalid
    UTF-8 or JSON, nesting too deep for it, an integer too long to convert, a key repeated
    in one object: the guard and the upstream could read different values)."""
    try:
        body = json.loads(raw, object_pairs_hook=_unique_keys)  # raises RequestError itself
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise RequestError("The request body is nested too deeply to be parsed.") from exc
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string"
        raise RequestError(f"The request body cannot be parsed: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def model_and_stream(body: dict[str, Any]) -> tuple[str, bool]:
    """The two fields every API's request has, checked."""
    model, stream = body.get("model"), body.get("stream", False)
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a non-empty string.", "model")
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean.", "stream")
    return model, stream


def json_path(location: Location) -> str:
    """`("messages", 3, "content", 1)` as `messages[3].content[1]`."""
    path = ""
    for step in location:
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
    return path


def text_of(content: Any, keys: Collection[str] = ("text",)) -> str:
    """The text of a message's content: a string, or the text of its parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get(k) for p in content if isinstance(p, dict) for k in keys]
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""
