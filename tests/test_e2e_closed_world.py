"""Closed world, tried as an attacker with a tenant key: no client field picks the host, the
key, the provider or the headers of the upstream call, and a second server standing by as the
attacker's records that nothing ever reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import UPSTREAM_KEY, ProxyFactory
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

ASK: list[Any] = [{"role": "user", "content": "Hello"}]

# litellm keeps its HTTP clients in a module-level cache that outlives each proxy's event
# loop, and its own types warn on use: both are litellm's, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*ReadOnly.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def attacker() -> Iterator[tuple[str, FakeUpstreamState]]:
    state = FakeUpstreamState()
    with run_in_thread(create_fake_upstream(state)) as url:
        yield url, state


@pytest.fixture
def litellm_proxy(start_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch
    return start_proxy(via_litellm=True)


@pytest.mark.parametrize(
    "steer",
    [
        {"api_base": "{attacker}/v1"},
        {"base_url": "{attacker}/v1"},
        {"api_key": "sk-attacker"},
        {"custom_llm_provider": "openai", "api_base": "{attacker}/v1"},
        {"extra_headers": {"x-steal": "1"}},
        {"headers": {"authorization": "Bearer sk-attacker"}},
        {"aws_access_key_id": "AKIA0000", "aws_region_name": "us-east-1"},
        {"vertex_credentials": "{}"},
        {"metadata": {"success_callback": ["{attacker}"]}},
        {"success_callback": ["webhook"]},
        {"mock_response": "unjudged text"},
    ],
    ids=lambda steer: next(iter(steer)),
)
def test_litellm_call_arguments_from_the_client_are_refused(
    litellm_proxy: Any, attacker: tuple[str, FakeUpstreamState], steer: dict[str, Any]
) -> None:
    attacker_url, seen = attacker
    fields = {
        name: value.replace("{attacker}", attacker_url) if isinstance(value, str) else value
        for name, value in steer.items()
    }
    body = {"model": "m", "messages": ASK, **fields}
    with litellm_proxy.http() as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] in steer
    assert error["type"] == "invalid_request_error"
    assert seen.requests == []
    assert litellm_proxy.upstream.requests == []


def test_model_parameters_still_reach_the_provider_through_litellm(litellm_proxy: Any) -> None:
    answer = litellm_proxy.client().chat.completions.create(
        model="m", messages=ASK, temperature=0.2, seed=7, max_tokens=20
    )
    assert answer.choices[0].message.content == litellm_proxy.upstream.reply
    (sent,) = litellm_proxy.upstream.requests
    assert sent.json["seed"] == 7
    assert sent.json["model"] == "fake-llm"  # the config's model, not the client's
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_stream_blocked_mid_way_through_litellm_ends_in_the_refusal(litellm_proxy: Any) -> None:
    litellm_proxy.upstream.reply = "word " * 40 + "and then you steal a car. " + "word " * 40
    litellm_proxy.upstream.token_interval_s = 0.001
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a story"}]}
    with litellm_proxy.http() as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    assert "steal a car" not in reply.text
    assert "content_filter" in reply.text
    assert reply.text.rstrip().endswith("data: [DONE]")


def test_client_headers_never_replace_the_upstream_key_or_host(
    start_proxy: ProxyFactory, attacker: tuple[str, FakeUpstreamState]
) -> None:
    attacker_url, seen = attacker
    proxy = start_proxy()
    headers = {
        "x-api-key": "sk-attacker",
        "api-key": "sk-attacker",
        "host": attacker_url.removeprefix("http://"),
        "x-forwarded-host": attacker_url.removeprefix("http://"),
        "openai-organization": "org-attacker",
    }
    answer = proxy.client().chat.completions.create(
        model="m", messages=ASK, extra_headers=headers, extra_body={"api_base": attacker_url}
    )
    assert answer.choices[0].message.content == proxy.upstream.reply
    (sent,) = proxy.upstream.requests
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    for name in ("x-api-key", "api-key", "x-forwarded-host", "openai-organization"):
        assert name not in sent.headers
    assert seen.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "m", "input": "Hello"}),
        ("/v1/messages", {"model": "c", "max_tokens": 9, "messages": ASK}),
    ],
)
@pytest.mark.parametrize("steer", ["api_base", "base_url", "extra_headers", "api_key"])
def test_litellm_call_arguments_are_refused_on_every_api(
    litellm_proxy: Any,
    attacker: tuple[str, FakeUpstreamState],
    path: str,
    body: dict[str, Any],
    steer: str,
) -> None:
    attacker_url, seen = attacker
    value: Any = {"x-steal": "1"} if steer == "extra_headers" else f"{attacker_url}/v1"
    headers = {"x-api-key": litellm_proxy.key}
    with litellm_proxy.http() as http:
        reply = http.post(path, json={**body, steer: value}, headers=headers)
    assert reply.status_code == 400, reply.text
    assert steer in reply.json()["error"]["message"]
    assert seen.requests == []
    assert litellm_proxy.upstream.requests == []
