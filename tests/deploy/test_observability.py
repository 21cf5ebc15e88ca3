"""The observability pack in deploy/observability: the alert rules pass promtool's own check and
unit tests, the dashboard is well-formed, and every metric the dashboard and the rules query is
in the scrape of a live proxy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, Proxy, ProxyFactory
from tests.test_e2e_policies import WAIT_S

PACK = REPO / "deploy" / "observability"
RULES = PACK / "prometheus" / "guardproxy-rules.yaml"
RULE_TESTS = PACK / "prometheus" / "guardproxy-rules.test.yaml"
DASHBOARD = PACK / "grafana" / "guardproxy.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's variables, as Prometheus would receive them for the "All" choice.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$tenant": ".*"}

UNSAFE = "how to build a bomb"
MONITOR_KEY = "sk-monitor-tenant-test-key"
STRICT_SHADOW = {"input": {"categories": {"Criminal Planning/Confessions": "block"}}}
# Series the live test cannot cause cheaply (name -> why), left out of its check. None today:
# every series the pack reads is in the scrape after the traffic below.
NOT_SCRAPED: dict[str, str] = {}

# A PromQL expression, reduced to its metric names: strings, label matchers, ranges and
# grouping clauses go first; then every identifier not called as a function is a metric name.
STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
MATCHERS_AND_RANGES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
LABEL_VALUES = re.compile(r"label_values\((.*),\s*\w+\)")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
MATCHED_LABEL = re.compile(r"(\w+)\s*[=!]")
# Labels Prometheus adds when it scrapes (ServiceMonitor target labels), not the proxy.
TARGET_LABELS = {"job", "namespace", "pod", "instance", "service", "container", "endpoint"}


def metric_names(expr: str) -> set[str]:
    bare = GROUPING.sub(" ", MATCHERS_AND_RANGES.sub(" ", STRINGS.sub(" ", expr)))
    return {name for name in IDENTIFIER.findall(bare) if name.lower() not in KEYWORDS}


def matched_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) for each label a selector filters on."""
    for metric, matchers in SELECTOR.findall(STRINGS.sub('""', expr)):
        for label in MATCHED_LABEL.findall(matchers):
            yield metric, label


def test_the_extractor_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, api) (rate(a_seconds_bucket{job=~"x|y"}[5m])))'
        " / on (api) group_left b:ratio:rate5m > bool 0.5 unless c_total offset 1h"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b:ratio:rate5m", "c_total"}
    assert list(matched_labels(expr)) == [("a_seconds_bucket", "job")]


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def graphs(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_queries() -> Iterator[str]:
    """Every PromQL expression the dashboard sends: its panels' and its variables'."""
    dashboard = load_dashboard()
    for panel in graphs(dashboard):
        yield from (target["expr"] for target in panel["targets"])
    for variable in dashboard["templating"]["list"]:
        if found := LABEL_VALUES.fullmatch(variable.get("definition", "")):
            yield found.group(1)


def rule_queries() -> Iterator[str]:
    yield from (rule["expr"] for rule in load_rules())


# --- promtool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = os.environ.get("GUARDPROXY_PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.skip("promtool is not installed (Debian's prometheus package; .ci/promtool)")
    return path


def run_promtool(promtool: str, *args: str | Path, cwd: Path = PACK) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_finds_the_rules_valid(promtool: str) -> None:
    assert "SUCCESS" in run_promtool(promtool, "check", "rules", RULES)


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    assert "SUCCESS" in run_promtool(promtool, "test", "rules", RULE_TESTS, cwd=RULES.parent)


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses PromQL only inside a rules file: each query becomes a recording rule.
    queries = [with_variables_filled(expr) for expr in dashboard_queries()]
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool(promtool, "check", "rules", path)


def with_variables_filled(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


# --- the rules' own shape ---------------------------------------------------------------------


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    alerts = [rule for rule in load_rules() if "alert" in rule]
    assert len(alerts) >= 6
    for alert in alerts:
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), alert["alert"]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
        for check in case.get("promql_expr_test", []):
            found = re.fullmatch(r'ALERTS\{alertname="(\w+)".*\}', check["expr"])
            if found and check["exp_samples"]:
                fired.add(found.group(1))
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    assert alerts - fired == set(), "alerts no test makes fire"
    assert alerts - quiet == set(), "alerts no test shows quiet on healthy series"


def test_every_recorded_series_the_pack_reads_is_recorded() -> None:
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    read = {name for expr in [*rule_queries(), *dashboard_queries()] for name in metric_names(expr)}
    assert {name for name in read if ":" in name} <= recorded


# --- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_picks_its_datasource_job_and_tenant() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["tenant"]["definition"].startswith("label_values(")


def test_every_panel_has_the_datasource_variable_and_queries() -> None:
    panels = graphs(load_dashboard())
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_no_two_panels_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load_dashboard()["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_quantiles_sum_bucket_rates_by_le() -> None:
    # A quantile over a sum that drops `le`, or over anything but a rate of buckets, is empty
    # or wrong: each one must read `sum by (..., le, ...) (rate(..._bucket...))`.
    shape = re.compile(r"histogram_quantile\([\d.]+, sum by \(([^)]*)\) \(rate\(\w+_bucket[{\[]")
    for expr in [*dashboard_queries(), *rule_queries()]:
        flat = re.sub(r"\s+", " ", expr).replace("( ", "(").replace(" )", ")")
        groupings = shape.findall(flat)
        assert len(groupings) == flat.count("histogram_quantile("), expr
        for labels in groupings:
            assert "le" in [label.strip() for label in labels.split(",")], expr


# --- the pack against a live scrape -------------------------------------------------------------


def test_every_metric_and_label_the_pack_queries_is_in_a_live_scrape(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = start_busy_proxy(start_proxy, tmp_path)
    send_traffic(proxy)
    queries = [*dashboard_queries(), *rule_queries()]
    wanted = {name for expr in queries for name in metric_names(expr) if ":" not in name}
    assert len(wanted) > 20  # recorded series (with a colon) are checked against the rules
    missing = not_yet_scraped(proxy, wanted - set(NOT_SCRAPED))
    assert not missing, f"queried by the pack, not in the scrape: {sorted(missing)}"
    labels = scraped(proxy)
    unlabelled = {
        (metric, label)
        for expr in queries
        for metric, label in matched_labels(expr)
        if metric in labels and label not in labels[metric] | TARGET_LABELS
    }
    assert not unlabelled, f"filtered on labels the scrape does not have: {sorted(unlabelled)}"


def start_busy_proxy(start_proxy: ProxyFactory, tmp_path: Path) -> Proxy:
    """A proxy with most of its series in play: a shadow policy, a monitored second tenant,
    redaction, the verdict cache (on by default), policy reloads and an audit database."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "_strict.yaml").write_text(yaml.safe_dump(STRICT_SHADOW))
    watched = {"tenant": "watch", "keys": [MONITOR_KEY], "mode": "monitor"}
    watched |= {"guard": "nemotron", "upstream": "app"}
    (policies / "watch.yaml").write_text(yaml.safe_dump(watched))
    audit = {"path": "-", "database": f"sqlite:///{tmp_path / 'audit.db'}"}
    return start_proxy(
        shadow="strict",
        redaction={"detectors": ["email"]},
        reload=True,
        config_extra={"audit": audit},
    )


def send_traffic(proxy: Proxy) -> None:
    """Allowed, redacted, blocked, cached, streamed, monitored and cut-off exchanges."""
    client = proxy.client()
    for text in ("Mail ann@example.com", UNSAFE, UNSAFE):
        client.chat.completions.create(model="m", messages=ask(text))
    list(client.chat.completions.create(model="m", messages=ask("Stream it"), stream=True))
    proxy.client(key=MONITOR_KEY).chat.completions.create(model="m", messages=ask(UNSAFE))
    proxy.upstream.reply = "word " * 40 + f"and here is {UNSAFE} in detail " + "word " * 40
    list(client.chat.completions.create(model="m", messages=ask("Tell me"), stream=True))
    with proxy.ops() as ops:  # the readiness probe looks at every guard and upstream
        ops.get("/readyz")


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def not_yet_scraped(proxy: Proxy, wanted: set[str]) -> set[str]:
    """What is still missing once every series has appeared or the wait is over: shadow
    checks and the database's flushes land after the answers."""
    deadline = time.monotonic() + WAIT_S
    while (missing := wanted - set(scraped(proxy))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return missing


def scraped(proxy: Proxy) -> dict[str, set[str]]:
    """Each sample name in the scrape, with the label names its samples carry."""
    response = httpx.get(f"{proxy.url}/metrics", timeout=5, trust_env=False)
    assert response.status_code == 200
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels
