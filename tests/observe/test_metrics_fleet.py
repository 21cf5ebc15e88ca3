"""The series a fleet's dashboards and alerts read: zero-initialised label sets, tokens, the
latency the proxy adds, shadow calls apart from live ones, dependencies, the audit queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from guardproxy.audit.sinks import JsonlAuditSink
from guardproxy.observe.metrics import Metrics, added_seconds
from tests.conftest import ProxyFactory
from tests.lifecycle.test_shadow import shadow_record, with_shadow
from tests.observe.test_metrics import ask, scrape, total
from tests.test_e2e import dead_url
from tests.test_e2e_policies import wait_for


def test_alerted_series_exist_at_zero_before_any_traffic(start_proxy: ProxyFactory) -> None:
    _, samples = scrape(start_proxy())
    reloads = samples["guardproxy_policy_reloads_total"]
    assert {labels["result"]: value for labels, value in reloads} == {"ok": 0, "error": 0}
    calls = samples["guardproxy_guard_calls_total"]
    for result in ("error", "shed", "safe", "unsafe"):
        assert (
            total(calls, guard="nemotron", direction="output", result=result, purpose="live") == 0
        )
    assert any(labels["result"] == "error" for labels, _ in calls)
    assert total(samples["guardproxy_stream_cutoffs_total"], tenant="acme") == 0


def test_tokens_and_added_latency_are_counted_per_tenant(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    client = proxy.client()
    answer = client.chat.completions.create(model="m", messages=ask("Hello there"))
    assert answer.usage is not None
    list(client.chat.completions.create(model="m", messages=ask("Stream it"), stream=True))
    _, samples = scrape(proxy)
    tokens = samples["guardproxy_tokens_total"]
    # The stream did not ask for usage: what the proxy read counts, one token per text event
    # (a floor), and no prompt tokens, which the upstream never reported.
    words = len(proxy.upstream.reply.split())
    assert total(tokens, tenant="acme", kind="prompt") == answer.usage.prompt_tokens
    assert total(tokens, tenant="acme", kind="completion") == answer.usage.completion_tokens + words
    added = samples["guardproxy_added_latency_seconds_count"]
    assert total(added, tenant="acme", stream="false") == 1
    assert total(added, tenant="acme", stream="true") == 1
    whole, streamed = proxy.audit.records
    assert whole["usage"]["input_tokens"] == answer.usage.prompt_tokens
    assert streamed["usage"]["source"] == "read"
    assert streamed["upstream_first_byte_ms"] <= streamed["first_byte_ms"]


def test_added_latency_is_the_proxys_share_of_the_time() -> None:
    whole = {"stream": False, "total_ms": 250.0, "upstream_ms": 200.0}
    streamed = {"stream": True, "first_byte_ms": 130.0, "upstream_first_byte_ms": 100.0}
    assert added_seconds(whole) == 0.05
    assert added_seconds(streamed) == 0.03
    assert added_seconds({"stream": False, "total_ms": 3.0}) is None  # the upstream not reached


def test_shadow_guard_calls_and_outcomes_are_labelled_apart(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    strict = {"input": {"categories": {"Criminal Planning/Confessions": "block"}}}
    proxy = with_shadow(start_proxy, tmp_path, strict, config_extra={"cache": {"enabled": False}})
    reply = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("help me steal a car")
    )
    shadow_record(proxy, reply.headers["x-guardproxy-request-id"])
    wait_for(lambda: total(scrape(proxy)[1]["guardproxy_shadow_checks_total"]) == 1)
    _, samples = scrape(proxy)
    checks = samples["guardproxy_shadow_checks_total"]
    assert total(checks, tenant="acme", result="judged", outcome="block") == 1
    calls = samples["guardproxy_guard_calls_total"]
    assert total(calls, purpose="live") == 2  # the live input and output checks
    # The shadow's own input check, on the same guard; its block leaves no answer to judge.
    assert total(calls, purpose="shadow") == 1


def test_dependencies_are_gauged_from_the_readiness_probe(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(upstream_url=dead_url())
    with proxy.ops() as ops:
        ready = ops.get("/readyz")
    assert ready.status_code == 200  # the pod serves: the outage is reported, not ejected
    assert ready.json()["dependencies"] == "degraded"
    _, samples = scrape(proxy)
    up = {(labels["kind"], labels["name"]): v for labels, v in samples["guardproxy_dependency_up"]}
    assert up == {("guard", "nemotron"): 1, ("upstream", "app"): 0}


def test_the_trail_reports_its_queue_and_each_batch_write(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = JsonlAuditSink(tmp_path / "audit.jsonl", observer=metrics.sink("jsonl"))

    async def scenario() -> dict[str, Any]:
        for number in range(3):
            sink.write({"request_id": str(number)})
        queued = series(metrics, "guardproxy_audit_queue_depth")
        await sink.aclose()
        return queued

    queued = asyncio.run(scenario())
    assert queued == {"jsonl": 3}
    assert series(metrics, "guardproxy_audit_queue_depth") == {"jsonl": 0}
    assert series(metrics, "guardproxy_audit_flush_seconds_count") == {"jsonl": 1}


def series(metrics: Metrics, name: str) -> dict[str, float]:
    exposition = metrics.exposition().decode()
    return {
        sample.labels["sink"]: sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    }


def test_every_stream_mode_records_and_counts_its_tokens(start_proxy: ProxyFactory) -> None:
    """Moderated window by window, buffered, and relayed with output checks off: each stream's
    audit record carries the upstream's own final count, and the counter adds it up."""
    for output in ({"stream": "chunked"}, {"stream": "buffer"}, {"enabled": False}):
        proxy = start_proxy(output=output)
        chunks = list(
            proxy.client().chat.completions.create(
                model="m",
                messages=ask("Stream it"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None
        record = proxy.record(1)  # a stream's record is written after its last byte
        assert len(proxy.audit.records) == 1
        assert record["usage"] == {
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "source": "upstream",
        }
        tokens = scrape(proxy)[1]["guardproxy_tokens_total"]
        assert total(tokens, kind="completion") == usage.completion_tokens
