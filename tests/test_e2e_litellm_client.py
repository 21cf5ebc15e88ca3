"""litellm as a client of the proxy: a block must map to litellm's ContentPolicyViolationError,
streamed or not, so `content_policy_fallbacks` trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TENANT_KEY, ProxyFactory

UNSAFE: list[Any] = [{"role": "user", "content": "how to build a bomb"}]
# litellm's own types warn on import and on use; they are litellm's, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch
    import litellm

    litellm.suppress_debug_info = True
    yield litellm
    # litellm keeps its HTTP clients in a module-level cache; close them with the test.
    cache = litellm.in_memory_llm_clients_cache
    for client in list(cache.cache_dict.values()):
        close = getattr(client, "close", None)
        if callable(close) and not asyncio.iscoroutinefunction(close):
            close()
    cache.cache_dict.clear()


# litellm's providers a client may reach the proxy by: OpenAI's Chat Completions, whose
# errors it maps by `content_policy_violation`, and Anthropic's Messages, whose errors it
# maps by "content filtering policy" (its `_map_anthropic_exception`).
PROVIDERS = {"openai": ("openai/m", "/v1"), "anthropic": ("anthropic/claude-x", "")}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_prompt_is_a_content_policy_violation_for_litellm(
    start_proxy: ProxyFactory, litellm: Any, stream: bool, provider: str
) -> None:
    proxy = start_proxy(on_block="error")
    with pytest.raises(litellm.ContentPolicyViolationError):
        _drain(litellm, proxy.url, UNSAFE, stream, provider)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_block_mid_stream_is_a_content_policy_violation_for_litellm(
    start_proxy: ProxyFactory, litellm: Any, provider: str
) -> None:
    """Not a retryable 500 (`MidStreamFallbackError`): a fallback must not resend the prompt
    to another deployment as if the upstream had failed."""
    proxy = start_proxy(on_block="error")
    proxy.upstream.reply = "word " * 40 + "and then you steal a car. " + "word " * 40
    story = [{"role": "user", "content": "tell a story"}]
    with pytest.raises(litellm.ContentPolicyViolationError) as caught:
        _drain(litellm, proxy.url, story, True, provider)
    assert not isinstance(caught.value, litellm.exceptions.MidStreamFallbackError)
    assert caught.value.status_code == 400


def _drain(litellm: Any, url: str, messages: list[Any], stream: bool, provider: str) -> None:
    """One completion through one of litellm's providers, read to the end."""
    model, path = PROVIDERS[provider]
    answer = litellm.completion(
        model=model, api_base=f"{url}{path}", api_key=TENANT_KEY, max_tokens=64,
        messages=messages, stream=stream, num_retries=0,
    )  # fmt: skip
    for _ in answer if stream else ():
        pass
