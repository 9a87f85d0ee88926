"""Builds dashboards/foldermon-agent.json, the operator's view of the agent.

Run ``python3 grafana/dashboard.py`` after a change and commit both files;
``--check`` exits 1 when the committed JSON is not what this script builds.
Grafana loads the JSON; this script only keeps the layout, units and queries consistent.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

Json = dict[str, Any]

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "foldermon-agent.json"
PROMETHEUS = {"type": "prometheus", "uid": "foldermon-prometheus"}
JAEGER = {"type": "jaeger", "uid": "foldermon-jaeger"}
SERVICE = "foldermon-agent"

# Every query is narrowed by the dashboard's variables; the processor panels by $processor too.
SEL = 'job=~"$job", instance=~"$instance"'
PSEL = SEL + ', foldermon_processor_id=~"$processor"'
FAILED = 'foldermon_outcome="failed"'
FINISHED = 'foldermon_outcome=~"processed|failed"'  # retries are attempts, not finished files
GREEN, ORANGE, RED, BLUE, PURPLE = "green", "orange", "red", "blue", "purple"


def once_per_root(state: str) -> str:
    """Files in one queue state per root: every agent serving a root reports the same folder."""
    return (
        f'max by (foldermon_watch_root_id) (foldermon_queue_depth{{{SEL}, foldermon_queue_state="{state}"}})'
    )


def rate(series: str, selector: str = SEL) -> str:
    """Per-second rate over the window Grafana derives from the scrape interval."""
    return f"rate({series}{{{selector}}}[$__rate_interval])"


def thresholds(*steps: tuple[float, str], base: str = GREEN) -> Json:
    """Absolute thresholds: ``base`` below the first step, then each step's colour from its value up."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


def target(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False) -> Json:
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
        **({"format": "table"} if instant else {}),
    }


def quantiles(bucket: str) -> list[Json]:
    """p50, p95 and p99 of a histogram over the rate window Grafana picks for the scrape interval."""
    return [
        target(f"histogram_quantile({q}, sum by (le) ({rate(bucket)}))", f"p{round(q * 100)}", ref)
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def colour_by_name(colours: dict[str, str]) -> list[Json]:
    """Overrides that give each series a fixed colour, so 'failed' is red on every panel."""
    return [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"fixedColor": colour, "mode": "fixed"}}],
        }
        for name, colour in colours.items()
    ]


def link(title: str, url: str, tooltip: str = "") -> Json:
    """A link in the panel header menu or the dashboard's link bar, opening in a new tab."""
    return {
        "type": "link",
        "title": title,
        "tooltip": tooltip,
        "url": url,
        "icon": "external link",
        "targetBlank": True,
        "asDropdown": False,
        "includeVars": False,
        "keepTime": False,
        "tags": [],
    }


def jaeger_search(tags: dict[str, str] | None = None) -> str:
    """The Jaeger UI search for the agent's traces over the dashboard's time range (Jaeger takes
    microseconds, Grafana gives milliseconds), optionally narrowed by span tags."""
    query = {"service": SERVICE, "lookback": "custom", "limit": "50"}
    if tags:
        query["tags"] = json.dumps(tags, separators=(",", ":"))
    return "${jaeger_url}/search?" + urllib.parse.urlencode(query) + "&start=${__from}000&end=${__to}000"


def grafana_explore_traces() -> str:
    """Grafana's Explore on the Jaeger datasource, searching the agent's service."""
    pane = {
        "traces": {
            "datasource": JAEGER["uid"],
            "queries": [{"refId": "A", "datasource": JAEGER, "queryType": "search", "service": SERVICE}],
            "range": {"from": "${__from}", "to": "${__to}"},
        }
    }
    encoded = urllib.parse.quote(json.dumps(pane, separators=(",", ":")))
    # Grafana fills in the time range when it opens the link: the macros must stay readable.
    return "/explore?schemaVersion=1&panes=" + encoded.replace("%24%7B__from%7D", "${__from}").replace(
        "%24%7B__to%7D", "${__to}"
    )


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self._place({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self._newline()

    def add(self, panel: Json, width: int, height: int) -> None:
        if self.x + width > 24:
            self._newline()
        self._place(panel, width, height)

    def _place(self, panel: Json, width: int, height: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0


def panel(kind: str, title: str, description: str, targets: list[Json], defaults: Json, **extra: Any) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": PROMETHEUS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
        **extra,
    }


def stat(title: str, description: str, expr: str, unit: str, steps: Json) -> Json:
    defaults = {"unit": unit, "thresholds": steps, "color": {"mode": "thresholds"}}
    options = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "center",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": "value",
    }
    return panel("stat", title, description, [target(expr, instant=True)], defaults, options=options)


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str,
    steps: Json | None = None,
    *,
    axis: str = "",
    signed: bool = False,
    **extra: Any,
) -> Json:
    """A time series; ``steps`` draws dashed threshold lines, ``signed`` lets the axis go below 0."""
    custom: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if axis:
        custom["axisLabel"] = axis
    if steps is not None:
        custom["thresholdsStyle"] = {"mode": "dashed"}
    defaults: Json = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "thresholds": thresholds() if steps is None else steps,
        **({} if signed else {"min": 0}),
    }
    options = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, targets, defaults, options=options, **extra)


def overview(grid: Layout) -> None:
    grid.row("Overview")
    overview_stats(grid)
    overview_charts(grid)


def overview_stats(grid: Layout) -> None:
    """The 3 a.m. line: is it running, is work waiting, is anything failing."""
    stats = [
        (
            "Instances reporting",
            (
                "Agent processes (each worker of `--workers N` is one) whose metrics Prometheus sees "
                "now. 0 means the agent is down or its metrics do not arrive (see the "
                "FoldermonAgentAbsent alert)."
            ),
            f"count(group by (job, instance) (foldermon_files_total{{{SEL}}})) or vector(0)",
            "none",
            thresholds((1, GREEN), base=RED),
        ),
        (
            "Waiting files",
            "Files in unprocessed/ now, over the selected roots (a root several agents serve counts once).",
            f"sum({once_per_root('unprocessed')})",
            "none",
            thresholds((100, ORANGE), (1000, RED)),
        ),
        (
            "Oldest waiting file",
            "Age of the oldest file in unprocessed/. Red at 15 min, where FoldermonOldestFileTooOld fires.",
            f"max(foldermon_queue_oldest_age_seconds{{{SEL}}})",
            "s",
            thresholds((300, ORANGE), (900, RED)),
        ),
        (
            "Files in failed/",
            (
                "Inputs that exhausted their attempts. `foldermon-agent failed` lists each with its "
                "error and trace id (from failed/.<name>.error.json); fix the cause, then "
                "`foldermon-agent retry NAME`."
            ),
            f"sum({once_per_root('failed')})",
            "none",
            thresholds((1, RED)),
        ),
        (
            "Failure ratio (range)",
            (
                "Files that failed for good over files finished, over the dashboard's time range. "
                "Red from 5 %, where FoldermonFailureRatioHigh fires."
            ),
            (
                f"sum(increase(foldermon_files_total{{{SEL}, {FAILED}}}[$__range])) / "
                f"sum(increase(foldermon_files_total{{{SEL}, {FINISHED}}}[$__range]))"
            ),
            "percentunit",
            thresholds((0.01, ORANGE), (0.05, RED)),
        ),
        (
            "Telemetry export failures (range)",
            (
                "Failed exports of traces, metrics or logs to the collector over the time range. "
                "Processing goes on; traces are missing in Jaeger meanwhile."
            ),
            f"sum(increase(foldermon_telemetry_export_failures_total{{{SEL}}}[$__range])) or vector(0)",
            "none",
            thresholds((1, ORANGE)),
        ),
    ]
    for title, description, expr, unit, steps in stats:
        grid.add(stat(title, description, expr, unit, steps), 4, 4)


def overview_charts(grid: Layout) -> None:
    files = timeseries(
        "Files/s by outcome",
        "File attempts per second: processed, retry (will be tried again) and failed (moved to failed/).",
        [
            target(
                f"sum by (foldermon_outcome) ({rate('foldermon_files_total')})",
                "{{foldermon_outcome}}",
            )
        ],
        "short",
        axis="files / s",
        overrides=colour_by_name({"processed": GREEN, "retry": ORANGE, "failed": RED}),
        links=[
            link("Failed file traces in Jaeger", jaeger_search({"foldermon.outcome": "failed"})),
            link("All agent traces in Grafana Explore", grafana_explore_traces()),
        ],
    )
    depth = timeseries(
        "Queue depth by state",
        "Files per queue folder. A growing unprocessed/ with no processed files means the agent is stuck.",
        [
            target(
                "sum by (foldermon_queue_state) (max by (foldermon_watch_root_id, foldermon_queue_state) "
                f"(foldermon_queue_depth{{{SEL}}}))",
                "{{foldermon_queue_state}}",
            )
        ],
        "none",
        overrides=colour_by_name({"unprocessed": BLUE, "underprocess": PURPLE, "failed": RED}),
    )
    oldest = timeseries(
        "Oldest waiting file age",
        "Per watch root, however many agents serve it. Dashed lines at 5 and 15 min.",
        [
            target(
                f"max by (foldermon_watch_root) (foldermon_queue_oldest_age_seconds{{{SEL}}})",
                "{{foldermon_watch_root}}",
            )
        ],
        "s",
        thresholds((300, ORANGE), (900, RED), base="transparent"),
    )
    modes = panel(
        "table",
        "Instances and their watch mode",
        "One row per instance and watch root. poll means inotify is unavailable or the folder is on a "
        "network filesystem; unavailable means the agent cannot serve the root now (its folders are "
        "gone and cannot be made again); the reason column says why.",
        [
            target(
                "max by (job, instance, foldermon_watch_root, foldermon_watch_mode, foldermon_watch_reason) "
                f"(foldermon_watch_mode{{{SEL}}})",
                instant=True,
            )
        ],
        {
            "unit": "string",
            "thresholds": thresholds(),
            "custom": {"align": "auto", "cellOptions": {"type": "auto"}},
            "mappings": [
                {
                    "type": "value",
                    "options": {
                        "poll": {"color": ORANGE, "index": 0, "text": "poll"},
                        "inotify": {"color": GREEN, "index": 1, "text": "inotify"},
                        "unavailable": {"color": RED, "index": 2, "text": "unavailable"},
                    },
                }
            ],
        },
        overrides=[
            {
                "matcher": {"id": "byName", "options": "foldermon_watch_mode"},
                "properties": [{"id": "custom.cellOptions", "value": {"type": "color-text"}}],
            }
        ],
        options={"showHeader": True, "cellHeight": "sm"},
        transformations=[
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True, "Value": True},
                    "renameByName": {
                        "foldermon_watch_root": "watch root",
                        "foldermon_watch_mode": "mode",
                        "foldermon_watch_reason": "reason",
                    },
                },
            }
        ],
    )
    for item in (files, depth, oldest, modes):
        grid.add(item, 12, 8)


def latency(grid: Layout) -> None:
    grid.row("Latency")
    pickup = timeseries(
        "Pickup latency (arrival → claim)",
        "How long files wait in unprocessed/ before an instance claims them. High p99 with low p50: "
        "bursts; high everywhere: too few instances or a slow pipeline.",
        quantiles("foldermon_file_pickup_latency_seconds_bucket"),
        "s",
        thresholds((60, ORANGE), (300, RED), base="transparent"),
    )
    mean = (
        f"sum({rate('foldermon_file_duration_seconds_sum')}) / "
        f"sum({rate('foldermon_file_duration_seconds_count')})"
    )
    duration = timeseries(
        "File duration (claim → finish)",
        "Time to process one file attempt, all outcomes. The processors row shows which step is slow.",
        [*quantiles("foldermon_file_duration_seconds_bucket"), target(mean, "mean", "D")],
        "s",
    )
    read = timeseries(
        "Lines read/s per watch root",
        "Lines read from inputs, counted as they are read (about every 5 s in a long file), so an "
        "agent busy with one long file shows here while no file is finished.",
        [
            target(
                f"sum by (foldermon_watch_root) ({rate('foldermon_lines_read_total')})",
                "{{foldermon_watch_root}}",
            )
        ],
        "short",
        axis="lines / s",
    )
    grid.add(pickup, 12, 8)
    grid.add(duration, 12, 8)
    grid.add(read, 24, 8)


def processors(grid: Layout) -> None:
    grid.row("Processors")
    lines_in = f"sum by (foldermon_processor_id) ({rate('foldermon_processor_lines_in_total', PSEL)})"
    lines_out = f"sum by (foldermon_processor_id) ({rate('foldermon_processor_lines_out_total', PSEL)})"
    grid.add(
        timeseries(
            "Lines in/s per processor",
            "Lines entering each processor (recorded once per file, so a big file shows as a step).",
            [target(lines_in, "{{foldermon_processor_id}}")],
            "short",
        ),
        12,
        8,
    )
    grid.add(
        timeseries(
            "Lines out/s per processor",
            "Lines each processor emitted.",
            [target(lines_out, "{{foldermon_processor_id}}")],
            "short",
        ),
        12,
        8,
    )
    grid.add(
        timeseries(
            "Drop ratio per processor",
            "Share of a processor's input lines it did not pass on (filters drop by design). "
            "Negative when a processor emits more than it takes, as line_splitter does.",
            [target(f"1 - ({lines_out}) / ({lines_in})", "{{foldermon_processor_id}}")],
            "percentunit",
            signed=True,
        ),
        8,
        8,
    )
    grid.add(
        timeseries(
            "Processor duration per file",
            "Time one processor spent on one file, p50 and p95.",
            [
                target(
                    f"histogram_quantile({q}, sum by (le, foldermon_processor_id) "
                    f"({rate('foldermon_processor_duration_seconds_bucket', PSEL)}))",
                    f"{{{{foldermon_processor_id}}}} p{round(q * 100)}",
                    ref,
                )
                for q, ref in ((0.5, "A"), (0.95, "B"))
            ],
            "s",
        ),
        8,
        8,
    )
    grid.add(
        timeseries(
            "Processor errors/s",
            "Exceptions raised by a processor. The file is retried, then moved to failed/; "
            "its trace in Jaeger shows the failing line.",
            [
                target(
                    "sum by (foldermon_processor_id, foldermon_processor_type) "
                    f"({rate('foldermon_processor_errors_total', PSEL)})",
                    "{{foldermon_processor_id}} ({{foldermon_processor_type}})",
                )
            ],
            "short",
            thresholds((0.000001, RED), base="transparent"),
            links=[link("Error traces in Jaeger", jaeger_search({"error": "true"}))],
        ),
        8,
        8,
    )
    spent = f"sum by (foldermon_processor_id) ({rate('foldermon_processor_duration_seconds_sum', PSEL)})"
    grid.add(
        timeseries(
            "Share of pipeline time per processor",
            "Each processor's part of the time all processors spent, so the slow step stands out "
            "whatever the load. Each file's trace shows the same per file: its processor spans lie end "
            "to end, each as long as its processor ran.",
            [target(f"{spent} / scalar(sum({spent}))", "{{foldermon_processor_id}}")],
            "percentunit",
        ),
        24,
        8,
    )


def agent_health(grid: Layout) -> None:
    grid.row("Agent health")
    grid.add(
        timeseries(
            "Files recovered at start",
            "Files a starting instance returned from dead instances' underprocess/ folders "
            "(per running process; recovery happens at start). Non-zero means an instance died mid-file.",
            [
                target(
                    f"max by (instance, foldermon_watch_root) (foldermon_files_recovered_total{{{SEL}}})",
                    "{{instance}} {{foldermon_watch_root}}",
                )
            ],
            "none",
        ),
        12,
        8,
    )
    grid.add(
        timeseries(
            "Telemetry export failures/s by signal",
            "Exports to the collector that failed. Check OTEL_EXPORTER_OTLP_ENDPOINT and that the "
            "collector is up; the agent logs the cause at most once a minute per signal.",
            [
                target(
                    "sum by (instance, foldermon_telemetry_signal) "
                    f"({rate('foldermon_telemetry_export_failures_total')})",
                    "{{instance}} {{foldermon_telemetry_signal}}",
                )
            ],
            "short",
            thresholds((0.000001, ORANGE), base="transparent"),
        ),
        12,
        8,
    )


def operations(grid: Layout) -> None:
    """Roots held (paused by hand or short of disk), free disk, retention."""
    grid.row("Operations")
    grid.add(
        timeseries(
            "Roots held (claiming nothing)",
            "1 while a root claims nothing: paused by hand (`foldermon-agent pause`) or short of "
            "free disk ([guard] min_free). Files wait in unprocessed/; nothing fails meanwhile.",
            [
                target(
                    "max by (foldermon_watch_root, foldermon_pause_reason) "
                    f'(foldermon_root_paused{{{SEL}, foldermon_pause_reason!="none"}}) '
                    f"or max by (foldermon_watch_root) (foldermon_root_paused{{{SEL}}})",
                    "{{foldermon_watch_root}} {{foldermon_pause_reason}}",
                )
            ],
            "none",
            thresholds((1, RED), base="transparent"),
        ),
        8,
        8,
    )
    grid.add(
        timeseries(
            "Free disk per root",
            "Free bytes for each root's queue folders and for its output folder. Below [guard] "
            "min_free the root stops claiming; the FoldermonDiskFilling alert warns hours before.",
            [
                target(
                    "min by (foldermon_watch_root, foldermon_disk_folder) "
                    f"(foldermon_disk_free_bytes{{{SEL}}})",
                    "{{foldermon_watch_root}} {{foldermon_disk_folder}}",
                )
            ],
            "bytes",
        ),
        8,
        8,
    )
    grid.add(
        timeseries(
            "Files removed by retention/s",
            "Files [retention] removed for being older than their folder's max age, by folder.",
            [
                target(
                    f"sum by (foldermon_folder) ({rate('foldermon_files_expired_total')})",
                    "{{foldermon_folder}}",
                )
            ],
            "short",
        ),
        8,
        8,
    )


def telemetry_health(grid: Layout) -> None:
    """Whether the telemetry itself can be trusted: spans lost, and what runs where."""
    grid.row("Telemetry")
    grid.add(
        timeseries(
            "Spans dropped/s by reason",
            "Spans that never reached the collector: line_queue_full (line tracing outran the "
            "collector; line spans go first, a file's own spans are kept), file_queue_full, "
            "export_failed, shutdown. Traces in Jaeger are incomplete meanwhile; processing goes on.",
            [
                target(
                    "sum by (instance, foldermon_telemetry_reason) "
                    f"({rate('foldermon_telemetry_spans_dropped_total')})",
                    "{{instance}} {{foldermon_telemetry_reason}}",
                )
            ],
            "short",
            thresholds((0.000001, ORANGE), base="transparent"),
        ),
        12,
        8,
    )
    grid.add(
        timeseries(
            "Collector: spans and points it could not send on",
            "The collector's own metrics (the stack scrapes them): non-zero means the path from the "
            "collector to Jaeger or to Prometheus is broken although the agents export fine.",
            [
                target(
                    "sum by (exporter) (rate(otelcol_exporter_send_failed_spans_total[$__rate_interval]))",
                    "spans {{exporter}}",
                ),
                target(
                    "sum by (exporter) "
                    "(rate(otelcol_exporter_send_failed_metric_points_total[$__rate_interval]))",
                    "metric points {{exporter}}",
                    "B",
                ),
            ],
            "short",
            thresholds((0.000001, RED), base="transparent"),
        ),
        12,
        8,
    )
    grid.add(
        panel(
            "table",
            "Versions running",
            "One row per agent process: its host, version and instance id (from target_info).",
            [
                target(
                    "max by (host_name, service_version, instance, service_instance_id) "
                    '(target_info{job=~"$job"})',
                    instant=True,
                )
            ],
            {"unit": "string", "thresholds": thresholds(), "custom": {"align": "auto"}},
            options={"showHeader": True, "cellHeight": "sm"},
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value": True},
                        "renameByName": {"host_name": "host", "service_version": "version"},
                    },
                }
            ],
        ),
        24,
        6,
    )


def query_variable(name: str, label: str, query: str, description: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "description": description,
        "datasource": PROMETHEUS,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "options": [],
        "regex": "",
    }


def variables() -> list[Json]:
    return [
        query_variable(
            "job",
            "Job",
            "label_values(foldermon_files_total, job)",
            "Prometheus job: the agents' scrape job, or service.name when they send OTLP to a collector.",
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(foldermon_files_total{job=~"$job"}, instance)',
            "host:port of a scraped agent, or its service.instance.id behind a collector.",
        ),
        query_variable(
            "processor",
            "Processor",
            f"label_values(foldermon_processor_lines_in_total{{{SEL}}}, foldermon_processor_id)",
            "Processor id from the pipeline config (type_index when the config gives none).",
        ),
        {
            "type": "textbox",
            "name": "jaeger_url",
            "label": "Jaeger UI",
            "description": "Base URL of the Jaeger UI that the trace links open.",
            "query": "http://localhost:16686",
            "current": {"text": "http://localhost:16686", "value": "http://localhost:16686"},
            "options": [],
            "hide": 0,
        },
    ]


def dashboard_links() -> list[Json]:
    return [
        link("Jaeger: foldermon-agent traces", jaeger_search(), "Search the agent's traces in the Jaeger UI"),
        link(
            "Jaeger: failed files",
            jaeger_search({"foldermon.outcome": "failed"}),
            "Traces of file attempts that ended in failed/",
        ),
        link(
            "Explore traces",
            grafana_explore_traces(),
            "The agent's traces through Grafana's Jaeger datasource",
        ),
    ]


def build() -> Json:
    grid = Layout()
    overview(grid)
    latency(grid)
    processors(grid)
    agent_health(grid)
    operations(grid)
    telemetry_health(grid)
    return {
        "uid": "foldermon-agent",
        "title": "foldermon-agent",
        "description": "Folder queue, pipeline and health of foldermon-agent instances.",
        "tags": ["foldermon"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 41,
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": dashboard_links(),
        "templating": {"list": variables()},
        "panels": grid.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT} is stale: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
