"""Spans of one file attempt: the file span's processor children and the bounded per-line spans."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from foldermon.config import TelemetryConfig
from foldermon.errors import ProcessorError
from foldermon.pipeline import Pipeline

# Lines are examined one by one (to see what each processor did) for at most this many
# times the span cap per file; after that the file runs in fast batches.
EXAMINE_FACTOR = 10


def processor_spans(tracer: Tracer, parent: Span, pipeline: Pipeline, start_ns: int) -> None:
    """One child span per processor, covering the file, with the lines it saw and emitted."""
    context = trace.set_span_in_context(parent)
    end_ns = time.time_ns()
    for stage, stats in zip(pipeline.stages, pipeline.stats(), strict=True):
        span = tracer.start_span(
            "foldermon.processor",
            context=context,
            start_time=start_ns,
            attributes={
                "foldermon.processor.id": stage.id,
                "foldermon.processor.type": stage.type,
                "foldermon.lines.in": stats.lines_in,
                "foldermon.lines.out": stats.lines_out,
                "foldermon.processor.seconds": stats.seconds,
            },
        )
        if stats.errors:
            span.set_status(Status(StatusCode.ERROR, f"{stats.errors} error(s)"))
        span.end(end_time=end_ns)


class LineTracer:
    """Feeds batches through the pipeline, tracing a bounded sample of lines one by one.

    A line gets a ``foldermon.line`` span when it was dropped or failed, or by the sample
    ratio, until ``cap`` spans exist for the file; a failing line always gets one.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        tracer: Tracer,
        parent: Span,
        *,
        ratio: float,
        cap: int,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._pipeline = pipeline
        self._tracer = tracer
        self._context: Context = trace.set_span_in_context(parent)
        self._ratio = ratio
        self._cap = cap
        self._budget = cap * EXAMINE_FACTOR
        self._rng = rng
        self.spans = 0

    @classmethod
    def for_config(
        cls, pipeline: Pipeline, tracer: Tracer, parent: Span, config: TelemetryConfig
    ) -> LineTracer | None:
        """The line tracer ``[telemetry]`` asks for (``trace_lines`` / ``--trace``), or None."""
        if not config.trace_lines or config.max_line_spans_per_file <= 0:
            return None
        return cls(
            pipeline, tracer, parent, ratio=config.line_sample_ratio, cap=config.max_line_spans_per_file
        )

    def __call__(self, lines: list[str]) -> list[str]:
        if self._budget <= 0 or self.spans >= self._cap:
            return self._pipeline.feed(lines)
        out: list[str] = []
        for i, line in enumerate(lines):
            if self._budget <= 0 or self.spans >= self._cap:
                out.extend(self._pipeline.feed(lines[i:]))
                break
            self._budget -= 1
            out.extend(self._one(line))
        return out

    def _one(self, line: str) -> list[str]:
        start = time.time_ns()
        try:
            result, steps = self._pipeline.feed_traced(line)
        except ProcessorError as exc:
            span = self._span(start, exc.line or self._pipeline.lines_fed)
            span.add_event(
                "foldermon.processor.step",
                {"foldermon.processor.id": exc.processor_id, "foldermon.line.result": "failed"},
            )
            span.record_exception(exc.__cause__ or exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.end()
            raise
        dropped = not result
        if dropped or self._rng() < self._ratio:
            span = self._span(start, self._pipeline.lines_fed)
            stages = self._pipeline.stages
            for index, outcome in steps:
                span.add_event(
                    "foldermon.processor.step",
                    {
                        "foldermon.processor.id": stages[index].id,
                        "foldermon.processor.type": stages[index].type,
                        "foldermon.line.result": outcome,
                    },
                )
            span.end()
        return result

    def _span(self, start_ns: int, number: int) -> Span:
        self.spans += 1
        return self._tracer.start_span(
            "foldermon.line",
            context=self._context,
            start_time=start_ns,
            attributes={"foldermon.line.number": number},
        )
