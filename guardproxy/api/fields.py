"""The request tables of the three wire APIs: which fields are structural, opaque, media or
refused (anything unnamed is judged). The walk that reads them is `core/fields.py`."""

from __future__ import annotations

from collections.abc import Mapping

from guardproxy.core.fields import MEDIA_KEYS, Field, FieldMap

J, S, X, M, R = Field.JUDGED, Field.STRUCTURAL, Field.OPAQUE, Field.MEDIA, Field.REFUSED

_PART = "messages[].content[]"
_PARTS: dict[str, Field] = {
    f"{_PART}.{key}": M for key in MEDIA_KEYS if key not in {"image_url", "video_url"}
}

CHAT_REQUEST: Mapping[str, Field] = {
    # platform.openai.com/docs/api-reference/chat/create, and vLLM's extra parameters
    "model": S, "user": S, "safety_identifier": S, "prompt_cache_key": S, "service_tier": S,
    "reasoning_effort": S, "verbosity": S, "modalities[]": S, "n": S, "logit_bias.*": S,
    "tool_choice": S, "tool_choice.function.name": S, "tool_choice.allowed_tools.mode": S,
    "tool_choice.allowed_tools.tools[].function.name": S, "tool_choice.custom.name": S,
    "function_call": S, "function_call.name": S, "response_format.json_schema.name": S,
    "audio.voice": S, "audio.format": S, "prediction.type": S,
    "web_search_options.search_context_size": S, "request_id": S, "cache_salt": S,
    "guided_decoding_backend": S, "priority": S,
    "messages[].content[].image_url": M, "messages[].content[].image_url.url": M,
    "messages[].content[].video_url": M, "messages[].content[].video_url.url": M,
    "messages[].content[].input_audio.data": R, "messages[].content[].input_audio.format": S,
    "messages[].content[].file.file_data": R, "messages[].content[].file.file_id": R,
    "messages[].audio.id": S,
    **_PARTS,
}  # fmt: skip
RESPONSES_REQUEST: Mapping[str, Field] = {
    # platform.openai.com/docs/api-reference/responses/create
    "model": S, "previous_response_id": S, "conversation": S, "prompt.id": S,
    "prompt.version": S, "prompt_cache_key": S, "safety_identifier": S, "user": S,
    "service_tier": S, "truncation": S, "include[]": S, "reasoning.effort": S,
    "reasoning.summary": S, "reasoning.generate_summary": S, "text.verbosity": S,
    "text.format.name": S, "tool_choice": S, "tool_choice.name": S, "tool_choice.mode": S,
    "tool_choice.server_label": S, "tools[].server_label": S, "tools[].require_approval": S,
    "tools[].search_context_size": S, "tools[].container": S, "tools[].vector_store_ids[]": S,
    "input[].content[].image_url": M, "input[].content[].file_id": R,
    "input[].content[].file_data": R, "input[].content[].file_url": R,
    "input[].content[].input_audio.data": R,
}  # fmt: skip
MESSAGES_REQUEST: Mapping[str, Field] = {
    # docs.anthropic.com/en/api/messages
    "model": S, "service_tier": S, "container": S, "metadata.user_id": S,
    "tool_choice.name": S, "thinking.type": S, "messages[].content[].data": X,
    "messages[].content[].source.data": M, "messages[].content[].source.url": M,
    "messages[].content[].source.file_id": R,
    "messages[].content[].content[].source.data": M,
    "messages[].content[].content[].source.url": M,
    "messages[].content[].content[].source.file_id": R,
}  # fmt: skip


CHAT_FIELDS = FieldMap("chat.completions", CHAT_REQUEST, frozenset({"messages"}))
RESPONSES_FIELDS = FieldMap("responses", RESPONSES_REQUEST, frozenset({"input"}))
MESSAGES_FIELDS = FieldMap("messages", MESSAGES_REQUEST, frozenset({"messages"}))
