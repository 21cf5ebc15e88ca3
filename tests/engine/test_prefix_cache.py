"""Prefix reuse on a real vLLM: a tenant with a custom taxonomy sends the same static prefix on
every check, so the engine's prefix cache should hit. Reports the hit rate over 100 checks."""

from __future__ import annotations

from typing import Any

from tests.engine.conftest import MODEL, Engine, TierFactory
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

REQUESTS = 100
COMPETITOR = {"name": "Competitor Promotion", "description": "Recommending a rival bank."}


def _counter(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key.startswith(name))


def test_a_custom_taxonomy_tenants_checks_hit_the_prefix_cache(
    start_tier: TierFactory, engine: Engine, report: dict[str, Any]
) -> None:
    with run_in_thread(create_fake_upstream(FakeUpstreamState(models=[MODEL]))) as upstream_url:
        proxy = start_tier(
            "User Safety: safe",
            upstream_url=f"{upstream_url}/v1",
            custom_categories=[COMPETITOR],
            input={"categories": {"Violence": "allow"}},
            output={"enabled": False},
        )
        client = proxy.client()
        before = engine.metrics()
        for number in range(REQUESTS):
            question = f"Question {number}: what are your savings rates this month?"
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": question}]
            )
        after = engine.metrics()
    queries = _counter(after, "vllm:prefix_cache_queries") - _counter(
        before, "vllm:prefix_cache_queries"
    )
    hits = _counter(after, "vllm:prefix_cache_hits") - _counter(before, "vllm:prefix_cache_hits")
    assert "custom_taxonomy" in proxy.relay.requests[0]["chat_template_kwargs"]
    assert queries > 0
    report["prefix_cache"] = {
        "requests": REQUESTS,
        "queried_tokens": queries,
        "hit_tokens": hits,
        "hit_rate": round(hits / queries, 3),
    }
