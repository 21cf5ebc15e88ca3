"""The playground: one check of a tenant's policy on its real guard (the same route, cache and
pool as live traffic), with an optional response to judge in context and an optional image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from guardproxy.checks import CheckResult, run_checks
from guardproxy.decision import decide
from guardproxy.errors import RequestError
from guardproxy.media.images import prepare_image
from guardproxy.verdict import Direction, GuardInput

if TYPE_CHECKING:
    from guardproxy.app import Runtime


@dataclass(frozen=True)
class PlaygroundCase:
    tenant: str
    prompt: str = ""
    response: str = ""
    image: str = ""  # an http(s) or data: URL
    region: str = ""

    @classmethod
    def of(cls, form: dict[str, str]) -> PlaygroundCase:
        names = ("tenant", "prompt", "response", "image", "region")
        return cls(**{name: form.get(name, "").strip() for name in names})

    @property
    def direction(self) -> Direction:
        return Direction.OUTPUT if self.response else Direction.INPUT


@dataclass(frozen=True)
class PlaygroundResult:
    direction: str
    check: CheckResult | None = None
    action: str = ""
    error: str = ""


async def run_playground(runtime: Runtime, case: PlaygroundCase) -> PlaygroundResult:
    direction = case.direction.value
    tenant = runtime.policies.tenants.get(case.tenant)
    if tenant is None:
        return PlaygroundResult(direction, error=f"There is no tenant {case.tenant!r}.")
    if not case.prompt:
        return PlaygroundResult(direction, error="Write a prompt to check.")
    route = runtime.route_for(tenant)
    try:
        rules = route.profile(case.region or None).rules(case.direction)
        image = None
        if case.image:
            prepared = await prepare_image(case.image, "image", tenant.images, runtime.fetcher)
            image = prepared.guard_data_url()
    except RequestError as exc:
        return PlaygroundResult(direction, error=str(exc))
    response = case.response or None
    check = GuardInput(case.prompt, image, response, rules.reasoning, rules.guard_policy)
    result = await run_checks(route.guard, [check])
    action = decide(result, tenant, rules)
    return PlaygroundResult(direction, result, action.value, result.error or "")
