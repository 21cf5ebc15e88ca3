"""A fake guard served the way vLLM serves it, speaking each guard's exact grammar.

Request shapes and verdict grammars follow NVIDIA's model cards for Nemotron-3-Content-Safety,
Nemotron-Content-Safety-Reasoning-4B and Llama-3.1-Nemotron-Safety-Guard-8B-v3, the parsers in
NeMo Guardrails `nemoguardrails/llm/output_parsers.py`, Nemotron 3.5's v1.1 interface
(nemotron-3.5-v1.1.md) and the Llama Guard, Qwen3Guard and Granite Guardian cards
(guard-protocols.md §6). Documented misbehaviours are reproduced: a trace cut off by
`max_tokens` (`finish_reason: "length"`), no newline after `</think>`, Mode A answering
without categories, a hosted endpoint that ignores `enable_thinking`.
Run as a process for benchmarks:
    python -m tests.fakes.guard --port P --protocol nemotron-content-safety [--delay-s X]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import serve
from tests.fakes.upstream import chat_completion, message_text, read_json

DEFAULT_MODEL = "fake-guard"
DEFAULT_UNSAFE_PHRASES = {
    "build a bomb": ["Violence", "Guns and Illegal Weapons"],
    "steal a car": ["Criminal Planning/Confessions"],
}
# vLLM's ErrorInfo.type per status (vllm/entrypoints/openai/protocol.py); others use the phrase.
VLLM_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
}
REQUEST_CATEGORIES = {"/categories": True, "/no_categories": False}
# Nemotron 3.5's documented kwargs [CB-vllm kwarg table]; the two custom ones are exclusive.
CUSTOM_TAXONOMY, CUSTOM_POLICY = "custom_taxonomy", "custom_policy"
ANSWER_WRAPPER = "\nresponse: agent:  ### Answer: "
# A trace of the length NVIDIA captured (~630-720 characters), for reasoning-on answers.
DEFAULT_TRACE = (
    "The user message asks for something and I must check it against the safety policy. "
    "Looking at the categories: S1: Violence, S3: Criminal Planning/Confessions, "
    "S9: PII/Privacy, S22: Illegal Activity. The request does not obviously fall into "
    "any of them, but I should consider whether the intent could be harmful. "
    "User Safety: safe would apply if the request is benign. The ground truth label "
    "depends on whether any category matches the text literally or by implication. "
    "Considering the wording, the phrases used and the context given, I weigh the most "
    "likely reading of the message and decide on the final assessment now. Response "
    "Safety is assessed the same way when an answer is present."
)
CHARS_PER_TOKEN = 4  # the fake's tokenizer: every 4 characters of the rendered prompt
LLAMA_GUARD_CODES = {
    "Violence": "S1",
    "Criminal Planning/Confessions": "S2",
    "Sexual (minor)": "S4",
    "PII/Privacy": "S7",
    "Guns and Illegal Weapons": "S9",
    "Hate/Identity Hate": "S10",
    "Sexual": "S12",
}
QWEN_NAMES = {
    "Violence": "Violent",
    "Criminal Planning/Confessions": "Non-violent Illegal Acts",
    "Guns and Illegal Weapons": "Violent",
    "PII/Privacy": "PII",
    "Sexual": "Sexual Content or Sexual Acts",
}
GRANITE_CRITERIA = {"Violence": "violence", "Guns and Illegal Weapons": "violence"}
REASONING_TOGGLES = {"/think": True, "/no_think": False}
HUMAN_MARKER = "Human user:\n"
ASSISTANT_MARKER = "\n\nAI assistant:\n"
TAXONOMY_MARKER = "\n\nUse the taxonomy"
BEGIN_MARKER = "<BEGIN CONVERSATION>\n\n"
END_MARKER = "\n\n<END CONVERSATION>"
AGENT_MARKER = "\n\nresponse: agent: "


ImageJudge = Callable[[str], list[str]]


class MalformedRequest(ValueError):
    """The request does not have the shape the configured guard protocol expects."""


@dataclass(frozen=True, slots=True)
class ParsedCheck:
    """What a guard request asks to judge, read back out of the protocol's wire shape."""

    prompt: str
    response: str | None = None
    image_url: str | None = None
    reasoning: bool = False
    categories: bool = True
    taxonomy: str | None = None  # Nemotron 3.5 Mode B: the custom_taxonomy text
    policy: str | None = None  # Nemotron 3.5 Mode A: the custom_policy text
    criterion: str | None = None  # Granite Guardian: guardian_config.criteria_id
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class GuardRequest:
    """One well-formed guard request: its JSON, lowercase headers and what it asked to judge."""

    json: Any
    headers: dict[str, str]
    check: ParsedCheck


@dataclass
class FakeGuardState:
    """Knobs and observations of one fake guard; tests may change knobs between requests.

    `fail_status` with `fail_times` N > 0 fails the next N requests, then resets `fail_status`
    to None (recovered); with `fail_times` 0 every request fails until the test clears it.
    """

    protocol: str = "nemotron-content-safety"
    unsafe_phrases: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_UNSAFE_PHRASES.items()}
    )
    fail_status: int | None = None
    fail_times: int = 0
    garbage: str | None = None
    delay_s: float = 0.0
    think: str | None = DEFAULT_TRACE
    think_separator: str = ""  # after `</think>`: NVIDIA's captures show none
    ignore_thinking: bool = False  # build.nvidia.com: enable_thinking is silently ignored
    # phrase -> a word of the tenant's rules; unsafe only where a custom text carries it
    rule_phrases: dict[str, str] = field(default_factory=dict)
    mode_a_categories: bool = False  # Mode A naming categories (undocumented either way)
    controversial_phrases: list[str] = field(default_factory=list)  # Qwen3Guard's third tier
    hold_until: int = 0  # hold each request until this many are in flight at once
    # A GPU server's batch limit: at most this many calls are served at once (0: no limit),
    # the rest wait in its queue, as vLLM's max_num_seqs makes them.
    capacity: int = 0
    served: asyncio.Semaphore | None = None
    in_flight: int = 0
    max_in_flight: int = 0
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    model: str | None = None
    # vLLM's --max-model-len, in tokens of CHARS_PER_TOKEN characters of message text: a
    # request whose prompt, or prompt and max_tokens, do not fit is answered 400 with vLLM's
    # message. 0: no limit (and /v1/models says 4096).
    max_model_len: int = 0
    image_judge: ImageJudge | None = None  # image URL -> categories that make it unsafe
    requests: list[GuardRequest] = field(default_factory=list)
    rejected: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Judgement:
    prompt_unsafe: bool
    response_unsafe: bool | None
    categories: list[str]


class GuardProtocol(NamedTuple):
    parse: Callable[[Any], ParsedCheck]
    render: Callable[[ParsedCheck, Judgement], str]


def vllm_error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = VLLM_ERROR_TYPES.get(status, HTTPStatus(status).phrase)
    error = {"message": message, "type": kind, "param": param, "code": status}
    return JSONResponse({"error": error}, status_code=status)


def _messages(body: Any, roles: tuple[str, ...]) -> list[dict[str, Any]]:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages or len(messages) > len(roles):
        raise MalformedRequest(f"expected {len(roles)} message(s) or fewer, roles {roles}")
    for message, role in zip(messages, roles, strict=False):
        if not isinstance(message, dict) or message.get("role") != role:
            raise MalformedRequest(f"expected a {role!r} message")
    return messages


def _part(part: Any) -> tuple[str | None, str | None]:
    """(text, image URL) of one OpenAI content part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return part["text"], None
    image = part.get("image_url") if kind == "image_url" else None
    if isinstance(image, dict) and isinstance(image.get("url"), str):
        return None, image["url"]
    raise MalformedRequest(f"unsupported content part {kind!r}")


def _text_and_image(message: dict[str, Any], max_images: int = 1) -> tuple[str, str | None]:
    """The one text and the optional image of a message (content: a string or parts)."""
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise MalformedRequest("message content must be a string or a list of parts")
    found = [_part(part) for part in parts]
    texts = [text for text, _ in found if text is not None]
    images = [url for _, url in found if url is not None]
    if len(texts) != 1 or len(images) > max_images:
        raise MalformedRequest(f"expected one text part and at most {max_images} image(s)")
    return texts[0], images[0] if images else None


def _only_text(message: dict[str, Any]) -> str:
    return _text_and_image(message, max_images=0)[0]


def _kwargs(body: Any) -> dict[str, Any]:
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise MalformedRequest("chat_template_kwargs must be an object")
    return kwargs


def _max_tokens(body: Any) -> int | None:
    value = body.get("max_tokens")
    return value if isinstance(value, int) else None


def parse_content_safety(body: Any) -> ParsedCheck:
    """Nemotron-3 / 3.5 CS: [user (text + optional image), optional assistant], kwargs.

    An answer folded into the user text with the template's wrapper (SGLang) counts as the
    assistant turn. Mode A and Mode B together are refused: NVIDIA defines no such input."""
    messages = _messages(body, ("user", "assistant"))
    prompt, image_url = _text_and_image(messages[0])
    response = _only_text(messages[1]) if len(messages) == 2 else None
    if response is None and ANSWER_WRAPPER in prompt:
        prompt, _, response = prompt.partition(ANSWER_WRAPPER)
    kwargs = _kwargs(body)
    wanted = kwargs.get("request_categories", "/no_categories")
    thinking = kwargs.get("enable_thinking", False)
    if wanted not in REQUEST_CATEGORIES or not isinstance(thinking, bool):
        raise MalformedRequest("bad request_categories or enable_thinking")
    taxonomy, policy = kwargs.get(CUSTOM_TAXONOMY), kwargs.get(CUSTOM_POLICY)
    if taxonomy is not None and policy is not None:
        raise MalformedRequest("custom_taxonomy and custom_policy are mutually exclusive")
    if not all(isinstance(t, str | None) for t in (taxonomy, policy)):
        raise MalformedRequest("custom_taxonomy and custom_policy must be strings")
    return ParsedCheck(
        prompt,
        response,
        image_url,
        thinking,
        REQUEST_CATEGORIES[wanted],
        taxonomy=taxonomy,
        policy=policy,
        max_tokens=_max_tokens(body),
    )


def parse_raw_turns(body: Any) -> ParsedCheck:
    """Llama Guard, Qwen3Guard, Granite Guardian: the turns as they are, the template's own."""
    messages = _messages(body, ("user", "assistant"))
    prompt, image_url = _text_and_image(messages[0])
    response = _only_text(messages[1]) if len(messages) == 2 else None
    kwargs = _kwargs(body)
    config = kwargs.get("guardian_config")
    criterion = config.get("criteria_id") if isinstance(config, dict) else None
    think = kwargs.get("think", False)
    return ParsedCheck(
        prompt,
        response,
        image_url,
        reasoning=think is True,
        criterion=criterion if isinstance(criterion, str) else None,
        max_tokens=_max_tokens(body),
    )


def _between(text: str, start: str, end: str) -> str:
    """The text between the first `start` and the last `end`."""
    _, found_start, rest = text.partition(start)
    inner, found_end, _ = rest.rpartition(end)
    if not (found_start and found_end):
        raise MalformedRequest(f"template markers {start!r} .. {end!r} not found")
    return inner


def parse_reasoning(body: Any) -> ParsedCheck:
    """Reasoning-4B: one user message holding NVIDIA's template, ending /think or /no_think."""
    text = _only_text(_messages(body, ("user",))[0])
    turns = _between(text, HUMAN_MARKER, TAXONOMY_MARKER)
    prompt, found, response = turns.partition(ASSISTANT_MARKER)
    ending = text.rstrip()
    toggles = [on for toggle, on in REASONING_TOGGLES.items() if ending.endswith(toggle)]
    if not found or not toggles:
        raise MalformedRequest("not a Nemotron reasoning prompt ending in /think or /no_think")
    return ParsedCheck(prompt, None if response == "None" else response, reasoning=toggles[0])


def parse_safety_guard(body: Any) -> ParsedCheck:
    """Safety-Guard-8B: one user message, `user: ...` [+ `response: agent: ...`] block."""
    text = _only_text(_messages(body, ("user",))[0])
    conversation = _between(text, BEGIN_MARKER, END_MARKER)
    if not conversation.startswith("user: "):
        raise MalformedRequest("conversation must start with 'user: '")
    prompt, found, response = conversation.removeprefix("user: ").partition(AGENT_MARKER)
    return ParsedCheck(prompt, response if found else None)


def _safety(unsafe: bool) -> str:
    return "unsafe" if unsafe else "safe"


def render_content_safety(check: ParsedCheck, judgement: Judgement) -> str:
    """One categories line shared by both turns, listed whenever either turn is unsafe."""
    lines = [f"User Safety: {_safety(judgement.prompt_unsafe)}"]
    if judgement.response_unsafe is not None:
        lines.append(f"Response Safety: {_safety(judgement.response_unsafe)}")
    unsafe = judgement.prompt_unsafe or judgement.response_unsafe
    if check.categories and judgement.categories and unsafe:
        lines.append(f"Safety Categories: {', '.join(judgement.categories)}")
    return "\n".join(lines)


def render_llama_guard(check: ParsedCheck, judgement: Judgement) -> str:
    """Rates the last turn only: `safe`, or `unsafe` and a line of codes."""
    unsafe = judgement.prompt_unsafe if check.response is None else judgement.response_unsafe
    if not unsafe:
        return "safe"
    codes = dict.fromkeys(LLAMA_GUARD_CODES.get(c, "S2") for c in judgement.categories)
    return "unsafe" + (f"\n{','.join(codes)}" if codes else "")


def render_qwen3guard(check: ParsedCheck, judgement: Judgement) -> str:
    unsafe = judgement.prompt_unsafe if check.response is None else judgement.response_unsafe
    tier = "Controversial" if "Controversial" in judgement.categories else _tier(unsafe)
    names = [QWEN_NAMES.get(c, "Unethical Acts") for c in judgement.categories]
    names = [n for n in dict.fromkeys(names) if n != "Unethical Acts" or tier != "Controversial"]
    lines = [f"Safety: {tier}", f"Categories: {', '.join(names) if unsafe else 'None'}"]
    if check.response is not None:
        lines.append("Refusal: " + ("Yes" if "can't" in check.response.lower() else "No"))
    return "\n".join(lines)


def _tier(unsafe: bool | None) -> str:
    return "Unsafe" if unsafe else "Safe"


def render_granite(check: ParsedCheck, judgement: Judgement) -> str:
    """`yes` when the last turn shows the risk the criterion names (`harm`: any)."""
    unsafe = judgement.prompt_unsafe if check.response is None else judgement.response_unsafe
    criteria = {GRANITE_CRITERIA.get(c, "harm") for c in judgement.categories}
    risky = bool(unsafe) and (check.criterion == "harm" or check.criterion in criteria)
    return f"<score> {'yes' if risky else 'no'} </score>"


def _harm(unsafe: bool | None) -> str:
    return "None" if unsafe is None else "harmful" if unsafe else "unharmful"


def render_reasoning(check: ParsedCheck, judgement: Judgement) -> str:
    prompt, response = _harm(judgement.prompt_unsafe), _harm(judgement.response_unsafe)
    return f"Prompt harm: {prompt}\nResponse harm: {response}"


def render_safety_guard(check: ParsedCheck, judgement: Judgement) -> str:
    verdict = {"User Safety": _safety(judgement.prompt_unsafe)}
    if judgement.response_unsafe is not None:
        verdict["Response Safety"] = _safety(judgement.response_unsafe)
    if judgement.categories:
        verdict["Safety Categories"] = ", ".join(judgement.categories)
    return json.dumps(verdict)


PROTOCOLS = {
    "nemotron-content-safety": GuardProtocol(parse_content_safety, render_content_safety),
    "nemotron-reasoning": GuardProtocol(parse_reasoning, render_reasoning),
    "nemotron-safety-guard-8b": GuardProtocol(parse_safety_guard, render_safety_guard),
    "llama-guard": GuardProtocol(parse_raw_turns, render_llama_guard),
    "qwen3guard": GuardProtocol(parse_raw_turns, render_qwen3guard),
    "granite-guardian": GuardProtocol(parse_raw_turns, render_granite),
}


def _matches(text: str, phrases: Iterable[str]) -> list[str]:
    return [phrase for phrase in phrases if phrase.lower() in text.lower()]


def judge(
    check: ParsedCheck, phrases: dict[str, list[str]], image_judge: ImageJudge | None = None
) -> Judgement:
    """Unsafe iff an unsafe phrase occurs (or `image_judge` names categories for the image);
    the prompt and the response are judged apart."""
    in_prompt = _matches(check.prompt, phrases)
    in_response = _matches(check.response or "", phrases)
    categories = [name for phrase in in_prompt + in_response for name in phrases[phrase]]
    in_image = image_judge(check.image_url) if image_judge and check.image_url else []
    response_unsafe = None if check.response is None else bool(in_response)
    prompt_unsafe = bool(in_prompt or in_image)
    return Judgement(prompt_unsafe, response_unsafe, list(dict.fromkeys(categories + in_image)))


def judge_custom(check: ParsedCheck, state: FakeGuardState) -> Judgement:
    """Nemotron 3.5 with a custom text. Mode B judges only by the listed names (echoed as
    listed) and the rules after the list; Mode A judges by its free text and names none."""
    listed, rules = _split_taxonomy(check.taxonomy) if check.taxonomy is not None else ({}, "")
    text = check.policy if check.policy is not None else rules

    def turn(content: str) -> tuple[bool, list[str]]:
        named = [
            c for p in _matches(content, state.unsafe_phrases) for c in state.unsafe_phrases[p]
        ]
        if check.policy is not None:
            hits = [c for c in named if c.casefold() in check.policy.casefold()]
        else:
            hits = [listed[c.casefold()] for c in named if c.casefold() in listed]
        ruled = any(
            phrase.lower() in content.lower() and word.lower() in text.lower()
            for phrase, word in state.rule_phrases.items()
        )
        return bool(hits) or ruled, hits

    prompt_unsafe, prompt_hits = turn(check.prompt)
    response_unsafe, response_hits = turn(check.response or "")
    categories = list(dict.fromkeys(prompt_hits + response_hits))
    if check.policy is not None and not state.mode_a_categories:
        categories = []
    response = None if check.response is None else response_unsafe
    return Judgement(prompt_unsafe, response, categories)


def _split_taxonomy(taxonomy: str) -> tuple[dict[str, str], str]:
    """NVIDIA's Mode B string: `- Name (description)` lines, then free text after them."""
    listed: dict[str, str] = {}
    lines = taxonomy.splitlines()
    for number, line in enumerate(lines):
        if not line.startswith("- "):
            return listed, "\n".join(lines[number:])
        name = line[2:].strip()
        if name.endswith(")") and " (" in name and name.casefold() not in KNOWN_PARENS:
            name = name[: name.index(" (")]
        listed[name.casefold()] = name
    return listed, ""


KNOWN_PARENS = {"sexual (minor)"}


def _judgement(state: FakeGuardState, check: ParsedCheck) -> Judgement:
    custom = check.taxonomy is not None or check.policy is not None
    result = (
        judge_custom(check, state)
        if custom
        else judge(check, state.unsafe_phrases, state.image_judge)
    )
    if state.protocol == "qwen3guard" and _matches(
        check.response or check.prompt, state.controversial_phrases
    ):
        return Judgement(True, None if check.response is None else True, ["Controversial"])
    return result


def _take_failure(state: FakeGuardState) -> int | None:
    status = state.fail_status
    if status is not None and state.fail_times > 0:
        state.fail_times -= 1
        if state.fail_times == 0:
            state.fail_status = None
    return status


def _answer(state: FakeGuardState, check: ParsedCheck) -> tuple[str, str]:
    """The answer's content and finish_reason; a trace longer than `max_tokens` is cut off
    inside `<think>`, as NVIDIA saw with 64 tokens."""
    if state.garbage is not None:
        return state.garbage, "stop"
    content = PROTOCOLS[state.protocol].render(check, _judgement(state, check))
    if check.reasoning and state.think is not None and not state.ignore_thinking:
        content = f"<think>\n{state.think}\n\n</think>{state.think_separator}{content}"
    budget = None if check.max_tokens is None else check.max_tokens * CHARS_PER_TOKEN
    if budget is not None and len(content) > budget:
        return content[:budget], "length"
    return content, "stop"


async def _judge_request(state: FakeGuardState, body: Any, headers: dict[str, str]) -> Response:
    try:
        check = PROTOCOLS[state.protocol].parse(body)
    except MalformedRequest as exc:
        state.rejected.append(body)
        return vllm_error(400, str(exc))
    model = body.get("model", state.model or DEFAULT_MODEL)
    if state.model is not None and model != state.model:
        served = state.model
        message = f"The model `{model}` does not exist. Valid aliases: {served}."
        return vllm_error(404, message, param="model")
    state.requests.append(GuardRequest(body, headers, check))
    too_long = _context_error(state.max_model_len, body)
    if too_long is not None:
        return vllm_error(400, too_long)
    status = _take_failure(state)
    if status is not None:
        return vllm_error(status, "The fake guard was told to fail.")
    content, finish_reason = _answer(state, check)
    completion = chat_completion(str(model), content, 0, finish_reason)
    completion["usage"] = vllm_usage(prompt_tokens(body), tokens(content))
    return JSONResponse(completion)


def rendered_prompt(body: Any) -> str:
    """The prompt as a chat template renders it: the template kwargs, each turn behind its
    role marker, then the generation prompt (the shape vLLM 0.32's `return_prompt_text`
    showed for the engine tier's model, vllm-cpu.md §4c). Images count as nothing here."""
    kwargs = body.get("chat_template_kwargs") or {}
    lines = [f"[{key}={value}]\n" for key, value in kwargs.items()]
    turns = [f"<|{m.get('role')}|>{message_text(m)}\n" for m in body["messages"]]
    return "".join([*lines, *turns, "<|assistant|>"])


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(body: Any) -> int:
    """What vLLM counts, in `usage.prompt_tokens` and against `--max-model-len` alike: the
    tokens of the rendered prompt, template and kwargs included."""
    return tokens(rendered_prompt(body))


def vllm_usage(prompt: int, completion: int) -> dict[str, int | None]:
    """A non-streamed answer's `usage` as vLLM 0.32 sends it (vllm-cpu.md §4a)."""
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def _context_error(limit: int, body: Any) -> str | None:
    """vLLM's refusal of a request longer than its context (serving_engine.py, v0.10+)."""
    if not limit:
        return None
    count = prompt_tokens(body)
    if count >= limit:
        return (
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {count} input tokens. Please reduce the length of the input messages."
        )
    wanted = _max_tokens(body) or 0
    if count + wanted > limit:
        return (
            f"'max_tokens' or 'max_completion_tokens' is too large: {wanted}. This model's "
            f"maximum context length is {limit} tokens and your request has {count} input "
            f"tokens ({wanted} > {limit} - {count})."
        )
    return None


async def _hold(state: FakeGuardState) -> None:
    """With `hold_until` N, answer nothing until N requests are in flight together: calls
    made one after another then never complete (the client's deadline ends them)."""
    if state.max_in_flight >= state.hold_until:
        state.all_arrived.set()
    await state.all_arrived.wait()


def create_fake_guard(state: FakeGuardState) -> Starlette:
    """The fake guard's ASGI app: POST /v1/chat/completions, GET /v1/models, GET /health."""
    if state.protocol not in PROTOCOLS:
        raise ValueError(f"unknown guard protocol {state.protocol!r}; known: {list(PROTOCOLS)}")

    async def chat_completions(request: Request) -> Response:
        _, body = await read_json(request)
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await _hold(state)
            if state.capacity and state.served is None:
                state.served = asyncio.Semaphore(state.capacity)
            async with state.served or contextlib.nullcontext():
                await asyncio.sleep(state.delay_s)
            return await _judge_request(state, body, dict(request.headers))
        finally:
            state.in_flight -= 1

    async def list_models(request: Request) -> Response:
        name = state.model or DEFAULT_MODEL
        card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "vllm"}
        card |= {"root": name, "parent": None, "max_model_len": state.max_model_len or 4096}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="nemotron-content-safety")
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=0, help="calls served at once")
    args = parser.parse_args()
    state = FakeGuardState(protocol=args.protocol, delay_s=args.delay_s, capacity=args.capacity)
    serve(create_fake_guard(state), args.port)


if __name__ == "__main__":
    main()
