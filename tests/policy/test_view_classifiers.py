"""`guardproxy policy show` for text classifiers: the path and bodies they really receive."""

from __future__ import annotations

import json
from pathlib import Path

from guardproxy.config import load_settings
from guardproxy.core.verdict import Direction
from guardproxy.policy.loader import load_policies
from guardproxy.policy.view import show_guard_request
from tests.policy.test_loader import folder

GUARDS = """\
guards:
  nemotron: {url: "http://guard:8000/v1", model: "nemotron"}
  injection:
    url: "http://prompt-guard:8000/"
    model: "meta-llama/Prompt-Guard-86M"
    protocol: "vllm-classify"
    labels: ["BENIGN", "INJECTION", "JAILBREAK"]
    unsafe_labels: ["INJECTION", "JAILBREAK"]
  jailbreak:
    url: "http://jailbreak-detect:8000/v1"
    model: "nemoguard-jailbreak-detect"
    protocol: "nemoguard-jailbreak"
upstreams: {u: {url: "http://u/v1"}}
"""
CHAIN = """\
tenant: "agents"
keys: ["k"]
upstream: "u"
guards:
  - "nemotron"
  - {guard: "injection", turns: ["user", "tool"]}
  - {guard: "jailbreak", output: true}
"""


def shown(tmp_path: Path, direction: Direction) -> list[str]:
    path = folder(tmp_path, {"agents.yaml": CHAIN})
    path.write_text(GUARDS)
    settings = load_settings(path, {})
    policies = load_policies(settings, {})
    tenant = policies.tenants["agents"]
    return show_guard_request(settings, tenant, policies, None, direction).splitlines()


def body_after(lines: list[str], call: str) -> object:
    """The JSON body printed under the `# call ...` line `call`."""
    start = lines.index(call) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return json.loads("\n".join(lines[start:end]))


def test_a_vllm_classifier_is_shown_its_classify_request_not_a_chat_completion(
    tmp_path: Path,
) -> None:
    lines = shown(tmp_path, Direction.INPUT)
    call = "# call 1: POST http://prompt-guard:8000/classify"
    assert body_after(lines, call) == {
        "model": "meta-llama/Prompt-Guard-86M",
        "input": ["<the user's last turn>"],
    }
    assert "guard injection (vllm-classify)" in "\n".join(lines)


def test_the_jailbreak_nim_is_shown_one_body_per_segment_at_its_classify_path(
    tmp_path: Path,
) -> None:
    lines = shown(tmp_path, Direction.INPUT)
    call = "# call 1: POST http://jailbreak-detect:8000/v1/classify"
    assert body_after(lines, call) == {"input": "<the user's last turn>"}


def test_each_guard_of_the_chain_is_shown_and_the_chat_guard_keeps_its_path(
    tmp_path: Path,
) -> None:
    text = "\n".join(shown(tmp_path, Direction.INPUT))
    headers = [line for line in text.splitlines() if line.startswith("# tenant agents")]
    assert [h.split(", guard ")[1].split(" ")[0] for h in headers] == [
        "nemotron",
        "injection",
        "jailbreak",
    ]
    assert "# call 1: POST http://guard:8000/v1/chat/completions" in text
    assert text.count("/chat/completions") == 1


def test_the_output_check_shows_only_guards_that_judge_answers(tmp_path: Path) -> None:
    lines = shown(tmp_path, Direction.OUTPUT)
    text = "\n".join(lines)
    assert "guard injection" not in text  # a classifier judges no answers unless told
    call = "# call 1: POST http://jailbreak-detect:8000/v1/classify"
    assert body_after(lines, call) == {"input": "<the model's answer>"}
