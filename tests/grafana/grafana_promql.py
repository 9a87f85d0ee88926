"""What Grafana does to a dashboard's Prometheus queries before sending them: macros and variables.

Follows Grafana's Prometheus datasource: ``$__interval`` is the time range over the panel's
data points, never below the datasource's scrape interval; ``$__rate_interval`` is
``max($__interval + scrape, 4 * scrape)``; ``$__range`` is the range in whole seconds; a
multi-value or All variable becomes a regex alternation of its regex-escaped values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# \w+ is greedy, so $__range_s is read whole, never as $__range followed by "_s".
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$")
# Regex metacharacters Grafana escapes in variable values; doubled backslash because the regex
# sits inside a PromQL string literal.
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|\\]")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A dashboard time range as Grafana sees it, with the datasource's scrape interval."""

    start: float
    end: float
    scrape_s: int
    max_data_points: int = 1000

    @property
    def interval_s(self) -> int:
        return max(self.scrape_s, math.ceil((self.end - self.start) / self.max_data_points))

    @property
    def rate_interval_s(self) -> int:
        return max(self.interval_s + self.scrape_s, 4 * self.scrape_s)

    @property
    def range_s(self) -> int:
        return round(self.end - self.start)

    def macros(self) -> dict[str, str]:
        return {
            "__rate_interval": f"{self.rate_interval_s}s",
            "__interval": f"{self.interval_s}s",
            "__interval_ms": str(self.interval_s * 1000),
            "__range": f"{self.range_s}s",
            "__range_s": str(self.range_s),
            "__range_ms": str(self.range_s * 1000),
        }


@dataclass(frozen=True, slots=True)
class Variable:
    """A template variable's selected values; ``multi`` when it is multi-value or has All."""

    values: tuple[str, ...]
    multi: bool = True


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value)


def _format(variable: Variable, fmt: str | None) -> str:
    values = variable.values
    if fmt in ("raw", "text"):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "regex" or variable.multi:
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return values[0].replace("\\", "\\\\").replace("'", "\\'")


def interpolate(expr: str, variables: Mapping[str, Variable], macros: Mapping[str, str]) -> str:
    """``expr`` with every ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` replaced."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name in macros:
            return macros[name]
        if name in variables:
            return _format(variables[name], match.group(2))
        raise KeyError(f"unknown variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def label_values_query(query: str) -> tuple[str | None, str]:
    """The series selector (if any) and the label name of a ``label_values(...)`` variable query."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group("selector"), match.group("label")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target["refId"], target["expr"], bool(target.get("instant")))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def query_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Template variables whose values come from a datasource query, in dashboard order."""
    return [v for v in dashboard["templating"]["list"] if v["type"] == "query"]


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def all_of(values: Sequence[str]) -> Variable:
    """The All option of a multi-value variable without a custom all value: every value."""
    return Variable(tuple(values), multi=True)
