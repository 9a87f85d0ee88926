"""The OTLP test receiver gets what the real OpenTelemetry SDK exporters send over the wire."""

from __future__ import annotations

import http.client
from collections.abc import Iterator, Sequence

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, StatusCode

from otlp_receiver import OtlpReceiver, Protocol

PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http")
RESOURCE = Resource.create({"service.name": "receiver-test"})


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def _span_exporter(
    rx: OtlpReceiver, protocol: Protocol, *, timeout: float = 2.0, gzip: bool = False
) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(
            endpoint=rx.grpc_endpoint,
            insecure=True,
            timeout=timeout,
            compression=grpc.Compression.Gzip if gzip else None,
        )
    return HttpSpanExporter(
        endpoint=rx.http_signal_endpoint("traces"),
        timeout=timeout,
        compression=HttpCompression.Gzip if gzip else None,
    )


def _metric_exporter(rx: OtlpReceiver, protocol: Protocol) -> MetricExporter:
    if protocol == "grpc":
        return GrpcMetricExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=2)
    return HttpMetricExporter(endpoint=rx.http_signal_endpoint("metrics"), timeout=2)


def _log_exporter(rx: OtlpReceiver, protocol: Protocol) -> LogRecordExporter:
    if protocol == "grpc":
        return GrpcLogExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=2)
    return HttpLogExporter(endpoint=rx.http_signal_endpoint("logs"), timeout=2)


def _finished_spans() -> Sequence[ReadableSpan]:
    """A parent and a child span (ended child first), as the SDK hands them to an exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("receiver-test")
    with (
        tracer.start_as_current_span("parent"),
        tracer.start_as_current_span(
            "child", attributes={"line": 7, "ratio": 0.5, "ok": True, "tags": ["a", "b"]}
        ) as child,
    ):
        child.add_event("step", {"foldermon.processor.id": "p1"})
        child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()
    return memory.get_finished_spans()


def _send_spans(exporter: SpanExporter) -> SpanExportResult:
    try:
        return exporter.export(_finished_spans())
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spans_arrive_with_parentage_attributes_events_and_status(
    receiver: OtlpReceiver, protocol: Protocol
) -> None:
    """A parent/child pair arrives with hex ids linking them and flattened attribute values."""
    assert _send_spans(_span_exporter(receiver, protocol)) is SpanExportResult.SUCCESS

    by_name = {span["name"]: span for span in receiver.spans()}
    parent, child = by_name["parent"], by_name["child"]
    assert child["parent_span_id"] == parent["span_id"]
    assert parent["parent_span_id"] == ""
    assert child["trace_id"] == parent["trace_id"]
    assert len(child["trace_id"]) == 32
    assert child["attributes"] == {"line": 7, "ratio": 0.5, "ok": True, "tags": ["a", "b"]}
    assert [(e["name"], e["attributes"]) for e in child["events"]] == [
        ("step", {"foldermon.processor.id": "p1"})
    ]
    assert (child["status_code"], child["status_message"]) == (2, "boom")
    assert child["kind"] == 1
    assert child["start_ns"] <= child["end_ns"]
    assert child["resource"]["service.name"] == "receiver-test"
    assert child["protocol"] == protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gzip_compressed_exports_are_decoded(receiver: OtlpReceiver, protocol: Protocol) -> None:
    """An exporter configured for gzip is understood on both protocols."""
    exporter = _span_exporter(receiver, protocol, gzip=True)

    assert _send_spans(exporter) is SpanExportResult.SUCCESS
    assert sorted(span["name"] for span in receiver.spans()) == ["child", "parent"]


def _send_metrics(exporter: MetricExporter) -> None:
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    meter = provider.get_meter("receiver-test")
    counter = meter.create_counter("test.lines", unit="{line}", description="Lines seen.")
    counter.add(2, {"outcome": "passed"})
    counter.add(5, {"outcome": "passed"})
    counter.add(1, {"outcome": "dropped"})
    histogram = meter.create_histogram(
        "test.duration", unit="s", explicit_bucket_boundaries_advisory=[10.0, 100.0]
    )
    histogram.record(3.0)
    histogram.record(30.0)
    provider.force_flush(timeout_millis=5_000)
    provider.shutdown(timeout_millis=5_000)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_counter_arrives_as_cumulative_monotonic_sum(receiver: OtlpReceiver, protocol: Protocol) -> None:
    """Counter points carry their integer value, unit and sum flags."""
    _send_metrics(_metric_exporter(receiver, protocol))

    point = receiver.latest_metric("test.lines", outcome="passed")
    assert point is not None
    assert (point["type"], point["value"], point["unit"]) == ("sum", 7, "{line}")
    assert point["description"] == "Lines seen."
    assert point.get("is_monotonic") is True
    assert point.get("aggregation_temporality") == 2
    assert point["resource"]["service.name"] == "receiver-test"
    assert point["protocol"] == protocol


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_histogram_arrives_with_count_sum_and_buckets(receiver: OtlpReceiver, protocol: Protocol) -> None:
    """Histogram points carry count, sum, bucket counts and the bucket bounds."""
    _send_metrics(_metric_exporter(receiver, protocol))

    point = receiver.latest_metric("test.duration")
    assert point is not None
    assert point["type"] == "histogram"
    assert (point.get("count"), point.get("sum")) == (2, 33.0)
    assert point.get("explicit_bounds") == [10.0, 100.0]
    assert point.get("bucket_counts") == [1, 1, 0]


def test_latest_metric_matches_on_an_attribute_subset(receiver: OtlpReceiver) -> None:
    """Only points whose attributes include the requested ones are matched."""
    _send_metrics(_metric_exporter(receiver, "http"))

    dropped = receiver.latest_metric("test.lines", outcome="dropped")
    assert dropped is not None
    assert dropped.get("value") == 1
    assert receiver.latest_metric("test.lines", outcome="changed") is None
    assert receiver.latest_metric("test.missing") is None


def _emit_log_in_span(exporter: LogRecordExporter, *, flush: bool = True) -> SpanContext:
    """Emit one warning inside a span through the batch processor; return that span's context."""
    logs = LoggerProvider(resource=RESOURCE)
    logs.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50))
    tracer = TracerProvider(resource=RESOURCE).get_tracer("receiver-test")
    with tracer.start_as_current_span("work") as span:
        logs.get_logger("receiver-test").emit(
            body="line dropped",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"foldermon.processor.id": "p1"},
        )
    if flush:
        logs.force_flush(timeout_millis=5_000)
        logs.shutdown()
    return span.get_span_context()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_record_arrives_with_severity_body_and_trace_context(
    receiver: OtlpReceiver, protocol: Protocol
) -> None:
    """A log emitted inside a span carries that span's ids and its severity and body."""
    context = _emit_log_in_span(_log_exporter(receiver, protocol))

    [log] = receiver.logs()
    assert log["body"] == "line dropped"
    assert (log["severity_text"], log["severity_number"]) == ("WARN", 13)
    assert log["attributes"] == {"foldermon.processor.id": "p1"}
    assert log["trace_id"] == format(context.trace_id, "032x")
    assert log["span_id"] == format(context.span_id, "016x")
    assert log["resource"]["service.name"] == "receiver-test"
    assert log["protocol"] == protocol


def test_requests_are_counted_per_signal_and_protocol(receiver: OtlpReceiver) -> None:
    """Each export request is counted once under its signal and protocol."""
    _send_spans(_span_exporter(receiver, "grpc"))
    _emit_log_in_span(_log_exporter(receiver, "http"))

    assert receiver.requests == {("traces", "grpc"): 1, ("logs", "http"): 1}


def test_wait_for_returns_once_data_arrives_in_the_background(receiver: OtlpReceiver) -> None:
    """wait_for wakes when a background batch export lands and returns the predicate's value."""
    _emit_log_in_span(_log_exporter(receiver, "http"), flush=False)

    logs = receiver.wait_for(lambda rx: rx.logs(), timeout=5.0)

    assert [log["body"] for log in logs] == ["line dropped"]


def test_wait_for_times_out_with_a_summary_of_what_arrived(receiver: OtlpReceiver) -> None:
    """A predicate that never holds raises TimeoutError describing the received data."""
    with pytest.raises(TimeoutError, match="received 0 spans"):
        receiver.wait_for(lambda rx: rx.spans(), timeout=0.05)


@pytest.mark.parametrize(
    ("path", "content_type", "status"),
    [("/v1/nothing", "application/x-protobuf", 404), ("/v1/traces", "application/json", 415)],
)
def test_http_requests_that_are_not_otlp_protobuf_are_refused(
    receiver: OtlpReceiver, path: str, content_type: str, status: int
) -> None:
    """Unknown paths and non-protobuf bodies get an error status and store nothing."""
    port = int(receiver.http_endpoint.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=b"{}", headers={"Content-Type": content_type})
        assert connection.getresponse().status == status
    finally:
        connection.close()
    assert receiver.requests == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stop_makes_exports_fail_and_start_brings_the_receiver_back(
    receiver: OtlpReceiver, protocol: Protocol
) -> None:
    """The same exporter fails while the receiver is stopped and succeeds once it is restarted."""
    endpoints = (receiver.grpc_endpoint, receiver.http_endpoint)
    exporter = _span_exporter(receiver, protocol, timeout=1.5)
    try:
        receiver.stop()
        assert exporter.export(_finished_spans()) is SpanExportResult.FAILURE
        receiver.start()
        assert exporter.export(_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert (receiver.grpc_endpoint, receiver.http_endpoint) == endpoints
    assert len(receiver.spans()) == 2
