"""Spans of one file attempt: the file span's processor children and the bounded per-line spans."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from stat import S_ISREG
from typing import Any, BinaryIO, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

from foldermon.config import TelemetryConfig
from foldermon.errors import ProcessorError
from foldermon.pipeline import Pipeline, Step, may_hold, step_result
from foldermon.telemetry._linespans import LINE_SPAN, STEP_EVENT, LineSpans, step_attributes

_UNSET = Status(StatusCode.UNSET)

# Lines are examined one by one (to see what each processor did) for at most this many
# times the span cap per file, spread over the whole file; the rest runs in fast batches.
EXAMINE_FACTOR = 10


def examine_budget(cap: int, ratio: float) -> int:
    """Lines to examine one by one for ``cap`` spans: an examined line gets a span when it was
    dropped or by the ratio, so ``cap / ratio`` of them fill the cap (at most EXAMINE_FACTOR
    times it); examining more would only cost time."""
    if ratio <= 0:
        return cap * EXAMINE_FACTOR
    return cap * min(EXAMINE_FACTOR, math.ceil(1 / ratio))


def record_links(record: Mapping[str, Any]) -> list[Link]:
    """Links to the spans of a file's attempts that an error record names and that were kept."""
    links = []
    for t in record.get("attempt_traces") or []:
        try:
            if t.get("sampled"):
                context = SpanContext(
                    int(t["trace_id"], 16), int(t["span_id"], 16), is_remote=True, trace_flags=TraceFlags(1)
                )
                links.append(Link(context, {"foldermon.attempt": int(t.get("attempt") or 0)}))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue  # a record edited by hand: its other attempts still link
    return links


def processor_spans(spans: LineSpans, parent: Span, pipeline: Pipeline, start_ns: int) -> None:
    """One child span per processor, laid end to end from the file span's start, each as long as
    the time its processor really ran (summed over the file), so Jaeger shows which one is slow."""
    context = parent.get_span_context()
    stats = pipeline.stats()
    total = sum(s.seconds for s in stats) or 1.0
    at = start_ns
    for stage, stat in zip(pipeline.stages, stats, strict=True):
        end = at + int(stat.seconds * 1e9)
        attributes: dict[str, Any] = {
            "foldermon.processor.id": stage.id,
            "foldermon.processor.type": stage.type,
            "foldermon.lines.in": stat.lines_in,
            "foldermon.lines.out": stat.lines_out,
            "foldermon.processor.seconds": stat.seconds,
            "foldermon.processor.share": round(stat.seconds / total, 4),
        }
        status = _UNSET
        if stat.errors:
            attributes["error.type"] = stat.error_type or "_OTHER"
            status = Status(StatusCode.ERROR, f"{stat.errors} error(s)")
        spans.finished("foldermon.processor", context, attributes, at, end, status=status)
        at = end


class LineTracer:
    """Feeds batches through the pipeline, tracing a bounded sample of lines one by one.

    The examined lines are spread over the whole file: the rate is the budget left over the
    lines still to come, estimated from the share of the file's bytes (as stored: compressed
    or not) read so far. An examined line gets a ``foldermon.line`` span when
    it was dropped, or by the sample ratio, until ``cap`` spans exist for the file. A line a
    processor fails on always gets an ERROR span: with ``exact`` (a retry that must name the
    line) the unexamined lines run one by one too.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        spans: LineSpans,
        parent: Span,
        *,
        ratio: float,
        cap: int,
        source: BinaryIO | None = None,
        exact: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._spans = spans
        self._parent = parent.get_span_context()
        self._context: Context = trace.set_span_in_context(parent)
        self._steps: dict[tuple[int, str], Attributes] = {}  # step event attributes, built once
        self._ratio = ratio
        self._cap = cap
        self._budget = examine_budget(cap, ratio)
        self._paced = self._budget > cap  # else every examined line fits under the cap
        self._progress = _progress_of(source)
        self._exact = exact
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not secrets
        self._batch_left = 0
        self._examine_later = 0  # lines the later batches are expected to examine
        self.spans = 0
        self.examined = 0
        self._seen = 0  # examined lines that ran whole

    @classmethod
    def for_config(
        cls,
        pipeline: Pipeline,
        spans: LineSpans,
        parent: Span,
        config: TelemetryConfig,
        *,
        source: BinaryIO | None = None,
        exact: bool = False,
    ) -> LineTracer | None:
        """The line tracer ``[telemetry]`` asks for (``trace_lines`` / ``--trace``), or None."""
        if not config.trace_lines or config.max_line_spans_per_file <= 0:
            return None
        return cls(
            pipeline,
            spans,
            parent,
            ratio=config.line_sample_ratio,
            cap=config.max_line_spans_per_file,
            source=source,
            exact=exact,
        )

    def summary(self) -> dict[str, int | bool]:
        """What the file span says about its line spans: how many, of how many lines examined,
        and whether lines went unexamined (the cap or the budget cut the trace short)."""
        return {
            "foldermon.lines.traced": self.spans,
            "foldermon.lines.examined": self.examined,
            "foldermon.trace.truncated": self.examined < self._pipeline.lines_fed,
        }

    def __call__(self, lines: list[str]) -> list[str]:
        picked = self._pick(lines)
        out: list[str] = []
        start = 0
        for index in picked:
            if start < index:
                out.extend(self._run(lines[start:index]))
            out.extend(self._one(lines[index]))
            start = index + 1
        if start < len(lines):
            out.extend(self._run(lines[start:]))
        return out

    def _pick(self, lines: list[str]) -> list[int]:
        """Indices of the lines of this batch to examine, spread at the rate the budget allows."""
        if self._budget <= 0 or self.spans >= self._cap:
            return []
        left = len(lines) + self._lines_after(len(lines))
        count = min(len(lines), self._budget, max(1, round(len(lines) * self._budget / left)))
        self._budget -= count
        self._batch_left = count
        self._examine_later = max(0, min(self._budget, int(left) - len(lines)))
        return sorted(self._rng.sample(range(len(lines)), count))

    def _lines_after(self, batch: int) -> float:
        """How many lines are still to come after this batch, by the share of the file read so
        far (the reader is at most a chunk ahead of the lines handed out)."""
        share = self._progress() if self._progress is not None else 0.0
        done = self._pipeline.lines_fed + batch
        return done * (1.0 - share) / share if share > 0 else 0.0

    def _keep(self, dropped: bool) -> bool:
        """Whether an examined line gets a span: dropped ones, others by ratio, paced over the
        examined lines so the cap is not spent early in the file: the k-th span waits until
        (k - 1/2) / cap of the examined lines have run, unless the lines left to examine would
        not fill the cap; so wanted lines anywhere find room, and the cap fills when it can."""
        self._batch_left -= 1
        self._seen += 1
        if self.spans >= self._cap or not (dropped or self._rng.random() < self._ratio):
            return False
        if not self._paced:
            return True
        to_come = self._examine_later + self._batch_left + 1  # this line included
        if to_come <= self._cap - self.spans:
            return True
        return self.spans + 0.5 < self._cap * self._seen / (self._seen + to_come - 1)

    def _run(self, lines: list[str]) -> list[str]:
        if self._exact:
            return self._run_exact(lines)
        try:
            return self._pipeline.feed(lines)
        except ProcessorError as exc:
            if exc.line is not None:
                self.examined += 1  # the failing line, run alone to name it
                self._failed(exc, time.time_ns(), [])
            raise

    def _run_exact(self, lines: list[str]) -> list[str]:
        """Line by line (to name a failing line): the failing line's span shows its path up to
        the failure."""
        out: list[str] = []
        for line in lines:
            try:
                out.extend(self._alone(line)[0])
            except ProcessorError:
                self.examined += 1  # the failing line, run alone to name it
                raise
        return out

    def _alone(self, line: str) -> tuple[list[str], list[Step], int]:
        """One line through the pipeline by itself: its output, what each stage did to it, and
        when it started. A processor failing on it gets the line's ERROR span."""
        start = time.time_ns()
        steps: list[Step] = []
        try:
            return self._pipeline.feed_steps(line, steps), steps, start
        except ProcessorError as exc:
            self._failed(exc, start, steps)
            raise

    def _one(self, line: str) -> list[str]:
        self.examined += 1  # counted as it runs: a failure ends the batch before the rest
        result, steps, start = self._alone(line)
        if self._keep(dropped=not result):
            self.spans += 1
            events = [self._step(index, step_result(before, after)) for index, before, after in steps]
            self._spans.emit(self._parent, self._pipeline.lines_fed, start, events)
        return result

    def _step(self, index: int, outcome: str) -> Attributes:
        attributes = self._steps.get((index, outcome))
        if attributes is None:
            stage = self._pipeline.stages[index]
            held = outcome == "dropped" and may_hold(stage)
            attributes = self._steps[index, outcome] = step_attributes(
                stage.id, stage.type, outcome, held=held
            )
        return attributes

    def _failed(self, exc: ProcessorError, start_ns: int, steps: list[Step]) -> None:
        """The ERROR span of the line a processor failed on, with the steps before the failing
        one (when they are known: the line ran alone); made even past the cap."""
        self.spans += 1
        span = self._spans.tracer.start_span(
            LINE_SPAN,
            context=self._context,
            start_time=start_ns,
            attributes={"foldermon.line.number": exc.line or self._pipeline.lines_fed},
        )
        for index, before, after in steps:
            span.add_event(STEP_EVENT, self._step(index, step_result(before, after)))
        span.add_event(
            STEP_EVENT,
            {
                "foldermon.processor.id": exc.processor_id,
                "foldermon.processor.type": exc.processor_type,
                "foldermon.line.result": "failed",
            },
        )
        cause = exc.__cause__ or exc
        span.record_exception(cause)
        span.set_attribute("error.type", type(cause).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        span.end()


def _progress_of(source: BinaryIO | None) -> Callable[[], float] | None:
    """How to ask which share of its file ``source`` has read: a decompressing reader knows; a
    plain regular file by its offset; None when there is no file to measure (a pipe)."""
    progress = getattr(source, "progress", None)
    if callable(progress):
        return cast(Callable[[], float], progress)
    if source is None:
        return None
    try:
        fd = source.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None
    if not S_ISREG(st.st_mode) or st.st_size <= 0:
        return None
    size = st.st_size

    def share() -> float:
        try:
            return min(1.0, os.lseek(fd, 0, os.SEEK_CUR) / size)
        except OSError:
            return 0.0

    return share
