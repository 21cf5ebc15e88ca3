"""The `guardproxy` command: check and classify, as a user runs them."""

from __future__ import annotations

import base64
import importlib.machinery
import importlib.util
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from guardproxy.cli import main
from tests.conftest import TENANT_KEY, write_config
from tests.fakes.guard import FakeGuardState, create_fake_guard
from tests.fakes.server import run_in_thread


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def tenant_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TENANT_KEY", "sk-test")


def test_check_accepts_a_valid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    assert main(["check", "--config", str(path)]) == 0
    assert "1 tenant(s): acme" in capsys.readouterr().out


def test_check_prints_file_line_errors_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    (tmp_path / "policies" / "broken.yaml").write_text("tenant: b\nkeys: [x]\nguard: g\n")
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    broken = tmp_path / "policies" / "broken.yaml"
    assert err == [f"{broken}:1: upstream: Field required"]


def test_classify_prints_the_verdict_and_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "pixel.png"
    image.write_bytes(png())
    state = FakeGuardState()
    with run_in_thread(create_fake_guard(state)) as guard_url:
        path = write_config(tmp_path, guard_url, "http://u", "nemotron-content-safety", {})
        args = ["classify", "--config", str(path), "--tenant", "acme", "--image", str(image)]
        assert main([*args, "--response", "Here is how to steal a car", "hello"]) == 0
    out = capsys.readouterr().out
    assert "response:   unsafe" in out
    assert "categories: Criminal Planning/Confessions" in out
    assert "decision:   block" in out
    expected = "data:image/png;base64," + base64.b64encode(png()).decode()
    assert state.requests[0].check.image_url == expected


def test_classify_unknown_tenant_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    assert main(["classify", "--config", str(path), "--tenant", "nobody", "hi"]) == 2


def test_classify_reports_a_bad_image_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {})
    args = ["classify", "--config", str(path), "--tenant", "acme", "--image", str(broken), "hi"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("--image: ")


@pytest.mark.parametrize(
    ("extra", "module", "config"),
    [
        ("postgres", "asyncpg", {"audit": {"database": "postgresql+asyncpg://gp@db/gp"}}),
        ("redis", "redis", {"cache": {"redis": "redis://cache:6379/0"}}),
        ("otel", "opentelemetry.sdk", {"tracing": {"enabled": True}}),
    ],
)
def test_a_missing_extra_is_one_line_naming_what_to_install(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    module: str,
    config: dict[str, Any],
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    path = write_config(tmp_path, "http://g", "http://u", "nemotron-content-safety", {},
                        config_extra=config)  # fmt: skip
    assert main(["check", "--config", str(path)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(f"needs the '{extra}' extra: pip install 'guardproxy[{extra}]'")


@pytest.mark.parametrize(
    ("guard_url", "vllm", "expected"),
    [
        (None, True, "guard nemotron: nvidia/Nemotron-3.5-Content-Safety (embedded vllm engine)"),
        ("http://gpu:8001/v1", True, "guard nemotron: nvidia/Nemotron-3.5-Content-Safety (http://gpu:8001/v1)"),
        (None, False, "guard nemotron: nvidia/Nemotron-3.5-Content-Safety (http://guard:8000/v1)"),
    ],
)  # fmt: skip
def test_the_built_in_config_runs_the_guard_itself_on_a_box_with_vllm(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    guard_url: str | None,
    vllm: bool,
    expected: str,
) -> None:
    """No GUARD_URL and vLLM installed (`guardproxy[engine]`): `guardproxy serve` alone
    starts Nemotron 3.5 as its embedded engine. A GUARD_URL always wins."""
    real = importlib.util.find_spec
    installed = importlib.machinery.ModuleSpec("vllm", None)

    def find_spec(name: str, *args: Any) -> Any:
        if name == "vllm":
            return installed if vllm else None
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.chdir(tmp_path)  # no ./guardproxy.yaml here
    monkeypatch.setenv("GUARDPROXY_API_KEY", TENANT_KEY)
    monkeypatch.delenv("GUARD_URL", raising=False)
    if guard_url is not None:
        monkeypatch.setenv("GUARD_URL", guard_url)
    assert main(["check"]) == 0
    assert expected in capsys.readouterr().out.splitlines()
