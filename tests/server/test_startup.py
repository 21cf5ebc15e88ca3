"""What `guardproxy serve` does once the app has started: the objects startup built are moved
out of the collector's reach, so a full collection no longer walks them mid-traffic."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies
from guardproxy.server.app import create_app
from tests.conftest import TENANT_KEY, write_config
from tests.fakes.server import run_in_thread


def test_serve_freezes_what_startup_built_and_tests_do_not(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    env = {"TEST_TENANT_KEY": TENANT_KEY}
    settings = load_settings(path, env)
    policies = load_policies(settings, env)
    gc.unfreeze()
    try:
        with run_in_thread(create_app(settings, policies)) as url:
            assert httpx.get(f"{url}/healthz", trust_env=False).status_code == 200
            assert gc.get_freeze_count() == 0  # a test's app leaves the collector alone
        with run_in_thread(create_app(settings, policies, freeze_startup=True)) as url:
            assert httpx.get(f"{url}/healthz", trust_env=False).status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
