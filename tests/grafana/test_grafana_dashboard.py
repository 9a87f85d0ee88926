"""The dashboard JSON: built by grafana/dashboard.py, valid for Grafana's own schema, wired to the datasources."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from grafana_promql import DASHBOARDS, GRAFANA, load, panel_queries, panels, query_variables
from promserver import require_tool

DATASOURCES = GRAFANA / "provisioning" / "datasources" / "foldermon.yaml"
AGENT_DASHBOARD = GRAFANA / "dashboards" / "foldermon-agent.json"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("foldermon_dashboard_builder", GRAFANA / "dashboard.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _npm_ready() -> None:
    """node_modules holding exactly the pinned packages; ``npm ci`` from the lock file otherwise."""
    require_tool("node")
    npm = require_tool("npm")
    pins: dict[str, str] = json.loads((GRAFANA / "package.json").read_text())["devDependencies"]
    for name, version in pins.items():
        installed = GRAFANA / "node_modules" / name / "package.json"
        if not installed.is_file() or json.loads(installed.read_text())["version"] != version:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=GRAFANA,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            return


def _typecheck(directory: Path) -> subprocess.CompletedProcess[str]:
    _npm_ready()
    return subprocess.run(
        [require_tool("node"), str(GRAFANA / "typecheck.mjs"), str(directory)],
        cwd=GRAFANA,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _datasource_uids() -> dict[str, str]:
    """uid -> type of the provisioned datasources."""
    return {d["uid"]: d["type"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}


def _dashboard() -> dict[str, Any]:
    return load(AGENT_DASHBOARD)


def test_committed_json_is_what_dashboard_py_builds() -> None:
    """dashboards/foldermon-agent.json is up to date with grafana/dashboard.py."""
    assert AGENT_DASHBOARD.read_text(encoding="utf-8") == _builder().render(), (
        "run python3 grafana/dashboard.py and commit the JSON"
    )


@pytest.mark.real
def test_dashboards_type_check_against_grafana_schema() -> None:
    """tsc --strict accepts every dashboard as the Dashboard type of the pinned @grafana/schema."""
    result = _typecheck(GRAFANA / "dashboards")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.real
def test_type_check_rejects_a_wrong_field_type(tmp_path: Path) -> None:
    """A dashboard whose schemaVersion is a string instead of a number fails the type check."""
    broken = _dashboard()
    broken["schemaVersion"] = str(broken["schemaVersion"])
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result = _typecheck(tmp_path)
    assert result.returncode != 0
    assert "Type 'string' is not assignable to type 'number'" in result.stdout + result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_uses_a_provisioned_datasource(path: Path) -> None:
    """Panels, targets and variables name a datasource uid (and type) that provisioning creates."""
    uids = _datasource_uids()
    dashboard = load(path)
    refs = [p["datasource"] for p in panels(dashboard) if p["type"] != "row"]
    refs += [t["datasource"] for p in panels(dashboard) for t in p.get("targets", [])]
    refs += [v["datasource"] for v in query_variables(dashboard)]
    assert refs
    for ref in refs:
        assert uids.get(ref["uid"]) == ref["type"], ref


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_has_a_unit_thresholds_and_a_description(path: Path) -> None:
    """An operator sees units, colour thresholds and a description on every panel."""
    for panel in panels(load(path)):
        if panel["type"] == "row":
            continue
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), panel["title"]
        assert defaults["thresholds"]["steps"], panel["title"]
        assert panel.get("description"), panel["title"]


def test_rows_are_overview_latency_processors_agent_health_operations_and_telemetry() -> None:
    """The dashboard's rows, in the order an operator reads them."""
    rows = [p["title"] for p in panels(_dashboard()) if p["type"] == "row"]
    assert rows == ["Overview", "Latency", "Processors", "Agent health", "Operations", "Telemetry"]


def test_latency_panels_show_p50_p95_p99_over_the_rate_interval() -> None:
    """Pickup latency and file duration are histogram_quantile over rate(...[$__rate_interval]) at 0.5/0.95/0.99."""
    queries = panel_queries(_dashboard())
    for metric in ("foldermon_file_pickup_latency_seconds", "foldermon_file_duration_seconds"):
        exprs = [q.expr for q in queries if f"{metric}_bucket" in q.expr]
        found = {
            m.group(1)
            for e in exprs
            if (
                m := re.match(
                    rf"histogram_quantile\((0\.\d+), .*rate\({metric}_bucket\{{.*\}}\[\$__rate_interval\]\)",
                    e,
                )
            )
        }
        assert found == {"0.5", "0.95", "0.99"}, metric


def test_variables_are_job_instance_and_processor_chained() -> None:
    """instance is narrowed by $job, processor by $job and $instance; all offer All and multi-select."""
    variables = {v["name"]: v for v in query_variables(_dashboard())}
    assert list(variables) == ["job", "instance", "processor"]
    assert "$job" in variables["instance"]["query"]["query"]
    assert {"$job", "$instance"} <= set(re.findall(r"\$\w+", variables["processor"]["query"]["query"]))
    assert all(v["includeAll"] and v["multi"] for v in variables.values())


def test_dashboard_links_to_the_jaeger_search_for_the_agent() -> None:
    """A dashboard link opens the Jaeger search for service foldermon-agent."""
    urls = [link["url"] for link in _dashboard()["links"]]
    assert any(re.search(r"/search\?service=foldermon-agent(&|$)", url) for url in urls), urls


def test_every_variable_used_is_defined() -> None:
    """Every $variable a query or link uses is a template variable or a Grafana macro."""
    dashboard = _dashboard()
    names = {v["name"] for v in dashboard["templating"]["list"]}
    text = json.dumps({"panels": dashboard["panels"], "links": dashboard["links"]})
    used = set(re.findall(r"\$\{?(\w+)", text))
    assert {u for u in used if not u.startswith("__")} <= names


def test_jaeger_datasource_links_traces_to_prometheus_metrics() -> None:
    """The Jaeger datasource's trace-to-metrics link points at the Prometheus datasource's uid."""
    sources = {d["type"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    link = sources["jaeger"]["jsonData"]["tracesToMetrics"]
    assert link["datasourceUid"] == sources["prometheus"]["uid"]
    # Grafana expands $NAME in provisioning files: the query placeholder must be written $$__tags.
    assert all("$$__tags" in q["query"] for q in link["queries"])
