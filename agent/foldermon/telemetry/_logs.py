"""structlog processors: trace ids on every record inside a span, and an optional OTLP copy."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber

_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}


def add_trace_ids(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Put the current span's ``trace_id`` and ``span_id`` on the record."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def _attribute(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


class OtlpLogBridge:
    """Sends a copy of each record to an OTel logger, in the current span's context."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = str(event.get("level", "info"))
        skip = ("event", "level", "timestamp", "trace_id", "span_id")
        attributes = {k: _attribute(v) for k, v in event.items() if k not in skip}
        now = time.time_ns()  # the record is written as it happens
        self._logger.emit(
            timestamp=now,
            observed_timestamp=now,
            severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(),
            body=str(event.get("event", "")),
            attributes=attributes,
        )
        return event
