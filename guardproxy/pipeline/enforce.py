"""What a tenant's rulings do to one exchange: the judging core's ruling recorded (monitored,
flagged), a failure raised, a block answered in the tenant's shape, redactions counted.

The request flow (`flow.py`) and the streamed answer (`streamed.py`) both act through it, so
neither calls back into the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from guardproxy.core.conversation import Conversation
from guardproxy.core.verdict import GuardInput
from guardproxy.errors import GuardError, GuardOverloaded, GuardUnavailable
from guardproxy.media.request import RequestMedia
from guardproxy.pipeline.checks import CheckResult, output_checks
from guardproxy.pipeline.codec import Codec
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.judging import Ruling, rule
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.replies import blocked_response
from guardproxy.policy.model import TenantPolicy
from guardproxy.policy.profile import DirectionRules, Profile
from guardproxy.redaction import CATEGORY_DETECTORS


@dataclass
class Enforcer:
    tenant: TenantPolicy
    profile: Profile
    codec: Codec
    request: Conversation
    exchange: Exchange
    media: RequestMedia
    masker: Masker  # the tenant's, for rulings (masking itself counts per direction)

    def ruling(
        self, result: CheckResult, rules: DirectionRules, direction: str, texts: list[str]
    ) -> Ruling:
        """The judging core's ruling; a monitored tenant's is recorded, not carried out."""
        ruling = rule(result, self.tenant, rules, texts, self.masker, self.exchange.monitor)
        if ruling.monitored:
            self.exchange.monitored(direction, ruling.decided.value)
        return ruling

    def act(
        self, result: CheckResult, rules: DirectionRules, direction: str, texts: list[str]
    ) -> Ruling:
        """The ruling, carried out: a failure raised (`on_guard_error: block` fails the
        request, never silently), a flag recorded."""
        ruling = self.ruling(result, rules, direction, texts)
        if ruling.action is Action.FAIL:
            raise guard_failure(result)
        if ruling.action is Action.FLAG:
            self.exchange.flag(direction)
        return ruling

    def blocked(self, usage: Any = None) -> Response:
        return blocked_response(self.codec, self.request, self.exchange, self.tenant, usage)

    def output_checks(self, answers: list[str]) -> list[GuardInput]:
        image, window = self.media.context_image(), self.tenant.output.window_chars
        return output_checks(self.request.prompt, image, answers, self.profile.output, window)

    def stream_mask_types(self, masker: Masker) -> frozenset[str]:
        """Text already sent cannot be masked later, so in streams the detectors of every
        category whose output action is `redact` run from the start."""
        if not self.tenant.output.enabled or self.exchange.monitor:
            return masker.always
        rules = self.profile.output
        return masker.types_for([c for c in CATEGORY_DETECTORS if rules.action_for(c) == "redact"])

    def capture(self, answers: list[str]) -> None:
        if self.exchange.content is not None:
            self.exchange.content.response = "\n\n".join(answers)
        if self.exchange.judged is not None:
            self.exchange.judged.answers = answers

    def count_redactions(self, direction: str, found: int) -> None:
        if found:
            self.exchange.redacted[direction] = self.exchange.redacted.get(direction, 0) + found


def guard_failure(result: CheckResult) -> GuardError:
    if result.overloaded:
        return GuardOverloaded(result.error or "guard at capacity")
    return GuardUnavailable(result.error or "guard failed")
