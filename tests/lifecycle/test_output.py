"""What `eval` and `replay` print and write: latencies of a cached rerun, undefined scores,
support per category, why a replay has nothing to judge, and how much a rerun resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardproxy.cli import main
from guardproxy.lifecycle.report import markdown
from tests.conftest import TENANT_KEY, Proxy, ProxyFactory
from tests.lifecycle.test_eval import ROWS, write_jsonl
from tests.lifecycle.test_replay import CANDIDATE, diff, replay

SAFE_ONLY = [{"prompt": "hello there", "label": "safe"}, {"prompt": "nice day", "label": "safe"}]


@pytest.fixture
def proxy(start_proxy: ProxyFactory, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    return start_proxy()


def evaluate(tmp_path: Path, data: Path) -> dict[str, Any]:
    config, out = tmp_path / "guardproxy.yaml", tmp_path / "out"
    argv = ["eval", str(data), "--tenant", "acme", "--config", str(config), "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_a_fully_cached_rerun_reports_the_latencies_of_its_cache_record(
    proxy: Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "set.jsonl", ROWS)
    first = evaluate(tmp_path, data)["latency_ms"]
    capsys.readouterr()
    again = evaluate(tmp_path, data)
    assert again["guard_calls"] == 0
    assert again["latency_ms"] == first | {"cached": 7}  # the same numbers, from the record
    assert again["latency_ms"]["p50"] is not None
    printed = capsys.readouterr().out
    assert "7 of 7 from the verdict file" in printed
    assert "acme: 7 of 7 examples resumed from the verdict file" in printed


def test_scores_over_nothing_are_undefined_not_zero(proxy: Proxy, tmp_path: Path) -> None:
    report = evaluate(tmp_path, write_jsonl(tmp_path / "set.jsonl", SAFE_ONLY))
    overall = report["overall"]
    assert (overall["precision"], overall["recall"], overall["f1"]) == (None, None, None)
    assert overall["fpr"] == 0.0  # two safe rows, none blocked: defined, and right
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| overall | 2 | 0 | undefined | undefined | undefined | 0.0 |" in table


def test_f1_is_zero_where_precision_and_recall_are_both_zero() -> None:
    overall = {"n": 2, "support": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0, "fpr": 1.0}
    report: dict[str, Any] = {
        "overall": overall | {"errors": 0},
        "per_category": {},
        "latency_ms": {"p50": None, "p90": None, "p99": None, "n": 0, "cached": 0},
        "guard_calls": 0,
    }
    assert "| overall | 2 | 1 | 0.0 | 0.0 | 0.0 | 1.0 |" in markdown(report, "t")


def test_each_category_row_carries_its_support(proxy: Proxy, tmp_path: Path) -> None:
    report = evaluate(tmp_path, write_jsonl(tmp_path / "set.jsonl", ROWS))
    assert report["overall"]["support"] == 4  # the unsafe rows
    assert report["per_category"]["Violence"]["support"] == 3
    assert report["per_category"]["Criminal Planning/Confessions"]["support"] == 1
    # The guard names it, no row is labelled with it: precision 0.0, recall undefined.
    guns = report["per_category"]["Guns and Illegal Weapons"]
    assert (guns["support"], guns["precision"], guns["recall"]) == (0, 0.0, None)
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| Violence | 7 | 3 | 0.6667 | 0.6667 | 0.6667 | 0.25 |" in table


def test_a_comparison_with_an_undefined_side_is_undefined(proxy: Proxy, tmp_path: Path) -> None:
    allowed = {"Violence": "allow", "Guns and Illegal Weapons": "allow"}
    lenient: dict[str, Any] = {"tenant": "lenient", "extends": "acme", "keys": ["lenient-key"]}
    lenient |= {"input": {"categories": allowed}}
    (proxy.policies_dir / "lenient.yaml").write_text(yaml.safe_dump(lenient))
    data, out = write_jsonl(tmp_path / "set.jsonl", ROWS), tmp_path / "out"
    argv = ["eval", str(data), "--tenant", "acme", "--against", "lenient", "--out", str(out)]
    assert main([*argv, "--config", str(tmp_path / "guardproxy.yaml"), "--no-progress"]) == 0
    delta = json.loads((out / "compare.json").read_text())
    assert delta["Guns and Illegal Weapons"]["recall"] is None
    assert (
        "| Guns and Illegal Weapons | undefined | undefined |" in (out / "compare.md").read_text()
    )


def write_trail(proxy: Proxy, tmp_path: Path) -> None:
    for prompt in ("hello there", "how do I build a bomb"):
        proxy.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompt}]
        )
    proxy.record(2)
    trail = tmp_path / "trail.jsonl"
    trail.write_text("".join(json.dumps(r) + "\n" for r in proxy.audit.records))
    (tmp_path / "candidate.yaml").write_text(yaml.safe_dump(CANDIDATE))


def test_a_replay_of_a_tenant_without_content_says_audit_content_none_is_why(
    proxy: Proxy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_trail(proxy, tmp_path)
    assert replay(tmp_path, "--trail", str(tmp_path / "trail.jsonl")) == 1
    error = capsys.readouterr().err
    assert "tenant 'acme' has audit_content: none" in error
    assert "its 2 stored decisions keep no text" in error


def test_a_rerun_replay_says_how_many_exchanges_it_resumed(
    start_proxy: ProxyFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEST_TENANT_KEY", TENANT_KEY)
    write_trail(start_proxy(audit_content="full"), tmp_path)
    trail = ["--trail", str(tmp_path / "trail.jsonl")]
    assert replay(tmp_path, *trail) == 0
    assert "2 exchanges judged again (0 resumed" in capsys.readouterr().out
    assert replay(tmp_path, *trail) == 0
    printed = capsys.readouterr().out
    assert "resuming: 2 of 2 exchanges were judged before" in printed
    assert "2 exchanges judged again (2 resumed" in printed
    assert sum(diff(tmp_path)["counts"].values()) == 2
