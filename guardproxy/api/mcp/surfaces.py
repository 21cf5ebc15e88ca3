"""What each MCP message carries that a model will read or a client will receive: the closed
world of the MCP wire. Every string is judged, except the structural values named here;
media a guard can judge (images) goes with it; media no guard can judge (audio, binary
resources) is listed so the tenant's `unjudged_parts` decides. Masking walks the same fields,
so the JSON stays valid and each string keeps its type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from guardproxy.core.fields import IDENTIFIER

# Values that are protocol structure, never text a model reads as instructions.
STRUCTURAL = frozenset(
    {
        "jsonrpc", "id", "method", "type", "mimeType", "progressToken", "requestId", "level",
        "protocolVersion", "cursor", "nextCursor", "blob", "_meta",
    }
)  # fmt: skip
SCHEMAS = ("inputSchema", "outputSchema")
KEPT_BY_MASKING = STRUCTURAL | {"uri"}  # a resource's identity, judged but never rewritten
MEDIA = frozenset({"image", "audio"})
# A listing's entries: one judged apart, so an unsafe entry is removed and the rest kept.
LISTINGS = {
    "tools/list": "tools",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
    "prompts/list": "prompts",
}


@dataclass(frozen=True)
class Piece:
    label: str  # where it sits: "content[0].text", "tools[search]"
    text: str
    image: str | None = None  # a data: URL, judged with the text


@dataclass
class Surface:
    pieces: list[Piece] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # audio and binary parts, by label

    def add(self, other: Surface) -> None:
        self.pieces += other.pieces
        self.unjudged += other.unjudged

    @property
    def empty(self) -> bool:
        return not self.pieces and not self.unjudged

    def text(self) -> str:
        """Every judged string once, in order, as one text: a tool's `content` and the
        `structuredContent` the SDK fills with the same words cost one check, not two."""
        return "\n".join(dict.fromkeys(p.text for p in self.pieces if p.text))

    def images(self) -> list[Piece]:
        return [p for p in self.pieces if p.image is not None]


def surface(value: Any, label: str) -> Surface:
    """Every judged string under `value` (a piece per string), media images with them."""
    found = Surface()
    for path, leaf in _leaves(value, label):
        found.pieces.append(Piece(path, leaf))
    for path, block in _media(value, label):
        if block.get("type") == "image" and isinstance(block.get("data"), str):
            mime = block.get("mimeType") or "image/png"
            found.pieces.append(Piece(path, "", f"data:{mime};base64,{block['data']}"))
        else:
            found.unjudged.append(path)
    return found


def result_surface(method: str, result: dict[str, Any]) -> Surface:
    """A result judged whole, whatever its method: a field the protocol does not name (or a
    newer version adds) reaches the client too, so there is no list of fields to keep up."""
    return surface(result, "result")


def request_surface(method: str, params: dict[str, Any]) -> Surface:
    """A server's request for the client, judged whole: a sampling request's messages and
    system prompt, and its stop sequences and metadata as much."""
    return surface(params, "params")


def entry_text(key: str, entry: Any) -> str:
    """A listing entry as one text: for a tool its name, title and description, then its
    schemas' property names and every string in them (descriptions, enums, defaults)."""
    if not isinstance(entry, dict):
        return str(entry)
    if key != "tools":
        return "\n".join(text for _, text in _leaves(entry, ""))
    head = [str(entry.get(k, "")) for k in ("name", "title", "description") if entry.get(k)]
    schemas = [entry.get(k) for k in SCHEMAS if entry.get(k)]
    rest = {k: v for k, v in entry.items() if k not in ("name", "title", "description", *SCHEMAS)}
    texts = [*(t for schema in schemas for t in _schema_texts(schema)), *strings(rest)]
    return "\n".join([*head, *texts])


def mask_tree(value: Any, mask: Any, keep: frozenset[str] = KEPT_BY_MASKING) -> tuple[Any, int]:
    """`value` with every maskable string passed through `mask(text) -> (text, count)`;
    the values of `keep` keys, and media data, as they are."""
    if isinstance(value, str):
        masked: tuple[Any, int] = mask(value)
        return masked
    if isinstance(value, list):
        items = [mask_tree(item, mask, keep) for item in value]
        return [item for item, _ in items], sum(count for _, count in items)
    if isinstance(value, dict):
        media = value.get("type") in MEDIA
        pairs = {
            key: (item, 0)
            if key in keep or (media and key == "data")
            else mask_tree(item, mask, keep)
            for key, item in value.items()
        }
        return {key: item for key, (item, _) in pairs.items()}, sum(c for _, c in pairs.values())
    return value, 0


def strings(value: Any) -> list[str]:
    """The judged strings under `value`, in order."""
    return [text for _, text in _leaves(value, "")]


def _leaves(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string a reader could take for words. A structural key's value is skipped only
    while it is identifier-shaped, and a key that is not identifier-shaped is text itself: a
    server cannot hide words under `id` or `type`, or in a key, in a result or its arguments."""
    if isinstance(value, str):
        if value.strip():
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        media = value.get("type") in MEDIA
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not IDENTIFIER.fullmatch(str(key)):
                yield where, str(key)
            if (media and key == "data") or key == "blob" or _structural(key, item):
                continue  # media is judged as media, or listed as unjudged
            yield from _leaves(item, where)


def _structural(key: str, value: Any) -> bool:
    if key not in STRUCTURAL:
        return False
    return not isinstance(value, str | list | dict) or (
        isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None
    )


def _media(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Media blocks (image, audio) and binary resources (`blob`), which no text covers."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _media(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        if value.get("type") in MEDIA or "blob" in value:
            yield path, value
            return
        for key, item in value.items():
            if key not in STRUCTURAL:
                yield from _media(item, f"{path}.{key}" if path else key)


def _schema_texts(schema: Any) -> Iterator[str]:
    """A JSON schema's strings and its property names (a name is read as an instruction too)."""
    if isinstance(schema, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            yield from (str(name) for name in properties)
        for key, item in schema.items():
            if key not in ("type", "$schema", "format"):
                yield from _schema_texts(item)
    elif isinstance(schema, list):
        for item in schema:
            yield from _schema_texts(item)
    elif isinstance(schema, str) and schema.strip():
        yield schema
