"""The Prometheus alert rules: valid for promtool, and every alert unit-tested both ways."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml
from grafana_promql import GRAFANA
from promserver import require_tool

ALERTS = GRAFANA / "alerts"
RULES = ALERTS / "foldermon.rules.yml"
RULE_TESTS = ALERTS / "foldermon.rules.test.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, cwd=ALERTS, timeout=60, check=False
    )


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.real
def test_rules_pass_promtool_check() -> None:
    """promtool check rules accepts the rules file (PromQL parses, templates compile)."""
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.real
def test_rule_unit_tests_pass() -> None:
    """promtool test rules runs the alert unit tests and every one passes."""
    result = _promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """Each alert of the rules file is expected to fire in some unit test and to stay quiet in another."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    names = {a["alert"] for a in _alerts()}
    assert names - fires == set(), "alerts never expected to fire"
    assert names - quiet == set(), "alerts never expected to stay quiet"


def test_every_alert_tells_the_operator_what_to_do() -> None:
    """Each alert has a severity, a summary and a description long enough to hold instructions."""
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        assert len(alert["annotations"]["description"]) > 150, alert["alert"]
