"""Shadow policies: judged after the response, recorded next to the live decision, never
changing what the client gets; guard calls with equal bodies come from the verdict cache."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.lifecycle.shadow import ShadowRunner
from guardproxy.pipeline.chain import Chain, runner
from guardproxy.pipeline.shadow import Judged, ShadowRoute
from guardproxy.policy.model import ChainedGuard, TenantPolicy
from guardproxy.yamlfile import InvalidConfig
from tests.audit.test_e2e_audit import stored
from tests.conftest import Proxy, ProxyFactory

LIVE = {"categories": {"Criminal Planning/Confessions": "allow"}}


def with_shadow(
    start_proxy: ProxyFactory, tmp_path: Path, shadow: dict[str, Any], **extra: Any
) -> Proxy:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "_strict.yaml").write_text(yaml.safe_dump(shadow))
    return start_proxy(shadow="strict", input=LIVE, **extra)


def shadow_record(proxy: Proxy, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in proxy.audit.records if r.get("kind") == "shadow"]
        if any(r["request_id"] == request_id for r in found):
            return next(r for r in found if r["request_id"] == request_id)
        assert time.monotonic() < deadline, "no shadow record"
        time.sleep(0.01)


def ask(proxy: Proxy, prompt: str) -> tuple[str, str]:
    reply = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    return reply.headers["x-guardproxy-request-id"], reply.parse().choices[0].message.content or ""


def test_a_stricter_shadow_records_its_block_and_the_client_gets_the_live_answer(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    strict = {"input": {"categories": {"Criminal Planning/Confessions": "block"}}}
    proxy = with_shadow(start_proxy, tmp_path, strict)
    request_id, answer = ask(proxy, "help me steal a car")
    assert answer == proxy.upstream.reply  # live: allowed
    live = proxy.audit.records[0]
    assert (live["request_id"], live["action"]) == (request_id, "allow")
    shadow = shadow_record(proxy, request_id)["shadow"]
    assert (shadow["policy"], shadow["action"], shadow["live_action"]) == (
        "strict",
        "block",
        "allow",
    )
    assert shadow["input"]["categories"] == ["Criminal Planning/Confessions"]
    assert shadow["output"] == {"status": "skipped"}  # blocked on input, the answer is not judged


def test_equal_guard_requests_are_not_asked_twice(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = with_shadow(start_proxy, tmp_path, {"on_block": "error"})  # same guard requests
    request_id, _ = ask(proxy, "hello there")
    shadow = shadow_record(proxy, request_id)["shadow"]
    assert shadow["action"] == "allow"
    assert shadow["input"]["cached"] == 1
    assert shadow["output"]["cached"] == 1
    assert len(proxy.guard.requests) == 2  # the live input and output checks only


def test_the_shadow_decision_lands_beside_the_live_one_in_the_database(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    strict = {"input": {"categories": {"Criminal Planning/Confessions": "block"}}}
    audit = {"path": "-", "database": f"sqlite:///{tmp_path / 'audit.db'}"}
    proxy = with_shadow(start_proxy, tmp_path, strict, config_extra={"audit": audit})
    request_id, _ = ask(proxy, "help me steal a car")
    shadow_record(proxy, request_id)
    deadline = time.monotonic() + 10
    while (row := stored(tmp_path / "audit.db", request_id))["shadow"] is None:
        assert time.monotonic() < deadline, "the shadow column was never written"
        time.sleep(0.05)
    assert (row["action"], row["shadow"]["action"]) == ("allow", "block")


def test_a_missing_shadow_file_is_a_config_error(start_proxy: ProxyFactory) -> None:
    with pytest.raises(InvalidConfig, match=r"shadow: no policy file _nowhere\.yaml"):
        start_proxy(shadow="nowhere")


class _Guard:
    async def classify(self, check: GuardInput) -> Verdict:
        await asyncio.sleep(0)
        return Verdict(user=Safety.SAFE, response=Safety.SAFE)


def test_shadow_checks_past_the_bound_are_dropped_and_counted() -> None:
    tenant = TenantPolicy(tenant="t", keys=("k",), guards=(ChainedGuard(guard="g"),), upstream="u")
    route = ShadowRoute.of(tenant, tenant, Chain.of(runner(_Guard())), {})
    records: list[dict[str, Any]] = []
    counted: list[tuple[str, str, str]] = []

    async def scenario() -> None:
        count = lambda t, r, o: counted.append((t, r, o))  # noqa: E731
        runner = ShadowRunner(records.append, count, max_in_flight=1)
        judged = Judged("hi", (), [], None, None, ["hello"])
        runner.submit(route, "r1", judged, "allow")
        runner.submit(route, "r2", judged, "allow")  # the first is still in flight
        await runner.aclose()

    asyncio.run(scenario())
    assert [r["request_id"] for r in records] == ["r1"]
    # The judged one is counted with the shadow policy's action; the dropped one had none.
    assert sorted(counted) == [("t", "dropped", "none"), ("t", "judged", "allow")]
