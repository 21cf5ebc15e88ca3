"""A tenant's guard chain as its settings make it: each guard's `output` default comes from
its protocol, so a classifier that only says whether a text tries to take over the model is
not asked about answers unless the tenant says so."""

from __future__ import annotations

from guardproxy.config import Settings
from guardproxy.guards.protocols import GUARD_PROTOCOLS
from guardproxy.policy.model import TenantPolicy

# A protocol whose model judges answers (every content-safety model) needs no attribute; a
# classifier of prompts sets `judges_answers = False` on its class.
JUDGES_ANSWERS_DEFAULT = True


def judges_answers(settings: Settings, guard: str) -> bool:
    """Whether the guard's protocol judges answers (`judges_answers`, True if it says nothing)."""
    protocol = GUARD_PROTOCOLS[settings.guards[guard].protocol]
    return bool(getattr(protocol, "judges_answers", JUDGES_ANSWERS_DEFAULT))


def with_answer_judges(settings: Settings, policy: TenantPolicy) -> TenantPolicy:
    """`policy` with every chain entry's `output` set: as given, else as its protocol says."""
    guards = tuple(
        entry
        if entry.output is not None
        else entry.model_copy(update={"output": judges_answers(settings, entry.guard)})
        for entry in policy.guards
    )
    return policy.model_copy(update={"guards": guards})


def answers_judged(settings: Settings, policy: TenantPolicy) -> bool:
    """Whether any guard of the tenant's chain judges answers."""
    return any(entry.output for entry in with_answer_judges(settings, policy).guards)
