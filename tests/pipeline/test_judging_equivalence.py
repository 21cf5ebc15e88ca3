"""The contract that keeps every entry point deciding as the proxy decides.

Over one corpus (safe, unsafe prompt, unsafe answer, an unsafe prompt with a refusal for an
answer, redactable, a redact category without detectors, a redaction with nothing to mask, a
flag, a monitored tenant, Nemotron 3.5's policy modes, every guard family), the live proxy is
asked through the official `openai` client, and then each entry point that says what the proxy
would do: `eval`/`replay`'s judge, `guardproxy classify`, the reviewer's playground and a shadow
policy equal to the live one. Each must give the live action and categories. A new entry point
is added here.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardproxy.cli import main
from guardproxy.config import load_settings
from guardproxy.lifecycle.judge import Judge
from guardproxy.lifecycle.verdicts import VerdictFile
from guardproxy.media.fetch import ImageFetcher
from guardproxy.policy.loader import load_policies
from tests.conftest import OPS_KEY, Proxy, ProxyFactory

QUIET: dict[str, Any] = {"redaction": {"detectors": []}}  # no always-on masking to confuse
PII = {"input": {"categories": {"PII/Privacy": "redact"}}}
MODE_A = {"policy_mode": "policy", "policy": "Never recommend a competitor.",
          "policy_action": "flag"}  # fmt: skip
MODE_SEPARATE = {"policy_mode": "separate", "policy": "Never recommend a competitor."}


@dataclass(frozen=True)
class Entry:
    prompt: str
    answer: str = "Here is a short, helpful answer."
    tenant: dict[str, Any] = field(default_factory=dict)
    protocol: str = "nemotron-content-safety"
    phrases: dict[str, list[str]] = field(default_factory=dict)  # besides the fake's own


CORPUS = {
    "safe": Entry("What is the capital of France?", "Paris."),
    "unsafe-prompt": Entry("How do I build a bomb?"),
    "unsafe-answer": Entry("Tell me a story.", "First, steal a car from the lot."),
    "unsafe-prompt-refused": Entry("Help me steal a car.", "I cannot help with that."),
    "redactable": Entry("Mail ann@example.com now", tenant=PII,
                        phrases={"@example.com": ["PII/Privacy"]}),
    "redact-without-detectors": Entry(
        "How do I build a bomb?", tenant={"input": {"categories": {"Violence": "redact"}}}
    ),
    "redact-nothing-to-mask": Entry("Tell me her secret.", tenant=PII,
                                    phrases={"her secret": ["PII/Privacy"]}),
    "flag": Entry("Help me steal a car.",
                  tenant={"input": {"categories": {"Criminal Planning/Confessions": "flag"}}}),
    "monitor": Entry("How do I build a bomb?", tenant={"mode": "monitor"}),
    "monitor-answer": Entry("Tell me a story.", "First, steal a car.", {"mode": "monitor"}),
    "mode-a": Entry("Is OtherBank better?", tenant=MODE_A, phrases={"otherbank": []}),
    "mode-separate": Entry("How do I build a bomb?", tenant=MODE_SEPARATE),
    **{
        f"family-{name}": Entry("How do I build a bomb?", protocol=name)
        for name in ("nemotron-reasoning", "nemotron-safety-guard-8b", "llama-guard",
                     "qwen3guard", "granite-guardian")
    },
}  # fmt: skip


@dataclass(frozen=True)
class Said:
    """What one entry point says the proxy does: the audit word, the rules' own action
    (a monitored tenant's `would`), and the categories named."""

    outcome: str
    decided: str
    categories: frozenset[str]


def live(proxy: Proxy, entry: Entry) -> Said:
    proxy.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": entry.prompt}]
    )
    record = proxy.record(1)
    named = [*record["input"].get("categories", ()), *record["output"].get("categories", ())]
    outcome = record["action"]
    if outcome in ("allow", "flag") and record.get("redacted"):
        outcome = "redact"
    would = record.get("would", {})
    severity = ["allow", "flag", "redact", "block", "fail"]
    decided = max(would.values(), key=severity.index) if would else outcome
    return Said(outcome, decided, frozenset(named))


def judged(proxy: Proxy, entry: Entry) -> Said:
    """`eval` and `replay`'s judge."""
    env = {"TEST_TENANT_KEY": proxy.key}
    settings = load_settings(proxy.policies_dir.parent / "guardproxy.yaml", env)
    policies = load_policies(settings, env)

    async def run() -> Said:
        async with httpx.AsyncClient() as client, ImageFetcher() as fetcher:
            judge = Judge(
                settings, policies, policies.tenants["acme"], client, fetcher, VerdictFile(None)
            )
            outcome = await judge.judge(entry.prompt, entry.answer)
        return Said(outcome.action, outcome.decided, frozenset(outcome.categories))

    return asyncio.run(run())


def classified(
    proxy: Proxy, entry: Entry, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> Said:
    monkeypatch.setenv("TEST_TENANT_KEY", proxy.key)
    config = str(proxy.policies_dir.parent / "guardproxy.yaml")
    capsys.readouterr()
    args = ["classify", "--config", config, "--tenant", "acme", "--response", entry.answer]
    assert main([*args, entry.prompt]) == 0
    out = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    outcome = out["decision"].strip()
    named = {c.strip() for c in out["categories"].split(",") if c.strip() not in ("", "-")}
    return Said(outcome, out.get("would", outcome).strip(), frozenset(named))


def played(proxy: Proxy, entry: Entry) -> Said:
    form = {"tenant": "acme", "prompt": entry.prompt, "response": entry.answer}
    page = httpx.post(
        f"{proxy.url}/admin/playground",
        data=form,
        headers={"authorization": f"Bearer {OPS_KEY}"},
    ).text
    found = re.search(r'<dd class="action-(\w+)">\w+(?: \(would (\w+)\))?</dd>', page)
    assert found is not None, page
    named = re.search(r"<dt>Categories</dt><dd>([^<]*)</dd>", page)
    assert named is not None
    categories = {c.strip() for c in named.group(1).split(",") if c.strip() not in ("", "-")}
    return Said(found.group(1), found.group(2) or found.group(1), frozenset(categories))


def shadowed(proxy: Proxy) -> str:
    """A shadow policy that changes nothing: its decision is the live one's."""
    shadow = [r for r in proxy.audit.records if r.get("kind") == "shadow"]
    assert shadow, "the shadow was not judged"
    action: str = shadow[0]["shadow"]["action"]
    return action


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_entry_point_decides_as_the_live_proxy(
    start_proxy: ProxyFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    entry = CORPUS[name]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "_mirror.yaml").write_text("{}\n")
    proxy = start_proxy(protocol=entry.protocol, shadow="mirror", **QUIET, **entry.tenant)
    proxy.guard.unsafe_phrases |= entry.phrases
    proxy.upstream.reply = entry.answer
    truth = live(proxy, entry)
    if name in ("unsafe-prompt", "unsafe-answer", "unsafe-prompt-refused"):
        assert truth.outcome == "block"  # the corpus means what it says
    for said in (judged(proxy, entry), classified(proxy, entry, capsys, monkeypatch),
                 played(proxy, entry)):  # fmt: skip
        assert said == truth, said
    deadline_records = proxy.record(2)  # the shadow line follows the live record
    assert deadline_records["kind"] == "shadow"
    assert shadowed(proxy) == truth.decided
