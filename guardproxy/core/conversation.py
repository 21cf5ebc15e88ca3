"""The surface-neutral request every codec decodes into: the last user turn, the other judged
turns, the media, the parts no guard can judge. What a codec must provide besides is the
pipeline's (`pipeline/codec.py`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from guardproxy.errors import RequestError

# Roles whose text is the operator's own, judged only with `input.judge_system: true`.
OPERATOR_ROLES = frozenset({"system", "developer"})

MediaKind = Literal["image", "video"]
Location = tuple[str | int, ...]  # a JSON path into the request body


class WireApi(Protocol):
    """What a request says of its wire API to the layers below the pipeline (upstreams,
    media); the whole codec is `pipeline.codec.Codec`."""

    @property
    def api(self) -> str: ...  # as the audit record names it

    @property
    def upstream_path(self) -> str: ...  # where the upstream serves it, below its base URL

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]: ...


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

    codec: WireApi
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
        self, codec: WireApi, raw: bytes, body: dict[str, Any], model: str, stream: bool
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
