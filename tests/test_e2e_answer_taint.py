"""The closed world on the way back, checked by taint: a recording upstream answers with a
maximal answer per API (built from the official SDKs' response and stream-event models, a
marker in every string), whole and streamed. Every marker the client receives must have been
judged by the guard first."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent

from tests.conftest import Proxy, ProxyFactory
from tests.taint import Tainter, markers, variants

PATHS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}
ENDS = ("response.completed", "response.incomplete", "response.failed", "message_stop")
# What an SSE stream may carry besides its API's events: a line that is not JSON, a comment,
# an error object.
LOOSE = [
    b"data: taint 9001 is not JSON\n\n",
    b": taint 9002 in a comment\n\n",
    b'data: {"error": {"message": "taint 9003", "type": "server_error"}}\n\n',
]


def request(api: str, stream: bool) -> dict[str, Any]:
    said = [{"role": "user", "content": "Tell me about roses."}]
    if api == "responses":
        return {"model": "m", "input": "Tell me about roses.", "stream": stream}
    body = {"model": "m", "messages": said, "stream": stream}
    return {**body, "max_tokens": 64} if api == "messages" else body


def whole(api: str) -> bytes:
    model = {"chat": ChatCompletion, "responses": Response, "messages": Message}[api]
    return json.dumps(Tainter().build(model)).encode()


def event(payload: dict[str, Any], named: bool) -> bytes:
    head = f"event: {payload['type']}\n" if named else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def streamed(api: str) -> list[bytes]:
    tainter = Tainter()
    if api == "chat":
        return [event(tainter.build(ChatCompletionChunk), False), *LOOSE, b"data: [DONE]\n\n"]
    if api == "responses":
        events = [tainter.build(v) for v in variants(ResponseStreamEvent)]
        items = tainter.build(Response)["output"]
        added = [{"type": "response.output_item.added", "output_index": i, "item": item}
                 for i, item in enumerate(items)]  # fmt: skip
    else:
        events = [tainter.build(v) for v in variants(RawMessageStreamEvent)]
        blocks = tainter.build(Message)["content"]
        added = [{"type": "content_block_start", "index": i, "content_block": block}
                 for i, block in enumerate(blocks)]  # fmt: skip
    first = [e for e in events if e["type"] not in ENDS]
    last = [e for e in events if e["type"] in ENDS]
    return [*(event(e, True) for e in [*first[:1], *added, *first[1:]]), *LOOSE,
            *(event(e, True) for e in last)]  # fmt: skip


def judged(proxy: Proxy) -> set[str]:
    return {marker for call in proxy.guard.requests for marker in markers(call.json)}


def received(proxy: Proxy, api: str, stream: bool) -> str:
    headers = {"authorization": f"Bearer {proxy.key}", "x-api-key": proxy.key}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=30) as http:
        reply = http.post(PATHS[api], json=request(api, stream))
    assert reply.status_code == 200, reply.text
    return reply.text


@pytest.mark.parametrize("api", sorted(PATHS))
def test_every_string_of_a_whole_answer_is_judged_before_the_client_gets_it(
    start_proxy: ProxyFactory, api: str
) -> None:
    proxy = start_proxy()
    proxy.upstream.raw_reply = (200, "application/json", whole(api))
    seen = markers(received(proxy, api, stream=False))
    assert len(seen) > 10
    assert seen - judged(proxy) == set()


@pytest.mark.parametrize("mode", ["chunked", "buffer"])
@pytest.mark.parametrize("api", sorted(PATHS))
def test_every_string_of_a_streamed_answer_is_judged_before_the_client_gets_it(
    start_proxy: ProxyFactory, api: str, mode: str
) -> None:
    proxy = start_proxy(output={"stream": mode})
    proxy.upstream.raw_reply = (200, "text/event-stream", streamed(api))
    seen = markers(received(proxy, api, stream=True))
    assert {"taint 9001", "taint 9002", "taint 9003"} <= seen
    assert seen - judged(proxy) == set()
