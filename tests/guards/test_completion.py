from __future__ import annotations

from typing import Any

import pytest

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import (
    GuardAnswer,
    chat_body,
    read_answer,
    read_fields,
    wants_reasoning,
)

KEYS = ("User Safety", "Response Safety")


def _completion(content: Any, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **message}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def _answer(text: str) -> GuardAnswer:
    return GuardAnswer(text=text, reasoning=None, raw=text)


def test_answer_without_think_block_is_the_content() -> None:
    answer = read_answer(_completion("User Safety: safe"))
    assert answer == GuardAnswer(text="User Safety: safe", reasoning=None, raw="User Safety: safe")


def test_think_block_in_content_becomes_the_reasoning() -> None:
    content = "<think>\nLooks fine.\n</think>\n\nUser Safety: safe"
    answer = read_answer(_completion(content))
    assert answer.reasoning == "Looks fine."
    assert answer.text == "\n\nUser Safety: safe"
    assert answer.raw == content


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_parser_fields_become_the_reasoning(field: str) -> None:
    answer = read_answer(_completion("User Safety: safe", **{field: " Thought. "}))
    assert answer.reasoning == "Thought."


def test_empty_think_block_gives_no_reasoning() -> None:
    assert read_answer(_completion("<think>\n</think>User Safety: safe")).reasoning is None


@pytest.mark.parametrize(
    "content",
    [
        "<think>never closed\nUser Safety: safe",
        "<think>a</think><think>b</think>User Safety: safe",
        "User Safety: safe\n</think>",
        "User Safety: safe\n<think>late</think>",
    ],
)
def test_unterminated_extra_or_late_think_tags_are_unparseable(content: str) -> None:
    with pytest.raises(UnparseableVerdict) as caught:
        read_answer(_completion(content))
    assert caught.value.raw == content


def test_length_truncated_answer_is_unparseable_even_if_it_reads_safe() -> None:
    with pytest.raises(UnparseableVerdict, match="truncated"):
        read_answer(_completion("User Safety: safe", finish_reason="length"))


@pytest.mark.parametrize("content", [None, "", "  \n", 42])
def test_missing_or_blank_content_is_unparseable(content: Any) -> None:
    with pytest.raises(UnparseableVerdict, match="no content"):
        read_answer(_completion(content))


@pytest.mark.parametrize(
    "completion",
    [{}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"finish_reason": "stop"}]}],
)
def test_completion_without_a_first_choice_message_is_unparseable(
    completion: dict[str, Any],
) -> None:
    with pytest.raises(UnparseableVerdict):
        read_answer(completion)


def test_fields_match_keys_case_insensitively_with_spaces_around_the_colon() -> None:
    fields = read_fields(_answer("\n user safety :  Unsafe \n\nRESPONSE SAFETY:safe\n"), KEYS)
    assert fields == {"User Safety": "Unsafe", "Response Safety": "safe"}


@pytest.mark.parametrize(
    "text",
    [
        "User Safety: safe\nuser safety: unsafe",
        "User Safety: safe\nThe user is asking about cooking.",
        "Verdict: safe",
        "User Safety safe",
    ],
)
def test_repeated_unknown_or_malformed_lines_are_unparseable(text: str) -> None:
    with pytest.raises(UnparseableVerdict):
        read_fields(_answer(text), KEYS)


def test_chat_body_puts_settings_params_over_the_defaults() -> None:
    settings = GuardSettings(url="http://g", model="m", params={"max_tokens": 7, "seed": 1})
    body = chat_body(settings, [], {"max_tokens": 100, "temperature": 0.0})
    assert body == {"model": "m", "messages": [], "max_tokens": 7, "temperature": 0.0, "seed": 1}


@pytest.mark.parametrize(
    ("per_check", "configured", "expected"),
    [(None, False, False), (None, True, True), (True, False, True), (False, True, False)],
)
def test_check_reasoning_overrides_the_configured_default(
    per_check: bool | None, configured: bool, expected: bool
) -> None:
    settings = GuardSettings(url="http://g", model="m", reasoning=configured)
    assert wants_reasoning(GuardInput("hi", reasoning=per_check), settings) is expected
