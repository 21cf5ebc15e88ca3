"""The chart's optional reviewer-page Deployment: off by default; on, it runs `guardproxy admin
serve` in a restricted pod that the proxy's Service never selects, and it refuses to start
without a shared audit database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_helm import pod_templates, render, selects
from tests.deploy.test_helm_security import restricted_violations

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "guardproxy" / "values.yaml"
SHARED = {
    "audit": {"path": "-", "database": "postgresql://audit@db:5432/audit"},
    "admin": {"keys": ["${ADMIN_KEY}"]},
}


def with_admin(config: dict[str, Any]) -> dict[str, Any]:
    """The chart's own config with `config` over it, and the reviewer Deployment on."""
    chart_config = yaml.safe_load(VALUES.read_text())["config"]
    return {"admin": {"enabled": True}, "config": {**chart_config, **config}}


def test_the_reviewer_deployment_is_off_by_default() -> None:
    assert not [name for name in render() if "admin" in name]


def test_the_reviewer_deployment_serves_the_page_alone_in_a_restricted_pod() -> None:
    manifests = render(with_admin(SHARED))
    pod = pod_templates(manifests)["Deployment/gp-guardproxy-admin"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["args"][:2] == ["admin", "serve"]
    labels = manifests["Deployment/gp-guardproxy-admin"]["spec"]["template"]["metadata"]["labels"]
    proxy_service = manifests["Service/gp-guardproxy"]["spec"]["selector"]
    assert not selects(proxy_service, labels)
    assert selects(manifests["Service/gp-guardproxy-admin"]["spec"]["selector"], labels)


@pytest.mark.parametrize(
    "audit",
    [{"path": "-"}, {"path": "-", "database": "sqlite:////srv/guardproxy/audit/audit.db"}],
    ids=["no database", "one pod's sqlite"],
)
def test_the_reviewer_deployment_needs_a_database_the_pods_share(audit: dict[str, Any]) -> None:
    with pytest.raises(Exception, match=r"admin\.enabled needs config\.audit\.database"):
        render(with_admin({**SHARED, "audit": audit}))
