from __future__ import annotations

from typing import get_args

import pytest

from guardproxy.config import GuardProtocolName, GuardSettings
from guardproxy.core.verdict import GuardInput
from guardproxy.guards.nemotron_content_safety import NemotronContentSafety
from guardproxy.guards.nemotron_reasoning import NemotronReasoning
from guardproxy.guards.protocols import GUARD_PROTOCOLS, GuardProtocol
from guardproxy.guards.safety_guard_8b import SafetyGuard8B


def test_every_configurable_protocol_name_has_an_implementation() -> None:
    assert set(GUARD_PROTOCOLS) == set(get_args(GuardProtocolName))


@pytest.mark.parametrize(
    ("name", "implementation"),
    [
        ("nemotron-content-safety", NemotronContentSafety),
        ("nemotron-reasoning", NemotronReasoning),
        ("nemotron-safety-guard-8b", SafetyGuard8B),
    ],
)
def test_registry_builds_the_named_protocol(name: str, implementation: type) -> None:
    settings = GuardSettings(url="http://guard/v1", model="m")
    protocol: GuardProtocol = GUARD_PROTOCOLS[name](settings)
    assert isinstance(protocol, implementation)
    assert protocol.build_request(GuardInput("hi"))["model"] == "m"
