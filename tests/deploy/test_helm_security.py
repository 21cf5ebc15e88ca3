"""Every pod the chart makes meets the "restricted" Pod Security Standard, checked here rule by
rule as https://kubernetes.io/docs/concepts/security/pod-security-standards/ writes them
(baseline's controls and restricted's), and the proxy's read-only root leaves it the folders
it writes."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_helm import EVERYTHING, pod_templates, render

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
# Baseline allows adding a dozen capabilities; restricted only this one of them.
ADDABLE_CAPABILITIES = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(kind, [])


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec out of the restricted profile; empty when it is admitted."""
    found = [*_pod_level(pod), *_volumes(pod)]
    for container in containers(pod):
        found += [f"{container['name']}: {v}" for v in _container(pod, container)]
    return found


def _pod_level(pod: dict[str, Any]) -> Iterator[str]:
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"{field} is set"
    context = pod.get("securityContext", {})
    yield from _contexts_own_rules(context)
    for sysctl in context.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            yield f"sysctl {sysctl['name']} is not a safe one"


def _volumes(pod: dict[str, Any]) -> Iterator[str]:
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volume {volume['name']} is a {', '.join(sorted(kinds))}"


def _contexts_own_rules(context: dict[str, Any]) -> Iterator[str]:
    """The rules a pod's and a container's securityContext share."""
    if context.get("windowsOptions", {}).get("hostProcess"):
        yield "hostProcess is set"
    if context.get("runAsUser") == 0:
        yield "runs as uid 0"
    if context.get("runAsNonRoot") is False:
        yield "runAsNonRoot is false"
    if context.get("seccompProfile", {}).get("type") == "Unconfined":
        yield "seccomp is Unconfined"
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        yield "AppArmor is Unconfined"
    selinux = context.get("seLinuxOptions", {})
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        yield "SELinux options beyond the container types"


def _container(pod: dict[str, Any], container: dict[str, Any]) -> Iterator[str]:
    context = container.get("securityContext", {})
    pod_context = pod.get("securityContext", {})
    yield from _contexts_own_rules(context)
    if context.get("privileged"):
        yield "privileged"
    if context.get("allowPrivilegeEscalation") is not False:
        yield "allowPrivilegeEscalation is not false"
    if context.get("procMount", "Default") != "Default":
        yield "procMount is not Default"
    if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
        yield "runAsNonRoot is not true"
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
        yield "no RuntimeDefault or Localhost seccomp profile"
    yield from _capabilities(context.get("capabilities", {}))
    if any(port.get("hostPort") for port in container.get("ports", [])):
        yield "hostPort is set"


def _capabilities(capabilities: dict[str, Any]) -> Iterator[str]:
    if "ALL" not in capabilities.get("drop", []):
        yield "capabilities do not drop ALL"
    added = set(capabilities.get("add", [])) - ADDABLE_CAPABILITIES
    if added:
        yield f"capabilities add {', '.join(sorted(added))}"


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
def test_every_pod_of_the_chart_meets_the_restricted_profile(
    values: dict[str, Any] | None,
) -> None:
    pods = pod_templates(render(values))
    assert set(pods) == {"Deployment/gp-guardproxy", "Deployment/gp-guard"}
    assert {name: restricted_violations(pod) for name, pod in pods.items()} == {
        name: [] for name in pods
    }


def test_no_pod_gets_a_kubernetes_api_token() -> None:
    pods = pod_templates(render(EVERYTHING))
    assert {name: pod["automountServiceAccountToken"] for name, pod in pods.items()} == {
        name: False for name in pods
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change to a pod spec at a dotted path ("containers.0.securityContext.privileged")."""

    def apply(pod: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = pod
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[int(last) if last.isdigit() else last] = value

    return apply


BREACHES = {
    "hostPath": _set("volumes.0", {"name": "host", "hostPath": {"path": "/var/run"}}),
    "hostNetwork": _set("hostNetwork", True),
    "hostPID": _set("hostPID", True),
    "privileged": _set("containers.0.securityContext.privileged", True),
    "escalation": _set("containers.0.securityContext.allowPrivilegeEscalation", True),
    "root": _set("containers.0.securityContext.runAsUser", 0),
    "root pod": _set("securityContext.runAsUser", 0),
    "maybe root": _set("securityContext.runAsNonRoot", False),
    "unconfined": _set("containers.0.securityContext.seccompProfile", {"type": "Unconfined"}),
    "no seccomp": _set("securityContext.seccompProfile", {}),
    "keeps caps": _set("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}),
    "adds caps": _set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]),
    "hostPort": _set("containers.0.ports.0.hostPort", 8080),
    "sysctl": _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
}


@pytest.mark.parametrize("breach", BREACHES.values(), ids=BREACHES.keys())
def test_the_check_sees_each_breach_of_the_profile(
    breach: Callable[[dict[str, Any]], None],
) -> None:
    for pod in pod_templates(render()).values():
        changed = copy.deepcopy(pod)
        breach(changed)
        assert restricted_violations(changed) != []


def test_net_bind_service_is_the_one_capability_a_restricted_pod_may_add() -> None:
    pod = copy.deepcopy(pod_templates(render())["Deployment/gp-guardproxy"])
    _set("containers.0.securityContext.capabilities.add", ["NET_BIND_SERVICE"])(pod)
    assert restricted_violations(pod) == []


def test_the_proxy_runs_as_the_images_user_on_a_read_only_root() -> None:
    pod = pod_templates(render())["Deployment/gp-guardproxy"]
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user is not None
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_folder_the_proxy_writes_is_a_mounted_scratch_volume() -> None:
    pod = pod_templates(render())["Deployment/gp-guardproxy"]
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {
        m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] in scratch
    }
    # The image's audit trail path, and tempfile's folder for the workers' metrics files.
    audit = re.search(r"GUARDPROXY_AUDIT_PATH=(\S+)", DOCKERFILE.read_text())
    assert audit is not None
    assert str(Path(audit[1]).parent) in writable
    assert "/tmp" in writable
