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
# Every optional part of the chart switched on.
EVERYTHING: dict[str, Any] = {
    "networkPolicy": {
        "enabled": True,
        "clients": [{"namespaceSelector": {"matchLabels": {"team": "apps"}}}],
        "upstreams": [{"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"], "ports": [8000, 443]}],
        "extraEgress": [{"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}],
                         "ports": [{"port": 6379, "protocol": "TCP"}]}],
    },
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
        "tls": [{"secretName": "guardproxy-tls", "hosts": ["guardproxy.example.com"]}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "vllm": {"cache": {"existingClaim": "models"}, "hfToken": {"existingSecret": "hf"}},
}  # fmt: skip
# /metrics on a port of its own, which the proxy serves from one worker only.
OWN_METRICS_PORT: dict[str, Any] = {"workers": 1, "config": {"metrics": {"port": 9100}}}
# Custom resources, whose schemas kubernetes-validate does not carry: checked by their tests.
CUSTOM_KINDS = {"ServiceMonitor"}


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


def pod_templates(manifests: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workload name -> the spec of the pods it makes."""
    return {
        name: m["spec"]["template"]["spec"]
        for name, m in manifests.items()
        if "template" in m.get("spec", {})
    }


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
def test_the_chart_lints_clean_in_strict_mode(values: dict[str, Any] | None) -> None:
    report = chart.lint(CHART, with_key(values), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"autoscaling": {"enabled": False}, "vllm": {"enabled": False}},
        EVERYTHING,
        {**EVERYTHING, **OWN_METRICS_PORT},
    ],
    ids=["defaults", "no-vllm", "everything", "own-metrics-port"],
)
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any] | None) -> None:
    for name, manifest in render(values).items():
        if manifest["kind"] in CUSTOM_KINDS:
            continue
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


def test_a_changed_secret_rolls_the_pods_and_a_changed_policy_does_not() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        deployment = render(values)["Deployment/gp-guardproxy"]
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    first = annotations(KEYED)
    rotated = annotations({"secret": {"values": {"EXAMPLE_TENANT_KEY": "9d0e7a41c5b2f8e3"}}})
    policy = annotations({"policies": {"example.yaml": 'tenant: "example"\n'}})
    assert first["checksum/secret"] != rotated["checksum/secret"]
    assert first["checksum/config"] == rotated["checksum/config"]
    assert policy == first  # policies reload live in the running pods


def test_the_guard_waits_for_its_first_download_with_a_startup_probe(
    manifests: dict[str, dict[str, Any]],
) -> None:
    container = manifests["Deployment/gp-guard"]["spec"]["template"]["spec"]["containers"][0]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30 * 60
    for probe in ("readinessProbe", "livenessProbe"):  # they start once the startup probe passed
        assert container[probe]["httpGet"]["path"] == "/health"
        assert "initialDelaySeconds" not in container[probe]


def test_the_guard_has_shared_memory_and_a_model_cache(
    manifests: dict[str, dict[str, Any]],
) -> None:
    pod = manifests["Deployment/gp-guard"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    cache = next(path for path, name in mounts.items() if name == "cache")
    assert env["HF_HOME"].startswith(cache + "/")
    assert "emptyDir" in volumes["cache"]
    assert "HF_TOKEN" not in env


def test_the_guard_takes_a_cache_claim_and_a_hugging_face_token() -> None:
    values = {"vllm": {"cache": {"existingClaim": "models"}, "hfToken": {"existingSecret": "hf"}}}
    pod = render(values)["Deployment/gp-guard"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert volumes["cache"]["persistentVolumeClaim"] == {"claimName": "models"}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "HF_TOKEN"}


def test_network_policies_and_the_ingress_are_off_by_default(
    manifests: dict[str, dict[str, Any]],
) -> None:
    kinds = {m["kind"] for m in manifests.values()}
    assert kinds.isdisjoint({"NetworkPolicy", "Ingress", "ServiceMonitor"})


def test_the_network_policy_lets_the_proxy_reach_dns_the_guard_and_its_upstreams() -> None:
    manifests = render(EVERYTHING)
    spec = manifests["NetworkPolicy/gp-guardproxy"]["spec"]
    guard_pods = manifests["Deployment/gp-guard"]["spec"]["template"]["metadata"]["labels"]
    egress = spec["egress"]
    dns, guard, upstream, redis = egress
    assert {p["port"] for p in dns["ports"]} == {53}
    assert selects(guard["to"][0]["podSelector"]["matchLabels"], guard_pods)
    assert upstream["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}}]
    assert [p["port"] for p in upstream["ports"]] == [8000, 443]
    assert redis == EVERYTHING["networkPolicy"]["extraEgress"][0]
    clients, scrapers = spec["ingress"]
    assert clients["from"] == EVERYTHING["networkPolicy"]["clients"]
    assert scrapers["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_only_the_proxy_may_call_the_guard() -> None:
    manifests = render(EVERYTHING)
    proxy_pods = manifests["Deployment/gp-guardproxy"]["spec"]["template"]["metadata"]["labels"]
    [rule] = manifests["NetworkPolicy/gp-guard"]["spec"]["ingress"]
    [peer] = rule["from"]
    assert selects(peer["podSelector"]["matchLabels"], proxy_pods)


def test_the_ingress_sends_the_api_to_the_services_http_port() -> None:
    manifests = render(EVERYTHING)
    spec = manifests["Ingress/gp-guardproxy"]["spec"]
    [rule] = spec["rules"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = manifests[f"Service/{backend['name']}"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert path["path"] == "/v1"  # /metrics, /readyz and /admin stay inside the cluster
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == EVERYTHING["ingress"]["tls"]
