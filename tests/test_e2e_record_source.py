"""The audit record names its source: which key (by id, never the key), which client (the
socket's peer, or what trusted proxies forward), and what a cut-off stream's client received."""

from __future__ import annotations

import hashlib

from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import TENANT_KEY, Proxy, ProxyFactory
from tests.test_e2e_cutoff_conventions import UNSAFE, story

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
SPOOFED = {"X-Forwarded-For": "1.2.3.4, 198.51.100.9"}


def test_the_key_is_named_by_a_hash_of_its_digest(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(model="m", messages=HELLO)
    digest = hashlib.sha256(TENANT_KEY.encode()).digest()
    record = proxy.record(1)
    assert record["key_id"] == hashlib.sha256(digest).hexdigest()[:12]
    assert TENANT_KEY not in str(record)


def test_forwarded_addresses_are_ignored_unless_the_peer_is_trusted(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(model="m", messages=HELLO, extra_headers=SPOOFED)
    assert proxy.record(1)["client_address"] == "127.0.0.1"


def test_behind_a_trusted_proxy_the_client_is_the_nearest_untrusted_hop(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(config_extra={"trusted_proxies": ["127.0.0.1/32"]})
    proxy.client().chat.completions.create(model="m", messages=HELLO, extra_headers=SPOOFED)
    assert proxy.record(1)["client_address"] == "198.51.100.9"


def test_a_rejected_key_still_names_the_client(proxy: Proxy) -> None:
    with proxy.http() as http:
        reply = http.post("/v1/chat/completions", json={}, headers={"authorization": "Bearer x"})
    assert reply.status_code == 401
    record = proxy.record(1)
    assert (record["client_address"], record["key_id"]) == ("127.0.0.1", None)


def cut_off_stream(proxy: Proxy) -> str:
    """What the client read of the answer before the refusal."""
    proxy.upstream.reply = story(60, UNSAFE)
    stream = proxy.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    released = text.removesuffix("I'm sorry, but I can't help with that.")
    assert released
    assert released != text
    return released


def test_a_cut_off_stream_records_only_the_length_released_without_content(
    proxy: Proxy,
) -> None:
    released = cut_off_stream(proxy)
    record = proxy.record(1)
    assert record["released"] == {"chars": len(released)}
    assert "content" not in record


def test_a_cut_off_stream_records_the_released_text_as_content(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(audit_content="redacted")
    released = cut_off_stream(proxy)
    record = proxy.record(1)
    assert record["released"] == {"chars": len(released)}
    assert record["content"]["released"] == released
    assert record["content"]["response"].startswith(released)  # the answer read, beyond it


def test_an_answer_that_was_not_cut_off_records_nothing_released(proxy: Proxy) -> None:
    list(proxy.client().chat.completions.create(model="m", messages=HELLO, stream=True))
    assert "released" not in proxy.record(1)
