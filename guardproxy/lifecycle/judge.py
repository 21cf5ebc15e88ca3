"""An exchange (a prompt, its image and tool results, and the answer if there is one) through
a tenant's policy on its real guard, as the proxy would judge it: through the one judging core
(`judging.py`), the prompt first and the answer in context only if the prompt passes. `eval`
and `replay` use it, with a verdict file that answers checks already asked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from guardproxy.config import GuardSettings, Settings
from guardproxy.core.verdict import GuardInput
from guardproxy.guards.client import build_guard
from guardproxy.guards.protocols import GUARD_PROTOCOLS, GuardProtocol, guard_calls
from guardproxy.lifecycle.verdicts import VerdictFile
from guardproxy.media.fetch import ImageFetcher
from guardproxy.media.images import prepare_image
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.chain import Runner, chain_for
from guardproxy.pipeline.checks import CheckResult, CheckStatus, Guard, run_checks
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.judging import Case, Judgement, judge_exchange, tool_turns
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.model import PolicySet, TenantPolicy
from guardproxy.policy.profile import build_profiles, select_profile

POSITIVE = (Action.BLOCK, Action.REDACT)  # the content would not pass as it came


@dataclass(frozen=True)
class Outcome:
    action: str  # as the audit record says it (`monitor` for a monitored tenant)
    categories: tuple[str, ...]
    latency_ms: float | None
    fresh: int  # guard calls made for it (0: from the verdict file)
    error: str | None = None
    decided: str = ""  # what the rules decide, monitor aside (`action` if not monitored)

    @property
    def positive(self) -> bool:
        return (self.decided or self.action) in POSITIVE


class Judge:
    def __init__(
        self,
        settings: Settings,
        policies: PolicySet,
        tenant: TenantPolicy,
        client: httpx.AsyncClient,
        fetcher: ImageFetcher,
        verdicts: VerdictFile,
        pace: Callable[[], Awaitable[None]] | None = None,  # awaited before each guard call
    ) -> None:
        self.tenant, self.fetcher, self.verdicts, self.pace = tenant, fetcher, verdicts, pace
        self.guards = {
            name: JudgeGuard.of(client, settings.guards[name]) for name in tenant.guard_names
        }
        self.profiles = build_profiles(tenant, policies.regions)
        self.masker = Masker.for_policy(tenant.redaction)

    async def judge(
        self,
        prompt: str,
        response: str | None = None,
        image: str | None = None,
        tools: Sequence[str] = (),
    ) -> Outcome:
        """`tools`: tool results the prompt came with, judged as the proxy judges `tool`
        messages (by the guards whose `turns` take them)."""
        image_data = None
        if image:
            prepared = await prepare_image(image, "image", self.tenant.images, self.fetcher)
            image_data = prepared.guard_data_url()
        images = (GuardImage("image", image_data),) if image_data else ()
        answers = (response,) if response is not None else ()
        case = Case(prompt, images, tool_turns(tools, "tool"), answers, image_data)
        calls = Calls(self)
        profile = select_profile(self.profiles, None)
        chain = chain_for(self.tenant, calls.runner)
        judgement = await judge_exchange(chain, self.tenant, profile, case, self.masker)
        return outcome(judgement, calls.fresh)


@dataclass(frozen=True)
class JudgeGuard:
    """One guard of the tenant's chain, and how its requests are keyed in the verdict file."""

    guard: Guard
    settings: GuardSettings
    protocol: GuardProtocol

    @classmethod
    def of(cls, client: httpx.AsyncClient, settings: GuardSettings) -> JudgeGuard:
        protocol = GUARD_PROTOCOLS[settings.protocol](settings)
        return cls(build_guard(client, settings), settings, protocol)


class Calls:
    """One exchange's checks: from the verdict file, or asked and then kept there."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.fresh = 0

    def runner(self, name: str) -> Runner:
        """The checks of the chain's guard `name`, each guard's keyed by its own URL."""

        async def run(checks: list[GuardInput], labels: Sequence[str]) -> CheckResult:
            return await self.run(self.judge.guards[name], checks, labels)

        return run

    async def run(
        self, guard: JudgeGuard, checks: list[GuardInput], labels: Sequence[str]
    ) -> CheckResult:
        judge = self.judge
        bodies = [guard.protocol.build_request(c) for check in checks for c in guard_calls(check)]
        key = VerdictFile.key(guard.settings.url, bodies)
        result = judge.verdicts.get(key)
        if result is None:
            if judge.pace is not None:
                await judge.pace()
            result = await run_checks(guard.guard, checks, labels)  # it times the calls
            self.fresh += len(bodies)
            judge.verdicts.put(key, result)
        return result


def outcome(judgement: Judgement, fresh: int) -> Outcome:
    results = (judgement.input.result, judgement.output.result)
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    errors = [r.error for r in results if r.status is CheckStatus.ERROR and r.error]
    return Outcome(
        judgement.outcome,
        judgement.categories,
        sum(latencies) if latencies else None,
        fresh,
        errors[0] if errors else None,
        judgement.decided.value,
    )
