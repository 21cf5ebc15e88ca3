"""The answer tables of the three wire APIs: which strings of an answer or stream event are
structural (ids, model names, finish reasons, usage); every other string the client receives
is judged (`pipeline/answers.py` walks them)."""

from __future__ import annotations

from collections.abc import Mapping

from guardproxy.core.fields import Field as F
from guardproxy.core.fields import FieldMap

S, X = F.STRUCTURAL, F.OPAQUE
# Keys an answer of the three APIs carries, besides the requests' own (`API_NAMES`): a key
# outside these is read as text, and judged.
ANSWER_NAMES = frozenset(
    {
        "choices", "index", "message", "delta", "finish_reason", "token", "bytes", "usage",
        "prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
        "completion_tokens_details", "cached_tokens", "reasoning_tokens", "audio_tokens",
        "accepted_prediction_tokens", "rejected_prediction_tokens", "object", "created",
        "system_fingerprint", "url_citation", "expires_at", "prompt_logprobs", "stop_reason",
        "created_at", "completed_at", "output_text", "incomplete_details", "reason", "error",
        "code", "param", "sequence_number", "output_index", "content_index", "item", "part",
        "response", "obfuscation", "results", "queries", "query", "action", "sources",
        "outputs", "logs", "container_id", "approval_request_id", "input_tokens",
        "output_tokens", "input_tokens_details", "output_tokens_details", "stop_sequence",
        "content_block", "cache_creation_input_tokens", "cache_read_input_tokens",
        "server_tool_use", "web_search_requests", "web_fetch_requests", "cache_creation",
        "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "page_age", "return_code",
        "stdout", "stderr", "partial_json", "attributes", "score", "file_citation",
        "container_file_citation", "file_path", "pattern", "sequence", "result",
        "retrieved_at", "top_logprobs", "cache_creation_tokens", "server_tool_use_tokens",
        "kv_transfer_params", "prompt_token_ids", "token_ids", "matched_stop",
    }
)  # fmt: skip
# An answer's own identifiers, at its top level (beside `fields.STRUCTURAL_KEYS` anywhere).
ANSWER_STRUCTURAL_PATHS = {
    key: S for key in ("object", "model", "system_fingerprint", "service_tier")
}
CHAT_ANSWER: Mapping[str, F] = {
    **ANSWER_STRUCTURAL_PATHS,
    "usage.*": S, "choices[].finish_reason": S, "choices[].stop_reason": S,
    "choices[].message.audio.data": X, "choices[].delta.audio.data": X,
    "error.code": S, "error.type": S, "error.param": S,
}  # fmt: skip
RESPONSES_ANSWER: Mapping[str, F] = {
    **ANSWER_STRUCTURAL_PATHS,
    "usage.*": S, "response.usage.*": S, "response.model": S, "response.object": S,
    "response.service_tier": S, "response.incomplete_details.reason": S,
    "incomplete_details.reason": S, "response.error.code": S, "error.code": S, "code": S,
    "response.truncation": S, "truncation": S, "response.text.verbosity": S,
    "text.verbosity": S, "response.reasoning.effort": S, "reasoning.effort": S,
    "response.tool_choice": S, "tool_choice": S, "response.prompt_cache_key": S,
    "prompt_cache_key": S, "response.safety_identifier": S, "safety_identifier": S,
    "response.previous_response_id": S, "previous_response_id": S, "response.user": S,
    "user": S, "response.prompt_cache_retention": S, "prompt_cache_retention": S,
}  # fmt: skip
MESSAGES_ANSWER: Mapping[str, F] = {
    **ANSWER_STRUCTURAL_PATHS,
    "usage.*": S, "message.usage.*": S, "message.model": S, "stop_reason": S,
    "message.stop_reason": S, "delta.stop_reason": S, "container.id": S,
    "message.container.id": S, "error.type": S,
}  # fmt: skip
ANSWER_FIELDS: Mapping[str, FieldMap] = {
    "chat.completions": FieldMap("chat.completions", CHAT_ANSWER, frozenset(), ANSWER_NAMES),
    "responses": FieldMap("responses", RESPONSES_ANSWER, frozenset(), ANSWER_NAMES),
    "messages": FieldMap("messages", MESSAGES_ANSWER, frozenset(), ANSWER_NAMES),
}
