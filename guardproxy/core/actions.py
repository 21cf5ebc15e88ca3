"""What happens to an exchange, in the one order of severity every layer uses."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal


class Action(StrEnum):
    """Least severe first."""

    ALLOW = "allow"
    FLAG = "flag"  # allowed, and marked in the audit record and headers
    REDACT = "redact"  # allowed once the spans of the flagged categories are masked
    BLOCK = "block"  # the content is unsafe: answer with the tenant's block shape
    FAIL = "fail"  # no verdict and the tenant fails closed: 503 guard_unavailable

    @property
    def severity(self) -> int:
        return ORDER.index(self)


ORDER = tuple(Action)


def most_severe_action(actions: Iterable[Action]) -> Action:
    return max(actions, key=lambda action: action.severity, default=Action.ALLOW)


# What the audit record and `x-guardproxy-action` say of an exchange: the action carried out,
# or `reject` (the request itself was refused), `error` (the upstream failed), `monitor` (a
# monitored tenant: see `would`). A redaction is `allow` with `redacted` counts.
Outcome = Literal["allow", "flag", "block", "fail", "reject", "error", "monitor"]
