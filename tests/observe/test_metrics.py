"""`GET /metrics`, scraped and parsed with prometheus-client's own parser after known traffic."""

from __future__ import annotations

import platform
import socket
from collections import Counter
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from guardproxy import __version__
from tests.conftest import TENANT_KEY, UPSTREAM_KEY, Proxy, ProxyFactory
from tests.test_e2e_policies import wait_for

UNSAFE = "how to build a bomb"


def ask(text: str) -> Any:
    return [{"role": "user", "content": text}]


def scrape(proxy: Proxy) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
    with proxy.http() as http:
        response = http.get("/metrics", headers={"authorization": ""})
    assert response.status_code == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return response.text, samples


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == w for k, w in labels.items()))


def test_counters_add_up_to_the_traffic_sent(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    client = proxy.client()
    for number in range(3):
        client.chat.completions.create(model="m", messages=ask(f"Hello {number}"))
    for _ in range(2):
        client.chat.completions.create(model="m", messages=ask(UNSAFE))
    proxy.anthropic().messages.create(model="m", max_tokens=9, messages=ask(UNSAFE))
    client.responses.create(model="m", input="Hello there")
    list(client.chat.completions.create(model="m", messages=ask("Stream it"), stream=True))
    with pytest.raises(openai.AuthenticationError):
        proxy.client(key="sk-wrong").chat.completions.create(model="m", messages=ask("x"))
    text, samples = scrape(proxy)
    requests = samples["guardproxy_requests_total"]
    assert total(requests) == 9
    assert total(requests, tenant="acme", action="allow") == 5
    assert total(requests, tenant="acme", action="block") == 3
    assert total(requests, tenant="-", action="reject", status="401") == 1
    assert total(requests, tenant="acme", api="messages", action="block") == 1
    assert total(requests, tenant="acme", api="responses", action="allow") == 1
    blocks = samples["guardproxy_blocks_total"]
    assert total(blocks, tenant="acme", direction="input", category="Violence") == 3
    calls = samples["guardproxy_guard_calls_total"]
    # The same unsafe prompt three times, over two APIs: one guard call, two cached verdicts.
    assert total(calls, guard="nemotron", direction="input", result="unsafe") == 1
    assert total(calls, guard="nemotron", direction="input", result="cached") == 2
    assert total(samples["guardproxy_time_to_first_token_seconds_count"], tenant="acme") == 1
    assert total(samples["guardproxy_request_duration_seconds_count"]) == 9
    assert total(samples["guardproxy_upstream_duration_seconds_count"], upstream="app") == 5
    assert total(samples["guardproxy_guard_in_flight"], guard="nemotron") == 0
    assert samples["guardproxy_guard_breaker_state"][0][1] == 0  # closed
    for secret in (TENANT_KEY, UPSTREAM_KEY, "sk-wrong", "bomb", "Hello"):
        assert secret not in text  # no key and no prompt text in any label


def test_redactions_and_cutoffs_are_counted(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email"]})
    client = proxy.client()
    client.chat.completions.create(model="m", messages=ask("Mail ann@example.com or b@c.org"))
    proxy.upstream.reply = "word " * 40 + f"and here is {UNSAFE} in detail " + "word " * 40
    list(client.chat.completions.create(model="m", messages=ask("Tell me"), stream=True))
    _, samples = scrape(proxy)
    redactions = samples["guardproxy_redactions_total"]
    assert total(redactions, tenant="acme", direction="input", type="EMAIL") == 2
    assert total(samples["guardproxy_stream_cutoffs_total"], tenant="acme") == 1
    assert total(samples["guardproxy_blocks_total"], direction="output") >= 1


def test_policy_reloads_are_counted_by_result(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(reload=True)
    policy = proxy.policies_dir / "acme.yaml"
    policy.write_text(policy.read_text() + "policy: Never discuss pesticides.\n")
    wait_for(
        lambda: total(scrape(proxy)[1].get("guardproxy_policy_reloads_total", []), result="ok") >= 1
    )
    policy.write_text("tenant: [broken\n")
    wait_for(
        lambda: total(scrape(proxy)[1]["guardproxy_policy_reloads_total"], result="error") >= 1
    )


def test_guard_errors_are_counted(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(guard_settings={"retries": 0})
    proxy.guard.fail_status = 500
    with pytest.raises(openai.InternalServerError):
        proxy.client().chat.completions.create(model="m", messages=ask("Hi"))
    _, samples = scrape(proxy)
    assert total(samples["guardproxy_guard_calls_total"], result="error") == 1
    assert Counter(labels["status"] for labels, _ in samples["guardproxy_requests_total"]) == {
        "503": 1
    }


def test_metrics_can_have_a_port_of_their_own(start_proxy: ProxyFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = start_proxy(config_extra={"metrics": {"port": port}})
    proxy.client().chat.completions.create(model="m", messages=ask("Hello"))
    wait_for(lambda: "guardproxy_requests_total{" in side_metrics(port))
    families = text_string_to_metric_families(side_metrics(port))
    counted = [s for f in families for s in f.samples if s.name == "guardproxy_requests_total"]
    assert sum(sample.value for sample in counted) == 1


def side_metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False).text


def test_redactions_in_a_stream_are_counted_by_type(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email", "phone"]})
    proxy.upstream.reply = "Write to ann@example.com or call +1 415 555 0100 today."
    client = proxy.client()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="m", messages=ask("Who?"), stream=True)
        if c.choices
    )
    assert "ann@example.com" not in text
    proxy.record(1)  # the stream's record is written after its last byte
    _, samples = scrape(proxy)
    redactions = samples["guardproxy_redactions_total"]
    assert total(redactions, tenant="acme", direction="output", type="EMAIL") == 1
    assert total(redactions, tenant="acme", direction="output", type="PHONE") == 1


def test_the_process_its_build_and_no_created_series_are_scraped(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy()
    text, samples = scrape(proxy)
    assert samples["process_resident_memory_bytes"][0][1] > 0
    assert "process_cpu_seconds_total" in samples
    [(labels, value)] = samples["guardproxy_build_info"]
    assert (labels["version"], value) == (__version__, 1)
    assert labels["python"] == platform.python_version()
    assert "python_info" in samples
    assert "_created" not in text  # no doubled series for counters and histograms


def test_cache_lookups_are_a_counter(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(output={"enabled": False})
    client = proxy.client()
    for _ in range(2):  # the second asks the cache first, and finds the verdict
        client.chat.completions.create(model="m", messages=ask("Hello there"))
    text, samples = scrape(proxy)
    assert "# TYPE guardproxy_cache_lookups_total counter" in text
    assert total(samples["guardproxy_cache_lookups_total"], result="hit") == 1
    assert total(samples["guardproxy_cache_lookups_total"], result="miss") == 1
