"""OpenTelemetry for the agent: providers built in one place, instruments passed to who records."""

from foldermon.telemetry._exporters import ENABLE_HINT, ExportGuard, ExportSettings, resolve
from foldermon.telemetry._instruments import (
    PROCESSOR_BUCKETS,
    SECONDS_BUCKETS,
    Instruments,
    QueueSample,
    WatchModeSample,
)
from foldermon.telemetry._providers import Telemetry, build_resource
from foldermon.telemetry._spanqueue import SPAN_DROP_REASONS
from foldermon.telemetry._spans import LineTracer, processor_spans, record_links

__all__ = [
    "ENABLE_HINT",
    "PROCESSOR_BUCKETS",
    "SECONDS_BUCKETS",
    "SPAN_DROP_REASONS",
    "ExportGuard",
    "ExportSettings",
    "Instruments",
    "LineTracer",
    "QueueSample",
    "Telemetry",
    "WatchModeSample",
    "build_resource",
    "processor_spans",
    "record_links",
    "resolve",
]
