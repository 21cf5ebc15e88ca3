"""The request fields a client may hand to litellm: each wire API's documented model
parameters, and nothing else.

litellm's functions also take the host, the key, the provider, extra headers and callbacks
as keyword arguments (`api_base`, `api_key`, `custom_llm_provider`, `extra_headers`,
`success_callback`, `aws_*`, …); those come from the config only. A field outside the list is
refused, never dropped, so a client learns at once that it was not sent.
"""

from __future__ import annotations

from typing import Any

from guardproxy.errors import RequestError

# OpenAI's Chat Completions request body (platform.openai.com/docs/api-reference/chat/create),
# less `metadata`, which litellm reads as its own logging metadata.
CHAT_COMPLETIONS_PARAMS = frozenset(
    {
        "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
# OpenAI's Responses request body (platform.openai.com/docs/api-reference/responses/create),
# less `metadata` (see above).
RESPONSES_PARAMS = frozenset(
    {
        "input", "instructions", "background", "conversation", "include", "max_output_tokens",
        "max_tool_calls", "parallel_tool_calls", "previous_response_id", "prompt",
        "prompt_cache_key", "reasoning", "safety_identifier", "service_tier", "store", "stream",
        "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p",
        "truncation", "user",
    }
)  # fmt: skip
# Anthropic's Messages request body (docs.anthropic.com/en/api/messages), less `metadata`
# (see above) and `mcp_servers`, which names hosts for the provider to call.
MESSAGES_PARAMS = frozenset(
    {
        "messages", "system", "max_tokens", "container", "context_management",
        "service_tier", "stop_sequences", "stream", "temperature", "thinking", "tool_choice",
        "tools", "top_k", "top_p",
    }
)  # fmt: skip
CLIENT_PARAMS: dict[str, frozenset[str]] = {
    "chat.completions": CHAT_COMPLETIONS_PARAMS,
    "responses": RESPONSES_PARAMS,
    "messages": MESSAGES_PARAMS,
}


def client_params(api: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The client's fields, less `model`, as litellm kwargs; RequestError (400) names the
    first one that is not a model parameter of `api`."""
    allowed = CLIENT_PARAMS[api]
    params = {name: value for name, value in fields.items() if name != "model"}
    for name in params:
        if name not in allowed:
            raise RequestError(f"Unrecognized request argument supplied: {name}", param=name)
    return params
