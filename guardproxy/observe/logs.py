"""Structured logs (`serve --log-format json`): one JSON object per line, with the request id,
tenant and action of the request a line was logged for.

The request's `Exchange` is bound to a context variable when the request starts; asyncio
copies the context into every task the request spawns, so a guard retry or an upstream error
logged deep in the pipeline carries the same ids. Prompt and answer text are logged at DEBUG
only, and keys never (the formatter adds nothing but the fields below).
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

# The exchange of the request being served, if any (set per request, never shared).
CURRENT_EXCHANGE: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "guardproxy_exchange", default=None
)


def bind(exchange: Any) -> None:
    """Log lines from here on, in this request's task and its children, carry its ids."""
    CURRENT_EXCHANGE.set(exchange)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        exchange = CURRENT_EXCHANGE.get()
        if exchange is not None:
            line["request_id"] = exchange.request_id
            line["tenant"] = exchange.tenant
            line["action"] = exchange.action
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str) -> None:
    """The root logger for `guardproxy serve`: plain text, or JSON lines on stderr."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])  # no-op where one is set already
    # httpx logs every outbound request at INFO: three lines per chat request, and CPU.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level)))
