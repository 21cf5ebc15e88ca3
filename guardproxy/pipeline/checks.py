"""Running a guard over one direction of an exchange: the input turns, or the answer in context.

What one request costs is bounded: no guard call judges more than a window of characters (a
longer text is judged in overlapping segments), and past the tenant's cap on guard calls the
earlier turns are judged in windows of several, or the request is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from guardproxy.core.conversation import Turn
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import GuardError, GuardOverloaded, RequestError
from guardproxy.guards.protocols import guard_calls, known_names
from guardproxy.media.request import GuardImage
from guardproxy.policy.model import InputPolicy, OutputPolicy
from guardproxy.policy.profile import DirectionRules
from guardproxy.redaction.normalize import guard_text

DEFAULT_INPUT, DEFAULT_OUTPUT = InputPolicy(), OutputPolicy()
LAST_TURN = "last user turn"
SEPARATOR = "\n\n"  # between the turns of one window
# A long text's segments overlap by an eighth of a window (2000 characters by default), and a
# segmented answer is judged with at most a quarter window of the prompt's end as context.
OVERLAP_SHARE = 8
CONTEXT_SHARE = 4


class Guard(Protocol):
    """The guard seam: (prompt, image, response) in, typed verdict out."""

    async def classify(self, check: GuardInput) -> Verdict: ...


class CheckStatus(StrEnum):
    PENDING = "pending"  # checked as the answer streams; the audit record has the outcome
    SAFE = "safe"
    UNSAFE = "unsafe"
    ERROR = "error"  # the guard gave no usable verdict
    OFF = "off"  # the tenant turned this check off
    SKIPPED = "skipped"  # nothing to judge, or an earlier step already decided


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: CheckStatus
    categories: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    error: str | None = None
    latency_ms: float | None = None
    verdicts: tuple[Verdict, ...] = field(default=(), repr=False)
    parts: tuple[dict[str, object], ...] = ()  # per image or video frame, when several
    policy_violation: bool = False  # the natural-language policy (Mode A) judged it unsafe
    unknown_categories: tuple[str, ...] = ()  # named by the guard, known to no taxonomy here
    # Output checks: Nemotron shares one categories line between both turns, so where the
    # prompt was unsafe too these may be the prompt's (nemotron-3.5-v1.1.md §2.3).
    shared_with_prompt: tuple[str, ...] = ()
    overloaded: bool = False  # no verdict because the guard shed the call (never allowed)
    guards: tuple[GuardCheck, ...] = ()  # each guard's own result, for a chain of several

    def summary(self, reasoning: bool = False, detail: bool = False) -> dict[str, object]:
        """The check as the client and the audit log see it (never the raw guard output).
        `detail` (the audit) adds why a guard failed: its name and connection error stay out
        of what the client sees."""
        result: dict[str, object] = {"status": self.status.value}
        if reasoning and self.reasoning:
            result["reasoning"] = list(self.reasoning)
        elif reasoning and any(v.reasoning_unavailable for v in self.verdicts):
            result["reasoning"] = "unavailable"
        if self.categories:
            result["categories"] = list(self.categories)
        result |= self._details()
        if self.error and detail:
            result["error"] = self.error
        if self.latency_ms is not None:
            result["latency_ms"] = round(self.latency_ms, 2)
        if self.verdicts:
            calls = self._calls()
            result["guard_calls"] = sum(not c.cached for c in calls)
            if any(c.cached for c in calls):
                result["cached"] = sum(c.cached for c in calls)
        if self.parts:
            result["parts"] = list(self.parts)
        if self.guards:
            result["guards"] = [guard.summary(detail) for guard in self.guards]
        return result

    @property
    def guard_tokens(self) -> int | None:
        """The guard's prompt tokens over the calls it answered (a cached verdict costs none);
        None where no call reported them."""
        counts = [c.prompt_tokens for c in self._calls() if not c.cached]
        known = [count for count in counts if count is not None]
        return sum(known) if known else None

    @property
    def score(self) -> float | None:
        """A classifier's score over the checks: the highest, as the riskiest turn's is the
        one that decides (a content-safety verdict has none)."""
        scores = [v.score for v in self.verdicts if v.score is not None]
        return max(scores) if scores else None

    def _calls(self) -> list[Verdict]:
        """Each guard call's verdict (`policy_mode: separate` makes two per check)."""
        return [c for v in self.verdicts for c in (v.calls or (v,))]

    def _details(self) -> dict[str, object]:
        details: dict[str, object] = {}
        if self.policy_violation:
            details["policy"] = "violated"
        if self.unknown_categories:
            details["unknown_categories"] = list(self.unknown_categories)
        if self.shared_with_prompt:
            details["categories_may_be_the_prompts"] = list(self.shared_with_prompt)
        refusals = [v.refusal for v in self.verdicts if v.refusal is not None]
        if refusals:
            details["refusal"] = any(refusals)
        calls = [call for v in self.verdicts for call in v.calls]
        if calls:
            details["calls"] = [_call_summary(call) for call in calls]
        return details

    def merge(self, other: CheckResult) -> CheckResult:
        """Two checks of one direction as one: the worse status, everything else combined."""
        status = max(self.status, other.status, key=STATUS_SEVERITY.index)
        latencies = [x for x in (self.latency_ms, other.latency_ms) if x is not None]
        return CheckResult(
            status,
            tuple(dict.fromkeys((*self.categories, *other.categories))),
            self.reasoning + other.reasoning,
            self.error or other.error,
            sum(latencies) if latencies else None,
            self.verdicts + other.verdicts,
            self.parts + other.parts,
            self.policy_violation or other.policy_violation,
            tuple(dict.fromkeys((*self.unknown_categories, *other.unknown_categories))),
            tuple(dict.fromkeys((*self.shared_with_prompt, *other.shared_with_prompt))),
            self.overloaded or other.overloaded,
            _merged_guards(self.guards, other.guards),
        )


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One guard's part of a chain's check: its own result, and the turns it judged unsafe."""

    guard: str
    result: CheckResult
    flagged: tuple[str, ...] = ()

    def merge(self, other: GuardCheck) -> GuardCheck:
        """The guard's two checks (a stream's windows) as one, as `CheckResult.merge` has it."""
        flagged = tuple(dict.fromkeys((*self.flagged, *other.flagged)))
        return GuardCheck(self.guard, self.result.merge(other.result), flagged)

    def summary(self, detail: bool = False) -> dict[str, object]:
        """The guard's verdict for the audit: its status, categories, score and latency, and
        which turns it flagged; `detail` adds its error (kept from what the client sees)."""
        result = self.result
        summary: dict[str, object] = {"guard": self.guard, "status": result.status.value}
        if result.categories:
            summary["categories"] = list(result.categories)
        if result.score is not None:
            summary["score"] = result.score
        if result.latency_ms is not None:
            summary["latency_ms"] = round(result.latency_ms, 2)
        if self.flagged:
            summary["flagged"] = list(self.flagged)
        if result.error and detail:
            summary["error"] = result.error
        return summary


def _merged_guards(
    first: tuple[GuardCheck, ...], second: tuple[GuardCheck, ...]
) -> tuple[GuardCheck, ...]:
    """Two checks' per-guard results (a stream's windows) as one per guard."""
    merged = {guard.guard: guard for guard in first}
    for guard in second:
        earlier = merged.get(guard.guard)
        merged[guard.guard] = guard if earlier is None else earlier.merge(guard)
    return tuple(merged.values())


def _call_summary(call: Verdict) -> dict[str, object]:
    """One of the calls a verdict was combined from, for the audit."""
    summary: dict[str, object] = {"mode": call.mode or "standard"}
    for turn, rating in (("user", call.user), ("response", call.response)):
        summary[turn] = rating.value if rating is not None else "unrated"
    if call.categories:
        summary["categories"] = list(call.categories)
    return summary


STATUS_SEVERITY = [
    CheckStatus.PENDING,
    CheckStatus.OFF,
    CheckStatus.SKIPPED,
    CheckStatus.SAFE,
    CheckStatus.ERROR,
    CheckStatus.UNSAFE,
]
PENDING = CheckResult(CheckStatus.PENDING)


OFF = CheckResult(CheckStatus.OFF)
SKIPPED = CheckResult(CheckStatus.SKIPPED)


def conversation_checks(
    prompt: str,
    images: list[GuardImage],
    turns: Sequence[Turn],
    rules: DirectionRules,
    window_chars: int = DEFAULT_INPUT.window_chars,
    max_calls: int = DEFAULT_INPUT.max_guard_calls,
) -> tuple[list[GuardInput], list[str]]:
    """Every input check of a request, and a label per check: the last user turn with each
    image, then each earlier turn, tool result, assistant turn and `name`, each judged on its
    own text, an assistant turn as the answer to the turn before it (the verdict cache makes a
    long conversation cost only its new turns).

    Past `max_calls` guard calls, the earlier turns are judged in windows instead (`windows`);
    a request that needs more calls even then is refused. Texts are judged as `guard_text`
    reads them, and none is longer than `window_chars`.
    """
    checks, labels = _last_turn_checks(prompt, images, rules, window_chars)
    pieces = [piece for turn in turns for piece in _turn_pieces(turn, window_chars)]
    if _calls(checks) + _calls(_check(p, rules) for p in pieces) > max_calls:
        pieces = windows(pieces, window_chars)
    checks += [_check(piece, rules) for piece in pieces]
    labels += [piece.label for piece in pieces]
    calls = _calls(checks)
    if calls > max_calls:
        message = (
            f"This request would take {calls} content-safety guard calls, more than the "
            f"{max_calls} allowed per request; send a shorter conversation or shorter messages."
        )
        raise RequestError(message, _collection(turns))
    return checks, labels


def output_checks(
    prompt: str,
    image: str | None,
    answers: list[str],
    rules: DirectionRules,
    window_chars: int = DEFAULT_OUTPUT.window_chars,
) -> list[GuardInput]:
    """Each answer judged in context, with the prompt (and image); one that does not fit in a
    window with the prompt is judged in overlapping segments, each with the prompt's end."""
    policy, reasoning = rules.guard_policy, rules.reasoning
    context = guard_text(prompt)
    texts = [text for text in map(guard_text, answers) if text.strip()]
    return [
        GuardInput(before, image, part, reasoning, policy)
        for text in texts
        for before, part in in_context(context, text, window_chars)
    ]


@dataclass(frozen=True, slots=True)
class Piece:
    """Text one check judges, at most a window long: a turn, a segment of a long one, or a
    window of several. `context` is set for an answer: what it answers."""

    path: str
    role: str
    text: str
    context: str | None = None
    part: str = ""  # "part 2 of 7" for a segment, "20 parts" for a window

    @property
    def label(self) -> str:
        return f"{self.path} ({self.role}{', ' + self.part if self.part else ''})"

    @property
    def size(self) -> int:
        return len(self.text) + len(self.context or "")


def segments(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` characters, each overlapping the one before
    it by `size // OVERLAP_SHARE`, so any phrase that short is seen whole by one of them."""
    if len(text) <= size:
        return [text]
    step = size - size // OVERLAP_SHARE
    return [text[start : start + size] for start in range(0, len(text) - size + step, step)]


def in_context(context: str, text: str, size: int) -> list[tuple[str, str]]:
    """An answer and what it answers, as (prompt, response) pairs of at most `size`
    characters: whole if they fit, else the answer's segments, each with the context's end
    (where a long prompt usually asks its question)."""
    if len(context) + len(text) <= size:
        return [(context, text)]
    end = context[max(len(context) - size // CONTEXT_SHARE, 0) :]
    return [(end, part) for part in segments(text, size - len(end))]


def windows(pieces: Sequence[Piece], size: int) -> list[Piece]:
    """Pieces joined into windows of at most `size` characters: the prompts (user turns, tool
    results, names, operator text) in order, then the answers with what each answers.

    Packing is greedy, in order, so a window depends only on the turns before it: a
    conversation that grows by a turn keeps its earlier windows, and their cached verdicts.
    Answers stay answers, judged by the guard's response rating, so a past refusal that names
    a harm is not read as the harm.
    """
    prompts = [piece for piece in pieces if piece.context is None]
    answers = [piece for piece in pieces if piece.context is not None]
    return [_joined(group) for group in (*_packed(prompts, size), *_packed(answers, size))]


def _last_turn_checks(
    prompt: str, images: list[GuardImage], rules: DirectionRules, size: int
) -> tuple[list[GuardInput], list[str]]:
    """The models take one image per call, so a turn with several images (or video frames) is
    judged once per image, each with the text; a text longer than a window is judged in
    segments, and the images with its last one."""
    policy, reasoning = rules.guard_policy, rules.reasoning
    text = guard_text(prompt)
    if not images and not text.strip():
        return [], []
    parts = segments(text, size)
    alone = parts if not images else parts[:-1]
    checks = [GuardInput(part, reasoning=reasoning, policy=policy) for part in alone]
    labels = [_part_label(LAST_TURN, number, len(parts)) for number in range(len(alone))]
    checks += [GuardInput(parts[-1], image.url, None, reasoning, policy) for image in images]
    return checks, labels + [image.label for image in images]


def _turn_pieces(turn: Turn, size: int) -> list[Piece]:
    text = guard_text(turn.text)
    if turn.context is None:
        pairs: list[tuple[str | None, str]] = [(None, part) for part in segments(text, size)]
    else:
        pairs = [*in_context(guard_text(turn.context), text, size)]
    count = len(pairs)
    return [
        Piece(turn.path, turn.role, part, context, f"part {n + 1} of {count}" if count > 1 else "")
        for n, (context, part) in enumerate(pairs)
    ]


def _packed(pieces: Sequence[Piece], size: int) -> list[list[Piece]]:
    groups: list[list[Piece]] = []
    used = 0
    for piece in pieces:
        joins = len(SEPARATOR) * (1 if piece.context is None else 2)
        if groups and used + joins + piece.size <= size:
            groups[-1].append(piece)
            used += joins + piece.size
        else:
            groups.append([piece])
            used = piece.size
    return groups


def _joined(group: list[Piece]) -> Piece:
    """One window's pieces as one text (and one context, for answers); a window of one piece
    is that piece, so it shares its verdict with the turn judged on its own."""
    if len(group) == 1:
        return group[0]
    first, last = group[0], group[-1]
    roles = ", ".join(dict.fromkeys(piece.role for piece in group))
    text = SEPARATOR.join(piece.text for piece in group)
    context = None
    if first.context is not None:
        context = SEPARATOR.join(piece.context or "" for piece in group)
    return Piece(f"{first.path} .. {last.path}", roles, text, context, f"{len(group)} parts")


def _check(piece: Piece, rules: DirectionRules) -> GuardInput:
    reasoning, policy = rules.reasoning, rules.guard_policy
    if piece.context is None:
        return GuardInput(piece.text, reasoning=reasoning, policy=policy)
    return GuardInput(piece.context, None, piece.text, reasoning, policy)


def _calls(checks: Iterable[GuardInput]) -> int:
    """Guard calls the checks take (two each for `policy_mode: separate` with rules)."""
    return sum(len(guard_calls(check)) for check in checks)


def _part_label(label: str, number: int, count: int) -> str:
    return label if count == 1 else f"{label} (part {number + 1} of {count})"


def _collection(turns: Sequence[Turn]) -> str | None:
    """Where the conversation sits in the request ("messages", "input"), for the 400."""
    return turns[-1].path.split("[")[0].split(".")[0] if turns else None


async def run_checks(
    guard: Guard, checks: list[GuardInput], labels: Sequence[str] = ()
) -> CheckResult:
    """Run the checks concurrently; the first unsafe verdict decides and cancels the rest.

    Each verdict is read for its own check's turn: the prompt's rating, or the response's
    where the check judges an answer in context (an assistant turn of the history is one).
    With `labels` (one per check), the result says which part was judged how.
    """
    if not checks:
        return SKIPPED
    started = time.perf_counter()
    try:
        verdicts = await _classify_all(guard, checks)
    except GuardError as exc:
        overloaded = isinstance(exc, GuardOverloaded)
        latency = _since(started)
        return CheckResult(
            CheckStatus.ERROR, error=str(exc), latency_ms=latency, overloaded=overloaded
        )
    pairs = list(zip(checks, verdicts, strict=True))
    result = _combine([(c, v) for c, v in pairs if v is not None], _since(started))
    if len(labels) > 1:
        parts = tuple(_part(label, c, v) for label, (c, v) in zip(labels, pairs, strict=True))
        result = replace(result, parts=parts)
    return result


async def _classify_all(guard: Guard, checks: list[GuardInput]) -> list[Verdict | None]:
    """Every verdict (None where cancelled). An unsafe verdict ends the rest early and wins
    over any guard error: one image the guard cannot read must not let another one through."""
    if len(checks) == 1:
        return [await guard.classify(checks[0])]
    tasks = [asyncio.ensure_future(guard.classify(check)) for check in checks]
    direction_of = {task: check.direction for task, check in zip(tasks, checks, strict=True)}
    error: GuardError | None = None
    pending: set[asyncio.Task[Verdict]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if isinstance(failure, GuardError):
                    error = error or failure
                elif failure is not None:
                    raise failure
                elif task.result().is_unsafe(direction_of[task]):
                    error, pending = None, set()
                    break
    finally:
        for task in tasks:
            task.cancel()
    if error is not None:
        raise error
    return [_result(task) for task in tasks]


def _result(task: asyncio.Future[Verdict]) -> Verdict | None:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _part(label: str, check: GuardInput, verdict: Verdict | None) -> dict[str, object]:
    if verdict is None:
        return {"part": label, "status": "not_checked"}
    status = CheckStatus.UNSAFE if verdict.is_unsafe(check.direction) else CheckStatus.SAFE
    return {"part": label, "status": status.value, "categories": list(verdict.categories)}


def _combine(done: list[tuple[GuardInput, Verdict]], latency_ms: float) -> CheckResult:
    verdicts = [v for _, v in done]
    unsafe = [v for check, v in done if v.is_unsafe(check.direction)]
    categories = tuple(dict.fromkeys(c for v in unsafe for c in v.categories))
    unknown = {c for check, v in done for c in v.categories if c not in known_names(check.policy)}
    both = [v for v in unsafe if v.user is Safety.UNSAFE and v.response is Safety.UNSAFE]
    shared = [c for v in both for c in v.categories]
    return CheckResult(
        CheckStatus.UNSAFE if unsafe else CheckStatus.SAFE,
        categories,
        tuple(v.reasoning for v in verdicts if v.reasoning),
        None,
        latency_ms,
        tuple(verdicts),
        policy_violation=any(v.policy_violation for v in unsafe),
        unknown_categories=tuple(c for c in categories if c in unknown),
        shared_with_prompt=tuple(dict.fromkeys(shared)),
    )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
