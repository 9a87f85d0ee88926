"""Span export in two queues, so a file's own spans never wait behind line spans, and every span
that is not exported is counted.

A traced file makes up to ``max_line_spans_per_file`` line spans but only a handful of its own
(``foldermon.process_file`` and one per processor). With one queue, a backlog of traced files
fills it with line spans and the roots of later traces are lost. Here each kind has its own
bounded queue (and batch processor); when the line queue is full line spans are dropped first,
and every span that never reaches the collector (a full queue, a failed export, left at shutdown)
is reported to ``on_dropped`` with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from foldermon.telemetry._linespans import LINE_SPAN

FILE = "file"
LINE = "line"
# Spans of the file itself: one per file attempt plus one per processor, so plenty of files.
FILE_QUEUE = 8192
# Line spans: room for a few traced files at the per-file cap, within a bound on memory.
LINE_QUEUE_MIN, LINE_QUEUE_MAX = 2048, 65536
# Line spans leave in larger batches than the SDK's 512: a collector that takes its time per
# export (a busy or distant one) then keeps up with a traced backlog. A line span encodes to
# a few hundred bytes, so a batch stays well under the 4 MiB a gRPC receiver takes by default.
LINE_BATCH = 2048
FILE_BATCH = 512  # the SDK's default
BATCH_ENV = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"


SPAN_DROP_REASONS = ("line_queue_full", "file_queue_full", "export_failed", "shutdown")


def line_queue_size(max_line_spans_per_file: int) -> int:
    return min(LINE_QUEUE_MAX, max(LINE_QUEUE_MIN, 4 * max_line_spans_per_file))


class _Counted(SpanExporter):
    """The shared exporter as one queue sees it: what leaves the queue is accounted for."""

    def __init__(self, inner: SpanExporter, owner: AccountedSpanProcessor, kind: str) -> None:
        self._inner = inner
        self._owner = owner
        self._kind = kind

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:  # noqa: BLE001 - telemetry never raises into the agent
            result = SpanExportResult.FAILURE
        self._owner.left_queue(self._kind, len(spans), exported=result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        pass  # the owner shuts the shared exporter down once, after both queues

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class AccountedSpanProcessor(SpanProcessor):
    """Batches file spans and line spans separately towards one exporter; counts every loss."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        line_queue: int,
        on_dropped: Callable[[int, str], None],
        on_unconfirmed: Callable[[int], None] = lambda _count: None,
        file_queue: int = FILE_QUEUE,
    ) -> None:
        self._exporter = exporter
        self._on_dropped = on_dropped
        self._on_unconfirmed = on_unconfirmed
        self._lock = threading.Lock()
        self._capacity = {FILE: file_queue, LINE: line_queue}
        self._queued = {FILE: 0, LINE: 0}  # spans in a queue or in an export not yet returned
        self._closed = False
        # Each batch processor's own queue is as big as ours, so it never drops on its own
        # (OTEL_BSP_MAX_QUEUE_SIZE is not used: the queues are sized from the caps). Batches
        # never exceed their queue: OTEL_BSP_MAX_EXPORT_BATCH_SIZE, when set, is the
        # operator's word for both, within that bound.
        given = os.environ.get(BATCH_ENV, "")
        self._batches = {
            kind: BatchSpanProcessor(
                _Counted(exporter, self, kind),
                max_queue_size=queue,
                max_export_batch_size=min(int(given) if given.isdigit() else default, queue),
            )
            for kind, queue, default in ((FILE, file_queue, FILE_BATCH), (LINE, line_queue, LINE_BATCH))
        }

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        kind = LINE if span.name == LINE_SPAN else FILE
        with self._lock:
            full = self._closed or self._queued[kind] >= self._capacity[kind]
            if not full:
                self._queued[kind] += 1
        if full:
            self._on_dropped(1, "shutdown" if self._closed else f"{kind}_queue_full")
            return
        self._batches[kind].on_end(span)

    def left_queue(self, kind: str, count: int, *, exported: bool) -> None:
        with self._lock:
            if self._closed:
                return  # counted already, as left at shutdown
            self._queued[kind] -= count
        if not exported:
            self._on_dropped(count, "export_failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Both queues at once (the file spans' exports do not wait behind the line spans'),
        within ``timeout_millis``: the SDK's own flush waits for every export, however slow."""
        return self._each_within(lambda batch: batch.force_flush(timeout_millis), timeout_millis)

    def shutdown(self, timeout_millis: int = 5000) -> None:
        """Export what the queues hold within ``timeout_millis``; what is still queued or in an
        export not yet confirmed then is counted as dropped ("shutdown"), and as one failed
        export (``on_unconfirmed``), whatever the exporter makes of it later (it is shut down
        first, so an export it abandons then is not counted again)."""
        if self._closed:
            return
        self._each_within(lambda batch: batch.shutdown(), timeout_millis)  # type: ignore[no-untyped-call]
        with self._lock:
            left = sum(self._queued.values())
            self._queued = dict.fromkeys(self._queued, 0)
            self._closed = True
        if left > 0:
            self._on_dropped(left, "shutdown")
            self._on_unconfirmed(left)
        self._exporter.shutdown()

    def _each_within(self, call: Callable[[BatchSpanProcessor], object], timeout_millis: int) -> bool:
        """``call`` on each batch processor in a thread of its own; True if all returned in time."""
        done: list[object] = []
        threads = [
            threading.Thread(target=lambda b=batch: done.append(call(b)), name=f"spans-{kind}", daemon=True)
            for kind, batch in self._batches.items()
        ]
        deadline = time.monotonic() + timeout_millis / 1000
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return len(done) == len(threads) and all(r is not False for r in done)
