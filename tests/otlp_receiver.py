"""A real OTLP collector for tests: gRPC and HTTP/protobuf receivers that keep what arrives.

Telemetry is received over the wire exactly as a collector would receive it, then flattened
into plain dicts (hex ids, Python attribute values) so tests can assert on it directly.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NotRequired, Self, TypedDict, TypeVar, cast

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

Signal = Literal["traces", "metrics", "logs"]
Protocol = Literal["grpc", "http"]
_T = TypeVar("_T")
_HOST = "127.0.0.1"


class EventRecord(TypedDict):
    name: str
    attributes: dict[str, Any]
    time_ns: int


class SpanRecord(TypedDict):
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[EventRecord]
    status_code: int
    status_message: str
    links: list[tuple[str, str]]  # (trace id, span id) of each linked span
    resource: dict[str, Any]
    scope: str
    protocol: Protocol


class MetricPoint(TypedDict):
    name: str
    unit: str
    description: str
    type: str
    attributes: dict[str, Any]
    time_ns: int
    resource: dict[str, Any]
    scope: str
    protocol: Protocol
    value: NotRequired[int | float]
    is_monotonic: NotRequired[bool]
    aggregation_temporality: NotRequired[int]
    count: NotRequired[int]
    sum: NotRequired[float | None]
    bucket_counts: NotRequired[list[int]]
    explicit_bounds: NotRequired[list[float]]


class LogRecord(TypedDict):
    body: Any
    severity_text: str
    severity_number: int
    event_name: str
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    time_ns: int
    resource: dict[str, Any]
    scope: str
    protocol: Protocol


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _resource(resource: Resource) -> dict[str, Any]:
    return _attributes(resource.attributes)


def _spans(request: trace_pb.ExportTraceServiceRequest, protocol: Protocol) -> list[SpanRecord]:
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = _resource(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            records.extend(
                SpanRecord(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    events=[
                        EventRecord(
                            name=event.name,
                            attributes=_attributes(event.attributes),
                            time_ns=event.time_unix_nano,
                        )
                        for event in span.events
                    ],
                    status_code=span.status.code,
                    status_message=span.status.message,
                    links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    resource=resource,
                    scope=scope_spans.scope.name,
                    protocol=protocol,
                )
                for span in scope_spans.spans
            )
    return records


def _points(metric: Metric, base: MetricPoint) -> list[MetricPoint]:
    """One record per data point; histogram-like types carry count/sum instead of a value."""
    kind = metric.WhichOneof("data")
    points: list[MetricPoint] = []
    if kind in ("sum", "gauge"):
        number_points = metric.sum.data_points if kind == "sum" else metric.gauge.data_points
        for number in number_points:
            point = _point(base, kind, number.attributes, number.time_unix_nano)
            point["value"] = getattr(number, number.WhichOneof("value") or "as_int")
            if kind == "sum":
                point["is_monotonic"] = metric.sum.is_monotonic
                point["aggregation_temporality"] = metric.sum.aggregation_temporality
            points.append(point)
    elif kind == "histogram":
        for hist in metric.histogram.data_points:
            point = _point(base, kind, hist.attributes, hist.time_unix_nano)
            point["count"] = hist.count
            point["sum"] = hist.sum if hist.HasField("sum") else None
            point["bucket_counts"] = list(hist.bucket_counts)
            point["explicit_bounds"] = list(hist.explicit_bounds)
            point["aggregation_temporality"] = metric.histogram.aggregation_temporality
            points.append(point)
    elif kind is not None:
        # Other kinds (exponential histogram, summary) are kept by name so a test notices them.
        points.append(_point(base, kind, (), 0))
    return points


def _point(base: MetricPoint, kind: str, attrs: Iterable[KeyValue], time_ns: int) -> MetricPoint:
    point = base.copy()
    point["type"] = kind
    point["attributes"] = _attributes(attrs)
    point["time_ns"] = time_ns
    return point


def _metrics(request: metrics_pb.ExportMetricsServiceRequest, protocol: Protocol) -> list[MetricPoint]:
    records: list[MetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = _resource(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                base = MetricPoint(
                    name=metric.name,
                    unit=metric.unit,
                    description=metric.description,
                    type="",
                    attributes={},
                    time_ns=0,
                    resource=resource,
                    scope=scope_metrics.scope.name,
                    protocol=protocol,
                )
                records.extend(_points(metric, base))
    return records


def _logs(request: logs_pb.ExportLogsServiceRequest, protocol: Protocol) -> list[LogRecord]:
    records: list[LogRecord] = []
    for resource_logs in request.resource_logs:
        resource = _resource(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            records.extend(
                LogRecord(
                    body=_value(log.body),
                    severity_text=log.severity_text,
                    severity_number=log.severity_number,
                    event_name=log.event_name,
                    attributes=_attributes(log.attributes),
                    trace_id=log.trace_id.hex(),
                    span_id=log.span_id.hex(),
                    time_ns=log.time_unix_nano,
                    resource=resource,
                    scope=scope_logs.scope.name,
                    protocol=protocol,
                )
                for log in scope_logs.log_records
            )
    return records


class _Store:
    """What has arrived so far; the condition wakes waiters whenever a request is stored."""

    def __init__(self, delay: float = 0.0, *, hang: bool = False) -> None:
        self.delay = delay  # seconds each trace export takes, like a busy or distant collector
        self.hang = hang  # every export waits until the receiver stops, like a hung collector
        self.released = threading.Event()
        self.changed = threading.Condition()
        self.generation = 0
        self.spans: list[SpanRecord] = []
        self.metrics: list[MetricPoint] = []
        self.logs: list[LogRecord] = []
        self.requests: Counter[tuple[Signal, Protocol]] = Counter()

    def add_traces(self, request: trace_pb.ExportTraceServiceRequest, protocol: Protocol) -> None:
        self._held()
        time.sleep(self.delay)
        records = _spans(request, protocol)
        with self.changed:
            self.spans.extend(records)
            self._stored("traces", protocol)

    def add_metrics(self, request: metrics_pb.ExportMetricsServiceRequest, protocol: Protocol) -> None:
        self._held()
        records = _metrics(request, protocol)
        with self.changed:
            self.metrics.extend(records)
            self._stored("metrics", protocol)

    def add_logs(self, request: logs_pb.ExportLogsServiceRequest, protocol: Protocol) -> None:
        self._held()
        records = _logs(request, protocol)
        with self.changed:
            self.logs.extend(records)
            self._stored("logs", protocol)

    def _held(self) -> None:
        if self.hang:
            self.released.wait()

    def _stored(self, signal: Signal, protocol: Protocol) -> None:
        self.requests[signal, protocol] += 1
        self.generation += 1
        self.changed.notify_all()


class _TraceServicer(trace_grpc.TraceServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(  # noqa: N802 - the generated servicer fixes the name
        self, request: trace_pb.ExportTraceServiceRequest, context: object
    ) -> trace_pb.ExportTraceServiceResponse:
        self._store.add_traces(request, "grpc")
        return trace_pb.ExportTraceServiceResponse()


class _MetricsServicer(metrics_grpc.MetricsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(  # noqa: N802 - the generated servicer fixes the name
        self, request: metrics_pb.ExportMetricsServiceRequest, context: object
    ) -> metrics_pb.ExportMetricsServiceResponse:
        self._store.add_metrics(request, "grpc")
        return metrics_pb.ExportMetricsServiceResponse()


class _LogsServicer(logs_grpc.LogsServiceServicer):
    def __init__(self, store: _Store) -> None:
        self._store = store

    def Export(  # noqa: N802 - the generated servicer fixes the name
        self, request: logs_pb.ExportLogsServiceRequest, context: object
    ) -> logs_pb.ExportLogsServiceResponse:
        self._store.add_logs(request, "grpc")
        return logs_pb.ExportLogsServiceResponse()


def _serialize(message: Any) -> bytes:
    # The protobuf runtime ships no type information, so messages type as Any.
    return cast(bytes, message.SerializeToString())


def _http_traces(store: _Store, body: bytes) -> bytes:
    store.add_traces(trace_pb.ExportTraceServiceRequest.FromString(body), "http")
    return _serialize(trace_pb.ExportTraceServiceResponse())


def _http_metrics(store: _Store, body: bytes) -> bytes:
    store.add_metrics(metrics_pb.ExportMetricsServiceRequest.FromString(body), "http")
    return _serialize(metrics_pb.ExportMetricsServiceResponse())


def _http_logs(store: _Store, body: bytes) -> bytes:
    store.add_logs(logs_pb.ExportLogsServiceRequest.FromString(body), "http")
    return _serialize(logs_pb.ExportLogsServiceResponse())


_HTTP_ROUTES: dict[str, Callable[[_Store, bytes], bytes]] = {
    "/v1/traces": _http_traces,
    "/v1/metrics": _http_metrics,
    "/v1/logs": _http_logs,
}
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda body: body,
    "identity": lambda body: body,
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, store: _Store) -> None:
        super().__init__((_HOST, port), _OtlpHttpHandler)
        self.store = store


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes each connection, so stop() leaves no kept-alive connection serving.
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        route = _HTTP_ROUTES.get(self.path)
        if route is None:
            self.send_error(404, f"no OTLP route {self.path}")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/x-protobuf":
            self.send_error(415, "only application/x-protobuf is accepted")
            return
        decompress = _DECOMPRESS.get(self.headers.get("Content-Encoding", "").lower())
        if decompress is None:
            self.send_error(415, "unsupported Content-Encoding")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            payload = route(cast(_HttpServer, self.server).store, decompress(body))
        except (DecodeError, OSError, zlib.error) as exc:
            self.send_error(400, f"undecodable OTLP payload: {exc}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt: str, *args: object) -> None:
        """Stay quiet: request lines would only clutter test output."""


def _matches(point: MetricPoint, name: str, attrs: dict[str, object]) -> bool:
    attributes = point["attributes"]
    return point["name"] == name and all(
        key in attributes and attributes[key] == value for key, value in attrs.items()
    )


class OtlpReceiver:
    """A collector stand-in listening on gRPC and HTTP/protobuf; use as a context manager.

    ``stop()`` makes it vanish mid-test; ``start()`` brings it back on the same ports. With
    ``delay`` every trace export takes that many seconds, as with a busy or distant collector;
    with ``hang`` no export is ever answered until the receiver is left.
    """

    def __init__(self, delay: float = 0.0, *, hang: bool = False) -> None:
        self._store = _Store(delay, hang=hang)
        self._grpc_port = 0
        self._http_port = 0
        self._grpc_server: Any = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._store.released.set()
        self.stop()

    @property
    def running(self) -> bool:
        return self._http_server is not None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{_HOST}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{_HOST}:{self._http_port}"

    def http_signal_endpoint(self, signal: Signal) -> str:
        """The full URL an OTLP/HTTP exporter given an explicit endpoint must post to."""
        return f"{self.http_endpoint}/v1/{signal}"

    def endpoint_env(self, protocol: Protocol) -> dict[str, str]:
        """``OTEL_*`` variables pointing an exporting process at this receiver."""
        if protocol == "grpc":
            return {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.grpc_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            }
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }

    def start(self) -> None:
        """Listen again; the first start picks free ports, later ones reuse them."""
        if self.running:
            return
        self._start_grpc()
        try:
            server = _HttpServer(self._http_port, self._store)
        except OSError:
            self.stop()  # never leave half a collector listening
            raise
        self._http_port = server.server_address[1]
        # A short poll interval keeps stop() fast: shutdown() waits for the next poll.
        self._http_thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="otlp-http-receiver", daemon=True
        )
        self._http_server = server
        self._http_thread.start()

    def _start_grpc(self) -> None:
        # No SO_REUSEPORT: two receivers must never silently share one port.
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc-receiver"),
            options=[("grpc.so_reuseport", 0)],
        )
        trace_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self._store), server)  # type: ignore[no-untyped-call]
        metrics_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self._store), server)  # type: ignore[no-untyped-call]
        logs_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self._store), server)  # type: ignore[no-untyped-call]
        self._grpc_port = int(server.add_insecure_port(f"{_HOST}:{self._grpc_port}"))
        server.start()
        self._grpc_server = server

    def stop(self) -> None:
        """Close both listeners and drop open connections, like a collector going away."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait()
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join()
            self._http_thread = None

    def spans(self) -> list[SpanRecord]:
        with self._store.changed:
            return list(self._store.spans)

    def metrics(self) -> list[MetricPoint]:
        with self._store.changed:
            return list(self._store.metrics)

    def logs(self) -> list[LogRecord]:
        with self._store.changed:
            return list(self._store.logs)

    @property
    def requests(self) -> Counter[tuple[Signal, Protocol]]:
        """Export requests received, keyed by ``(signal, protocol)``."""
        with self._store.changed:
            return self._store.requests.copy()

    def clear(self) -> None:
        """Forget everything received so far (request counts included)."""
        with self._store.changed:
            self._store.spans.clear()
            self._store.metrics.clear()
            self._store.logs.clear()
            self._store.requests.clear()

    def latest_metric(self, name: str, /, **attrs: object) -> MetricPoint | None:
        """The last point of ``name`` whose attributes include ``attrs`` (dotted keys: ``**{}``)."""
        matching = [point for point in self.metrics() if _matches(point, name, attrs)]
        return matching[-1] if matching else None

    def wait_for(self, predicate: Callable[[OtlpReceiver], _T], timeout: float = 5.0) -> _T:
        """Return the first truthy ``predicate(self)``, re-checked whenever data arrives."""
        deadline = time.monotonic() + timeout
        while True:
            with self._store.changed:
                seen = self._store.generation
            result = predicate(self)
            if result:
                return result
            with self._store.changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"OTLP data not seen in {timeout}s; {self._summary()}")
                if self._store.generation == seen:
                    self._store.changed.wait(remaining)

    def _summary(self) -> str:
        store = self._store
        names = sorted({span["name"] for span in store.spans} | {m["name"] for m in store.metrics})
        return (
            f"received {len(store.spans)} spans, {len(store.metrics)} metric points, "
            f"{len(store.logs)} logs; names: {names}"
        )
