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


@pytest.mark.parametrize("stream", [False, True])
def test_a_blocked_prompt_is_a_content_policy_violation_for_litellm(
    start_proxy: ProxyFactory, litellm: Any, stream: bool
) -> None:
    proxy = start_proxy(on_block="error")
    with pytest.raises(litellm.ContentPolicyViolationError):
        _drain(litellm, proxy.url, UNSAFE, stream)


def test_a_block_mid_stream_is_a_content_policy_violation_for_litellm(
    start_proxy: ProxyFactory, litellm: Any
) -> None:
    proxy = start_proxy(on_block="error")
    proxy.upstream.reply = "word " * 40 + "and then you steal a car. " + "word " * 40
    with pytest.raises(litellm.ContentPolicyViolationError):
        _drain(litellm, proxy.url, [{"role": "user", "content": "tell a story"}], True)


def _drain(litellm: Any, url: str, messages: list[Any], stream: bool) -> None:
    """One completion through litellm's OpenAI path, read to the end."""
    answer = litellm.completion(
        model="openai/m", api_base=f"{url}/v1", api_key=TENANT_KEY,
        messages=messages, stream=stream, num_retries=0,
    )  # fmt: skip
    for _ in answer if stream else ():
        pass
