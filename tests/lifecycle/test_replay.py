"""`guardproxy replay`: recorded traffic judged again under a candidate policy, as a decision
diff, from the JSON-lines trail or the audit database; interrupted and resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardproxy.cli import main
from guardproxy.lifecycle.judge import Judge
from tests.audit.test_e2e_audit import stored
from tests.conftest import TENANT_KEY, Proxy, ProxyFactory

PROMPTS = ["hello there", "how do I build a bomb", "help me steal a car"]
LIVE = {"categories": {"Criminal Planning/Confessions": "allow"}}
CANDIDATE = {
    "extends": "acme",
    "input": {
        "categories": {
            "Violence": "allow",
            "Guns and Illegal Weapons": "allow",
            "Criminal Planning/Confessions": "block",
        }
    },
}


@pytest.fixture
def recorded(
    start_proxy: ProxyFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Proxy, list[str]]:
    """Three exchanges, captured in full: allowed, blocked, and allowed by a category rule."""
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    database = tmp_path / "audit.db"
    audit = {"path": "-", "database": f"sqlite:///{database}"}
    proxy = start_proxy(config_extra={"audit": audit}, audit_content="full", input=LIVE)
    ids = []
    for prompt in PROMPTS:
        reply = proxy.client().chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": prompt}]
        )
        ids.append(reply.headers["x-guardproxy-request-id"])
    trail = tmp_path / "trail.jsonl"
    trail.write_text("".join(json.dumps(r) + "\n" for r in proxy.audit.records))
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(CANDIDATE))
    return proxy, ids


def replay(tmp_path: Path, *extra: str) -> int:
    argv = ["replay", "--tenant", "acme", "--policy", str(tmp_path / "candidate.yaml")]
    argv += ["--config", str(tmp_path / "guardproxy.yaml"), "--out", str(tmp_path / "diff.json")]
    return main([*argv, "--no-progress", *extra])


def diff(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((tmp_path / "diff.json").read_text())
    return result


def test_the_diff_counts_each_move_with_request_ids_and_categories(
    recorded: tuple[Proxy, list[str]], tmp_path: Path
) -> None:
    _, (_, bomb, car) = recorded
    assert replay(tmp_path, "--trail", str(tmp_path / "trail.jsonl")) == 0
    result = diff(tmp_path)
    assert result["counts"] == {"allow->allow": 1, "allow->block": 1, "block->allow": 1}
    changed = {e["request_id"]: e for e in result["changed"]}
    assert set(changed) == {bomb, car}
    assert (changed[bomb]["from"], changed[bomb]["to"]) == ("block", "allow")
    assert changed[bomb]["categories"] == ["Violence", "Guns and Illegal Weapons"]
    assert changed[car]["categories"] == ["Criminal Planning/Confessions"]


def test_the_audit_database_is_read_when_configured(
    recorded: tuple[Proxy, list[str]], tmp_path: Path
) -> None:
    _, ids = recorded
    stored(tmp_path / "audit.db", ids[-1])  # the database sink has flushed all three
    assert replay(tmp_path) == 0
    assert diff(tmp_path)["counts"] == {"allow->allow": 1, "allow->block": 1, "block->allow": 1}


def test_an_interrupted_replay_resumes_without_judging_again(
    recorded: tuple[Proxy, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, _ = recorded
    real = Judge.judge
    calls = 0

    async def interrupted(self: Judge, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # hello (its input, then its answer), then Ctrl-C on the bomb
            raise KeyboardInterrupt
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Judge, "judge", interrupted)
    trail = ["--trail", str(tmp_path / "trail.jsonl"), "--concurrency", "1"]
    assert replay(tmp_path, *trail) == 130
    state = (tmp_path / "diff.json.state").read_text().splitlines()
    assert len(state) == 1  # hello is done and kept
    monkeypatch.setattr(Judge, "judge", real)
    before = len(proxy.guard.requests)
    assert replay(tmp_path, *trail) == 0
    assert len(proxy.guard.requests) - before == 2  # bomb and car only: one input check each
    assert sum(diff(tmp_path)["counts"].values()) == 3


def test_since_and_until_narrow_the_replay(
    recorded: tuple[Proxy, list[str]], tmp_path: Path
) -> None:
    trail = ["--trail", str(tmp_path / "trail.jsonl")]
    assert replay(tmp_path, *trail, "--since", "2999-01-01T00:00:00") == 0
    assert diff(tmp_path) == {"counts": {}, "changed": []}


def test_a_candidate_guard_of_tool_results_is_said_not_judged_again(
    recorded: tuple[Proxy, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The trail keeps the prompt and the answer, never the tool results before them."""
    tool_only = CANDIDATE | {"guards": [{"guard": "nemotron", "turns": ["tool"]}]}
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(tool_only))
    capsys.readouterr()
    assert replay(tmp_path, "--trail", str(tmp_path / "trail.jsonl")) == 0
    assert diff(tmp_path)["not_run"] == ["nemotron (turns: tool)"]
    said = "nemotron (turns: tool): not run on the input, which carries none of the turns it judges"
    assert f"not judged again: {said} (the trail keeps none)" in capsys.readouterr().out
