"""The closed world, checked by taint: a maximal request per API (built from the official
SDKs' typed params, a marker in every string) is sent; each refusal names a field, which is
dropped, until the proxy takes the request. Every marker the upstream then receives must have
reached the guard first, and no refused request reaches the upstream."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

from guardproxy.api.fields import CHAT_FIELDS, MESSAGES_FIELDS, RESPONSES_FIELDS
from guardproxy.core.fields import Field
from tests.conftest import Proxy, ProxyFactory
from tests.taint import Tainter, drop, markers

APIS = {
    "chat": ("/v1/chat/completions", CompletionCreateParamsNonStreaming),
    "responses": ("/v1/responses", ResponseCreateParamsNonStreaming),
    "messages": ("/v1/messages", MessageCreateParamsNonStreaming),
}
MAX_REFUSALS = 400
QUOTED_PATH = re.compile(r"^'?([A-Za-z_$][\w$]*(?:\.[\w$]+|\[\d+\])*)'?[: ]")


def refused_field(reply: httpx.Response) -> str:
    error = reply.json()["error"]
    param = error.get("param")
    if isinstance(param, str) and param:
        return param
    found = QUOTED_PATH.match(error["message"])  # Anthropic's errors name it in the message
    assert found, f"a refusal that names no field: {error}"
    return found.group(1)


def send_until_taken(proxy: Proxy, api: str) -> tuple[dict[str, Any], list[str]]:
    path, params = APIS[api]
    body = Tainter().build(params)
    headers = {"authorization": f"Bearer {proxy.key}", "x-api-key": proxy.key}
    refused: list[str] = []
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=30) as http:
        for _ in range(MAX_REFUSALS):
            reply = http.post(path, json=body)
            if reply.status_code != 400:
                assert reply.status_code == 200, reply.text
                return body, refused
            assert proxy.upstream.requests == [], "a refused request reached the upstream"
            field = refused_field(reply)
            refused.append(field)
            parent = re.sub(r"(\.[\w$]+|\[\d+\])$", "", field)  # a field refused as missing
            assert drop(body, field) or drop(body, parent), f"refused {field!r}, not in the body"
    raise AssertionError(f"still refused after {MAX_REFUSALS} fields: {refused[-5:]}")


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_string_the_upstream_receives_was_judged(start_proxy: ProxyFactory, api: str) -> None:
    proxy = start_proxy(input={"judge_system": True})
    sent, refused = send_until_taken(proxy, api)
    (forwarded,) = proxy.upstream.requests
    reached = markers(forwarded.body.decode())
    judged = set().union(*(markers(json.dumps(r.json)) for r in proxy.guard.requests))
    assert reached, "the taken request carries no marker: the test would prove nothing"
    unjudged = sorted(reached - judged)
    assert not unjudged, f"{len(unjudged)} strings reached the upstream unjudged: {unjudged[:8]}"
    assert len(reached) > 40  # the maximal request kept most of its fields
    assert len(refused) < len(markers(json.dumps(sent))) + len(refused)


TABLES = {"chat": CHAT_FIELDS, "responses": RESPONSES_FIELDS, "messages": MESSAGES_FIELDS}


@pytest.mark.parametrize("api", sorted(APIS))
def test_with_unjudged_parts_allowed_only_files_and_audio_pass_unjudged(
    start_proxy: ProxyFactory, api: str
) -> None:
    """`unjudged_parts: allow` lets through what no guard can read (files, audio, media by
    id); every string around them, and every hosted tool's text, is still judged."""
    proxy = start_proxy(input={"judge_system": True, "unjudged_parts": "allow"})
    send_until_taken(proxy, api)
    (forwarded,) = proxy.upstream.requests
    leaves = list(TABLES[api].leaves(json.loads(forwarded.body)))
    unreadable = {leaf.text for leaf in leaves if leaf.kind in (Field.REFUSED, Field.MEDIA)}
    judged = set().union(*(markers(json.dumps(r.json)) for r in proxy.guard.requests))
    passed = markers(forwarded.body.decode()) - judged
    assert passed <= unreadable, sorted(passed - unreadable)[:8]
    assert len(markers(forwarded.body.decode())) > 40
