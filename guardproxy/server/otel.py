"""OpenTelemetry behind `Tracing` (the `otel` extra): spans exported over OTLP/HTTP in
batches, W3C trace context read from the client and written to the upstream.

The provider belongs to the app (no global provider is set), and its batch processor sends
off the event loop, in its own thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from guardproxy.api.wire import ROUTES
from guardproxy.config import TracingSettings
from guardproxy.core.actions import Action
from guardproxy.observe.tracing import Span, SpanKindName, Tracing
from guardproxy.pipeline.exchange import Exchange

PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


SPAN_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}


class OtelSpan(Span):
    def __init__(
        self, tracer: trace.Tracer, name: str, kind: SpanKind, attributes: dict[str, Any]
    ) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes
        self._kind = kind
        self._scope: Any = None
        self._span: trace.Span | None = None

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(_clean(attributes))

    def __enter__(self) -> Span:
        attributes = _clean(self._attributes)
        self._scope = self._tracer.start_as_current_span(
            self._name, kind=self._kind, attributes=attributes
        )
        self._span = self._scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._scope.__exit__(*exc)


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider, owned: bool) -> None:
        self.provider, self._owned = provider, owned
        self.tracer = provider.get_tracer("guardproxy")

    @classmethod
    def of(cls, settings: TracingSettings, provider: TracerProvider | None) -> OtelTracing:
        if provider is not None:
            return cls(provider, owned=False)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        resource = Resource.create({"service.name": settings.service_name})
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        owned = TracerProvider(resource=resource, sampler=sampler)
        # endpoint None: the exporter reads OTEL_EXPORTER_OTLP_* itself.
        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        owned.add_span_processor(BatchSpanProcessor(exporter))
        return cls(owned, owned=True)

    def span(self, name: str, kind: SpanKindName = "internal", **attributes: Any) -> Span:
        return OtelSpan(self.tracer, name, SPAN_KINDS[kind], attributes)

    def begin_request(self, headers: Mapping[str, str], api: str, method: str = "POST") -> Any:
        parent = PROPAGATOR.extract({k: headers[k] for k in TRACE_HEADERS if k in headers})
        route = ROUTES.get(api, api)
        span = self.tracer.start_span(
            f"{method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "guardproxy.api": api},
        )
        # Current for the rest of this request's task (uvicorn runs each request in its own),
        # so guard and upstream spans, in tasks started from it, are its children.
        context.attach(trace.set_span_in_context(span))
        return span

    def end_request(self, handle: Any, exchange: Exchange) -> None:
        if not isinstance(handle, trace.Span):
            return
        handle.set_attributes(
            _clean(
                {
                    "guardproxy.request_id": exchange.request_id,
                    "guardproxy.tenant": exchange.tenant,
                    # A monitored tenant's exchanges are never enforced: its spans say so.
                    "guardproxy.action": "monitor" if exchange.monitor else exchange.action,
                    "guardproxy.mode": "monitor" if exchange.monitor else "enforce",
                    "guardproxy.would": _would(exchange),
                    "guardproxy.stream": exchange.stream,
                    "http.response.status_code": exchange.status,
                }
            )
        )
        if exchange.status is not None and exchange.status >= 500:
            handle.set_status(Status(StatusCode.ERROR, exchange.error or ""))
        handle.end()

    def trace_id(self, handle: Any) -> str | None:
        if not isinstance(handle, trace.Span):
            return None
        context = handle.get_span_context()
        # An unsampled span still has the client's or a new trace id: the record keeps it,
        # so a reviewer can find the trace wherever the client's own spans were kept.
        return format(context.trace_id, "032x") if context.trace_id else None

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier)
        if "traceparent" not in carrier:
            return headers
        kept = {k: v for k, v in headers.items() if k not in TRACE_HEADERS}
        return kept | carrier

    def shutdown(self) -> None:
        if self._owned:
            self.provider.shutdown()


def _would(exchange: Exchange) -> str | None:
    """What a monitored tenant's checks would have done, the worst direction first."""
    if not exchange.monitor or not exchange.would:
        return None
    return max(exchange.would.values(), key=lambda action: Action(action).severity)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """OpenTelemetry takes no None and no tuples of mixed types: drop and convert."""
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        cleaned[key] = [str(v) for v in value] if isinstance(value, tuple | list) else value
    return cleaned
