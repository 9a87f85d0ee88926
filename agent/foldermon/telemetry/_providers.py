"""Builds the tracer, meter and logger providers in one place; flushes them on one deadline."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import IO, Any

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Tracer

from foldermon import __version__
from foldermon import log as logmod
from foldermon.config import TelemetryConfig
from foldermon.errors import ConfigError
from foldermon.telemetry._exporters import (
    ENABLE_HINT,
    ExportGuard,
    ExportSettings,
    quiet_sdk_loggers,
    resolve,
)
from foldermon.telemetry._instruments import Instruments
from foldermon.telemetry._linespans import LineSpans
from foldermon.telemetry._logs import OtlpLogBridge, add_trace_ids
from foldermon.telemetry._spanqueue import AccountedSpanProcessor, line_queue_size

SCOPE = "foldermon"


def build_resource(
    instance_id: str, configured: Mapping[str, str] | None = None, *, worker: int | None = 0
) -> Resource:
    """The contract's resource, then ``[telemetry] resource_attributes``, then the OTEL_* variables.
    ``foldermon.worker`` is the process's place among ``--workers N`` (0 for a single process):
    it stays when the process is replaced, where ``service.instance.id`` changes; the
    supervisor of the workers (None) has none."""
    ours = Resource.create(
        {
            "service.name": "foldermon-agent",
            "service.version": __version__,
            "service.instance.id": instance_id,
            "host.name": socket.gethostname(),
            **({"foldermon.worker": worker} if worker is not None else {}),
        }
    )
    merged = ours.merge(Resource(dict(configured or {}))).merge(OTELResourceDetector().detect())
    return _HashedOnce(merged.attributes, merged.schema_url)


class _HashedOnce(Resource):
    """A resource that hashes its (immutable) attributes once: the OTLP encoder hashes the
    resource of every span it encodes, and a Resource hashes itself as JSON each time, a tenth
    of the cost of encoding a line span."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash


class Telemetry:
    """The agent's providers and instruments; built once by the service and passed in."""

    def __init__(
        self,
        config: TelemetryConfig,
        instance_id: str,
        *,
        env: Mapping[str, str] | None = None,
        log: logmod.Logger | None = None,
        worker: int | None = 0,
        console: IO[str] | None = None,
        export_timeout: float | None = None,
        line_spans: int = 0,
    ) -> None:
        """``console``: where the ``console`` exporters write (default stdout); a verb whose
        stdout is its data (``process`` to stdout, ``explain``) passes stderr.
        ``export_timeout``: seconds an OTLP export may take, retries included, unless
        OTEL_EXPORTER_OTLP_TIMEOUT says; a one-shot verb must not wait long for a collector
        that is down. ``line_spans``: line spans the queue must hold at once (``explain``
        makes one per asked line, all together)."""
        env = os.environ if env is None else env
        self._console = console or sys.stdout
        settings = resolve(config, env)
        if export_timeout is not None and not any(
            k.endswith("_TIMEOUT") and k.startswith("OTEL_EXPORTER_OTLP") for k in env
        ):
            settings = replace(settings, export_timeout=export_timeout)
        # Worker i of `run --workers N` serves its Prometheus endpoint on the port after worker i-1's.
        self.settings: ExportSettings = replace(
            settings, prometheus_port=settings.prometheus_port + (worker or 0)
        )
        self._log = log
        self._instance_id = instance_id
        self._otlp_metrics: tuple[Any, Any] | None = None  # the OTLP metric reader and exporter
        quiet_sdk_loggers()
        self.guard = ExportGuard(self._report_failure)
        self.span_drops = ExportGuard(self._report_drops)
        self._line_queue = max(
            line_queue_size(config.max_line_spans_per_file if config.trace_lines else 0), line_spans
        )
        try:
            self._build(build_resource(instance_id, self.settings.resource_attributes, worker=worker))
        except (ValueError, TypeError) as exc:  # an OTEL_* value the checks above do not know
            problem = f"OpenTelemetry refused an OTEL_* setting: {exc}"
            raise ConfigError([problem], "telemetry settings") from exc
        self.guard.on_failure = lambda signal, _n: self.instruments.export_failures.add(
            1, {"foldermon.telemetry.signal": signal}
        )
        self.span_drops.on_failure = lambda reason, count: self.instruments.spans_dropped.add(
            count, {"foldermon.telemetry.reason": reason}
        )

    def _build(self, resource: Resource) -> None:
        # No provider shuts itself down at exit: shutdown() does, within its deadline.
        self.tracer_provider = TracerProvider(
            resource=resource, sampler=self.settings.sampler, shutdown_on_exit=False
        )
        self._span_processor = span_processor = self._add_span_exporter()
        self.meter_provider = self._meter_provider(resource)
        self.logger_provider = self._logger_provider(resource)
        self.tracer: Tracer = self.tracer_provider.get_tracer(SCOPE, __version__)
        self.line_spans = LineSpans(
            self.tracer,
            span_processor,
            resource,
            InstrumentationScope(SCOPE, __version__),
            self.tracer_provider.id_generator,
        )
        self.instruments = Instruments(self.meter_provider.get_meter(SCOPE, __version__))

    @property
    def log(self) -> logmod.Logger:
        """The logger telemetry reports on, made when first needed: a one-shot verb that has
        nothing to report does not load structlog for it."""
        if self._log is None:
            self._log = logmod.get(instance=self._instance_id)
        return self._log

    def log_processors(self) -> list[Callable[..., Any]]:
        """structlog processors to install: trace ids, plus the OTLP bridge when logs are exported."""
        processors: list[Callable[..., Any]] = [add_trace_ids]
        if self.logger_provider is not None:
            processors.append(OtlpLogBridge(self.logger_provider.get_logger(SCOPE, __version__)))
        return processors

    def announce(self) -> None:
        """Say once where telemetry goes, or how to turn export on."""
        if not self.settings.anything_exported:
            self.log.info(ENABLE_HINT)
            return
        self.log.info(
            "telemetry export",
            **self.settings.exporters,
            protocol=self.settings.protocol,
            endpoint=self.settings.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "default"),
        )

    # The SDK's metrics and logs modules and the exporters are imported only when chosen:
    # together they cost a few hundred milliseconds at every start.

    def _add_span_exporter(self) -> AccountedSpanProcessor | None:
        kind = self.settings.exporters["traces"]
        exporter: SpanExporter
        if kind == "console":
            exporter = ConsoleSpanExporter(out=self._console)
        elif kind == "otlp":
            from foldermon.telemetry._otlp import GuardedSpanExporter, otlp_span_exporter

            exporter = GuardedSpanExporter(otlp_span_exporter(self.settings), self.guard)
        else:
            return None
        processor = AccountedSpanProcessor(
            exporter,
            line_queue=self._line_queue,
            on_dropped=self._spans_dropped,
            on_unconfirmed=self._spans_unconfirmed,
        )
        self.tracer_provider.add_span_processor(processor)
        return processor

    def _spans_dropped(self, count: int, reason: str) -> None:
        self.span_drops.failed(reason, f"{count} span(s) in the latest drop", amount=count)

    def _spans_unconfirmed(self, count: int) -> None:
        self.guard.failed("traces", f"the collector confirmed no export of {count} span(s) before the stop")

    def _meter_provider(self, resource: Resource) -> MeterProvider:
        kind = self.settings.exporters["metrics"]
        if kind == "none":
            return NoOpMeterProvider()
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )

        interval = self.settings.metric_interval_ms
        reader: MetricReader
        if kind == "console":
            console = ConsoleMetricExporter(out=self._console)
            reader = PeriodicExportingMetricReader(console, export_interval_millis=interval)
        elif kind == "otlp":
            from foldermon.telemetry._otlp import GuardedMetricExporter, otlp_metric_exporter

            exporter = GuardedMetricExporter(otlp_metric_exporter(self.settings), self.guard)
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval)
            self._otlp_metrics = (reader, exporter)
        else:
            reader = self._prometheus_reader()
        return SdkMeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)

    def export_counters_now(self, wait: float = 1.0) -> None:
        """Export the metrics once now, in a thread, and return once their values are taken (at
        most ``wait`` s): the counters set to 0 at start reach the collector before anything is
        counted, so a failure right after a start shows in rate() (over OTLP; a scrape of the
        Prometheus endpoint takes what is there when it comes)."""
        if self._otlp_metrics is None:
            return
        reader, exporter = self._otlp_metrics
        exporter.exporting.clear()
        threading.Thread(target=reader.force_flush, name="metrics-at-start", daemon=True).start()
        exporter.exporting.wait(wait)

    def _logger_provider(self, resource: Resource) -> Any:
        kind = self.settings.exporters["logs"]
        if kind == "none":
            return None
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter

        provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        if kind == "console":
            console = ConsoleLogRecordExporter(out=self._console)
            provider.add_log_record_processor(BatchLogRecordProcessor(console))
        else:
            from foldermon.telemetry._otlp import GuardedLogExporter, otlp_log_exporter

            exporter = GuardedLogExporter(otlp_log_exporter(self.settings), self.guard)
            provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        return provider

    def _prometheus_reader(self) -> Any:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import REGISTRY, start_http_server

        reader = PrometheusMetricReader()
        host, port = self.settings.prometheus_host, self.settings.prometheus_port
        try:
            self._prometheus_server = start_http_server(port, addr=host, registry=REGISTRY)
        except (OSError, OverflowError) as exc:
            # Telemetry never stops processing: the agent runs on without the endpoint.
            self.log.error(
                "prometheus endpoint could not listen; metrics are not served",
                host=host,
                port=port,
                error=str(exc),
            )
            return reader
        self.log.info("prometheus endpoint", url=f"http://{host}:{port}/metrics")
        return reader

    def _report_drops(self, reason: str, count: int, detail: str) -> None:
        self.log.warning(
            "spans dropped before export; processing continues",
            reason=reason,
            spans=count,  # since the start; the detail is the drop that made this record
            detail=f"{detail}; {count} in all since the start",
        )

    def _report_failure(self, signal: str, count: int, detail: str) -> None:
        self.log.warning(
            "telemetry export failing; processing continues",
            signal=signal,
            failures=count,
            detail=detail[:300],
        )

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and stop every provider within ``timeout`` seconds; never raises, and never
        waits longer: a collector that takes connections and never answers holds the SDK's
        flushes as long as its exports' own timeouts and retries allow, so they run in a
        thread of their own that is left behind when the time is up."""
        done = threading.Event()

        def flush() -> None:
            try:
                self._flush_and_stop(timeout)
            finally:
                done.set()

        threading.Thread(target=flush, name="telemetry-shutdown", daemon=True).start()
        if not done.wait(timeout):
            self.log.warning(
                "telemetry shutdown incomplete; the collector did not answer in time", seconds=timeout
            )
        self.span_drops.say_rest()
        self.guard.say_rest()
        server = getattr(self, "_prometheus_server", None)
        if server is not None:
            server[0].shutdown()

    def _flush_and_stop(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout

        # Spans get at most this share, so that the metrics (which count the spans left unsent)
        # and the logs still have time to leave.
        spans_deadline = time.monotonic() + timeout * 0.6

        def left_ms(until: float = deadline) -> int:
            return max(1, int((until - time.monotonic()) * 1000))

        providers: list[Any] = [self.tracer_provider, self.meter_provider, self.logger_provider]
        for provider in providers:
            if provider is None or isinstance(provider, NoOpMeterProvider):
                continue
            is_meter = provider is self.meter_provider
            is_tracer = provider is self.tracer_provider
            try:
                provider.force_flush(left_ms(spans_deadline if is_tracer else deadline))
                if is_tracer and self._span_processor is not None:
                    self._span_processor.shutdown(left_ms(spans_deadline))  # counts what is left
                if is_meter:
                    provider.shutdown(timeout_millis=left_ms())
                else:
                    provider.shutdown()
            except Exception as exc:  # noqa: BLE001 - telemetry never breaks shutdown
                self.log.warning("telemetry shutdown incomplete", error=repr(exc))
