"""Which exporters to build, from the standard ``OTEL_*`` variables and the ``[telemetry]`` section."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from foldermon.config import TelemetryConfig
from foldermon.configcheck import MAX_SECONDS, telemetry_value_problem
from foldermon.errors import ConfigError

SIGNALS = ("traces", "metrics", "logs")
_CHOICES = {
    "traces": ("otlp", "console", "none"),
    "metrics": ("otlp", "prometheus", "console", "none"),
    "logs": ("otlp", "console", "none"),
}
PROTOCOLS = ("grpc", "http/protobuf")
_SAMPLERS: dict[str, Callable[[float], Sampler]] = {
    "always_on": lambda _rate: ALWAYS_ON,
    "always_off": lambda _rate: ALWAYS_OFF,
    "parentbased_always_on": lambda _rate: DEFAULT_ON,
    "parentbased_always_off": lambda _rate: DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased,
    "parentbased_traceidratio": ParentBasedTraceIdRatio,
}
ENABLE_HINT = (
    "telemetry export is off; set OTEL_EXPORTER_OTLP_ENDPOINT (or [telemetry] endpoint) to send traces, "
    "metrics and logs to a collector, or OTEL_METRICS_EXPORTER=prometheus for a scrape endpoint"
)


@dataclass(frozen=True, slots=True)
class ExportSettings:
    exporters: Mapping[str, str]  # signal -> otlp | prometheus | console | none
    protocol: str
    endpoint: str  # "" = the exporter's own default or its OTEL_* variable
    headers: str
    prometheus_host: str
    prometheus_port: int
    metric_interval_ms: float | None
    sampler: Sampler
    resource_attributes: Mapping[str, str]
    export_timeout: float | None = None  # seconds per OTLP export; None: the exporter's default

    @property
    def anything_exported(self) -> bool:
        return any(v != "none" for v in self.exporters.values())


# The batch processors' settings (spans: BSP, log records: BLRP), positive whole numbers.
_BATCH_VARIABLES = ("SCHEDULE_DELAY", "EXPORT_TIMEOUT", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE")
_BLRP_DEFAULTS = {"MAX_QUEUE_SIZE": 2048, "MAX_EXPORT_BATCH_SIZE": 512}


_COMPRESSIONS = ("gzip", "deflate", "none")


def sdk_variable_problems(env: Mapping[str, str]) -> list[str]:
    """What is wrong with the other OTEL_* variables the SDK reads while it starts (it would
    raise): export timeouts, compression, attribute and event limits."""
    problems = []
    for name, value in sorted(env.items()):
        if not name.startswith("OTEL_") or not value:
            continue
        if name.startswith("OTEL_EXPORTER_OTLP") and name.endswith("_TIMEOUT"):
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if not 0 < seconds <= MAX_SECONDS:
                problems.append(f"{name} {value[:80]!r} is not a number of seconds")
        elif name.startswith("OTEL_EXPORTER_OTLP") and name.endswith("_COMPRESSION"):
            if value.strip().lower() not in _COMPRESSIONS:
                problems.append(f"{name} {value[:80]!r} is not one of {', '.join(_COMPRESSIONS)}")
        elif name.endswith("_LIMIT") and not (value.isascii() and value.isdigit()):
            problems.append(f"{name} {value[:80]!r} is not a whole number")
    return problems


def batch_problems(env: Mapping[str, str]) -> list[str]:
    """What is wrong with the OTEL_BSP_* and OTEL_BLRP_* variables (the SDK would raise at start)."""
    problems = []
    for prefix in ("OTEL_BSP_", "OTEL_BLRP_"):
        for name in _BATCH_VARIABLES:
            value = env.get(prefix + name)
            if value is not None and not (value.isascii() and value.isdigit() and 0 < int(value) <= 10**9):
                problems.append(f"{prefix}{name} {value[:80]!r} is not a positive whole number")
    if not problems:
        queue, batch = (int(env.get(f"OTEL_BLRP_{n}") or d) for n, d in _BLRP_DEFAULTS.items())
        if batch > queue:
            problems.append(
                f"OTEL_BLRP_MAX_EXPORT_BATCH_SIZE {batch} is more than the log record queue "
                f"(OTEL_BLRP_MAX_QUEUE_SIZE {queue})"
            )
    return problems


def resolve(config: TelemetryConfig, env: Mapping[str, str]) -> ExportSettings:
    """Environment first, then the config file, then defaults; raises ConfigError on unknown values."""
    problems: list[str] = []
    endpoint_known = bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or config.endpoint
        or any(env.get(f"OTEL_EXPORTER_OTLP_{s.upper()}_ENDPOINT") for s in SIGNALS)
    )
    exporters: dict[str, str] = {}
    for signal in SIGNALS:
        chosen = env.get(f"OTEL_{signal.upper()}_EXPORTER") or getattr(config, f"{signal}_exporter")
        # With nothing configured the agent exports nothing rather than retrying against localhost.
        value = (chosen or ("otlp" if endpoint_known else "none")).strip().lower()
        if value not in _CHOICES[signal]:
            problems.append(f"{signal} exporter {value!r} is not one of {', '.join(_CHOICES[signal])}")
        exporters[signal] = value
    protocol = (env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or config.protocol or "grpc").strip().lower()
    if protocol not in PROTOCOLS:
        problems.append(f"OTLP protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    port_text = env.get("OTEL_EXPORTER_PROMETHEUS_PORT") or str(config.prometheus_port or 9464)
    if not port_text.isdigit() or len(port_text) > 5 or not 0 < int(port_text) < 65536:
        problems.append(f"prometheus port {port_text!r} is not a TCP port number")
        port_text = "9464"
    interval = env.get("OTEL_METRIC_EXPORT_INTERVAL")
    sampler_name = (
        env.get("OTEL_TRACES_SAMPLER") or config.traces_sampler or "parentbased_always_on"
    ).lower()
    if sampler_name not in _SAMPLERS:
        problems.append(f"traces sampler {sampler_name!r} is not one of {', '.join(_SAMPLERS)}")
        sampler_name = "parentbased_always_on"
    arg_text = env.get("OTEL_TRACES_SAMPLER_ARG") or str(config.traces_sampler_arg)
    try:
        rate = float(arg_text)
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:
        problems.append(f"traces sampler argument {arg_text[:80]!r} is not a number from 0 to 1")
        rate = 1.0
    host = env.get("OTEL_EXPORTER_PROMETHEUS_HOST") or config.prometheus_host or "127.0.0.1"
    for key, value in (
        ("endpoint", env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
        ("headers", env.get("OTEL_EXPORTER_OTLP_HEADERS", "")),
        ("resource_attributes", env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        ("prometheus_host", host),
    ):
        problem = telemetry_value_problem(key, value)
        if problem:
            problems.append(f"{key}: {problem}")
    if interval is not None and not (interval.isdigit() and 0 < int(interval) <= MAX_SECONDS * 1000):
        problems.append(f"OTEL_METRIC_EXPORT_INTERVAL {interval[:80]!r} is not a number of milliseconds")
    problems.extend(batch_problems(env))
    problems.extend(sdk_variable_problems(env))
    if problems:
        raise ConfigError(problems, "telemetry settings")
    return ExportSettings(
        exporters=exporters,
        protocol=protocol,
        endpoint="" if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") else config.endpoint,
        headers="" if env.get("OTEL_EXPORTER_OTLP_HEADERS") else config.headers,
        prometheus_host=host,
        prometheus_port=int(port_text),
        metric_interval_ms=None if interval else (config.metric_export_interval * 1000 or None),
        sampler=RetriesSampled(_SAMPLERS[sampler_name](rate)),
        resource_attributes=pairs(config.resource_attributes) or {},
    )


class RetriesSampled(Sampler):
    """The configured sampler, except that the retries of a file, and its line-by-line run that
    finds a failing line, are always traced, with everything inside them: a failure's record
    then names a trace that exists."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(  # noqa: PLR0917 - the SDK's Sampler interface
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        attrs = attributes or {}
        forced = (parent.is_valid and parent.trace_flags.sampled) or (
            not parent.is_valid
            and (_int(attrs.get("foldermon.attempt")) > 1 or bool(attrs.get("foldermon.lines.exact")))
        )
        if forced:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"RetriesSampled{{{self.inner.get_description()}}}"


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def pairs(text: str) -> dict[str, str] | None:
    """``k=v,k2=v2`` as in the OTEL_* variables."""
    pairs = [p.split("=", 1) for p in text.split(",") if "=" in p]
    return {k.strip(): v.strip() for k, v in pairs} or None


def quiet_sdk_loggers() -> None:
    """The exporters log every retry; failures are counted and reported by ExportGuard instead."""
    for name in (
        "opentelemetry.exporter",
        "opentelemetry.sdk._shared_internal",
        "opentelemetry.sdk.trace.export",
    ):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class ExportGuard:
    """Counts losses per key (a signal, or why spans were dropped) and reports each key at most
    once a minute, with the total so far."""

    def __init__(
        self,
        report: Callable[[str, int, str], None],
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._said: dict[str, int] = {}  # the total each key's last report gave
        self.failures: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self.on_failure: Callable[[str, int], None] = lambda _key, _amount: None

    def failed(self, key: str, detail: str, amount: int = 1) -> None:
        with self._lock:
            self.failures[key] = self.failures.get(key, 0) + amount
            now = self._clock()
            due = now - self._last.get(key, -self._every) >= self._every
            count = self.failures[key]
            if due:
                self._last[key], self._said[key] = now, count
        self.on_failure(key, amount)
        if due:
            self._report(key, count, detail)

    def say_rest(self) -> None:
        """Report what was counted since each key's last report (at a stop: the minute between
        reports must not hide the losses of its end)."""
        with self._lock:
            rest = [
                (k, n, n - self._said.get(k, 0)) for k, n in self.failures.items() if n > self._said.get(k, 0)
            ]
            self._said.update((k, n) for k, n, _ in rest)
        for key, count, more in rest:
            self._report(key, count, f"{more} since the last report")
