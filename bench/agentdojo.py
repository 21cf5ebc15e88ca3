"""AgentDojo's suites and injection attacks through guardproxy, with and without a guard chain.

    pip install agentdojo==0.1.35   # not a guardproxy dependency
    GUARDPROXY_KEY_WITHOUT=... GUARDPROXY_KEY_WITH=... python -m bench.agentdojo \\
        --base-url http://127.0.0.1:8080/v1 --model MODEL [--suites banking slack] \\
        [--attack important_instructions] [--user-tasks user_task_0] [--injection-tasks ...]

Two tenants of one proxy, told apart by their keys: `without` (the tenant's checks as they
are, or none) and `with` (the chain, e.g. content safety plus an injection classifier on user
and tool turns). Each suite runs once without injections (utility) and once under the attack
(utility under attack and attack success rate, AgentDojo's targeted ASR), per tenant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ARMS = ("without", "with")
KEY_ENV = "GUARDPROXY_KEY_{}"  # the tenant key of each arm, read from the environment


def pipeline(base_url: str, key: str, model: str, arm: str) -> Any:
    """AgentDojo's tool-calling agent against guardproxy; the name says "local" so attacks
    that address the model by name call it "Local model"."""
    import openai
    from agentdojo.agent_pipeline import (
        AgentPipeline,
        InitQuery,
        OpenAILLM,
        SystemMessage,
        ToolsExecutionLoop,
        ToolsExecutor,
    )
    from agentdojo.agent_pipeline.agent_pipeline import load_system_message

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    llm = OpenAILLM(client, model)
    elements = [SystemMessage(load_system_message(None)), InitQuery(), llm]
    agent = AgentPipeline([*elements, ToolsExecutionLoop([ToolsExecutor(), llm])])
    agent.name = f"local-guardproxy-{arm}"
    return agent


def rate(results: dict[Any, bool]) -> float | None:
    return round(statistics.mean(results.values()), 3) if results else None


def run_suite(agent: Any, suite: Any, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    from agentdojo.attacks import load_attack
    from agentdojo.benchmark import (
        benchmark_suite_with_injections,
        benchmark_suite_without_injections,
    )

    version = args.benchmark_version
    plain = benchmark_suite_without_injections(
        agent, suite, logdir, True, args.user_tasks, benchmark_version=version
    )
    attack = load_attack(args.attack, suite, agent)
    attacked = benchmark_suite_with_injections(
        agent, suite, attack, logdir, True, args.user_tasks, args.injection_tasks, False, version
    )
    return {
        "utility": rate(plain["utility_results"]),
        "utility_under_attack": rate(attacked["utility_results"]),
        # AgentDojo's security result is True where the injection task was carried out.
        "attack_success_rate": rate(attacked["security_results"]),
        "runs": len(attacked["security_results"]),
    }


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from agentdojo.logging import OutputLogger
    from agentdojo.task_suite.load_suites import get_suite

    results: dict[str, dict[str, Any]] = {}
    with OutputLogger(str(args.logdir)):
        for name in args.suites:
            suite = get_suite(args.benchmark_version, name)
            for arm in ARMS:
                url = args.base_url_with if arm == "with" and args.base_url_with else args.base_url
                key = os.environ[KEY_ENV.format(arm.upper())]
                agent = pipeline(url, key, args.model, arm)
                results[f"{name}/{arm}"] = run_suite(agent, suite, args, args.logdir / arm)
    return results


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| suite | chain | utility | utility under attack | attack success rate | runs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, row in results.items():
        suite, arm = key.split("/")
        cells = [row["utility"], row["utility_under_attack"], row["attack_success_rate"]]
        lines.append(f"| {suite} | {arm} | " + " | ".join(map(str, cells)) + f" | {row['runs']} |")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True, help="guardproxy's OpenAI URL, with /v1")
    parser.add_argument("--base-url-with", help="another proxy for the chain (default: the same)")
    parser.add_argument("--model", required=True, help="the upstream model's name")
    parser.add_argument("--suites", nargs="+", default=["workspace", "travel", "banking", "slack"])
    parser.add_argument("--attack", default="important_instructions")
    parser.add_argument("--benchmark-version", default="v1.2.2")
    parser.add_argument("--user-tasks", nargs="+", help="a subset of user task ids")
    parser.add_argument("--injection-tasks", nargs="+", help="a subset of injection task ids")
    parser.add_argument("--logdir", type=Path, default=Path("agentdojo-runs"))
    args = parser.parse_args()
    missing = [KEY_ENV.format(arm.upper()) for arm in ARMS]
    missing = [name for name in missing if name not in os.environ]
    if missing:
        parser.error(f"set {' and '.join(missing)} to the two tenants' keys")
    return args


def main() -> None:
    args = parse_args()
    sys.stdout.write(markdown(run(args)))


if __name__ == "__main__":
    main()
