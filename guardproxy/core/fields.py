"""Every string of a body, sorted by a table of its wire API: the closed world's machinery
(the tables are each API's, in `api/`).

A string leaf (a value, or the key of an object whose keys are not the API's own names) is:

- `judged`: text a model reads; the guard judges it and redaction masks it;
- `structural`: an identifier or enum (`model`, `role`, `type`, an id). Only an
  identifier-shaped value counts: any other text in such a field is judged;
- `opaque`: bytes only the provider can read (a thinking block's `signature`, an
  `encrypted_content`); no model reads them as text;
- `media`: an image or video URL or bytes. It must sit in a part the codec took as media (and
  so fetched and judged), or in a part that is refused as unjudged; anywhere else, and always
  for `uuid` (media vLLM cached earlier, which the guard never saw), the request is refused;
- `refused`: content no guard can judge (audio, files, media by id): its part is unjudged,
  refused unless the tenant sets `input.unjudged_parts: allow`.

Anything a table does not name is judged: a new field of an API is text until someone writes
down that it is structural. The codecs decode what they understand (the prompt, turns, tool
calls and results); `close` then walks the whole body, and every judged string that none of
those turns already holds is judged too, as context: one turn for the request's own fields
(tools, schemas, `stop`, `metadata`, vLLM's `chat_template` and `documents`, …) and one per
message with fields of its own. The same leaves are where redaction masks, so what is judged
is exactly what is masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from guardproxy.core.conversation import Conversation, Turn
from guardproxy.errors import RequestError

Location = tuple[str | int, ...]


class Field(StrEnum):
    JUDGED = "judged"
    STRUCTURAL = "structural"
    OPAQUE = "opaque"
    MEDIA = "media"
    REFUSED = "refused"


J, S, X, M, R = Field.JUDGED, Field.STRUCTURAL, Field.OPAQUE, Field.MEDIA, Field.REFUSED
HOLDERS = (str, list, dict)  # what holds a string: anything else is a number, boolean or null
CONTEXT_ROLE = "context"  # a turn of fields the codec does not read as conversation
# A structural value: an identifier, enum, model name, id or timestamp. Text with a space or
# any other character outside this set is read as text, and judged.
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:/@+=#$\-]{0,96}")
# Opaque bytes as providers send them: base64 or base64url, nothing a reader would read.
OPAQUE_VALUE = re.compile(r"[A-Za-z0-9+/=_\-.]*")
# Structural wherever they name a string, unless a table says otherwise.
STRUCTURAL_KEYS: Mapping[str, Field] = {
    "type": S,
    "id": S,
    "role": S,
    "status": S,
    "call_id": S,
    "tool_call_id": S,
    "tool_use_id": S,
    "item_id": S,
    "media_type": S,
    "detail": S,
    "format": S,
    "signature": X,
    "encrypted_content": X,
    "$ref": S,
    "$schema": S,
}
# Objects whose every string is a setting, wherever they sit.
STRUCTURAL_OBJECTS = frozenset({"cache_control", "stream_options"})
# JSON Schema keywords: a schema's own keys, not text (its property names are).
SCHEMA_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "items", "additionalProperties", "enum", "const",
        "description", "title", "default", "anyOf", "oneOf", "allOf", "not", "$defs",
        "definitions", "$ref", "$schema", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems", "pattern",
        "format", "examples", "strict", "nullable", "uniqueItems", "prefixItems",
        "patternProperties", "propertyNames", "multipleOf", "minProperties", "maxProperties",
    }
)  # fmt: skip
# Content-part fields through which vLLM loads media whatever the part's `type` says
# (vllm/entrypoints/chat_utils.py parses a part by the media key it carries).
MEDIA_KEYS = frozenset(
    {"image_url", "video_url", "audio_url", "input_audio", "image_pil", "image_embeds", "uuid"}
)
# The wire APIs' own field names (requests of all three, their messages, parts, tools and
# calls): an object key outside these (and outside a table) is text, and judged.
API_NAMES = frozenset(
    {
        "messages", "content", "text", "name", "arguments", "tools", "function", "functions",
        "description", "parameters", "temperature", "top_p", "top_k", "stream", "max_tokens",
        "max_completion_tokens", "max_output_tokens", "tool_calls", "input", "output",
        "summary", "instructions", "system", "refusal", "reasoning", "reasoning_content",
        "audio", "transcript", "frequency_penalty", "presence_penalty", "logprobs",
        "top_logprobs", "seed", "stop", "stop_sequences", "response_format", "json_schema",
        "schema", "strict", "prediction", "metadata", "store", "parallel_tool_calls",
        "web_search_options", "user_location", "approximate", "city", "country", "region",
        "timezone", "url", "data", "source", "file", "filename", "image", "video", "thinking",
        "budget_tokens", "input_schema", "is_error", "citations", "enabled", "title",
        "context", "tool_choice", "disable_parallel_tool_use", "prompt", "variables",
        "background", "include_usage", "continuous_usage_stats", "ttl", "effort",
        "generate_summary", "verbosity", "max_tool_calls", "include", "truncation",
        "previous_response_id", "conversation", "version", "mode", "allowed_tools", "custom",
        "chat_template", "chat_template_kwargs", "documents", "add_generation_prompt",
        "continue_final_message", "add_special_tokens", "echo", "ignore_eos", "min_tokens",
        "min_p", "repetition_penalty", "length_penalty", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "include_stop_str_in_output",
        "return_tokens_as_token_ids", "structured_outputs", "guided_json", "guided_regex",
        "guided_choice", "guided_grammar", "guided_whitespace_pattern", "mm_processor_kwargs",
        "use_beam_search", "best_of", "bad_words", "stop_token_ids", "allowed_token_ids",
        "prompt_logprobs", "logits_processors", "kv_transfer_params", "vllm_xargs",
        "return_token_ids", "server_url", "server_label", "server_description", "headers",
        "authorization", "authorization_token", "require_approval", "never", "always",
        "tool_names", "read_only", "filters", "ranking_options", "ranker", "score_threshold",
        "max_num_results", "vector_store_ids", "search_context_size", "container",
        "file_ids", "environment", "display_width", "display_height", "quality", "size",
        "background_color", "moderation", "output_compression", "partial_images",
        "input_fidelity", "input_image_mask", "image_url", "video_url", "input_audio",
        "file_id", "file_data", "file_url", "encrypted_content", "service_tier", "user",
        "n", "model", "modalities", "logit_bias", "safety_identifier", "prompt_cache_key",
        "reasoning_effort", "function_call", "mcp_servers", "tool_configuration",
        "context_management", "edits", "keep", "trigger", "clear_at_least", "exclude_tools",
        "annotations", "start_index", "end_index", "cited_text", "document_index",
        "document_title", "start_char_index", "end_char_index", "start_page_number",
        "end_page_number", "start_block_index", "end_block_index", "arguments_json",
        "container_upload", "defer_loading", "input_examples", "allowed_callers",
    }
)  # fmt: skip
# Tool types a provider runs on its side (Messages' are versioned: `web_search_20250305`).
HOSTED_TOOL_TYPES = (
    "web_search", "file_search", "code_interpreter", "image_generation", "mcp", "web_fetch",
    "code_execution",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Leaf:
    """One string of a body: where it sits, what it is, and its kind."""

    location: Location
    text: str
    kind: Field
    is_key: bool = False  # the key of an object, named by its location's last step

    @property
    def path(self) -> str:
        return json_path(self.location)


@dataclass(frozen=True)
class FieldMap:
    """One wire API's request table: generic paths (`messages[].content[].text`) to kinds.
    A path ending in `.*` gives the kind of every string below it. `units` are the arrays
    whose items are the conversation's messages or items."""

    api: str
    fields: Mapping[str, Field]
    units: frozenset[str]
    known: frozenset[str] = frozenset()  # more keys that are the API's own (an answer's)
    names: frozenset[str] = field(init=False)  # keys that are the API's own, not text
    below: Mapping[str, Field] = field(init=False)  # `path.*` entries, by path

    def __post_init__(self) -> None:
        steps = {step for path in self.fields for step in re.split(r"[.\[\]]+", path) if step}
        known = steps | set(STRUCTURAL_KEYS) | SCHEMA_KEYWORDS | STRUCTURAL_OBJECTS | API_NAMES
        object.__setattr__(self, "names", frozenset((known | self.known) - {"*"}))
        below = {path[:-2]: kind for path, kind in self.fields.items() if path.endswith(".*")}
        object.__setattr__(self, "below", below)

    def leaves(self, body: Any, strict: bool = True) -> list[Leaf]:
        """Every string of `body`, in order. A lone surrogate anywhere is a 400: it cannot be
        forwarded, judged or recorded as text. Not `strict` (an upstream's answer, which the
        client did not write): it is judged as U+FFFD instead."""
        found: list[Leaf] = []
        self._walk(body, (), "", None, found, _checked if strict else _replaced)
        return found

    def _walk(
        self,
        value: Any,
        at: Location,
        pattern: str,
        above: Field | None,
        found: list[Leaf],
        checked: Callable[[str, Location], str],
    ) -> None:
        """`pattern` is `at` as a generic path; `above`, the kind a `.*` or a settings object
        above `at` gives it."""
        if isinstance(value, str):
            kind = self.fields.get(pattern) or above
            if kind is None:
                last = at[-1] if at else ""
                kind = STRUCTURAL_KEYS.get(last, J) if isinstance(last, str) else J
            if (kind is S and not IDENTIFIER.fullmatch(value)) or (
                kind is X and not OPAQUE_VALUE.fullmatch(value)
            ):
                kind = J  # free text in an identifier's place is read like any other text
            found.append(Leaf(at, checked(value, at), kind))
            return
        inherited = self.below.get(pattern, above)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, HOLDERS):
                    self._walk(item, (*at, index), pattern + "[]", inherited, found, checked)
        elif isinstance(value, dict):
            names_are_text = inherited is not S
            for key, item in value.items():
                known = key in self.names
                if not isinstance(item, HOLDERS) and known:
                    continue  # a number, boolean or null under a name of the API's own
                where = (*at, key)
                if not known and (names_are_text or not IDENTIFIER.fullmatch(key)):
                    found.append(Leaf(where, checked(key, where), J, is_key=True))
                child = inherited
                if child is None and key in STRUCTURAL_OBJECTS:
                    child = S
                step = f"{pattern}.{key}" if pattern else key
                self._walk(item, where, step, child, found, checked)

    def unit(self, location: Location) -> str:
        """The message (`messages[3]`) or top-level field a leaf belongs to."""
        head = location[0]
        if head in self.units and len(location) > 1 and isinstance(location[1], int):
            return json_path(location[:2])
        return json_path(location[:1])


def hosted_tools(body: dict[str, Any]) -> list[str]:
    """Where a request switches on tools the provider runs (Responses' web and file search,
    code interpreter, image generation, MCP; Messages' server tools and `mcp_servers`;
    Chat's `web_search_options`)."""
    tools = body.get("tools")
    found = [
        f"tools[{index}]"
        for index, tool in enumerate(tools if isinstance(tools, list) else [])
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith(HOSTED_TOOL_TYPES)
    ]
    return found + [key for key in ("mcp_servers", "web_search_options") if body.get(key)]


def close(request: Conversation, table: FieldMap) -> Conversation:
    """`request` with every judged string the codec did not read added as context turns,
    every unjudged part named, and `texts` set to where all judged strings sit. A media
    string outside a judged media part is a 400."""
    said = _said_by_unit(request)
    media = [part.path for part in request.media]
    unjudged = list(request.unjudged)
    texts: list[Location] = []
    extra: dict[str, list[str]] = {}
    for leaf in table.leaves(request.body):
        if leaf.kind in (S, X):
            continue
        unit = table.unit(leaf.location)
        if leaf.kind is M:
            _check_media(leaf, media, unjudged, said.get(unit, ""))
            continue
        if leaf.kind is R:
            if not _below_any(leaf.path, unjudged):
                unjudged.append(leaf.path)
            continue
        if not leaf.is_key:
            texts.append(leaf.location)
        if leaf.text.strip() and leaf.text not in said.get(unit, ""):
            group = unit if unit.endswith("]") else "fields"
            extra.setdefault(group, []).append(leaf.text)
    turns = [Turn(group, CONTEXT_ROLE, "\n".join(found)) for group, found in extra.items()]
    return replace(
        request,
        history=(*request.history, *turns),
        unjudged=tuple(unjudged),
        texts=tuple(texts),
    )


def _said_by_unit(request: Conversation) -> dict[str, str]:
    """The text already judged for each message or field, by its path."""
    said: dict[str, list[str]] = {}
    spoken = [(turn.path, turn.text) for turn in request.history]
    if request.prompt_at:
        spoken.append((request.prompt_at, request.prompt))
    for path, text in spoken:
        said.setdefault(_unit_of(path), []).append(text)
    return {unit: "\n".join(texts) for unit, texts in said.items()}


def _unit_of(path: str) -> str:
    """`messages[3].content[1]` → `messages[3]`; `system` → `system`."""
    match = re.match(r"[^.\[]+(\[\d+\])?", path)
    return match.group(0) if match else path


def _check_media(leaf: Leaf, media: list[str], unjudged: list[str], said: str) -> None:
    seen = _below_any(leaf.path, media) or _below_any(leaf.path, unjudged) or leaf.text in said
    if seen and leaf.location[-1] != "uuid":
        return
    message = (
        f"'{leaf.path}' names media the guard would not see: send images and videos as their "
        "own content parts, with a URL or data."
    )
    raise RequestError(message, leaf.path)


def _below_any(path: str, ancestors: list[str]) -> bool:
    return any(path == a or (path.startswith(a) and path[len(a)] in ".[") for a in ancestors if a)


def _checked(text: str, at: Location) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            path = json_path(at) or "body"
            code = f"\\u{ord(text[exc.start]):04x}"
            message = f"'{path}' holds a lone surrogate ({code}), which is not text."
            raise RequestError(message, path) from exc
    return text


def _replaced(text: str, at: Location) -> str:
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def json_path(location: Location) -> str:
    """`("messages", 3, "content", 1)` as `messages[3].content[1]`."""
    path = ""
    for step in location:
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
    return path
