"""The policies folder: inheritance, region packs, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardproxy.cli import main
from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies
from guardproxy.yamlfile import InvalidConfig
from tests.conftest import REPO

CONFIG = "guards: {g: {url: http://g/v1, model: m}}\nupstreams: {u: {url: http://u/v1}}\n"
EXAMPLE_KEYS = {
    f"{name}_API_KEY": f"sk-{name.lower()}"
    for name in ("HEALTHCARE", "BANK", "KIDS_EDU", "DEVTOOLS", "GLOBAL_SOCIAL", "AGENTS")
} | {"EXAMPLE_TENANT_KEY": "sk-example"}


def folder(tmp_path: Path, files: dict[str, str], regions: dict[str, str] | None = None) -> Path:
    (tmp_path / "policies" / "regions").mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / "policies" / name).write_text(text)
    for name, text in (regions or {}).items():
        (tmp_path / "policies" / "regions" / name).write_text(text)
    path = tmp_path / "guardproxy.yaml"
    path.write_text(CONFIG)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(InvalidConfig) as caught:
        load_policies(load_settings(path, {}), {})
    return [str(p).replace(str(path.parent) + "/", "") for p in caught.value.problems]


def test_tenants_inherit_base_and_extends_deeply(tmp_path: Path) -> None:
    path = folder(
        tmp_path,
        {
            "_base.yaml": "guard: g\nupstream: u\noutput: {window: 100, default: flag}\n",
            "parent.yaml": "tenant: parent\nkeys: [k1]\noutput: {window: 200}\n",
            "child.yaml": "tenant: child\nkeys: [k2]\nextends: parent\noutput: {overlap: 7}\n",
        },
    )
    policies = load_policies(load_settings(path, {}), {})
    child = policies.tenants["child"].output
    assert (child.window, child.overlap, child.default) == (200, 7, "flag")
    assert policies.tenants["parent"].output.overlap == 128


def test_validation_errors_name_file_and_line(tmp_path: Path) -> None:
    path = folder(
        tmp_path,
        {
            "_base.yaml": "guard: g\nupstream: u\n",
            "a.yaml": "tenant: a\nkeys: [k1]\ncolour: red\n",
            "b.yaml": "tenant: b\nkeys: [k2]\ninput:\n  categories: {Violense: block}\n",
            "c.yaml": "tenant: c\nkeys: [k3]\nredaction:\n  patterns: [{name: x, regex: '(['}]\n",
            "d.yaml": "tenant: d\nkeys: [k4]\nregions: [XX]\n",
            "e.yaml": "tenant: e\nkeys: [k5]\nextends: f\n",
            "f.yaml": "tenant: f\nkeys: [k6]\nextends: e\n",
        },
    )
    found = problems(path)
    assert "policies/a.yaml:3: colour: unknown key" in found
    assert (
        "policies/b.yaml:4: input.categories: unknown category 'Violense' "
        "(did you mean 'Violence'?)" in found
    )
    assert any(
        p.startswith("policies/c.yaml:4: redaction.patterns.0.regex: invalid regex") for p in found
    )
    assert "policies/d.yaml:3: regions: unknown region 'XX'" in found
    assert "policies/e.yaml:3: extends: cycle f -> e -> f" in found


def test_inherited_errors_point_at_the_file_that_has_the_key(tmp_path: Path) -> None:
    path = folder(
        tmp_path,
        {
            "_base.yaml": "guard: g\nupstream: u\non_guard_error: maybe\n",
            "a.yaml": "tenant: a\nkeys: [k1]\n",
        },
    )
    assert problems(path) == [
        "policies/_base.yaml:3: on_guard_error: Input should be 'block' or 'allow'"
    ]


def test_region_packs_are_checked(tmp_path: Path) -> None:
    path = folder(
        tmp_path,
        {"a.yaml": "tenant: a\nkeys: [k]\nguard: g\nupstream: u\nregions: [DE]\n"},
        {"DE.yaml": "region: DE\nname: Germany\ncategories:\n  input: {Nope: block}\n"},
    )
    assert problems(path) == [
        "policies/regions/DE.yaml:4: categories.input: unknown category 'Nope' "
        "(a name the guard returns that the proxy does not know goes in extra_categories)"
    ]


def test_shipped_policies_and_regions_pass_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in EXAMPLE_KEYS.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(REPO / "guardproxy.example.yaml")]) == 0
    out = capsys.readouterr().out
    tenants = ("healthcare", "bank", "kids-edu", "devtools", "global-social", "example", "agents")
    for tenant in tenants:
        assert tenant in out


def test_policy_show_prints_what_the_guard_receives(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in EXAMPLE_KEYS.items():
        monkeypatch.setenv(name, value)
    config = str(REPO / "guardproxy.example.yaml")
    assert main(["policy", "show", "bank", "--config", config, "--region", "FR"]) == 0
    shown = capsys.readouterr().out
    assert '"custom_taxonomy": "- Violence\\n- Sexual' in shown
    assert "custom_policy" not in shown
    assert "European Union (EU):" in shown
    assert "France (FR):" in shown
    assert "- Competitor Promotion (Recommending another bank" in shown
    assert main(["policy", "show", "devtools", "--config", config, "--effective"]) == 0
    effective = capsys.readouterr().out
    assert "needs_caution: allow" in effective
    assert "refusal_message: I'm sorry" in effective  # inherited from _base.yaml
