"""A stream cut off by the output check, as each API's official client reads it: what was
released is closed the way the API ends an incomplete answer (nothing unjudged repeated),
and the usage tells the tokens the upstream actually spent, in the answer and in the audit."""

from __future__ import annotations

import json
import typing
from typing import Any

import anthropic
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel

from tests.conftest import Proxy, ProxyFactory
from tests.fakes.upstream import TOKEN_PATTERN


def story(words: int, middle: str = "") -> str:
    parts = [f"word{i} " for i in range(words)]
    parts.insert(words // 2, middle)
    return "".join(parts)


UNSAFE = "and then you steal a car quickly. "
REFUSAL = "I'm sorry, but I can't help with that."
PROMPT = "Tell me a story"
PROMPT_TOKENS = 4  # the fakes count a prompt's tokens as its words
# Long after the unsafe words: the moderator reads a bounded number of windows ahead of the
# one it judges, so it cuts off long before the upstream's final usage could be read.
LONG_STORY = story(30) + UNSAFE + story(4000)
STORY_TOKENS = len(TOKEN_PATTERN.findall(LONG_STORY))
# Found only by the check of the whole answer: windows of at most 16 characters with no
# overlap never hold all of it. Its last word ends the answer, so the final check, which
# gates the last window, keeps that word from the client.
LONG_PHRASE = "alpha beta gamma delta epsilon zeta"
SMALL_WINDOWS = {"first_window": 8, "window": 8, "overlap": 0}
# The openai SDK's class for each Responses event type.
EVENT_TYPES: dict[str, type[BaseModel]] = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}


def final_check_proxy(start_proxy: ProxyFactory) -> Proxy:
    """A proxy whose upstream answers what only the final check finds unsafe."""
    proxy = start_proxy(output=SMALL_WINDOWS)
    proxy.guard.unsafe_phrases[LONG_PHRASE] = ["Violence"]
    proxy.upstream.reply = f"Well {LONG_PHRASE}"
    return proxy


def raw_responses_events(proxy: Proxy, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Responses stream as the wire carries it, each event strictly validated against the
    openai SDK's event types (the SDK itself builds them without validation)."""
    with proxy.http() as http, http.stream("POST", "/v1/responses", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    for event in events:
        EVENT_TYPES[event["type"]].model_validate(event)
    return events


def deltas_of(events: list[dict[str, Any]], output_index: int) -> str:
    return "".join(
        e["delta"]
        for e in events
        if e["type"] == "response.output_text.delta" and e["output_index"] == output_index
    )


# -- Responses ------------------------------------------------------------------------------


def test_a_responses_cut_off_closes_the_released_message_and_lists_it(proxy: Proxy) -> None:
    proxy.upstream.reply = story(60, UNSAFE)
    events = raw_responses_events(proxy, {"model": "m", "input": PROMPT, "stream": True})
    kinds = [e["type"] for e in events]
    released = deltas_of(events, 0)
    assert released
    assert proxy.upstream.reply.startswith(released)
    # The fake guard's unsafe phrase is "steal a car": a window may end after "steal" (judged
    # safe, as the words before a statement are), never after the whole phrase.
    assert "steal a car" not in released
    assert "steal a car" not in json.dumps(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    closing = kinds.index("response.output_text.done")
    assert kinds[closing : closing + 4] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",  # the refusal, an item of its own
    ]
    text_done, part_done, item_done = events[closing : closing + 3]
    assert text_done["text"] == released  # the deltas repeated, nothing more
    assert part_done["part"]["text"] == released
    assert item_done["item"]["status"] == "incomplete"
    assert item_done["item"]["content"][0]["text"] == released
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "content_filter"}
    assert final["response"]["output"][0] == item_done["item"]
    assert final["response"]["output"][1]["content"][0]["text"] == REFUSAL


def test_the_openai_client_reads_a_cut_off_response_stream_to_its_end(proxy: Proxy) -> None:
    proxy.upstream.reply = story(60, UNSAFE)
    with proxy.client().responses.stream(model="m", input=PROMPT) as stream:
        events = list(stream)
    released = "".join(
        e.delta for e in events if e.type == "response.output_text.delta" and e.output_index == 0
    )
    done = [e.text for e in events if e.type == "response.output_text.done"]
    assert done == [released, REFUSAL]
    final = events[-1]
    assert final.type == "response.incomplete"
    assert final.response.status == "incomplete"
    assert final.response.incomplete_details is not None
    assert final.response.incomplete_details.reason == "content_filter"
    message, refusal = final.response.output
    assert message.type == "message"
    assert message.status == "incomplete"
    assert refusal.type == "message"
    assert [part.model_dump()["text"] for part in refusal.content] == [REFUSAL]
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.response.output_text == said


def test_a_responses_cut_off_repeats_the_released_text_as_masked(
    start_proxy: ProxyFactory,
) -> None:
    # Small windows, so the sentence with the address is released before the cut-off (with
    # growing windows, text that arrives during the first check joins the second).
    proxy = start_proxy(redaction={"detectors": ["email"]}, output={"window": 48})
    proxy.upstream.reply = "Write to jane.doe@example.org please. " + story(60, UNSAFE)
    events = raw_responses_events(proxy, {"model": "m", "input": PROMPT, "stream": True})
    released = deltas_of(events, 0)
    assert released.startswith("Write to [REDACTED:EMAIL] please.")
    assert "jane.doe" not in json.dumps(events)
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == released
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == released


def test_a_responses_cut_off_before_any_release_is_a_refusal_alone(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(output={"first_window": 256})  # the unsafe words in the first window
    proxy.upstream.reply = UNSAFE + story(40)
    events = raw_responses_events(proxy, {"model": "m", "input": PROMPT, "stream": True})
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_item.added") == 1
    final = events[-1]["response"]
    assert [item["content"][0]["text"] for item in final["output"]] == [REFUSAL]
    assert final["incomplete_details"] == {"reason": "content_filter"}
    assert final["usage"]["output_tokens"] >= 1  # the upstream generated before the cut-off


def test_a_responses_cut_off_reports_the_tokens_read(proxy: Proxy) -> None:
    proxy.upstream.reply = LONG_STORY
    events = raw_responses_events(proxy, {"model": "m", "input": PROMPT, "stream": True})
    usage = events[-1]["response"]["usage"]
    released = TOKEN_PATTERN.findall(deltas_of(events, 0))
    # The upstream's count comes with `response.completed`, never read here: the output is
    # the tokens read before the cut-off, at least those released; the input is unknown.
    assert len(released) <= usage["output_tokens"] < STORY_TOKENS
    assert usage["input_tokens"] == 0
    assert usage["total_tokens"] == usage["output_tokens"]
    record = proxy.record(1)
    assert record["usage"] == {
        "input_tokens": 0,
        "output_tokens": usage["output_tokens"],
        "total_tokens": usage["output_tokens"],
        "source": "read",
    }


def test_a_responses_block_at_the_final_check_reports_the_upstreams_usage(
    start_proxy: ProxyFactory,
) -> None:
    proxy = final_check_proxy(start_proxy)
    events = raw_responses_events(proxy, {"model": "m", "input": PROMPT, "stream": True})
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert "zeta" not in json.dumps(events)
    tokens = len(TOKEN_PATTERN.findall(proxy.upstream.reply))
    assert final["usage"]["input_tokens"] == PROMPT_TOKENS
    assert final["usage"]["output_tokens"] == tokens
    assert proxy.record(1)["usage"]["source"] == "upstream"


# -- Chat Completions -----------------------------------------------------------------------


def test_a_chat_cut_off_reports_the_upstreams_last_running_usage(proxy: Proxy) -> None:
    proxy.upstream.reply = LONG_STORY
    options: Any = {"include_usage": True, "continuous_usage_stats": True}
    chunks = list(
        proxy.client().chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options=options,
        )
    )
    assert chunks[-2].choices[0].finish_reason == "content_filter"
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    released = [c.choices[0].delta.content for c in chunks[:-3] if c.choices]
    said = [text for text in released if text]
    assert usage.prompt_tokens == PROMPT_TOKENS  # vLLM's running usage, read before the cut-off
    assert len(said) <= usage.completion_tokens < STORY_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert proxy.record(1)["usage"]["output_tokens"] == usage.completion_tokens


def test_a_chat_block_at_the_final_check_reports_the_upstreams_usage(
    start_proxy: ProxyFactory,
) -> None:
    proxy = final_check_proxy(start_proxy)
    chunks = list(
        proxy.client().chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-2].choices[0].finish_reason == "content_filter"
    usage = chunks[-1].usage
    assert usage is not None
    tokens = len(TOKEN_PATTERN.findall(proxy.upstream.reply))
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, tokens)
    assert proxy.record(1)["usage"] == {
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": tokens,
        "total_tokens": PROMPT_TOKENS + tokens,
        "source": "upstream",
    }


# -- Messages -------------------------------------------------------------------------------


def test_a_messages_cut_off_reports_the_input_and_the_tokens_read(proxy: Proxy) -> None:
    proxy.upstream.reply = LONG_STORY
    ask: Any = [{"role": "user", "content": PROMPT}]
    with proxy.anthropic().messages.stream(model="c", max_tokens=99, messages=ask) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "refusal"
    assert texts[-1] == REFUSAL
    assert final.usage.input_tokens == PROMPT_TOKENS  # from `message_start`
    said = [text for text in texts[:-1] if text]
    assert len(said) <= final.usage.output_tokens < STORY_TOKENS
    record = proxy.record(1)["usage"]
    assert (record["input_tokens"], record["output_tokens"]) == (
        PROMPT_TOKENS,
        final.usage.output_tokens,
    )
    assert record["source"] == "read"


def test_a_messages_block_at_the_final_check_reports_the_upstreams_usage(
    start_proxy: ProxyFactory,
) -> None:
    proxy = final_check_proxy(start_proxy)
    ask: Any = [{"role": "user", "content": PROMPT}]
    with proxy.anthropic().messages.stream(model="c", max_tokens=99, messages=ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "refusal"
    tokens = len(TOKEN_PATTERN.findall(proxy.upstream.reply))
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, tokens)
    assert proxy.record(1)["usage"]["source"] == "upstream"


@pytest.mark.parametrize("stream", [False, True])
def test_an_input_block_reports_no_tokens(proxy: Proxy, stream: bool) -> None:
    body = {"model": "m", "input": "how to build a bomb", "stream": stream}
    with proxy.http() as http:
        response = http.post("/v1/responses", json=body)
    last = response.text.strip().splitlines()[-1].removeprefix("data: ")
    answer = json.loads(last)["response"] if stream else response.json()
    assert answer["usage"]["total_tokens"] == 0  # the upstream was never asked
    assert "usage" not in proxy.record(1)


def test_a_messages_block_mid_stream_as_an_error_is_anthropics_error_event(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(on_block="error")
    proxy.upstream.reply = story(60, UNSAFE)
    ask: Any = [{"role": "user", "content": PROMPT}]
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        proxy.anthropic().messages.stream(model="c", max_tokens=99, messages=ask) as stream,
    ):
        list(stream)
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "content filtering policy" in body["error"]["message"]  # what litellm maps
