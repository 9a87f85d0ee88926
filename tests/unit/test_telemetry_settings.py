"""How the OTEL_* variables and [telemetry] combine into exporter choices, sampler and resource."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased

from foldermon.config import TelemetryConfig
from foldermon.errors import ConfigError
from foldermon.telemetry import ExportGuard, build_resource, resolve
from foldermon.telemetry._exporters import RetriesSampled


def test_nothing_configured_exports_nothing() -> None:
    """With no endpoint and no exporter named, every signal is off."""
    settings = resolve(TelemetryConfig(), {})
    assert dict(settings.exporters) == {"traces": "none", "metrics": "none", "logs": "none"}
    assert not settings.anything_exported


def test_an_endpoint_turns_on_otlp_for_every_signal() -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone means OTLP for traces, metrics and logs."""
    settings = resolve(TelemetryConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert set(settings.exporters.values()) == {"otlp"}
    assert settings.protocol == "grpc"


def test_environment_wins_over_the_config_file() -> None:
    """An OTEL_* variable overrides the same setting in [telemetry]."""
    config = TelemetryConfig(metrics_exporter="otlp", protocol="grpc", endpoint="http://file:4317")
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    settings = resolve(config, env)
    assert settings.exporters["metrics"] == "prometheus"
    assert settings.protocol == "http/protobuf"
    assert settings.endpoint == "http://file:4317"


def test_config_file_alone_can_configure_export() -> None:
    """[telemetry] endpoint, protocol and prometheus port work without any variable."""
    config = TelemetryConfig(endpoint="http://c:4318", protocol="http/protobuf", prometheus_port=9999)
    settings = resolve(config, {})
    assert settings.exporters["traces"] == "otlp"
    assert (settings.endpoint, settings.protocol, settings.prometheus_port) == (
        "http://c:4318",
        "http/protobuf",
        9999,
    )
    assert settings.prometheus_host == "127.0.0.1"


def test_unknown_values_are_config_errors_listing_every_problem() -> None:
    """Unknown exporter, protocol and sampler names are all reported at once."""
    env = {
        "OTEL_TRACES_EXPORTER": "zipkin",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        "OTEL_TRACES_SAMPLER": "sometimes",
    }
    with pytest.raises(ConfigError) as info:
        resolve(TelemetryConfig(), env)
    assert len(info.value.problems) == 3


def test_sampler_comes_from_config_with_its_argument() -> None:
    """traces_sampler and traces_sampler_arg build the sampler; the variable wins."""
    sampler = resolve(TelemetryConfig(traces_sampler="traceidratio", traces_sampler_arg=0.25), {}).sampler
    assert isinstance(sampler, RetriesSampled)
    assert isinstance(sampler.inner, TraceIdRatioBased)
    assert sampler.inner.rate == 0.25
    env = {"OTEL_TRACES_SAMPLER": "always_off"}
    off = resolve(TelemetryConfig(traces_sampler="traceidratio"), env).sampler
    assert isinstance(off, RetriesSampled)
    assert off.inner is ALWAYS_OFF


@pytest.mark.parametrize(
    ("attributes", "sampled"),
    [
        ({"foldermon.attempt": 1}, False),
        ({"foldermon.attempt": 2}, True),
        ({"foldermon.attempt": 1, "foldermon.lines.exact": True}, True),
        ({}, False),
    ],
)
def test_retries_and_line_by_line_runs_are_traced_whatever_the_sampler(
    attributes: dict[str, object], sampled: bool
) -> None:
    """Under always_off a first attempt is dropped, but a retry or a run that finds a failing line is kept."""
    sampler = resolve(TelemetryConfig(traces_sampler="always_off"), {}).sampler
    result = sampler.should_sample(None, 12345, "foldermon.process_file", attributes=attributes)
    assert result.decision.is_sampled() is sampled


def test_spans_inside_a_kept_trace_are_kept() -> None:
    """Children follow a sampled parent even when the configured sampler would drop their trace."""
    sampler = resolve(TelemetryConfig(traces_sampler="traceidratio", traces_sampler_arg=0.0), {}).sampler
    parent = trace.NonRecordingSpan(
        trace.SpanContext(12345, 678, is_remote=False, trace_flags=trace.TraceFlags(1))
    )
    context = trace.set_span_in_context(parent)
    assert sampler.should_sample(context, 12345, "foldermon.line").decision.is_sampled()


def test_resource_has_contract_attributes_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """service.name defaults to foldermon-agent; config attributes apply; OTEL_RESOURCE_ATTRIBUTES wins."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    attrs = dict(build_resource("inst-1", {"deployment.environment": "dev", "team": "ops"}).attributes)
    assert attrs["service.name"] == "foldermon-agent"
    assert attrs["service.instance.id"] == "inst-1"
    assert attrs["deployment.environment"] == "prod"
    assert attrs["team"] == "ops"
    assert attrs["host.name"]
    assert attrs["foldermon.worker"] == 0
    assert dict(build_resource("inst-2", worker=3).attributes)["foldermon.worker"] == 3


def test_export_failures_are_reported_at_most_once_a_minute_per_signal() -> None:
    """Every failure is counted; reports of one signal are at least 60 s apart."""
    now = [0.0]
    reports: list[tuple[str, int]] = []
    guard = ExportGuard(lambda signal, count, _detail: reports.append((signal, count)), clock=lambda: now[0])
    for t in (0.0, 1.0, 30.0, 59.9, 60.0, 61.0):
        now[0] = t
        guard.failed("traces", "unavailable")
    guard.failed("metrics", "unavailable")
    assert reports == [("traces", 1), ("traces", 5), ("metrics", 1)]
    assert guard.failures["traces"] == 6


def test_what_was_counted_since_the_last_report_is_said_at_the_end() -> None:
    """Losses counted within the minute after a report are said at the stop (with the total),
    once; a key with nothing new is not said again."""
    now = [0.0]
    reports: list[tuple[str, int, str]] = []
    guard = ExportGuard(lambda key, count, detail: reports.append((key, count, detail)), clock=lambda: now[0])
    guard.failed("line_queue_full", "1 span(s)")
    guard.failed("line_queue_full", "9 span(s)", amount=9)
    guard.failed("shutdown", "5 span(s)", amount=5)
    guard.say_rest()
    guard.say_rest()
    assert reports == [
        ("line_queue_full", 1, "1 span(s)"),
        ("shutdown", 5, "5 span(s)"),
        ("line_queue_full", 10, "9 since the last report"),
    ]
