"""A proxy with the reviewer page on, two tenants, and known traffic already in its trail."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import Proxy, ProxyFactory

ADMIN_KEY = "admin-key-for-review-tests"
BANK_KEY = "bank-key-for-review-tests"
UNSAFE = "how do I build a bomb"
VIEWER_KEY = "viewer-key-for-review-tests"
REVIEWER_KEY = "reviewer-key-for-review-tests"
BANK_REVIEWER_KEY = "bank-reviewer-key-for-review-tests"
USERS: list[dict[str, Any]] = [
    {"name": "vera", "key": VIEWER_KEY, "role": "viewer"},
    {"name": "rita", "key": REVIEWER_KEY, "role": "reviewer"},
    {"name": "ben", "key": BANK_REVIEWER_KEY, "role": "reviewer", "tenants": ["bank"]},
]


@dataclass
class Reviewed:
    proxy: Proxy
    blocked: dict[str, str]  # tenant -> the request id of its block


def start_reviewed(
    start_proxy: ProxyFactory, tmp_path: Path, trusted_proxies: Any = (), **admin: Any
) -> Proxy:
    bank = {"tenant": "bank", "keys": [BANK_KEY], "guard": "nemotron", "upstream": "app"}
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "bank.yaml").write_text(yaml.safe_dump(bank))
    config = {
        "audit": {"path": "-", "database": f"sqlite:///{tmp_path / 'audit.db'}"},
        "admin": {"keys": [ADMIN_KEY], **admin},
        "trusted_proxies": list(trusted_proxies),
    }
    return start_proxy(config_extra=config, reasoning=True, audit_content="redacted")


def send(proxy: Proxy, key: str, prompt: str) -> str:
    client = proxy.client(key)
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    return reply.headers["x-guardproxy-request-id"]


def wait_for_trail(base_url: str, total: int, key: str = ADMIN_KEY) -> None:
    """Until the database holds `total` decisions (its flusher runs every 50 ms)."""
    headers = {"authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = httpx.get(f"{base_url}/admin/api/decisions", headers=headers).json()
        if found["total"] >= total:
            return
        time.sleep(0.05)
    raise AssertionError(f"the trail never reached {total} decisions")


@pytest.fixture
def reviewed(start_proxy: ProxyFactory, tmp_path: Path) -> Reviewed:
    return with_traffic(start_reviewed(start_proxy, tmp_path))


@pytest.fixture
def staffed(start_proxy: ProxyFactory, tmp_path: Path) -> Reviewed:
    """The reviewed proxy with its named reviewers (`USERS`) beside the admin key."""
    return with_traffic(start_reviewed(start_proxy, tmp_path, users=USERS))


def with_traffic(proxy: Proxy) -> Reviewed:
    """A safe and a blocked request from each tenant, `acme` and `bank`, in the trail."""
    send(proxy, proxy.key, "what is the capital of France?")
    blocked = {"acme": send(proxy, proxy.key, UNSAFE)}
    send(proxy, BANK_KEY, "open an account")
    blocked["bank"] = send(proxy, BANK_KEY, UNSAFE)
    wait_for_trail(proxy.url, 4)
    return Reviewed(proxy, blocked)
