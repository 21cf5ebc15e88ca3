"""Config and policy files: interpolation, validation, and errors that name file and line."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from guardproxy.config import load_settings
from guardproxy.errors import AuthenticationError, ConfigError
from guardproxy.policy.loader import load_policies
from guardproxy.yamlfile import InvalidConfig, parse_yaml

CONFIG = """\
guards:
  nemotron: {url: "${GUARD_URL:-http://guard:8000/v1}", model: m}
upstreams:
  app: {url: http://llm/v1, api_key: "${UPSTREAM_KEY}"}
policies: policies
"""
TENANT = """\
tenant: acme
keys: ["${ACME_KEY}", "sha256:%s"]
guard: nemotron
upstream: app
"""
DIGEST_OF_SECRET = (
    "d426d98392bc5954b2b1ec594b75377940e66769f8693ebecde5f78296846d5d"  # of "hashed-s3cret-key"
)


def make_config(tmp_path: Path, config: str = CONFIG, **tenants: str) -> Path:
    (tmp_path / "policies").mkdir()
    for name, text in (tenants or {"acme": TENANT % DIGEST_OF_SECRET}).items():
        (tmp_path / "policies" / f"{name}.yaml").write_text(text)
    path = tmp_path / "guardproxy.yaml"
    path.write_text(config)
    return path


ENV = {"UPSTREAM_KEY": "up", "ACME_KEY": "sk-acme"}


def test_environment_references_are_interpolated_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(make_config(tmp_path), ENV)
    assert settings.guards["nemotron"].url == "http://guard:8000/v1"
    assert settings.upstreams["app"].api_key == "up"


def test_unset_variable_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert str(caught.value) == f"{path}:4: environment variable UPSTREAM_KEY is not set"


def test_environment_values_cannot_inject_yaml() -> None:
    document = parse_yaml("a: ${X}\n", "f.yaml", {"X": "1\nb: 2"})
    assert document.data == {"a": "1\nb: 2"}


def test_unknown_key_and_bad_choice_are_reported_with_lines(tmp_path: Path) -> None:
    config = CONFIG.replace("model: m}", "model: m, protocol: llama}") + "colour: blue\n"
    with pytest.raises(InvalidConfig) as caught:
        load_settings(make_config(tmp_path, config), ENV)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{tmp_path / 'guardproxy.yaml'}:2: guards.nemotron.protocol:")
    assert lines[1] == f"{tmp_path / 'guardproxy.yaml'}:6: colour: unknown key"


def test_duplicate_yaml_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"f.yaml:2: duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", "f.yaml", {})


def test_upstream_needs_exactly_one_kind(tmp_path: Path) -> None:
    config = CONFIG.replace("{url: http://llm/v1, ", "{url: http://llm/v1, litellm_model: x, ")
    with pytest.raises(InvalidConfig, match="exactly one of 'url' or 'litellm_model'"):
        load_settings(make_config(tmp_path, config), ENV)


def test_policies_authenticate_literal_and_hashed_keys(tmp_path: Path) -> None:
    settings = load_settings(make_config(tmp_path), ENV)
    policies = load_policies(settings, ENV)
    assert policies.authenticate("Bearer sk-acme").tenant == "acme"
    assert policies.authenticate("bearer hashed-s3cret-key").tenant == "acme"
    for header in (None, "", "Bearer ", "Basic sk-acme", "Bearer sk-other"):
        with pytest.raises(AuthenticationError):
            policies.authenticate(header)


def test_empty_key_is_refused_so_the_proxy_is_never_open(tmp_path: Path) -> None:
    path = make_config(tmp_path)
    settings = load_settings(path, ENV)
    with pytest.raises(InvalidConfig, match=r"acme\.yaml:2: keys: a key is empty"):
        load_policies(settings, {**ENV, "ACME_KEY": ""})


@pytest.mark.parametrize("key", ["change-me", "CHANGEME", "sha256:" + "0" * 64])
def test_a_well_known_placeholder_key_is_refused(tmp_path: Path, key: str) -> None:
    if key.startswith("sha256:"):  # the digest of a placeholder is as weak as the placeholder
        key = "sha256:" + hashlib.sha256(b"change-me").hexdigest()
    path = make_config(tmp_path)
    with pytest.raises(InvalidConfig, match=r"keys: a key is a well-known placeholder"):
        load_policies(load_settings(path, ENV), {**ENV, "ACME_KEY": key})


def test_policy_problems_are_collected_across_files(tmp_path: Path) -> None:
    bad_refs = "tenant: one\nkeys: [k1]\nguard: nope\nupstream: gone\n"
    shared_key = "tenant: two\nkeys: [k1]\nguard: nemotron\nupstream: app\non_block: shout\n"
    path = make_config(tmp_path, one=bad_refs, two=shared_key)
    with pytest.raises(InvalidConfig) as caught:
        load_policies(load_settings(path, ENV), ENV)
    problems = [p.message for p in caught.value.problems]
    assert problems == [
        "on_block: Input should be 'refusal' or 'error'",
        "guard: unknown guard 'nope'",
        "upstream: unknown upstream 'gone'",
    ]
    lines = [p.line for p in caught.value.problems]
    assert lines == [5, 3, 4]


def test_a_key_shared_by_two_tenants_is_refused(tmp_path: Path) -> None:
    one = "tenant: one\nkeys: [k1]\nguard: nemotron\nupstream: app\n"
    two = "tenant: two\nkeys: [k2, k1]\nguard: nemotron\nupstream: app\n"
    path = make_config(tmp_path, one=one, two=two)
    with pytest.raises(
        InvalidConfig, match=r"two.yaml:2: keys: key 2 is also a key of tenant 'one'"
    ):
        load_policies(load_settings(path, ENV), ENV)


def test_packaged_default_requires_the_proxy_key() -> None:
    from importlib import resources

    path = Path(str(resources.files("guardproxy") / "defaults" / "guardproxy.yaml"))
    settings = load_settings(path, {})
    with pytest.raises(ConfigError, match="GUARDPROXY_API_KEY is not set"):
        load_policies(settings, {})
    policies = load_policies(settings, {"GUARDPROXY_API_KEY": "k"})
    assert policies.authenticate("Bearer k").tenant == "default"


@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "Host", "api-key", "cookie"])
def test_forward_headers_never_carry_credentials_or_the_host(tmp_path: Path, header: str) -> None:
    config = CONFIG.replace(
        'api_key: "${UPSTREAM_KEY}"}',
        f'api_key: "${{UPSTREAM_KEY}}", forward_headers: [{header}]}}',
    )
    with pytest.raises(ConfigError, match="never forwarded"):
        load_settings(make_config(tmp_path, config), {"UPSTREAM_KEY": "k"})
