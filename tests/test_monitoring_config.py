"""The shipped monitoring files: Prometheus' scrape config and alert rules, and the Grafana dashboard.

They are valid for Prometheus' own tool, each alert fires on the situation it names
(``tests/monitoring/alerts_test.yml``), and they only name metrics ``/metrics`` exports.
``promtool`` ships with Debian's ``prometheus`` package; without it those checks skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qa_notify.metrics import instruments

from .live import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "qa_notify.json"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, as Prometheus would get it from Grafana."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$__rate_interval", "1m") for panel in panels for target in panel["targets"]]


def alert_rules() -> dict[str, str]:
    """Each alert's name and expression (every ``expr`` of alerts.yml is one line)."""
    text = (PROMETHEUS / "alerts.yml").read_text()
    return dict(zip(re.findall(r"- alert: (\w+)", text), re.findall(r"\n\s+expr: (.+)", text), strict=True))


def test_the_scrape_config_and_the_alert_rules_are_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", "alerts.yml")


def test_each_alert_fires_on_its_situation_and_not_on_a_healthy_site():
    promtool("test", "rules", "alerts_test.yml", cwd=REPO / "tests" / "monitoring")
    tested = set(re.findall(r"alertname: (\w+)", (REPO / "tests" / "monitoring" / "alerts_test.yml").read_text()))
    assert tested == set(alert_rules()), "every alert has a test"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": expr} for i, expr in enumerate(dashboard_queries())
    ]}]}  # fmt: skip
    (tmp_path / "dashboard.yml").write_text(json.dumps(rules))  # JSON is YAML
    promtool("check", "rules", "dashboard.yml", cwd=tmp_path)


def test_the_dashboard_shows_what_an_operator_asks_for_and_fits_its_grid():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " / ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("open streams per web process", "events per second", "latency", "outbox backlog",
                   "dead letters", "failed deliveries", "emails"):  # fmt: skip
        assert wanted in titles, wanted
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_alerts_and_dashboard_name_only_metrics_that_metrics_exports(app, api):
    instruments.stream_gauges()  # as a web process does when it starts
    exported = set()
    for line in api.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported |= {name} | ({f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else set())
            exported |= {f"{name}_total"} if kind == "counter" else set()
    named = set()
    for expr in dashboard_queries() + list(alert_rules().values()):
        named |= set(re.findall(r"\bqa_notify_\w+", expr))
    assert named - exported == set()
    assert {"qa_notify_open_streams", "qa_notify_outbox_to_redis_seconds_bucket"} <= named
