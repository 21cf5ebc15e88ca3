"""Traces: a server span per request continuing the client's W3C traceparent, a child per
guard call (verdict, categories, cached) and one for the upstream call, whose traceparent is
ours; and no OpenTelemetry at all when tracing is off."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from guardproxy.config import TracingSettings
from guardproxy.errors import ConfigError
from guardproxy.server import runtime
from tests.conftest import Proxy, ProxyFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(start_proxy: ProxyFactory, spans: InMemorySpanExporter, **tenant: Any) -> Proxy:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return start_proxy(tracer_provider=provider, **tenant)


def ask(proxy: Proxy, prompt: str) -> None:
    proxy.client().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": prompt}],
        extra_headers={"traceparent": TRACEPARENT},
    )


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def test_a_request_continues_the_clients_trace_with_guard_and_upstream_children(
    start_proxy: ProxyFactory, spans: InMemorySpanExporter
) -> None:
    proxy = traced(start_proxy, spans)
    ask(proxy, "hello there")
    (request,) = named(spans, "POST /v1/chat/completions")
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.parent is not None
    assert f"{request.parent.span_id:016x}" == CLIENT_SPAN
    attributes = dict(request.attributes or {})
    assert (attributes["guardproxy.tenant"], attributes["guardproxy.action"]) == ("acme", "allow")
    guards = named(spans, "guardproxy.guard")
    assert len(guards) == 2  # the prompt, then the answer in context
    for guard in guards:
        assert guard.parent is not None
        assert guard.parent.span_id == request.context.span_id
        assert dict(guard.attributes or {})["guardproxy.verdict"] == "safe"
    (upstream,) = named(spans, "guardproxy.upstream")
    sent = proxy.upstream.requests[-1].headers["traceparent"]
    assert sent == f"00-{TRACE_ID}-{upstream.context.span_id:016x}-01"


def test_guard_spans_carry_categories_and_whether_the_verdict_was_cached(
    start_proxy: ProxyFactory, spans: InMemorySpanExporter
) -> None:
    proxy = traced(start_proxy, spans)
    ask(proxy, "how do I build a bomb")  # blocked with the tenant's refusal
    ask(proxy, "how do I build a bomb")
    first, second = (dict(s.attributes or {}) for s in named(spans, "guardproxy.guard"))
    assert first["guardproxy.verdict"] == "unsafe"
    assert first["guardproxy.categories"] == ("Violence", "Guns and Illegal Weapons")
    assert (first["guardproxy.cached"], second["guardproxy.cached"]) == (False, True)
    assert not named(spans, "guardproxy.upstream")  # never reached


def test_without_tracing_opentelemetry_is_never_imported() -> None:
    script = (
        "import sys, guardproxy.server.app, guardproxy.cli\n"
        "from guardproxy.config import TracingSettings\n"
        "from guardproxy.observe.tracing import NO_TRACING\n"
        "from guardproxy.server.runtime import build_tracing\n"
        "assert build_tracing(TracingSettings()) is NO_TRACING\n"
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_tracing_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "guardproxy.server.otel", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"guardproxy\[otel\]"):
        runtime.build_tracing(TracingSettings(enabled=True))


def test_guard_and_upstream_calls_are_client_spans_with_their_address(
    start_proxy: ProxyFactory, spans: InMemorySpanExporter
) -> None:
    proxy = traced(start_proxy, spans)
    ask(proxy, "hello there")
    (upstream,) = named(spans, "guardproxy.upstream")
    guard = named(spans, "guardproxy.guard")[0]
    for span in (upstream, guard):
        assert span.kind is SpanKind.CLIENT
    sent = dict(upstream.attributes or {})
    upstream_url = f"{proxy.upstream_url}/chat/completions"
    assert (sent["url.full"], sent["server.address"]) == (upstream_url, "127.0.0.1")
    assert sent["server.port"] == urlsplit(upstream_url).port
    assert (sent["gen_ai.operation.name"], sent["gen_ai.request.model"]) == ("chat", "m")
    asked = dict(guard.attributes or {})
    assert asked["url.full"] == f"{proxy.guard_url}/chat/completions"
    assert asked["gen_ai.request.model"] == proxy.guard.requests[0].json["model"]
    assert asked["guardproxy.purpose"] == "live"
    record = proxy.audit.records[-1]
    assert record["trace_id"] == TRACE_ID  # the audit record leads to the trace


def test_a_monitored_tenants_request_span_says_monitor(
    start_proxy: ProxyFactory, spans: InMemorySpanExporter
) -> None:
    proxy = traced(start_proxy, spans, mode="monitor")
    ask(proxy, "how do I build a bomb")
    (request,) = named(spans, "POST /v1/chat/completions")
    attributes = dict(request.attributes or {})
    assert attributes["guardproxy.action"] == "monitor"
    assert (attributes["guardproxy.mode"], attributes["guardproxy.would"]) == ("monitor", "block")
