"""The playground: one check of a tenant's policy on its real guard (the same route, cache and
pool as live traffic), with an optional tool result, response (judged in context) and image.
A guard limited to turns the form did not carry is named as not run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from guardproxy.core.verdict import Direction
from guardproxy.errors import RequestError
from guardproxy.media.images import prepare_image
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.checks import CheckResult
from guardproxy.pipeline.judging import (
    Case,
    guards_not_run,
    judge_exchange,
    not_run_note,
    tool_turns,
)

if TYPE_CHECKING:
    from guardproxy.server.runtime import Runtime


@dataclass(frozen=True)
class PlaygroundCase:
    tenant: str
    prompt: str = ""
    response: str = ""
    image: str = ""  # an http(s) or data: URL
    region: str = ""
    tool: str = ""  # a tool result the prompt came with, judged as a `tool` message

    @classmethod
    def of(cls, form: dict[str, str]) -> PlaygroundCase:
        names = ("tenant", "prompt", "response", "image", "region", "tool")
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
    would: str = ""  # a monitored tenant's unenforced action
    categories: tuple[str, ...] = ()  # named by either direction's check
    not_run: str = ""  # the guards limited to turns the form did not carry (`not_run_note`)


async def run_playground(runtime: Runtime, case: PlaygroundCase) -> PlaygroundResult:
    """The exchange as the proxy would judge it (the prompt first, then the response in
    context), through the one judging core and the tenant's live route."""
    direction = case.direction.value
    tenant = runtime.policies.tenants.get(case.tenant)
    if tenant is None:
        return PlaygroundResult(direction, error=f"There is no tenant {case.tenant!r}.")
    if not case.prompt:
        return PlaygroundResult(direction, error="Write a prompt to check.")
    route = runtime.route_for(tenant)
    try:
        profile = route.profile(case.region or None)
        image = None
        if case.image:
            prepared = await prepare_image(case.image, "image", tenant.images, runtime.fetcher)
            image = prepared.guard_data_url()
    except RequestError as exc:
        return PlaygroundResult(direction, error=str(exc))
    images = (GuardImage("image", image),) if image else ()
    answers = (case.response,) if case.response else ()
    tools = tool_turns([case.tool] if case.tool else [], "tool")
    judged = Case(case.prompt, images, tools, answers, image)
    judgement = await judge_exchange(route.chain, tenant, profile, judged, route.masker)
    checked = judgement.checked
    direction = "output" if checked is judgement.output else "input"
    would = judgement.decided.value if judgement.monitor else ""
    error = checked.result.error or ""
    not_run = guards_not_run(tenant, judged.kinds)
    return PlaygroundResult(
        direction,
        checked.result,
        judgement.outcome,
        error,
        would,
        judgement.categories,
        not_run_note(not_run) if not_run else "",
    )
