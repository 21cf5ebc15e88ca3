"""The OpenAI Responses API: the codec of `POST /v1/responses`.

`input` is a string or a list of items. Message items (user, assistant, system, developer)
are judged like chat messages, `function_call` items as the assistant's tool calls and
`function_call_output` items as tool results; `instructions` are operator text. A
`previous_response_id` names history stored upstream, which the proxy cannot see: it was
judged when it went through the proxy, and what this request adds is judged now.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from guardproxy.api import openai_errors
from guardproxy.api.answers import ANSWER_FIELDS
from guardproxy.api.fields import RESPONSES_FIELDS
from guardproxy.api.responses.shapes import (
    CALL_ITEMS,
    NO_USAGE,
    TEXT_PARTS,
    base_response,
    incomplete_response,
    item_text,
    mask_item,
    message_text,
    refusal_item,
)
from guardproxy.api.responses.stream import ResponsesStream
from guardproxy.core.conversation import (
    Conversation,
    Found,
    Location,
    MediaPart,
    Turn,
    decode_object,
    json_path,
    model_and_stream,
    text_of,
)
from guardproxy.core.fields import close
from guardproxy.errors import RequestError
from guardproxy.pipeline.codec import StreamCodec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import LocatedMasking, Masker

MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
# Items that only point at history stored upstream; what they point at was judged when sent.
REFERENCE_ITEMS = frozenset({"item_reference"})
RESULT_ITEMS = {"function_call_output": "output", "custom_tool_call_output": "output"}


class ResponsesCodec(LocatedMasking):
    api = "responses"
    upstream_path = "/responses"
    answer_fields = ANSWER_FIELDS["responses"]

    def decode(self, raw: bytes) -> Conversation:
        body = decode_object(raw)
        model, stream = model_and_stream(body)
        found = Found()
        _instructions(body, found)
        _input(body.get("input"), found)
        return close(found.conversation(self, raw, body, model, stream), RESPONSES_FIELDS)

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]:
        return {**part, "image_url": data_url}

    def answer_texts(self, answer: dict[str, Any]) -> list[str]:
        output = answer.get("output")
        items = output if isinstance(output, list) else []
        return ["".join(item_text(item) for item in items)]

    def mask_answer(
        self, answer: dict[str, Any], masker: Masker, types: Collection[str]
    ) -> tuple[dict[str, Any], int]:
        output = answer.get("output")
        if not isinstance(output, list) or not types:
            return answer, 0
        masked = [mask_item(item, masker, types) for item in output]
        found = sum(count for _, count in masked)
        return ({**answer, "output": [item for item, _ in masked]} if found else answer), found

    def refusal(
        self, request: Conversation, exchange: Exchange, refusal: str, usage: Any
    ) -> dict[str, Any]:
        response = incomplete_response(
            base_response(request, exchange), [refusal_item(exchange, refusal)]
        )
        return {**response, "usage": usage or NO_USAGE, "guardproxy": exchange.client_view()}

    def refusal_events(
        self, request: Conversation, exchange: Exchange, refusal: str
    ) -> list[bytes]:
        return ResponsesStream(request).refusal(exchange, refusal, started=False)

    def content_filter_error(self, exchange: Exchange) -> dict[str, Any]:
        return openai_errors.content_filter_error(exchange, "input")

    def error(
        self, message: str, status: int, type_: str, param: str | None, code: str | None
    ) -> dict[str, Any]:
        return openai_errors.error_body(message, type_, param, code)

    def stream(self, request: Conversation) -> StreamCodec:
        return ResponsesStream(request)


RESPONSES = ResponsesCodec()


def _instructions(body: dict[str, Any], found: Found) -> None:
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions.strip():
        found.history.append(Turn("instructions", "developer", instructions))
    elif instructions is not None and not isinstance(instructions, str):
        raise RequestError("'instructions' must be a string.", "instructions")


def _input(items: Any, found: Found) -> None:
    if items is None:
        return
    if isinstance(items, str):
        found.prompt, found.prompt_at = items, "input"
        return
    if not isinstance(items, list):
        raise RequestError("'input' must be a string or an array of items.", "input")
    users = [i for i, item in enumerate(items) if _role(item) == "user"]
    last = users[-1] if users else None
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"'input[{index}]' must be an object.", f"input[{index}]")
        before = item_text(items[index - 1]) if index else ""
        _item(item, ("input", index), index == last, before, found)


def _role(item: Any) -> str | None:
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        return None
    role = item.get("role")
    return role if isinstance(role, str) else None


def _item(
    item: dict[str, Any], where: Location, is_last_user: bool, before: str, found: Found
) -> None:
    kind, path = item.get("type", "message"), json_path(where)
    if kind == "message":
        _message(item, where, is_last_user, before, found)
    elif kind in CALL_ITEMS:
        text = "".join(v for k in ("name", CALL_ITEMS[kind]) if isinstance(v := item.get(k), str))
        found.history.append(Turn(path, "assistant", text, before))
    elif kind in RESULT_ITEMS:
        output = item.get(RESULT_ITEMS[kind])
        found.history.append(Turn(path, "tool", text_of(output, ("text",))))
        _parts_media(output, (*where, RESULT_ITEMS[kind]), found)
    elif kind == "reasoning":  # its summary and its text: vLLM renders both
        said = text_of(item.get("summary")) + "\n" + text_of(item.get("content"))
        found.history.append(Turn(path, "assistant", said.strip(), before))
    elif kind not in REFERENCE_ITEMS:
        found.unjudged.append(path)  # a hosted tool's call or output the guard cannot judge


def _message(
    item: dict[str, Any], where: Location, is_last_user: bool, before: str, found: Found
) -> None:
    role, path = item.get("role"), json_path(where)
    if role not in MESSAGE_ROLES:
        raise RequestError(f"'{path}.role' must be one of {sorted(MESSAGE_ROLES)}.", f"{path}.role")
    content = item.get("content")
    if not isinstance(content, str | list):
        raise RequestError(f"'{path}.content' must be a string or an array.", f"{path}.content")
    text = message_text(content)
    if is_last_user:
        found.prompt, found.prompt_at = text, path
    elif role == "assistant":
        found.history.append(Turn(path, role, text, before))
    else:
        found.history.append(Turn(path, str(role), text))
    _parts_media(content, (*where, "content"), found)


def _parts_media(content: Any, where: Location, found: Found) -> None:
    """Images are judged; files, audio and any part type the proxy does not know are not."""
    for index, part in enumerate(content if isinstance(content, list) else []):
        kind = part.get("type") if isinstance(part, dict) else None
        at = (*where, index)
        if kind in TEXT_PARTS:
            continue
        url = part.get("image_url") if kind == "input_image" else None
        if isinstance(url, str):
            found.media.append(MediaPart("image", url, at))
        else:
            found.unjudged.append(json_path(at))  # input_file, input_audio, a file_id image
