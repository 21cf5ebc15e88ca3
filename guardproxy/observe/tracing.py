"""Traces: a span per request, with a child per guard call and one for the upstream call.

`Tracing` itself does nothing, at the cost of a method call that returns a shared object:
that is what runs without the `otel` extra or without `tracing:` in the config, and
OpenTelemetry is then never imported. `server.runtime.build_tracing` returns the OpenTelemetry one
(observe/otel.py) when tracing is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from guardproxy.pipeline.exchange import Exchange


SpanKindName = Literal["internal", "client"]


def client_attributes(url: str | None, model: str | None) -> dict[str, Any]:
    """A call out to a model server, in OpenTelemetry's HTTP and GenAI conventions."""
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    if url:
        parts = urlsplit(url)
        attributes["url.full"] = url
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        attributes["http.request.method"] = "POST"
    return attributes


class Span:
    """A span that records nothing (and the interface of one that does)."""

    def set(self, **attributes: Any) -> None:
        return None

    def __enter__(self) -> Span:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


NO_SPAN = Span()


class Tracing:
    """No tracing: every call returns at once."""

    enabled = False

    def span(self, name: str, kind: SpanKindName = "internal", **attributes: Any) -> Span:
        """A child of the current span, as a context manager; `client` for a call out."""
        return NO_SPAN

    def begin_request(self, headers: Mapping[str, str], api: str, method: str = "POST") -> Any:
        """Start the request's span, continuing the client's W3C `traceparent` if it sent one."""
        return None

    def end_request(self, handle: Any, exchange: Exchange) -> None:
        return None

    def trace_id(self, handle: Any) -> str | None:
        """The request's trace id (32 hex digits) for its audit record, when it is traced."""
        return None

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers for an outbound call: the current span's `traceparent` replaces the
        client's, so the upstream's spans are children of ours."""
        return headers

    def shutdown(self) -> None:
        return None


NO_TRACING = Tracing()
