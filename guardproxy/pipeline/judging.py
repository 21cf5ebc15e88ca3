"""How a verdict becomes an action for a tenant: the one place, for the proxy and for every tool
that says what the proxy would do (shadow policies, the playground, `eval`, `replay`,
`guardproxy classify`).

    check results ─► decide (category actions, policy_action, guard errors)
                  ─► redact, or block when nothing of the categories can be masked
                  ─► monitor: recorded as what it would have done, then allowed

`judge_exchange` judges a whole exchange the way the pipeline does, on the tenant's guard
chain: the input first (the last user turn with its images, then the earlier turns), and the
answers in context only when the input passes.

A tool's input may carry fewer kinds of turn than a request does (a stored exchange keeps no
tool results): a guard limited by `turns:` to kinds it was not given is not run on the input,
and the tool says so (`not_run_note`) rather than give the rest of the chain's verdict as all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from guardproxy.core.conversation import Turn
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.chain import LAST_TURN_KIND, Chain, turn_kind
from guardproxy.pipeline.checks import SKIPPED, CheckResult, output_checks
from guardproxy.pipeline.decision import Action, categories_to_redact, decide, most_severe_action
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.model import TenantPolicy
from guardproxy.policy.profile import DirectionRules, Profile
from guardproxy.redaction import CATEGORY_DETECTORS

STOPS = frozenset({Action.BLOCK, Action.FAIL})  # the exchange ends at this direction


@dataclass(frozen=True)
class Ruling:
    """One direction judged: the checks' result, what the tenant's rules decide, and what is
    carried out (the same, except that a monitored tenant's `redact`, `block` and `fail` are
    recorded and allowed)."""

    result: CheckResult
    decided: Action
    action: Action
    redact: frozenset[str] = frozenset()  # the detectors a `redact` runs

    @property
    def monitored(self) -> bool:
        return self.action is not self.decided


NOT_JUDGED = Ruling(SKIPPED, Action.ALLOW, Action.ALLOW)


def rule(
    result: CheckResult,
    tenant: TenantPolicy,
    rules: DirectionRules,
    texts: Collection[str],
    masker: Masker,
    monitor: bool = False,
) -> Ruling:
    """`result` under the tenant's rules. A `redact` that names a category without detectors,
    or finds nothing of theirs in `texts`, blocks: nothing would be masked."""
    decided, redact = decide(result, tenant, rules), frozenset[str]()
    if decided is Action.REDACT:
        types = redaction_types(result, rules, texts, masker)
        decided, redact = (Action.BLOCK, redact) if types is None else (decided, types)
    enforced = not monitor or decided in (Action.ALLOW, Action.FLAG)
    return Ruling(result, decided, decided if enforced else Action.ALLOW, redact)


def redaction_types(
    result: CheckResult, rules: DirectionRules, texts: Collection[str], masker: Masker
) -> frozenset[str] | None:
    """The detectors a `redact` verdict runs (the tenant's always-on ones with them), or None
    when it must block instead."""
    categories = categories_to_redact(result, rules)
    if not categories or any(c not in CATEGORY_DETECTORS for c in categories):
        return None
    own = frozenset(d for c in categories for d in CATEGORY_DETECTORS[c])
    if not any(masker.redactor.find(text, own) for text in texts):
        return None
    return masker.always | own


@dataclass(frozen=True)
class Case:
    """An exchange as the proxy judges it, whatever brought it: the last user turn and its
    images, the earlier turns (the whole history: each guard takes the turns it judges), and
    the answers (judged in context with the last turn)."""

    prompt: str
    images: tuple[GuardImage, ...] = ()
    turns: tuple[Turn, ...] = ()
    answers: tuple[str, ...] = ()
    context_image: str | None = None  # the image an answer is judged with

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of turn it carries, as a guard's `turns:` names them."""
        return frozenset({LAST_TURN_KIND, *(turn_kind(turn.role) for turn in self.turns)})


def tool_turns(results: Iterable[str], where: str) -> tuple[Turn, ...]:
    """Tool results a tool was given, as the turns of `tool` messages (`where[0]`, ...)."""
    return tuple(Turn(f"{where}[{n}]", "tool", text) for n, text in enumerate(results))


def guards_not_run(tenant: TenantPolicy, kinds: Collection[str]) -> tuple[str, ...]:
    """The tenant's guards limited to kinds of turn outside `kinds`, each with its `turns`:
    given none of those, they are not called on the input, where the proxy would call them
    on a request that has one."""
    return tuple(
        f"{entry.guard} (turns: {', '.join(entry.turns)})"
        for entry in tenant.guards
        if entry.turns is not None and not set(entry.turns) & set(kinds)
    )


def not_run_note(guards: Collection[str]) -> str:
    """What a tool says of `guards_not_run`, so its verdict is not read as theirs."""
    return (
        f"{', '.join(guards)}: not run on the input, which carries none of the turns "
        f"{'it judges' if len(guards) == 1 else 'they judge'}"
    )


@dataclass(frozen=True)
class Judgement:
    """Both directions of one exchange; `output` is NOT_JUDGED when the input stopped it."""

    input: Ruling
    output: Ruling
    monitor: bool = False  # the tenant's `mode: monitor`

    @property
    def outcome(self) -> str:
        """As the audit record says it: `monitor` for a monitored tenant, else the action."""
        return "monitor" if self.monitor else self.action.value

    @property
    def checked(self) -> Ruling:
        """The last direction judged: the answer's, if it was."""
        return self.output if self.output is not NOT_JUDGED else self.input

    @property
    def action(self) -> Action:
        """What the proxy carries out: the most severe direction's action."""
        return most_severe_action((self.input.action, self.output.action))

    @property
    def decided(self) -> Action:
        """What the tenant's rules decide, monitor aside (a monitored tenant's `would`)."""
        return most_severe_action((self.input.decided, self.output.decided))

    @property
    def categories(self) -> tuple[str, ...]:
        named = (*self.input.result.categories, *self.output.result.categories)
        return tuple(dict.fromkeys(named))


async def judge_exchange(
    chain: Chain, tenant: TenantPolicy, profile: Profile, case: Case, masker: Masker
) -> Judgement:
    """The exchange as the pipeline judges it, for a tool that must say what it would do."""
    monitor = tenant.mode == "monitor"
    ruling = NOT_JUDGED
    if tenant.input.enabled:
        rules, limits = profile.input, tenant.input
        result = await chain.judge_input(case.prompt, case.images, case.turns, rules, limits)
        judged = chain.judged_turns(case.turns, limits.judge_system)
        texts = [case.prompt, *(turn.text for turn in judged)]
        ruling = rule(result, tenant, rules, texts, masker, monitor)
    if ruling.action in STOPS or not tenant.output.enabled or not case.answers:
        return Judgement(ruling, NOT_JUDGED, monitor)
    rules = profile.output
    checks = output_checks(
        case.prompt, case.context_image, list(case.answers), rules, tenant.output.window_chars
    )
    answer = rule(await chain.judge_output(checks), tenant, rules, case.answers, masker, monitor)
    return Judgement(ruling, answer, monitor)
