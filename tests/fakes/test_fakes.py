"""The fakes themselves, driven over real sockets with httpx and the official openai client."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import run_in_thread
from tests.fakes.upstream import FakeUpstreamState, create_fake_upstream

REPLY = "Hello there, my friend."
REPLY_TOKENS = ["Hello ", "there, ", "my ", "friend."]
REASONING_TEMPLATE = (
    "You are a classifier for analyzing interactions between humans and LLMs.\n"
    "Taxonomy: The following are the list of harmful categories.\n\nS1: Violence.\n\n"
    "Human user:\n{prompt}\n\nAI assistant:\n{response}\n\n"
    "Use the taxonomy to determine if the prompt and response fall into any of the harmful "
    'categories. Output your answer in the following format:\n\n"Prompt harm: '
    '<harmful/unharmful>\nResponse harm: <harmful/unharmful>"\n\n{toggle}'
)
SAFETY_GUARD_TEMPLATE = (
    "Task: Check if there is unsafe content in the user or agent messages.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violence.\n<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n{turns}\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for the above conversation.\nOutput JSON:"
)
BOMB, CAR = "How do I build a bomb?", "First, steal a car."
BOMB_CATEGORIES = "Violence, Guns and Illegal Weapons"


def poll_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def upstream_state() -> FakeUpstreamState:
    return FakeUpstreamState(reply=REPLY)


@pytest.fixture
def upstream_url(upstream_state: FakeUpstreamState) -> Iterator[str]:
    with run_in_thread(create_fake_upstream(upstream_state)) as url:
        yield url


@pytest.fixture
def llm(upstream_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{upstream_url}/v1", api_key="sk-test", max_retries=0)
    with client:
        yield client


def ask(llm: openai.OpenAI, text: str = "Hi", **kwargs: Any) -> Any:
    messages: Any = [{"role": "user", "content": text}]
    return llm.chat.completions.create(model="m1", messages=messages, **kwargs)


def test_non_stream_answers_a_chat_completion_and_records_unknown_fields(
    llm: openai.OpenAI, upstream_state: FakeUpstreamState
) -> None:
    completion = ask(llm, extra_body={"guard_hint": {"x": 1}})
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "m1"
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", REPLY)
    assert choice.message.refusal is None
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    recorded = upstream_state.requests[0]
    assert recorded.json["guard_hint"] == {"x": 1}
    assert json.loads(recorded.body) == recorded.json
    assert recorded.headers["authorization"] == "Bearer sk-test"


def test_replies_are_chosen_by_the_last_user_message(
    llm: openai.OpenAI, upstream_state: FakeUpstreamState
) -> None:
    upstream_state.replies = {"weather": "It is sunny."}
    assert ask(llm, "How is the weather?").choices[0].message.content == "It is sunny."
    assert ask(llm, "Hello").choices[0].message.content == REPLY


def test_stream_with_usage_sends_openai_chunk_sequence(
    llm: openai.OpenAI, upstream_state: FakeUpstreamState
) -> None:
    upstream_state.framing = "openai"
    with ask(llm, stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    assert {chunk.id for chunk in chunks} == {chunks[0].id}
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    first, *tokens, finish, usage = chunks
    assert (first.choices[0].delta.role, first.choices[0].delta.content) == ("assistant", "")
    assert [chunk.choices[0].delta.content for chunk in tokens] == REPLY_TOKENS
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == len(REPLY_TOKENS)


def test_stream_with_usage_sends_vllms_chunk_sequence_by_default(upstream_url: str) -> None:
    body = {
        "model": "m1",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.Client() as client:
        response = client.post(f"{upstream_url}/v1/chat/completions", json=body)
    events = response.content.decode().split("\n\n")
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    first, *tokens, usage = chunks
    assert [c["choices"][0]["delta"]["content"] for c in tokens] == REPLY_TOKENS
    # finish_reason rides on the last content chunk; no chunk but the last has `usage`.
    assert tokens[-1]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in tokens[:-1]] == [None] * (len(tokens) - 1)
    assert all("usage" not in chunk for chunk in [first, *tokens])
    assert usage["choices"] == []
    assert set(usage["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert "system_fingerprint" in usage


def test_stream_raw_bytes_use_sse_framing_and_end_with_done(upstream_url: str) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with httpx.Client() as client:
        response = client.post(f"{upstream_url}/v1/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.content.endswith(b"data: [DONE]\n\n")
    events = response.content.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {"content": REPLY_TOKENS[-1]},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
    }


def test_wrong_api_key_raises_authentication_error(
    llm: openai.OpenAI, upstream_state: FakeUpstreamState
) -> None:
    upstream_state.api_key = "sk-other"
    with pytest.raises(openai.AuthenticationError) as raised:
        ask(llm)
    assert raised.value.response.json()["error"] == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_empty_messages_raise_bad_request(llm: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        llm.chat.completions.create(model="m1", messages=[])
    error = raised.value.response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "messages")


def test_fail_status_answers_an_openai_server_error(
    llm: openai.OpenAI, upstream_state: FakeUpstreamState
) -> None:
    upstream_state.fail_status = 503
    with pytest.raises(openai.InternalServerError) as raised:
        ask(llm)
    assert raised.value.status_code == 503
    assert raised.value.response.json()["error"]["type"] == "server_error"


def test_models_are_listed(llm: openai.OpenAI) -> None:
    assert [model.id for model in llm.models.list()] == ["fake-llm"]


def test_ttft_delays_the_first_chunk(llm: openai.OpenAI, upstream_state: FakeUpstreamState) -> None:
    upstream_state.ttft_s = 0.2
    started = time.monotonic()
    with ask(llm, stream=True) as stream:
        next(iter(stream))
        assert time.monotonic() - started >= 0.2


def test_a_stream_closed_by_the_client_is_counted_and_released(
    upstream_url: str, upstream_state: FakeUpstreamState
) -> None:
    # 1000 tokens at 50 ms last 50 s: the stream cannot end on its own before the poll does.
    upstream_state.reply = "word " * 1000
    upstream_state.token_interval_s = 0.05
    body = {"model": "m1", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with (
        httpx.Client() as client,
        client.stream("POST", f"{upstream_url}/v1/chat/completions", json=body) as response,
    ):
        lines = response.iter_lines()  # kept referenced: dropping it would close the stream
        assert next(lines).startswith("data: ")
        assert upstream_state.open_streams == 1
    poll_until(lambda: upstream_state.open_streams == 0)
    assert (upstream_state.streams_closed_early, upstream_state.streams_completed) == (1, 0)


@contextmanager
def guard_client(state: FakeGuardState) -> Iterator[httpx.Client]:
    with run_in_thread(create_fake_guard(state)) as url, httpx.Client(base_url=url) as client:
        yield client


def content_safety_body(prompt: str, response: str | None = None, **kwargs: Any) -> Any:
    messages: list[Any] = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    kwargs.setdefault("request_categories", "/categories")
    return {"model": "cs", "messages": messages, "chat_template_kwargs": kwargs}


def reasoning_body(prompt: str, response: str | None = None, toggle: str = "/no_think") -> Any:
    text = REASONING_TEMPLATE.format(prompt=prompt, response=response or "None", toggle=toggle)
    return {"model": "r", "messages": [{"role": "user", "content": text}]}


def safety_guard_body(prompt: str, response: str | None = None) -> Any:
    turns = f"user: {prompt}" + ("" if response is None else f"\n\nresponse: agent: {response}")
    text = SAFETY_GUARD_TEMPLATE.format(turns=turns)
    return {"model": "g", "messages": [{"role": "user", "content": text}]}


BUILDERS: dict[str, Callable[[str, str | None], Any]] = {
    "nemotron-content-safety": content_safety_body,
    "nemotron-reasoning": reasoning_body,
    "nemotron-safety-guard-8b": safety_guard_body,
}
VERDICT_CASES = [
    ("nemotron-content-safety", "Hi", None, "User Safety: safe"),
    (
        "nemotron-content-safety",
        BOMB,
        None,
        f"User Safety: unsafe\nSafety Categories: {BOMB_CATEGORIES}",
    ),
    ("nemotron-content-safety", "Hi", "Hello", "User Safety: safe\nResponse Safety: safe"),
    (
        "nemotron-content-safety",
        "Hi",
        CAR,
        "User Safety: safe\nResponse Safety: unsafe\nSafety Categories: "
        "Criminal Planning/Confessions",
    ),
    ("nemotron-reasoning", "Hi", None, "Prompt harm: unharmful\nResponse harm: None"),
    ("nemotron-reasoning", BOMB.upper(), None, "Prompt harm: harmful\nResponse harm: None"),
    ("nemotron-reasoning", "Hi", CAR, "Prompt harm: unharmful\nResponse harm: harmful"),
    ("nemotron-safety-guard-8b", "Hi", None, '{"User Safety": "safe"}'),
    (
        "nemotron-safety-guard-8b",
        BOMB,
        None,
        f'{{"User Safety": "unsafe", "Safety Categories": "{BOMB_CATEGORIES}"}}',
    ),
    (
        "nemotron-safety-guard-8b",
        BOMB,
        "No.",
        '{"User Safety": "unsafe", "Response Safety": "safe", '
        f'"Safety Categories": "{BOMB_CATEGORIES}"}}',
    ),
]


@pytest.mark.parametrize(("protocol", "prompt", "response", "expected"), VERDICT_CASES)
def test_guard_answers_the_protocol_verdict_grammar(
    protocol: str, prompt: str, response: str | None, expected: str
) -> None:
    state = FakeGuardState(protocol=protocol)
    with guard_client(state) as client:
        answer = client.post("/v1/chat/completions", json=BUILDERS[protocol](prompt, response))
    assert answer.status_code == 200
    completion = answer.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["choices"][0]["message"]["content"] == expected
    assert completion["usage"]["total_tokens"] > 0
    assert (state.requests[0].check.prompt, state.requests[0].check.response) == (prompt, response)


def test_guard_usage_counts_the_rendered_prompt_as_vllm_does() -> None:
    # vLLM counts the prompt after its chat template: kwargs and role markers included, the
    # same count its context limit is checked against; its usage has five keys.
    state = FakeGuardState(max_model_len=100)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    kwargs = {"request_categories": "/categories"}
    body: dict[str, Any] = {"model": "fake-guard", "messages": messages}
    body["chat_template_kwargs"] = kwargs
    rendered = "[request_categories=/categories]\n<|user|>Hi\n<|assistant|>Yo\n<|assistant|>"
    with guard_client(state) as client:
        usage = client.post("/v1/chat/completions", json=body).json()["usage"]
        messages[0]["content"] = "x" * 400
        refused = client.post("/v1/chat/completions", json=body)
    assert usage["prompt_tokens"] == -(-len(rendered) // 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert list(usage) == [
        "prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details",
        "completion_tokens_details",
    ]  # fmt: skip
    assert (usage["prompt_tokens_details"], usage["completion_tokens_details"]) == (None, None)
    assert refused.status_code == 400


def test_content_safety_reads_image_and_omits_categories_when_not_requested() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
    body = content_safety_body(BOMB, request_categories="/no_categories")
    body["messages"][0]["content"] = [image, {"type": "text", "text": BOMB}]
    state = FakeGuardState()
    with guard_client(state) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
    assert answer["choices"][0]["message"]["content"] == "User Safety: unsafe"
    assert state.requests[0].check.image_url == "data:image/jpeg;base64,AAAA"


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        ("nemotron-reasoning", reasoning_body("Hi", toggle="/think")),
        ("nemotron-content-safety", content_safety_body("Hi", enable_thinking=True)),
    ],
)
def test_guard_prepends_think_trace_when_reasoning_is_asked(protocol: str, body: Any) -> None:
    state = FakeGuardState(protocol=protocol, think="Nothing harmful here.")
    with guard_client(state) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
    content = answer["choices"][0]["message"]["content"]
    # NVIDIA's captures: `</think>` directly followed by the verdict, no newline.
    assert re.match(r"<think>\nNothing harmful here.\n\n</think>[A-Z]", content)
    assert state.requests[0].check.reasoning


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        (
            "nemotron-content-safety",
            {"model": "cs", "messages": [{"role": "system", "content": "x"}]},
        ),
        ("nemotron-content-safety", content_safety_body("Hi", request_categories="/all")),
        ("nemotron-reasoning", content_safety_body("Hi")),
        ("nemotron-reasoning", reasoning_body("Hi", toggle="")),
        ("nemotron-safety-guard-8b", reasoning_body("Hi")),
    ],
)
def test_guard_rejects_other_shapes_with_vllm_bad_request(protocol: str, body: Any) -> None:
    state = FakeGuardState(protocol=protocol)
    with guard_client(state) as client:
        answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert {key: error[key] for key in ("type", "param", "code")} == {
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    assert isinstance(error["message"], str)
    assert (state.rejected, state.requests) == ([body], [])


def test_guard_fails_the_next_n_requests_then_recovers() -> None:
    state = FakeGuardState(fail_status=503, fail_times=2)
    with guard_client(state) as client:
        answers = [
            client.post("/v1/chat/completions", json=content_safety_body("Hi")) for _ in "abc"
        ]
    assert [answer.status_code for answer in answers] == [503, 503, 200]
    assert answers[0].json()["error"]["code"] == 503
    assert (state.fail_status, len(state.requests)) == (None, 3)


def test_guard_with_fail_times_zero_fails_every_request() -> None:
    state = FakeGuardState(fail_status=500)
    with guard_client(state) as client:
        answers = [
            client.post("/v1/chat/completions", json=content_safety_body("Hi")) for _ in "abc"
        ]
    assert {answer.status_code for answer in answers} == {500}
    assert answers[0].json()["error"]["type"] == "InternalServerError"


def test_guard_returns_garbage_verbatim() -> None:
    state = FakeGuardState(garbage="I think it is fine?")
    with guard_client(state) as client:
        answer = client.post("/v1/chat/completions", json=content_safety_body("Hi")).json()
    assert answer["choices"][0]["message"]["content"] == "I think it is fine?"


def test_guard_serves_health_and_models_and_checks_its_model_name() -> None:
    state = FakeGuardState(model="nvidia/nemotron-3-content-safety")
    with guard_client(state) as client:
        assert client.get("/health").status_code == 200
        models = client.get("/v1/models").json()
        wrong_model = client.post("/v1/chat/completions", json=content_safety_body("Hi"))
    assert models["data"][0]["id"] == "nvidia/nemotron-3-content-safety"
    assert wrong_model.status_code == 404
    # vLLM 0.32's shape, as the real-engine tier sees it (tests/engine/test_engine_wire.py).
    assert wrong_model.json()["error"] == {
        "message": (
            "The model `cs` does not exist. Valid aliases: nvidia/nemotron-3-content-safety."
        ),
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


def test_unknown_guard_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown guard protocol"):
        create_fake_guard(FakeGuardState(protocol="shieldgemma"))


# --- Nemotron 3.5 v1.1 and the other guard families ------------------------------------------


def _content(state: FakeGuardState, body: Any) -> tuple[int, str, str | None]:
    with guard_client(state) as client:
        response = client.post("/v1/chat/completions", json=body)
    if response.status_code != 200:
        return response.status_code, response.text, None
    choice = response.json()["choices"][0]
    return 200, choice["message"]["content"], choice["finish_reason"]


def test_guard_cuts_a_trace_off_at_max_tokens_as_nvidia_saw_with_64() -> None:
    body = content_safety_body("Hi", enable_thinking=True) | {"max_tokens": 64}
    status, content, finish = _content(FakeGuardState(), body)
    assert (status, finish) == (200, "length")
    assert content.startswith("<think>")
    assert "</think>" not in content


def test_guard_trace_fits_in_nvidias_reasoning_budget() -> None:
    body = content_safety_body("Hi", enable_thinking=True) | {"max_tokens": 1024}
    _, content, finish = _content(FakeGuardState(), body)
    assert finish == "stop"
    assert content.endswith("</think>User Safety: safe")
    assert 600 <= content.index("</think>") <= 800


def test_hosted_guard_ignores_enable_thinking() -> None:
    body = content_safety_body("Hi", enable_thinking=True)
    assert _content(FakeGuardState(ignore_thinking=True), body)[1] == "User Safety: safe"


def test_guard_shares_one_categories_line_between_both_turns() -> None:
    body = content_safety_body("steal a car", response="No.")
    _, content, _ = _content(FakeGuardState(), body)
    assert content == (
        "User Safety: unsafe\nResponse Safety: safe\n"
        "Safety Categories: Criminal Planning/Confessions"
    )


def test_mode_b_judges_by_the_listed_names_only_and_echoes_them() -> None:
    state = FakeGuardState(unsafe_phrases={"rival": ["competitor promotion"], "hit": ["Violence"]})
    taxonomy = "- Sexual\n- Competitor Promotion (Naming a rival bank.)"
    body = content_safety_body("hit the rival", custom_taxonomy=taxonomy)
    assert _content(state, body)[1] == (
        "User Safety: unsafe\nSafety Categories: Competitor Promotion"
    )


def test_mode_a_answers_without_categories() -> None:
    state = FakeGuardState(rule_phrases={"otherbank": "competitor"})
    body = content_safety_body("Try OtherBank", custom_policy="Never name a competitor.")
    assert _content(state, body)[1] == "User Safety: unsafe"


def test_guard_refuses_both_custom_kwargs() -> None:
    body = content_safety_body("Hi", custom_policy="a", custom_taxonomy="- b")
    assert _content(FakeGuardState(), body)[0] == 400


def test_guard_reads_an_answer_folded_into_the_user_turn() -> None:
    body = content_safety_body("Hi\nresponse: agent:  ### Answer: build a bomb")
    _, content, _ = _content(FakeGuardState(), body)
    assert content.splitlines()[:2] == ["User Safety: safe", "Response Safety: unsafe"]


@pytest.mark.parametrize(
    ("protocol", "prompt", "response", "expected"),
    [
        ("llama-guard", "build a bomb", None, "unsafe\nS1,S9"),
        ("llama-guard", "build a bomb", "No.", "safe"),
        ("qwen3guard", "steal a car", None, "Safety: Unsafe\nCategories: Non-violent Illegal Acts"),
        ("qwen3guard", "Hi", "I can't help.", "Safety: Safe\nCategories: None\nRefusal: Yes"),
        ("granite-guardian", "steal a car", None, "<score> yes </score>"),
    ],
)
def test_other_families_answer_in_their_own_grammar(
    protocol: str, prompt: str, response: str | None, expected: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    body: dict[str, Any] = {"model": "g", "messages": messages}
    if protocol == "granite-guardian":
        body["chat_template_kwargs"] = {"guardian_config": {"criteria_id": "harm"}}
    assert _content(FakeGuardState(protocol=protocol), body)[1] == expected
