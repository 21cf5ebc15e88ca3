"""`guardproxy admin serve`: the reviewer page and its API in a process of its own, over the
proxy's audit database, with no data plane."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from guardproxy.cli import main
from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies
from guardproxy.server.admin_app import create_admin_app
from tests.admin.conftest import ADMIN_KEY, Reviewed
from tests.admin.test_admin_http import signed_in
from tests.conftest import TENANT_KEY
from tests.fakes.server import run_in_thread
from tests.server.test_forwarded import FORGED, FORWARDED, served


@pytest.fixture
def admin_process(reviewed: Reviewed, tmp_path: Path) -> Iterator[str]:
    """The reviewer page alone, from the proxy's own config file."""
    env = {**os.environ, "TEST_TENANT_KEY": TENANT_KEY}
    settings = load_settings(tmp_path / "guardproxy.yaml", env)
    with run_in_thread(create_admin_app(settings, load_policies(settings, env))) as url:
        yield url


def test_the_admin_process_serves_the_page_and_api_over_the_proxys_trail(
    reviewed: Reviewed, admin_process: str
) -> None:
    guard_calls = len(reviewed.proxy.guard.requests)
    with signed_in(admin_process) as client:
        page = client.get("/admin/", params={"action": "block"}).text
        listed = client.get("/admin/api/decisions").json()
        one = client.get(f"/admin/api/decisions/{reviewed.blocked['bank']}").json()
        policies = client.get("/admin/policies", params={"tenant": "bank"})
    assert "2 decisions<" in page
    assert all(f"/admin/decisions/{request_id}" in page for request_id in reviewed.blocked.values())
    assert 'aria-label="Blocks per category, last 24 hours: ' in page
    assert 'class="chart-value">2</text>' in page  # both blocks, read from the rollups
    assert "Block rate per hour and mean guard time per tenant" in page
    assert listed["total"] == 4
    assert one["tenant"] == "bank"
    assert policies.status_code == 200
    assert len(reviewed.proxy.guard.requests) == guard_calls  # nothing here calls a guard


def test_the_admin_process_refuses_model_traffic_and_the_playground(
    reviewed: Reviewed, admin_process: str
) -> None:
    client = openai.OpenAI(base_url=f"{admin_process}/v1", api_key=TENANT_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError, match="relays no model traffic"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    client.close()
    with signed_in(admin_process) as browser:
        playground = browser.get("/admin/playground")
        ready = browser.get("/readyz")
    assert playground.status_code == 404
    assert "proxy's own reviewer page" in playground.text
    assert ready.json() == {"status": "ready", "database": "ok"}


@pytest.mark.parametrize(("trusted", "recorded"), [([], "127.0.0.1"), (["127.0.0.1/32"], FORGED)])
def test_admin_serve_takes_a_forwarded_client_only_from_a_trusted_proxy(
    tmp_path: Path, trusted: list[str], recorded: str
) -> None:
    """The access log's address and the cookie's `Secure` follow `trusted_proxies` alone,
    whatever uvicorn's own variable says."""
    audit = {"path": "-", "database": f"sqlite:///{tmp_path / 'audit.db'}"}
    path = write_reviewer_config(tmp_path, {"audit": audit, "trusted_proxies": trusted})
    argv = ["admin", "serve", "--config", str(path)]
    with served(tmp_path, argv, {"FORWARDED_ALLOW_IPS": "*"}) as url:
        login = httpx.post(f"{url}/admin/login", data={"key": ADMIN_KEY}, headers=FORWARDED)
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        (event,) = httpx.get(f"{url}/admin/api/access", headers=headers).json()["data"]
    assert (event["event"], event["address"]) == ("sign_in", recorded)
    assert ("; secure" in login.headers["set-cookie"].lower()) == bool(trusted)


def write_reviewer_config(folder: Path, extra: dict[str, object]) -> Path:
    """A config whose guard and upstream are never called: the reviewer page alone reads it."""
    (folder / "policies").mkdir()
    tenant = {"tenant": "acme", "keys": [TENANT_KEY], "guard": "g", "upstream": "app"}
    (folder / "policies" / "acme.yaml").write_text(yaml.safe_dump(tenant))
    config = {
        "guards": {"g": {"url": "http://127.0.0.1:9/v1", "model": "m"}},
        "upstreams": {"app": {"url": "http://127.0.0.1:9/v1"}},
        "policies": "policies",
        "admin": {"keys": [ADMIN_KEY]},
        **extra,
    }
    path = folder / "guardproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_admin_serve_without_an_audit_database_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_reviewer_config(tmp_path, {})
    assert main(["admin", "serve", "--config", str(path), "--port", "9"]) == 1
    said = capsys.readouterr().err.strip()
    assert "admin serve needs audit.database" in said
    assert "\n" not in said
