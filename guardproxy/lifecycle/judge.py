"""One text (a prompt, or a prompt and its answer) through a tenant's policy on its real
guard, as the proxy would judge it: the same profile, guard request, verdict and decision."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from guardproxy.checks import CheckStatus, Guard, run_checks
from guardproxy.config import Settings
from guardproxy.decision import Action, decide
from guardproxy.guards.client import build_guard
from guardproxy.guards.protocols import GUARD_PROTOCOLS, guard_calls
from guardproxy.lifecycle.verdicts import VerdictFile
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.images import prepare_image
from guardproxy.policy.model import PolicySet, TenantPolicy
from guardproxy.policy.profile import build_profiles, select_profile
from guardproxy.verdict import Direction, GuardInput

POSITIVE = (Action.BLOCK, Action.REDACT)  # the content would not pass as it came


@dataclass(frozen=True)
class Outcome:
    action: str
    categories: tuple[str, ...]
    latency_ms: float | None
    fresh: int  # guard calls made for it (0: from the verdict file)
    error: str | None = None

    @property
    def positive(self) -> bool:
        return self.action in POSITIVE


class Judge:
    def __init__(
        self,
        settings: Settings,
        policies: PolicySet,
        tenant: TenantPolicy,
        client: httpx.AsyncClient,
        fetcher: ImageFetcher,
        verdicts: VerdictFile,
    ) -> None:
        self.settings, self.tenant, self.fetcher, self.verdicts = (
            settings,
            tenant,
            fetcher,
            verdicts,
        )
        self.guard_settings = settings.guards[tenant.guard]
        self.guard: Guard = build_guard(client, self.guard_settings)
        self.protocol = GUARD_PROTOCOLS[self.guard_settings.protocol](self.guard_settings)
        self.profiles = build_profiles(tenant, policies.regions)

    async def judge(
        self, prompt: str, response: str | None = None, image: str | None = None
    ) -> Outcome:
        direction = Direction.INPUT if response is None else Direction.OUTPUT
        rules = select_profile(self.profiles, None).rules(direction)
        image_data = None
        if image:
            prepared = await prepare_image(image, "image", self.tenant.images, self.fetcher)
            image_data = prepared.guard_data_url()
        check = GuardInput(prompt, image_data, response, rules.reasoning, rules.guard_policy)
        bodies = [self.protocol.build_request(call) for call in guard_calls(check)]
        key = VerdictFile.key(self.guard_settings.url, bodies)
        result, fresh = self.verdicts.get(key), 0
        if result is None:  # run_checks times the call itself
            result = await run_checks(self.guard, [check])
            fresh = len(bodies)
            self.verdicts.put(key, result)
        action = decide(result, self.tenant, rules)
        error = result.error if result.status is CheckStatus.ERROR else None
        return Outcome(action.value, result.categories, result.latency_ms, fresh, error)
