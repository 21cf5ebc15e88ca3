"""The proxy's /metrics behind the Service's `metrics` port, and the ServiceMonitor that scrapes
it (a Prometheus Operator resource: kubernetes-validate has no schema for it, so its shape is
checked here against the manifests it points at)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helm_python import chart

from guardproxy.config import load_settings
from tests.deploy.test_helm import CHART, EVERYTHING, render, selects, with_key
from tests.deploy.test_helm import OWN_METRICS_PORT as OWN_PORT


def metrics_target(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The proxy container's port that the Service's `metrics` port leads to."""
    service = manifests["Service/gp-guardproxy"]["spec"]
    [port] = [p for p in service["ports"] if p["name"] == "metrics"]
    container = manifests["Deployment/gp-guardproxy"]["spec"]["template"]["spec"]["containers"][0]
    [target] = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    return dict(target)


def test_the_service_names_a_metrics_port_on_the_main_port_by_default() -> None:
    assert metrics_target(render()) == {"name": "http", "containerPort": 8080}


def test_a_metrics_port_of_its_own_is_the_services_metrics_port(tmp_path: Any) -> None:
    manifests = render(OWN_PORT)
    assert metrics_target(manifests) == {"name": "metrics", "containerPort": 9100}
    text = manifests["ConfigMap/gp-guardproxy-config"]["data"]["guardproxy.yaml"]
    config = yaml.safe_load(text) | {"policies": str(tmp_path)}
    (tmp_path / "guardproxy.yaml").write_text(yaml.safe_dump(config))
    metrics = load_settings(tmp_path / "guardproxy.yaml", {}).metrics
    assert (metrics.host, metrics.port) == ("0.0.0.0", 9100)  # reachable from the Service


def test_a_metrics_port_of_its_own_needs_one_worker() -> None:
    values = with_key({**OWN_PORT, "workers": "auto"})
    with pytest.raises(Exception, match=r"metrics\.port needs workers: 1"):
        chart.Chart.load(CHART).render(values, name="gp", namespace="ai")


def test_the_network_policy_lets_scrapers_reach_the_metrics_port_of_its_own() -> None:
    values = {**OWN_PORT, "networkPolicy": EVERYTHING["networkPolicy"]}
    _, scrapers = render(values)["NetworkPolicy/gp-guardproxy"]["spec"]["ingress"]
    assert scrapers["ports"] == [{"port": "metrics", "protocol": "TCP"}]


@pytest.mark.parametrize("values", [EVERYTHING, {**EVERYTHING, **OWN_PORT}], ids=["main", "own"])
def test_the_service_monitor_scrapes_the_proxys_metrics_port(values: dict[str, Any]) -> None:
    manifests = render(values)
    monitor = manifests["ServiceMonitor/gp-guardproxy"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": ["ai"]}
    wanted = spec["selector"]["matchLabels"]
    services = {name: m for name, m in manifests.items() if m["kind"] == "Service"}
    selected = [name for name, m in services.items() if selects(wanted, m["metadata"]["labels"])]
    assert selected == ["Service/gp-guardproxy"]  # not the guard's Service
    [endpoint] = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s",
                        "scrapeTimeout": "10s"}  # fmt: skip
    service_ports = {p["name"] for p in manifests[selected[0]]["spec"]["ports"]}
    assert endpoint["port"] in service_ports
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
