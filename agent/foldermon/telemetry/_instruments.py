"""The metric instruments of the telemetry contract, created once and passed to whoever records."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Counter, Meter, Observation

# Seconds from 1 ms to 10 min: the SDK's default buckets assume milliseconds.
SECONDS_BUCKETS: Sequence[float] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
# A processor may spend microseconds on a small file: its buckets start at 1 µs.
PROCESSOR_BUCKETS: Sequence[float] = (
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    *SECONDS_BUCKETS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class QueueSample:
    """One root's queue as seen by the gauge callback."""

    root: str
    root_id: str
    depths: dict[str, int]  # state -> files
    oldest_age: float | None


@dataclass(frozen=True, slots=True)
class WatchModeSample:
    root: str
    root_id: str
    mode: str
    reason: str


class Tally:
    """Counter increments summed here and added once per claim batch (``flush``): a backlog of
    small files then costs a few metric calls per batch instead of several per file."""

    def __init__(self) -> None:
        self._sums: dict[tuple[Counter, tuple[tuple[str, Any], ...]], int] = {}
        self._flush_at = 0.0

    def add(self, counter: Counter, amount: int, attributes: Mapping[str, Any]) -> None:
        key = (counter, tuple(attributes.items()))
        self._sums[key] = self._sums.get(key, 0) + amount

    def flush_every(self, seconds: float, now: float) -> None:
        """Flush if the last flush is ``seconds`` old (asked between the batches of a long file, so
        its lines read show as they go)."""
        if now >= self._flush_at:
            self.flush()
            self._flush_at = now + seconds

    def flush(self) -> None:
        sums, self._sums = self._sums, {}
        for (counter, attributes), amount in sums.items():
            counter.add(amount, dict(attributes))


class Instruments:
    """Counters and histograms of the contract; gauges read from callbacks set by the service."""

    def __init__(self, meter: Meter) -> None:
        self.tally = Tally()
        self.lines_in = meter.create_counter(
            "foldermon.processor.lines.in", unit="{line}", description="Lines that entered a processor"
        )
        self.lines_out = meter.create_counter(
            "foldermon.processor.lines.out", unit="{line}", description="Lines a processor emitted"
        )
        self.processor_errors = meter.create_counter(
            "foldermon.processor.errors", unit="{error}", description="Exceptions raised by a processor"
        )
        self.processor_duration = meter.create_histogram(
            "foldermon.processor.duration",
            unit="s",
            description="Time one processor spent on one file",
            explicit_bucket_boundaries_advisory=PROCESSOR_BUCKETS,
        )
        self.files = meter.create_counter(
            "foldermon.files", unit="{file}", description="File attempts by outcome"
        )
        self.lines_read = meter.create_counter(
            "foldermon.lines.read",
            unit="{line}",
            description="Lines read from inputs, counted as they are read (a long file shows its progress)",
        )
        self.file_duration = meter.create_histogram(
            "foldermon.file.duration",
            unit="s",
            description="Time to process one file attempt, claim to finish",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.pickup_latency = meter.create_histogram(
            "foldermon.file.pickup_latency",
            unit="s",
            description="Time from a file's arrival in unprocessed/ to its claim",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.recovered = meter.create_counter(
            "foldermon.files.recovered", unit="{file}", description="Files returned from dead instances"
        )
        self.export_failures = meter.create_counter(
            "foldermon.telemetry.export.failures",
            unit="{error}",
            description="Failed telemetry exports by signal",
        )
        self.spans_dropped = meter.create_counter(
            "foldermon.telemetry.spans.dropped",
            unit="{span}",
            description="Spans that were never exported, by reason (a full queue, a failed export, shutdown)",
        )
        self.queue_source: Callable[[], Iterable[QueueSample]] = list
        self.mode_source: Callable[[], Iterable[WatchModeSample]] = list
        # (attributes, value) pairs read by the gauges below.
        self.disk_source: Callable[[], Iterable[tuple[dict[str, str], int]]] = list
        self.hold_source: Callable[[], Iterable[tuple[dict[str, str], int]]] = list
        self.expired = meter.create_counter(
            "foldermon.files.expired",
            unit="{file}",
            description="Files removed by retention, by folder (processed, output, failed)",
        )
        meter.create_observable_gauge(
            "foldermon.disk.free",
            callbacks=[lambda _o: [Observation(v, a) for a, v in self.disk_source()]],
            unit="By",
            description="Free bytes for the queue folders and for the output folder of each root",
        )
        meter.create_observable_gauge(
            "foldermon.root.paused",
            callbacks=[lambda _o: [Observation(v, a) for a, v in self.hold_source()]],
            description="1 while a root claims nothing (paused by hand or short of disk), else 0; with why",
        )
        self._cached: list[QueueSample] = []
        self._sampled_at = -1e9
        self._served: set[str] = set()
        meter.create_observable_gauge(
            "foldermon.queue.depth",
            callbacks=[self._depths],
            unit="{file}",
            description="Files per queue state",
        )
        meter.create_observable_gauge(
            "foldermon.queue.oldest_age",
            callbacks=[self._oldest],
            unit="s",
            description="Age of the oldest file waiting in unprocessed/",
        )
        meter.create_observable_gauge(
            "foldermon.watch.mode",
            callbacks=[self._modes],
            # No unit: "1" would become a _ratio suffix behind a collector but not on our own endpoint.
            description="1 for the watch mode in use per root, with the reason",
        )

    def _samples(self, gauge: str) -> list[QueueSample]:
        """One look at the queues serves both gauges of a collection: a gauge asking again (the
        next collection, the final one at exit included) gets a new look."""
        if gauge in self._served or time.monotonic() - self._sampled_at > 1.0:
            self._cached = list(self.queue_source())
            self._sampled_at = time.monotonic()
            self._served.clear()
        self._served.add(gauge)
        return self._cached

    def _depths(self, _options: CallbackOptions) -> Iterable[Observation]:
        for sample in self._samples("depth"):
            for state, count in sample.depths.items():
                yield Observation(count, {"foldermon.queue.state": state, **_root(sample)})

    def _oldest(self, _options: CallbackOptions) -> Iterable[Observation]:
        for sample in self._samples("oldest"):
            yield Observation(sample.oldest_age or 0.0, _root(sample))

    def _modes(self, _options: CallbackOptions) -> Iterable[Observation]:
        for m in self.mode_source():
            attrs = {
                **_root(m),
                "foldermon.watch.mode": m.mode,
                "foldermon.watch.reason": m.reason,
            }
            yield Observation(1, attrs)


def _root(sample: QueueSample | WatchModeSample) -> dict[str, str]:
    return {"foldermon.watch.root": sample.root, "foldermon.watch.root.id": sample.root_id}
