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

# Protocol values: passed over while identifier-shaped (`"type": "text"`, `"id": 7`), judged
# when they are not, so no one can hide words under them.
STRUCTURAL = frozenset(
    {
        "jsonrpc", "id", "method", "type", "mimeType", "progressToken", "requestId", "level",
        "protocolVersion", "cursor", "nextCursor", "$schema", "format", "uriTemplate",
    }
)  # fmt: skip
# Free-form data (a tool's arguments and structured output, metadata): inside it no value is
# structural, for masking as for judging.
FREE_FORM = frozenset({"arguments", "structuredContent", "_meta", "metadata", "context"})
# The field names of MCP's messages and of JSON Schema. Any other key is text a model reads
# (a schema's property name, a key in a tool's structured output) and is judged with the values.
KNOWN_KEYS = STRUCTURAL | frozenset(
    {
        "params", "result", "error", "code", "message", "data", "content", "text", "image",
        "audio", "resource", "resource_link", "uri", "name", "title", "description", "blob",
        "structuredContent", "isError", "_meta", "annotations", "audience", "priority",
        "lastModified", "tools", "inputSchema", "outputSchema", "resources",
        "resourceTemplates", "prompts", "arguments", "required", "messages", "role",
        "contents", "progress", "total", "reason", "logger", "instructions", "serverInfo",
        "capabilities", "version", "experimental", "logging", "completions", "listChanged",
        "subscribe", "sampling", "roots", "elicitation", "modelPreferences", "hints",
        "costPriority", "speedPriority", "intelligencePriority", "systemPrompt",
        "includeContext", "temperature", "maxTokens", "stopSequences", "metadata", "model",
        "stopReason", "requestedSchema", "action", "size", "icons", "src", "sizes", "theme",
        "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint", "websiteUrl",
        "ref", "argument", "value", "values", "hasMore", "completion", "properties", "items",
        "enum", "const", "default", "examples", "pattern", "$ref", "$defs", "definitions",
        "additionalProperties", "anyOf", "oneOf", "allOf", "not", "minimum", "maximum",
        "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "nullable",
    }
)  # fmt: skip
MEDIA = frozenset({"image", "audio"})
# A schema's maps whose keys are names (of properties, of definitions): text, always.
NAMED = frozenset({"properties", "$defs", "definitions", "patternProperties"})
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
    for path, leaf in _leaves(value, label, False):
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
    """A listing entry as one text: every string in it (for a tool its name, title and
    description, then its schemas' descriptions, enums and defaults) and every key no
    protocol or schema names (a schema's property names: a name is read as an instruction)."""
    return "\n".join(strings(entry)) if isinstance(entry, dict) else str(entry)


def mask_tree(
    value: Any, mask: Any, keep: frozenset[str] = STRUCTURAL, free: bool = False
) -> tuple[Any, int]:
    """`value` with every string passed through `mask(text) -> (text, count)`, except media
    data and the identifier-shaped values of `keep` keys outside free-form data (`free`)."""
    if isinstance(value, str):
        masked: tuple[Any, int] = mask(value)
        return masked
    if isinstance(value, list):
        items = [mask_tree(item, mask, keep, free) for item in value]
        return [item for item, _ in items], sum(count for _, count in items)
    if isinstance(value, dict):
        media = value.get("type") in MEDIA
        pairs = {
            key: (item, 0)
            if (media and key in ("data", "blob")) or (not free and _kept(key, item, keep))
            else mask_tree(item, mask, keep, free or key in FREE_FORM)
            for key, item in value.items()
        }
        return {key: item for key, (item, _) in pairs.items()}, sum(c for _, c in pairs.values())
    return value, 0


def strings(value: Any) -> list[str]:
    """The judged strings under `value`, in order."""
    return [text for _, text in _leaves(value, "", False)]


def _leaves(value: Any, path: str, free: bool, names: bool = False) -> Iterator[tuple[str, str]]:
    """Every string a reader could take for words: values, and keys no protocol or schema
    names. A structural value is passed over only while identifier-shaped and outside
    free-form data, so no one can hide words under `id` or `type`, or in a key."""
    if isinstance(value, str):
        if value.strip():
            yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]", free)
    elif isinstance(value, dict):
        media = value.get("type") in MEDIA
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if free or names or key not in KNOWN_KEYS:
                yield where, str(key)
            if (media and key == "data") or key == "blob":
                continue  # judged as media, or listed as unjudged
            if not free and _kept(key, item, STRUCTURAL):
                continue
            yield from _leaves(item, where, free or key in FREE_FORM, key in NAMED)


def _kept(key: str, value: Any, keep: frozenset[str]) -> bool:
    """A protocol value under one of `keep`: a number or flag, or an identifier-shaped string."""
    if key not in keep or isinstance(value, list | dict):
        return False
    return not isinstance(value, str) or IDENTIFIER.fullmatch(value) is not None


def _media(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Media blocks (image, audio) and binary resources (`blob`) wherever they sit, `_meta`
    and protocol keys included: no text covers them."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _media(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        if value.get("type") in MEDIA or "blob" in value:
            yield path, value
            return
        for key, item in value.items():
            yield from _media(item, f"{path}.{key}" if path else key)
