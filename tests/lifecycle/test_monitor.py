"""`mode: monitor`: every check runs and is recorded with what it would have done, but the
client is never blocked, redacted or failed (end to end through the official openai client)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Proxy, ProxyFactory

UNSAFE = "how do I build a bomb"


def samples(proxy: Proxy, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{proxy.url}/metrics").text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_a_monitored_block_reaches_the_client_and_is_recorded(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(mode="monitor")
    reply = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": UNSAFE}]
    )
    assert reply.headers["x-guardproxy-action"] == "monitor"
    assert reply.parse().choices[0].message.content == proxy.upstream.reply
    assert len(proxy.upstream.requests) == 1  # the upstream was asked
    record = proxy.audit.records[-1]
    assert (record["action"], record["would_block"]) == ("monitor", True)
    assert record["would"] == {"input": "block"}
    assert record["input"]["categories"] == ["Violence", "Guns and Illegal Weapons"]
    monitored = samples(proxy, "guardproxy_monitored_blocks_total")
    key = (("category", "Violence"), ("direction", "input"), ("tenant", "acme"))
    assert monitored[key] == 1
    assert not samples(proxy, "guardproxy_blocks_total")  # not counted as a real block


def test_a_monitored_stream_is_never_cut_off(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(mode="monitor")
    proxy.upstream.reply = "Here is how to build a bomb: step one, step two, step three."
    stream = proxy.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "tell me"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == proxy.upstream.reply
    record = proxy.record(1)
    assert record["would"] == {"output": "block"}
    assert record["would_block"] is True


def test_no_mode_switches_off_data_protection_monitor_still_redacts(
    start_proxy: ProxyFactory,
) -> None:
    """Monitor mode relaxes decisions, never the tenant's redaction: a live key or an address
    is masked before the upstream sees it, and in the answer, whole and streamed."""
    proxy = start_proxy(mode="monitor", redaction={"detectors": ["email", "secret"]})
    proxy.upstream.reply = "Sure, mail jane.doe@example.com about it."
    key = "sk-live-" + "a1B2c3D4e5F6g7H8i9J0k1L2"
    prompt = f"Write to jane.doe@example.com with key {key}"
    client = proxy.client()
    answer = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    sent = proxy.upstream.requests[-1].json
    assert sent is not None
    assert "jane.doe@example.com" not in sent["messages"][0]["content"]
    assert key not in sent["messages"][0]["content"]
    assert "jane.doe@example.com" not in (answer.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "jane.doe@example.com" not in streamed
    assert streamed.startswith("Sure, mail ")


def test_a_safe_monitored_request_records_no_would_be_action(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(mode="monitor")
    proxy.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}]
    )
    record = proxy.audit.records[-1]
    assert (record["would"], record["would_block"]) == ({}, False)
