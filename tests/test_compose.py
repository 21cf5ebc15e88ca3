"""The deployment files: compose.yaml is valid Compose and wired the way the proxy needs it.

No Docker engine is needed: compose.yaml is checked against the vendored Compose
Specification schema (tests/data/compose-spec.json, from compose-spec/compose-spec), and
deploy/Dockerfile is read as text.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from referencing import Registry

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"

SERVICES = ("guard", "llm", "guardproxy")
MODEL_SERVERS = ("guard", "llm")
AGENTS_SERVICES = ("injection", "guardproxy-agents")  # the "agents" profile
AGENTS_MODEL_SERVERS = ("injection",)
PROXY_CMD = ["guardproxy", "serve", "--host", "0.0.0.0", "--port", "8080"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return read_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def read_instructions(text: str) -> list[tuple[str, str]]:
    """Split a Dockerfile into (KEYWORD, arguments), joining `\\` continuation lines."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    body = compose["services"][name]
    assert isinstance(body, dict)
    return body


def argument_after(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    # The schema's own $schema names its draft (2019-09 today); an unknown one would
    # fall back to the newest draft with a DeprecationWarning, which fails under
    # filterwarnings=error.
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # An empty registry: every $ref in the schema is local, and a remote one must
    # fail here rather than be fetched over the network.
    validator = validator_class(schema, registry=Registry())
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_compose_file_uses_the_specification_without_a_version_key(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose


def test_stack_is_guard_llm_and_guardproxy(compose: dict[str, Any]) -> None:
    default = [name for name, body in compose["services"].items() if not body.get("profiles")]
    assert sorted(default) == sorted(SERVICES)


@pytest.mark.parametrize("name", [*MODEL_SERVERS, *AGENTS_MODEL_SERVERS])
def test_model_server_reserves_an_nvidia_gpu(compose: dict[str, Any], name: str) -> None:
    devices = service(compose, name)["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device["capabilities"] for device in devices
    )


@pytest.mark.parametrize("name", [*SERVICES, *AGENTS_SERVICES])
def test_every_service_has_a_healthcheck(compose: dict[str, Any], name: str) -> None:
    healthcheck = service(compose, name)["healthcheck"]
    assert healthcheck["test"]
    assert not healthcheck.get("disable", False)


def test_proxy_waits_for_healthy_guard_and_llm(compose: dict[str, Any]) -> None:
    depends_on = service(compose, "guardproxy")["depends_on"]
    for name in MODEL_SERVERS:
        assert depends_on[name]["condition"] == "service_healthy"


@pytest.mark.parametrize(("variable", "target"), [("GUARD_URL", "guard"), ("UPSTREAM_URL", "llm")])
def test_proxy_reaches_each_model_server_by_service_name_and_port(
    compose: dict[str, Any], variable: str, target: str
) -> None:
    url = urlsplit(service(compose, "guardproxy")["environment"][variable])
    served_port = argument_after(service(compose, target)["command"], "--port")
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "http",
        target,
        int(served_port),
        "/v1",
    )


def test_guard_serves_the_model_name_the_proxy_asks_for(compose: dict[str, Any]) -> None:
    served = argument_after(service(compose, "guard")["command"], "--served-model-name")
    assert service(compose, "guardproxy")["environment"]["GUARD_MODEL"] == served


def test_proxy_refuses_to_start_without_an_api_key(compose: dict[str, Any]) -> None:
    api_key = service(compose, "guardproxy")["environment"]["GUARDPROXY_API_KEY"]
    assert api_key.startswith("${GUARDPROXY_API_KEY:?")


def test_proxy_is_built_from_the_deploy_dockerfile(compose: dict[str, Any]) -> None:
    build = service(compose, "guardproxy")["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_dockerfile_healthcheck_probes_healthz(dockerfile: list[tuple[str, str]]) -> None:
    healthchecks = [arguments for keyword, arguments in dockerfile if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/healthz" in healthchecks[0]


def test_dockerfile_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [arguments for keyword, arguments in dockerfile if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    assert users[-1].partition(":")[0] not in {"root", "0"}


def test_dockerfile_starts_guardproxy_serve(dockerfile: list[tuple[str, str]]) -> None:
    commands = [arguments for keyword, arguments in dockerfile if keyword == "CMD"]
    assert json.loads(commands[-1]) == PROXY_CMD


def test_dockerfile_exposes_the_port_compose_publishes(
    compose: dict[str, Any], dockerfile: list[tuple[str, str]]
) -> None:
    exposed = {arguments for keyword, arguments in dockerfile if keyword == "EXPOSE"}
    container_ports = {
        str(port).rpartition(":")[2] for port in service(compose, "guardproxy")["ports"]
    }
    assert container_ports == exposed == {"8080"}


def test_dockerfile_installs_the_extras_the_chart_uses(dockerfile: list[tuple[str, str]]) -> None:
    """PostgreSQL for replicas' shared audit database, OpenTelemetry, Redis: a build
    argument changes the set, and the install line expands it as `.[a,b]` (or `.`)."""
    args = dict(a.partition("=")[::2] for k, a in dockerfile if k == "ARG" and "=" in a)
    assert set(args["EXTRAS"].split(",")) == {"postgres", "otel", "redis"}
    installs = [a for k, a in dockerfile if k == "RUN" and "pip install" in a]
    assert any('".${EXTRAS:+[${EXTRAS}]}"' in line for line in installs)
    for extras, expected in (("postgres,otel,redis", ".[postgres,otel,redis]"), ("", ".")):
        shell = subprocess.run(
            ["sh", "-c", 'printf %s ".${EXTRAS:+[${EXTRAS}]}"'],
            env={"EXTRAS": extras}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert shell.stdout == expected
