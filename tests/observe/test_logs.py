"""Structured logs: every line JSON, the request's ids on each, and no key or text in any."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from guardproxy.observe.logs import CURRENT_EXCHANGE, JsonFormatter, bind
from guardproxy.pipeline.exchange import Exchange
from tests.conftest import TENANT_KEY, UPSTREAM_KEY, ProxyFactory

SECRET_PROMPT = "my secret prompt about how to build a bomb"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """A JSON log handler on the root logger, at INFO, as `--log-format json` installs it."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_line_carries_the_request_it_was_logged_for() -> None:
    exchange = Exchange(tenant="acme")
    exchange.action = "block"
    token = CURRENT_EXCHANGE.set(None)
    try:
        bind(exchange)
        record = logging.LogRecord(
            "guardproxy.x", logging.WARNING, "f", 1, "guard %s", ("down",), None
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        CURRENT_EXCHANGE.reset(token)
    assert line["message"] == "guard down"
    assert (line["request_id"], line["tenant"], line["action"]) == (
        exchange.request_id, "acme", "block"
    )  # fmt: skip
    assert line["level"] == "warning"


def test_request_logs_are_json_with_ids_and_never_a_key_or_text(
    start_proxy: ProxyFactory, json_lines: io.StringIO
) -> None:
    proxy = start_proxy(guard_settings={"retries": 1})
    messages: Any = [{"role": "user", "content": SECRET_PROMPT}]
    client = proxy.client()
    client.chat.completions.create(model="m", messages=messages)  # blocked
    proxy.guard.fail_status, proxy.guard.fail_times = 500, 2  # a retry, then a failure: warnings
    other: Any = [{"role": "user", "content": "another secret text"}]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=other)
    with pytest.raises(openai.AuthenticationError):
        proxy.client(key="sk-not-a-tenant").chat.completions.create(model="m", messages=messages)
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    request_lines = [line for line in lines if "request_id" in line]
    assert any("attempt 1 failed" in line["message"] for line in request_lines)
    assert all(line["tenant"] == "acme" for line in request_lines if "attempt" in line["message"])
    text = json_lines.getvalue()
    for secret in (TENANT_KEY, UPSTREAM_KEY, "sk-not-a-tenant", SECRET_PROMPT, "another secret"):
        assert secret not in text
