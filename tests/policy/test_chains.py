"""A tenant's `guards:` chain as the policies folder gives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardproxy.config import load_settings
from guardproxy.guards.protocols import GUARD_PROTOCOLS
from guardproxy.policy.loader import load_policies
from guardproxy.policy.model import ChainedGuard
from tests.policy.test_loader import folder, problems

GUARDS = "guards: {g: {url: http://g/v1, model: m}, h: {url: http://h/v1, model: m}}\n"
UPSTREAMS = "upstreams: {u: {url: http://u/v1}}\n"


def chained(tmp_path: Path, files: dict[str, str]) -> Path:
    path = folder(tmp_path, files)
    path.write_text(GUARDS + UPSTREAMS)
    return path


def test_a_chain_over_a_base_that_names_one_guard_replaces_it(tmp_path: Path) -> None:
    path = chained(
        tmp_path,
        {
            "_base.yaml": "guard: g\nupstream: u\n",
            "one.yaml": "tenant: one\nkeys: [k1]\n",
            "two.yaml": "tenant: two\nkeys: [k2]\nguards: [g, {guard: h, turns: [tool]}]\n",
        },
    )
    tenants = load_policies(load_settings(path, {}), {}).tenants
    assert tenants["one"].guards == (ChainedGuard(guard="g", output=True),)
    assert tenants["two"].guards == (
        ChainedGuard(guard="g", output=True),
        ChainedGuard(guard="h", turns=("tool",), output=True),
    )
    assert tenants["two"].guard == "g,h"


def test_guard_and_guards_in_one_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = chained(
        tmp_path, {"a.yaml": "tenant: a\nkeys: [k]\nupstream: u\nguard: g\nguards: [h]\n"}
    )
    assert problems(path) == [
        "policies/a.yaml:1: (top level): give either guard or guards, not both"
    ]


def test_unknown_guards_and_turns_of_a_chain_are_named(tmp_path: Path) -> None:
    path = chained(
        tmp_path,
        {"a.yaml": "tenant: a\nkeys: [k]\nupstream: u\nguards: [g, x, {guard: h, turns: [web]}]\n"},
    )
    expected = "guards.2.turns.0: Input should be 'user', 'tool', 'system' or 'assistant'"
    assert f"policies/a.yaml:4: {expected}" in problems(path)
    path = chained(
        tmp_path / "b", {"a.yaml": "tenant: a\nkeys: [k]\nupstream: u\nguards: [g, x]\n"}
    )
    assert problems(path) == ["policies/a.yaml:4: guard: unknown guard 'x'"]


def test_output_defaults_to_what_the_guards_protocol_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    protocol = GUARD_PROTOCOLS["nemotron-content-safety"]
    monkeypatch.setattr(protocol, "judges_answers", False, raising=False)
    path = chained(
        tmp_path,
        {"a.yaml": "tenant: a\nkeys: [k]\nupstream: u\nguards: [g, {guard: h, output: true}]\n"},
    )
    tenant = load_policies(load_settings(path, {}), {}).tenants["a"]
    assert [entry.output for entry in tenant.guards] == [False, True]


@pytest.mark.parametrize("protocol", ["vllm-classify", "nemoguard-jailbreak"])
def test_a_classifier_in_a_chain_judges_no_answers_unless_told(protocol: str) -> None:
    assert GUARD_PROTOCOLS[protocol].judges_answers is False  # type: ignore[attr-defined]


def test_output_checks_that_no_guard_of_the_chain_runs_are_refused(tmp_path: Path) -> None:
    """Fail closed: a tenant whose only guard is a classifier of prompts would otherwise
    let every answer through unjudged while its output checks say they are on."""
    tenant = "tenant: a\nkeys: [k]\nupstream: u\nguards: [{guard: g, output: false}]\n"
    path = chained(tmp_path, {"a.yaml": tenant})
    [problem] = problems(path)
    assert problem.startswith("policies/a.yaml:1: output checks are on but no guard")
    off = tenant + "output: {enabled: false}\n"
    path = chained(tmp_path / "off", {"a.yaml": off})
    assert load_policies(load_settings(path, {}), {}).tenants["a"].output.enabled is False
