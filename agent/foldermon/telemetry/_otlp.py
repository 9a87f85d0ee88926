"""OTLP exporters for the chosen protocol, wrapped so that failures are counted, never raised.

Imported only when OTLP export is chosen: the SDK's metrics and logs modules cost time at start.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from foldermon.telemetry._exporters import ExportGuard, ExportSettings, pairs


def _otlp_kwargs(settings: ExportSettings, signal: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.endpoint:
        base = settings.endpoint.rstrip("/")
        kwargs["endpoint"] = base + f"/v1/{signal}" if settings.protocol == "http/protobuf" else base
    if settings.headers:
        kwargs["headers"] = pairs(settings.headers)
    if settings.export_timeout is not None:
        kwargs["timeout"] = settings.export_timeout
    return kwargs


def otlp_span_exporter(settings: ExportSettings) -> SpanExporter:
    kwargs = _otlp_kwargs(settings, "traces")
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http(**kwargs)


def otlp_metric_exporter(settings: ExportSettings, **extra: Any) -> MetricExporter:
    kwargs = {**_otlp_kwargs(settings, "metrics"), **extra}
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(**kwargs)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(**kwargs)


def otlp_log_exporter(settings: ExportSettings) -> Any:
    kwargs = _otlp_kwargs(settings, "logs")
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc

        return Grpc(**kwargs)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Http

    return Http(**kwargs)


class GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, guard: ExportGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - telemetry never raises into the agent
            result, detail = SpanExportResult.FAILURE, repr(exc)
        else:
            detail = f"{len(spans)} spans not accepted"
        # An export the shutdown abandons was counted by the span processor already.
        if result is not SpanExportResult.SUCCESS and not self._closed:
            self._guard.failed("traces", detail)
        return result

    def shutdown(self) -> None:
        self._closed = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class GuardedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, guard: ExportGuard) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # keep the inner exporter's choice
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._guard = guard
        self.exporting = threading.Event()  # set as an export begins: its values are taken

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exporting.set()
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # noqa: BLE001 - telemetry never raises into the agent
            self._guard.failed("metrics", repr(exc))
            return MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self._guard.failed("metrics", "metrics not accepted")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class GuardedLogExporter(LogRecordExporter):
    """Wraps a log record exporter with the same failure accounting."""

    def __init__(self, inner: Any, guard: ExportGuard) -> None:
        self._inner = inner
        self._guard = guard

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        try:
            result: LogRecordExportResult = self._inner.export(batch)
        except Exception as exc:  # noqa: BLE001 - telemetry never raises into the agent
            self._guard.failed("logs", repr(exc))
            return LogRecordExportResult.FAILURE
        if result is not LogRecordExportResult.SUCCESS:
            self._guard.failed("logs", f"{len(batch)} log records not accepted")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))
