"""The dashboard and alert rules against a real Prometheus scraping a real agent with files flowing.

One agent run feeds every test here: files processed, one retried then failed, one recovered
from a dead instance, trace exports failing. Every panel query and variable query of every
dashboard then runs as Grafana would send it, and must return data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grafana_promql import (
    DASHBOARDS,
    GRAFANA,
    PanelQuery,
    TimeRange,
    Variable,
    all_of,
    interpolate,
    label_values_query,
    load,
    panel_queries,
    query_variables,
    variable_query,
)
from promserver import Prometheus, finite_values, free_port

from agentctl import drop, start, stop, wait_until, write_config

pytestmark = pytest.mark.real

RULES = GRAFANA / "alerts" / "foldermon.rules.yml"
JOB = "foldermon-agent"  # the scrape job name the alert rules expect
PIPELINE = """
[retry]
max_attempts = 2
backoff = 0.05
[[processors]]
type = "raise_on"
id = "reject_bad"
[[processors]]
type = "filter"
id = "keep_lines"
pattern = "keep"
"""
GOOD_FILES = 10  # with the two failures, over the ten finished files the failure ratio asks for
# Two failures, not one: the agent creates a counter series at its first increment, so
# Prometheus never sees the first failure as an increase (reported to the lead).
POISONED_AFTER = (0, 4)
SCRAPE_S = 1


@dataclass(frozen=True, slots=True)
class Scene:
    prometheus: Prometheus
    instance: str
    start: float
    end: float

    def time_range(self) -> TimeRange:
        return TimeRange(self.start, self.end, SCRAPE_S)


def _agent_env(metrics_port: int) -> dict[str, str]:
    """Metrics on a Prometheus endpoint; traces sent to a port nobody listens on, so exports fail."""
    return {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1/traces",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def _has_series(prometheus: Prometheus, expr: str, minimum: float = 0) -> bool:
    return any(v >= minimum for v in finite_values(prometheus.instant(expr, time.time())))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    work = tmp_path_factory.mktemp("grafana")
    root = work / "root"
    # A dead instance's claim, returned at start: files_recovered is then 1, not just 0.
    ghost = root / "underprocess" / "deadhost-1-abcdef"
    ghost.mkdir(parents=True)
    (ghost / "orphan.txt").write_text("keep me\n")
    metrics_port = free_port()
    instance = f"127.0.0.1:{metrics_port}"
    prometheus = Prometheus(work, instance, JOB, [RULES])
    prometheus.start()
    began = time.time()
    config = write_config(work / "agent.toml", PIPELINE)
    agent = start(
        "run",
        "--watch",
        str(root),
        "--config",
        str(config),
        log=work / "agent.log",
        env=_agent_env(metrics_port),
    )
    try:
        # Files only once Prometheus scrapes the agent, so it sees the counters move.
        wait_until(lambda: _has_series(prometheus, f'foldermon_queue_depth{{job="{JOB}"}}'), timeout=30)
        for i in range(GOOD_FILES):  # spread over a few scrapes, so rates see files flowing
            drop(root, f"good-{i}.txt", f"keep {i}\nskip {i}\nkeep again\n")
            if i in POISONED_AFTER:
                drop(root, f"poison-{i}.txt", "keep\nBAD line\n")
            time.sleep(0.5)
        wait_until(
            lambda: len(list((root / "failed").glob("poison-*.txt"))) == len(POISONED_AFTER), timeout=30
        )
        processed = f'sum(foldermon_files_total{{job="{JOB}", foldermon_outcome="processed"}})'
        failed = f'sum(foldermon_files_total{{job="{JOB}", foldermon_outcome="failed"}})'
        wait_until(lambda: _has_series(prometheus, processed, GOOD_FILES + 1), timeout=30, interval=0.2)
        wait_until(
            lambda: (
                _has_series(prometheus, failed, len(POISONED_AFTER))
                and _has_series(prometheus, "foldermon_telemetry_export_failures_total")
            ),
            timeout=30,
            interval=0.2,
        )
        # A few more scrapes and rule evaluations after the last event, as a rate window needs.
        time.sleep(3 * SCRAPE_S)
        yield Scene(prometheus, instance, began, time.time())
    finally:
        stop(agent)
        prometheus.stop()


def _resolve_variables(scene: Scene, dashboard: dict[str, object]) -> dict[str, Variable]:
    """Each query variable's values, in order, later queries narrowed by earlier variables (All)."""
    tr = scene.time_range()
    resolved: dict[str, Variable] = {}
    for var in query_variables(dashboard):
        selector, label = label_values_query(interpolate(variable_query(var), resolved, tr.macros()))
        values = scene.prometheus.label_values(label, selector, tr.start, tr.end)
        assert values, f"variable {var['name']} has no values"
        resolved[var["name"]] = (
            Variable((var["allValue"],), multi=False) if var.get("allValue") else all_of(values)
        )
    return resolved


def _cases() -> list[tuple[Path, PanelQuery]]:
    return [(path, q) for path in DASHBOARDS for q in panel_queries(load(path))]


@pytest.mark.parametrize(
    ("path", "query"), _cases(), ids=lambda c: c.name if isinstance(c, PanelQuery) else c.stem
)
def test_panel_query_returns_data(scene: Scene, path: Path, query: PanelQuery) -> None:
    """The panel query, with Grafana's macros and the All variables substituted, returns finite samples."""
    dashboard = load(path)
    tr = scene.time_range()
    expr = interpolate(query.expr, _resolve_variables(scene, dashboard), tr.macros())
    if query.instant:
        result = scene.prometheus.instant(expr, tr.end)
    else:
        result = scene.prometheus.range(expr, tr.start, tr.end, tr.interval_s)
    if "otelcol_" in expr:
        # The collector's own metrics: no collector runs here (none can be installed), so the
        # query is only checked to be one Prometheus accepts (it raised above otherwise).
        assert result == [], f"{query.name}: unexpected data for {expr}"
        return
    assert finite_values(result), f"{query.name}: no data for {expr}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_variables_list_the_agent_that_ran(scene: Scene, path: Path) -> None:
    """job, instance and processor list the scrape job, the agent's endpoint and its processor ids."""
    variables = _resolve_variables(scene, load(path))
    assert variables["job"].values == (JOB,)
    assert variables["instance"].values == (scene.instance,)
    assert set(variables["processor"].values) == {"reject_bad", "keep_lines"}


def test_alert_rules_evaluate_without_errors_on_real_series(scene: Scene) -> None:
    """Prometheus loaded every rule of the rules file and evaluates each one without an error."""
    groups = scene.prometheus.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} >= {
        "FoldermonBacklogNotDraining",
        "FoldermonOldestFileTooOld",
        "FoldermonFailureRatioHigh",
        "FoldermonScrapeFailing",
        "FoldermonAgentAbsent",
        "FoldermonTelemetryExportFailing",
    }
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_failure_ratio_alert_goes_pending_after_a_real_failure(scene: Scene) -> None:
    """Two failed files among thirteen finished (15 %) put FoldermonFailureRatioHigh into pending."""
    alerts = scene.prometheus.api("alerts")["alerts"]
    states = {a["labels"]["alertname"]: a["state"] for a in alerts}
    assert states.get("FoldermonFailureRatioHigh") in ("pending", "firing"), states
    assert "FoldermonAgentAbsent" not in states
