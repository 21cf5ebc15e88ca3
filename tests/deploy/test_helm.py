"""The Helm chart: linted and rendered by Helm's own Go SDK (helm-python-sdk), every manifest
checked against the Kubernetes JSON schemas (kubernetes-validate), and what it mounts loaded
by guardproxy itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import chart

from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "guardproxy"
KUBERNETES = "1.33"
REGION = 'region: "XX"\nname: "Example region"\nrules: |\n  - Treat as unsafe: example.\n'


# What an install must set: the chart ships no working tenant key.
KEYED = {"secret": {"values": {"EXAMPLE_TENANT_KEY": "3f9c2e1b7a6d4c08b5e2f1a9d7c3b6e4"}}}


def render(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """kind/name -> manifest, with a tenant key set as an install sets it."""
    rendered = chart.Chart.load(CHART).render(with_key(values), name="gp", namespace="ai")
    manifests = [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def with_key(values: dict[str, Any] | None) -> dict[str, Any]:
    return {**KEYED, **(values or {})}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return render()


def test_the_chart_lints_clean_in_strict_mode() -> None:
    report = chart.lint(CHART, with_key(None), strict=True)
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == []
    assert errors == []


@pytest.mark.parametrize(
    "values", [None, {"autoscaling": {"enabled": False}, "vllm": {"enabled": False}}]
)
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any] | None) -> None:
    for name, manifest in render(values).items():
        try:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message}")


@pytest.mark.parametrize("key", ["", "change-me", "CHANGEME"])
def test_the_chart_refuses_to_render_without_a_strong_tenant_key(key: str) -> None:
    values = {"secret": {"values": {"EXAMPLE_TENANT_KEY": key}}}
    with pytest.raises(Exception, match="EXAMPLE_TENANT_KEY"):
        chart.Chart.load(CHART).render(values, name="gp", namespace="ai")


def test_an_existing_secret_needs_no_key_in_the_values() -> None:
    values = {"secret": {"existingSecret": "keys", "values": {"EXAMPLE_TENANT_KEY": ""}}}
    assert "Secret/gp-guardproxy-keys" not in render(values)


def test_the_release_has_what_scaling_out_needs(manifests: dict[str, dict[str, Any]]) -> None:
    proxy = "gp-guardproxy"
    assert set(manifests) >= {
        f"Deployment/{proxy}", f"Service/{proxy}", f"HorizontalPodAutoscaler/{proxy}",
        f"PodDisruptionBudget/{proxy}", f"ConfigMap/{proxy}-config",
        f"ConfigMap/{proxy}-policies", f"Secret/{proxy}-keys",
        "Deployment/gp-guard", "Service/gp-guard",
    }  # fmt: skip


def test_probes_drain_and_secrets(manifests: dict[str, dict[str, Any]]) -> None:
    pod = manifests["Deployment/gp-guardproxy"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert "--graceful-shutdown-s=60" in container["args"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 60
    assert container["envFrom"] == [{"secretRef": {"name": "gp-guardproxy-keys"}}]


def test_policies_are_a_whole_folder_mount_so_updates_reach_the_pod() -> None:
    manifests = render({"regions": {"XX": REGION}})
    pod = manifests["Deployment/gp-guardproxy"]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert "subPath" not in mounts["policies"]  # a subPath mount is never updated
    items = {i["key"]: i["path"] for v in pod["volumes"] if v["name"] == "policies"
             for i in v["configMap"]["items"]}  # fmt: skip
    assert items["region-XX.yaml"] == "regions/XX.yaml"


def test_the_rendered_config_and_policies_load_in_guardproxy(tmp_path: Path) -> None:
    manifests = render({"regions": {"XX": REGION}})
    config = yaml.safe_load(manifests["ConfigMap/gp-guardproxy-config"]["data"]["guardproxy.yaml"])
    policies = tmp_path / "policies"
    (policies / "regions").mkdir(parents=True)
    for key, text in manifests["ConfigMap/gp-guardproxy-policies"]["data"].items():
        target = (
            policies / "regions" / key.removeprefix("region-")
            if key.startswith("region-")
            else policies / key
        )
        target.write_text(text)
    config["policies"] = str(policies)
    (tmp_path / "guardproxy.yaml").write_text(yaml.safe_dump(config))
    env = {"EXAMPLE_TENANT_KEY": "sk-example"}
    settings = load_settings(tmp_path / "guardproxy.yaml", env)
    assert settings.guards["nemotron"].urls == ["http://gp-guard:8000/v1"]  # the vLLM Service
    assert set(load_policies(settings, env).tenants) == {"example"}
