"""End to end: a real proxy on a real socket, driven by the official openai client."""

from __future__ import annotations

import json
import socket
from typing import Any

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import UPSTREAM_KEY, Proxy, ProxyFactory

SAFE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]
UNSAFE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me how to build a bomb."}
]
IMAGE = (  # a 1x1 PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChw"
    "GA60e6kgAAAABJRU5ErkJggg=="
)


def test_safe_answer_reaches_the_client_unchanged_with_verdicts(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(model="m", messages=SAFE)
    completion = raw.parse()
    assert completion.choices[0].message.content == proxy.upstream.reply
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-guardproxy-input"] == "safe"
    assert raw.headers["x-guardproxy-output"] == "safe"
    extra: Any = completion.model_extra
    assert extra["guardproxy"]["action"] == "allow"
    assert extra["guardproxy"]["request_id"] == raw.headers["x-guardproxy-request-id"]


def test_upstream_receives_the_clients_bytes_and_its_own_key(proxy: Proxy) -> None:
    body = json.dumps(
        {"model": "m", "messages": SAFE, "temperature": 0.3, "x_vendor_field": {"keep": [1, 2]}}
    ).encode()
    with proxy.http() as http:
        response = http.post(
            "/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json", "x-secret": "no"},
        )
    assert response.status_code == 200
    received = proxy.upstream.requests[0]
    assert received.body == body
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-secret" not in received.headers


def test_stream_relays_every_chunk_and_the_usage_chunk(proxy: Proxy) -> None:
    stream = proxy.client().chat.completions.create(
        model="m", messages=SAFE, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == proxy.upstream.reply
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_image_is_judged_with_the_text(proxy: Proxy) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": IMAGE}},
    ]
    messages: Any = [{"role": "user", "content": content}]
    proxy.client().chat.completions.create(model="m", messages=messages)
    checks = [r.check for r in proxy.guard.requests]
    assert checks[0].image_url == IMAGE
    assert checks[0].response is None
    assert checks[1].image_url == IMAGE
    assert checks[1].response == proxy.upstream.reply


def test_unsafe_prompt_is_refused_and_never_reaches_the_upstream(proxy: Proxy) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(model="m", messages=UNSAFE)
    completion = raw.parse()
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "I'm sorry, but I can't help with that."
    assert raw.headers["x-guardproxy-input"] == "unsafe"
    assert raw.headers["x-guardproxy-action"] == "block"
    assert proxy.upstream.requests == []


def test_unsafe_prompt_in_a_stream_gets_the_refusal_streamed_as_openai_streams(
    proxy: Proxy,
) -> None:
    chunks = list(
        proxy.client().chat.completions.create(
            model="m", messages=UNSAFE, stream=True, stream_options={"include_usage": True}
        )
    )
    role, text, finish, usage = chunks
    assert (role.choices[0].delta.role, role.choices[0].delta.content) == ("assistant", "")
    assert text.choices[0].delta.content == "I'm sorry, but I can't help with that."
    assert text.choices[0].finish_reason is None
    assert finish.choices[0].finish_reason == "content_filter"
    assert finish.choices[0].delta.content is None
    assert usage.choices == []
    assert usage.usage is not None
    assert len({c.id for c in chunks}) == 1
    assert proxy.upstream.requests == []


def test_a_blocked_structured_stream_raises_the_clients_content_filter_error(
    proxy: Proxy,
) -> None:
    class Answer(pydantic.BaseModel):
        text: str

    with (
        pytest.raises(openai.ContentFilterFinishReasonError),
        proxy.client().chat.completions.stream(
            model="m", messages=UNSAFE, response_format=Answer
        ) as stream,
    ):
        for _ in stream:
            pass


def test_unsafe_answer_is_replaced(proxy: Proxy) -> None:
    proxy.upstream.reply = "Sure! Here is how to steal a car: ..."
    completion = proxy.client().chat.completions.create(model="m", messages=SAFE)
    assert completion.choices[0].message.content == "I'm sorry, but I can't help with that."
    assert completion.choices[0].finish_reason == "content_filter"
    assert len(proxy.upstream.requests) == 1


def test_unsafe_streamed_answer_never_reaches_the_client(proxy: Proxy) -> None:
    proxy.upstream.reply = "Sure! Here is how to steal a car: first ..."
    chunks = list(proxy.client().chat.completions.create(model="m", messages=SAFE, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Windows are judged as they complete: the window that makes the text unsafe is held.
    assert "steal a car" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_error_block_shape_is_a_content_filter_bad_request(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(on_block="error")
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().chat.completions.create(model="m", messages=UNSAFE)
    assert caught.value.code == "content_filter"
    assert caught.value.param == "messages"


def test_guard_down_fails_closed_without_calling_the_upstream(proxy: Proxy) -> None:
    proxy.guard.fail_status = 503
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model="m", messages=SAFE)
    assert caught.value.status_code == 503
    assert caught.value.code == "guard_unavailable"
    assert proxy.upstream.requests == []
    assert len(proxy.guard.requests) == 2  # the first try and one retry (retries: 1)
    assert proxy.audit.records[-1]["action"] == "fail"


def test_unparseable_verdict_fails_closed(proxy: Proxy) -> None:
    proxy.guard.garbage = "I think this is probably fine."
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model="m", messages=SAFE)
    assert caught.value.code == "guard_unavailable"
    assert proxy.upstream.requests == []


def test_guard_down_with_allow_goes_on_and_the_audit_says_so(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(on_guard_error="allow")
    proxy.guard.fail_status = 503
    raw = proxy.client().chat.completions.with_raw_response.create(model="m", messages=SAFE)
    assert raw.parse().choices[0].message.content == proxy.upstream.reply
    assert raw.headers["x-guardproxy-input"] == "error"
    record = proxy.audit.records[-1]
    assert record["input"]["status"] == "error"
    assert "guard error: allowed by on_guard_error=allow" in record["notes"]


def test_wrong_key_is_refused(proxy: Proxy) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        proxy.client(key="sk-wrong").chat.completions.create(model="m", messages=SAFE)
    assert caught.value.code == "invalid_api_key"
    assert proxy.audit.records[-1]["action"] == "reject"
    assert proxy.guard.requests == []
    assert proxy.upstream.requests == []


def test_upstream_error_status_and_body_are_relayed(proxy: Proxy) -> None:
    proxy.upstream.fail_status = 429
    with pytest.raises(openai.RateLimitError) as caught:
        proxy.client().chat.completions.create(model="m", messages=SAFE)
    assert caught.value.status_code == 429
    assert proxy.audit.records[-1]["action"] == "error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    ],
)
def test_malformed_request_is_a_400_naming_the_field(
    proxy: Proxy, body: bytes, param: str | None
) -> None:
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert proxy.upstream.requests == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"model": "m", "n": ' + b"9" * 100_000 + b"}", "cannot be parsed"),
        (b'{"model": "m", "messages": [\xff]}', "not valid JSON"),
    ],
    ids=["deep-nesting", "huge-integer", "bad-utf8"],
)
def test_a_body_the_json_parser_refuses_is_a_clear_400(
    proxy: Proxy, body: bytes, says: str
) -> None:
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=body)
        healthy = http.get("/healthz")
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]
    assert healthy.status_code == 200


def test_audit_record_has_the_decision_and_no_text(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(model="m", messages=UNSAFE)
    record = proxy.audit.records[-1]
    assert record["tenant"] == "acme"
    assert record["model"] == "m"
    assert record["action"] == "block"
    assert record["status"] == 200
    assert record["input"]["status"] == "unsafe"
    assert "Violence" in record["input"]["categories"]
    assert "bomb" not in json.dumps(record)


def test_output_check_off_streams_straight_through(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(output={"enabled": False})
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=SAFE, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == proxy.upstream.reply
    assert raw.headers["x-guardproxy-output"] == "off"
    assert len(proxy.guard.requests) == 1


@pytest.mark.parametrize("protocol", ["nemotron-reasoning", "nemotron-safety-guard-8b"])
def test_every_guard_protocol_blocks_and_allows(start_proxy: ProxyFactory, protocol: str) -> None:
    proxy = start_proxy(protocol=protocol)
    client = proxy.client()
    allowed = client.chat.completions.create(model="m", messages=SAFE)
    blocked = client.chat.completions.create(model="m", messages=UNSAFE)
    assert allowed.choices[0].message.content == proxy.upstream.reply
    assert blocked.choices[0].finish_reason == "content_filter"


def test_health_readiness_and_models(proxy: Proxy) -> None:
    with proxy.http() as http, proxy.ops() as ops:
        assert http.get("/healthz").status_code == 200
        ready = ops.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["guards"] == {"nemotron": "ok"}
        assert ready.json()["dependencies"] == "ok"
        models = http.get("/v1/models")
        assert models.status_code == 200
        assert models.json()["object"] == "list"


def dead_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago and is closed now
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_dependency_outage_keeps_the_pod_ready_and_names_what_is_down(
    start_proxy: ProxyFactory,
) -> None:
    """Readiness is this pod's: ejecting every pod when the upstream is down would turn the
    documented 502/503 answers into connection errors."""
    proxy = start_proxy(upstream_url=dead_url())
    with proxy.http() as http, proxy.ops() as ops:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").json() == {"status": "ready"}  # no details for tenants
        ready = ops.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["dependencies"] == "degraded"
    assert ready.json()["upstreams"] == {"app": "unreachable: ConnectError"}
    assert ready.json()["guards"] == {"nemotron": "ok"}


def test_body_over_the_limit_is_413(proxy: Proxy) -> None:
    huge = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (21 << 20)
    with proxy.http() as http:
        response = http.post("/v1/chat/completions", content=huge + b'"}]}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unreachable_upstream_is_502(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(upstream_url=dead_url())
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client().chat.completions.create(model="m", messages=SAFE)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert proxy.audit.records[-1]["status"] == 502


def test_a_blocked_structured_completion_raises_the_clients_content_filter_error(
    proxy: Proxy,
) -> None:
    class Answer(pydantic.BaseModel):
        text: str

    with pytest.raises(openai.ContentFilterFinishReasonError):
        proxy.client().chat.completions.parse(model="m", messages=UNSAFE, response_format=Answer)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/embeddings"), ("POST", "/v1/completions"), ("GET", "/v1/files")],
)
def test_surfaces_the_proxy_does_not_judge_are_refused_not_relayed(
    proxy: Proxy, method: str, path: str
) -> None:
    with proxy.http() as http:
        response = http.request(method, path, json={"model": "m", "input": "build a bomb"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"Invalid URL ({method} {path})"
    assert proxy.upstream.requests == []


def test_a_guard_outage_shows_the_client_neither_the_guard_nor_its_error(proxy: Proxy) -> None:
    proxy.guard.fail_status = 500
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model="m", messages=SAFE)
    body = caught.value.response.text
    assert "Nemotron" not in body
    assert "HTTP 500" not in body
    assert "HTTP 500" in proxy.audit.records[-1]["input"]["error"]
