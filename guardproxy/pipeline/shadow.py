"""A tenant's shadow policy as the pipeline sees it: what the live checks judged (`Judged`), the
shadow's own wiring (`ShadowRoute`), and its decision through the one judging core. Running it
in the background is `lifecycle/shadow.py`'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guardproxy.core.conversation import Turn
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.chain import Chain
from guardproxy.pipeline.judging import Case, judge_exchange
from guardproxy.pipeline.masking import Masker
from guardproxy.policy.model import RegionPack, TenantPolicy
from guardproxy.policy.profile import Profile, build_profiles, select_profile


@dataclass
class Judged:
    """What the live checks judged, kept for the shadow."""

    prompt: str
    turns: Sequence[Turn]  # the whole history: the shadow's guards pick the turns they judge
    images: list[GuardImage]
    context_image: str | None
    region: str | None
    answers: list[str] | None = None  # set once the answer is known


@dataclass(frozen=True)
class ShadowRoute:
    name: str
    tenant: TenantPolicy
    chain: Chain
    profiles: dict[str, Profile]
    masker: Masker

    @classmethod
    def of(
        cls, live: TenantPolicy, shadow: TenantPolicy, chain: Chain, packs: dict[str, RegionPack]
    ) -> ShadowRoute:
        profiles = build_profiles(shadow, packs)
        return cls(live.shadow or "", shadow, chain, profiles, Masker.for_policy(shadow.redaction))


async def judge_shadow(route: ShadowRoute, judged: Judged) -> dict[str, Any]:
    """The shadow policy's decision on the live exchange, through the one judging core."""
    case = Case(
        judged.prompt,
        tuple(judged.images),
        tuple(judged.turns),
        tuple(judged.answers or ()),
        judged.context_image,
    )
    profile = select_profile(route.profiles, judged.region)
    judgement = await judge_exchange(route.chain, route.tenant, profile, case, route.masker)
    verdicts = {"input": judgement.input.result, "output": judgement.output.result}
    return {
        "action": judgement.decided.value,
        **{d: r.summary(reasoning=True, detail=True) for d, r in verdicts.items()},
    }
