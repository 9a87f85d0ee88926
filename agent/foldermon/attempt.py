"""One attempt at one claimed file: pipeline, output commit, finish or failure, with its spans and metrics."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TraceFlags

from foldermon import log as logmod
from foldermon.compression import compressing, output_kind, output_suffix, plain_name, sniff
from foldermon.config import DEFAULT_MAX_INPUT_BYTES, Config
from foldermon.deadline import Alarm, DrainExpired, FileTimeLimit
from foldermon.errors import UNREACHABLE_ERRNOS, InputRejectedError, ProcessingTimeLimitError, ProcessorError
from foldermon.pipeline import Pipeline, build_pipeline
from foldermon.processors import Registry
from foldermon.queue.claims import Claim, LeaseLostError
from foldermon.queue.counter import Count, TraceRef
from foldermon.queue.fsio import fsync_dir
from foldermon.queue.lifecycle import Queue
from foldermon.queue.output import OutputTarget
from foldermon.queue.records import fail_record
from foldermon.scheduler import room_guard
from foldermon.telemetry import LineTracer, Telemetry, processor_spans
from foldermon.worker import LineTooLongError, StreamResult, open_input, stream

# Failures of the environment, not of the file: retried without using up the file's attempts.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS}) | UNREACHABLE_ERRNOS
# What an error record says when the line-by-line run (see Attempt._failed) ran out of time.
_LINE_NOT_FOUND = "the line was not found: running the file line by line took longer than max_file_seconds"
# Failures that the same bytes will always cause: no point retrying.
_PERMANENT = (InputRejectedError, LineTooLongError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of an attempt; ``retry_in`` is set when the file waits for another."""

    outcome: str  # processed | retry | failed
    retry_in: float | None = None
    counted: bool = True
    released: bool = False
    lines_in: int = 0
    # The processor error the retry runs line by line for, to name the line it fails on.
    exact: ProcessorError | None = None
    rerun: bool = False  # not a retry: the same attempt runs again at once, line by line
    finish_only: bool = False  # the output is published: the retry only finishes the input
    environment: bool = False  # the retry waits for the environment (a full or read-only disk), not the file
    room_needed: int = 0  # bytes of output known to be needed above [guard] min_free before a retry
    error_type: str | None = None  # of a failed outcome
    failure: dict[str, Any] | None = None  # how a counted retry's attempt failed (Count.error)
    trace: TraceRef | None = None  # where this attempt is traced
    taken_over: bool = False  # another instance took the claim folder over (Queue.confirm_lease)


def _trace_ref(attempt: int, span: Span) -> TraceRef:
    ctx = span.get_span_context()
    return TraceRef(
        attempt, format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), ctx.trace_flags.sampled
    )


def _links(traces: Sequence[TraceRef]) -> list[Link]:
    """Links from an attempt's span to the spans of the file's earlier attempts that were kept."""
    return [
        Link(SpanContext(int(t.trace_id, 16), int(t.span_id, 16), is_remote=True, trace_flags=TraceFlags(1)))
        for t in traces
        if t.sampled
    ]


def trace_fields(earlier: Sequence[TraceRef], this: TraceRef) -> dict[str, Any]:
    """What an error record says of the traces: the last one (None when the sampler dropped it:
    a trace id that leads nowhere is not given) and every attempt's."""
    return {
        "trace_id": this.trace_id if this.sampled else None,
        "trace_sampled": this.sampled,
        "attempt_traces": [asdict(t) for t in (*earlier, this)],
    }


@contextlib.contextmanager
def exhausted_trace(
    tel: Telemetry, queue: Queue, name: str, count: Count, message: str
) -> Iterator[dict[str, Any]]:
    """The span of the quarantine of a file whose attempts are used up by agents that stopped
    during them (those attempts' own spans never ended), current in the body; yields its
    record's trace fields."""
    attributes: dict[str, str | int] = {
        "file.path": str(queue.layout.unprocessed / name),
        "file.name": name,
        **queue.attributes,
        "foldermon.attempt": count.attempts,
        "foldermon.outcome": "failed",
        "error.type": "AttemptsExhausted",
    }
    span = tel.tracer.start_span("foldermon.process_file", attributes=attributes, links=_links(count.traces))
    span.set_status(Status(StatusCode.ERROR, message))
    with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        yield trace_fields(count.traces, _trace_ref(count.attempts, span))


def _details(exc: Exception) -> dict[str, Any]:
    """What a failure says beyond its type and message: the processor, the line, the cause."""
    return {
        "processor_id": getattr(exc, "processor_id", None),
        "processor_type": getattr(exc, "processor_type", None),
        "line": getattr(exc, "line", None),
        "cause": describe(exc.__cause__) if exc.__cause__ else None,
    }


def _failure(exc: Exception, attempt: int) -> dict[str, Any]:
    """How an attempt failed, as the file's counter keeps it (Count.error)."""
    return {"attempt": attempt, "error_type": type(exc).__name__, "message": str(exc), **_details(exc)}


def exact_for(claim: Claim) -> ProcessorError | None:
    """The processor error the file's last attempt failed with, as its counter kept it across a
    restart: this attempt then runs line by line, as a retry in the same run does."""
    error = claim.error or {}
    if error.get("error_type") != ProcessorError.__name__:
        return None
    line = error.get("line")
    return ProcessorError(
        str(error.get("processor_id")),
        str(error.get("processor_type")),
        line if isinstance(line, int) else None,
    )


def _taken_over(exc: LeaseLostError, log: logmod.Logger) -> Outcome:
    """Another instance has taken the claim over and settles it: nothing of it is ours to move."""
    log.warning("claim taken over by another instance; left to it", reason=str(exc))
    return Outcome("retry", released=True, taken_over=True)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" (caused by {type(exc.__cause__).__name__}: {exc.__cause__})"
    return text


@dataclass(frozen=True, slots=True)
class _Run:
    """What one attempt carries from its start to its end."""

    queue: Queue
    claim: Claim
    target: OutputTarget
    pipeline: Pipeline
    span: Span
    started: float
    start_ns: int
    log: logmod.Logger


@dataclass(frozen=True, slots=True)
class Produced:
    """An attempt whose output is published, not yet durable; its input is still claimed."""

    attempt: Attempt
    run: _Run
    result: StreamResult
    output: Path

    def complete(self, commit_error: OSError | None) -> Outcome:
        """After the fsync of the output folder (or its failure): finish the input, end the span."""
        return self.attempt.complete(self, commit_error)


class Attempt:
    """Runs one attempt of a claimed file through the pipeline and the queue."""

    def __init__(
        self,
        config: Config,
        registry: Registry,
        telemetry: Telemetry,
        *,
        instance_id: str,
        keep_going: Callable[[], bool],
        alarm: Alarm,
        wall_clock: Callable[[], float] = time.time,
        exact_lines: ProcessorError | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.telemetry = telemetry
        self.instance_id = instance_id
        self.keep_going = keep_going
        self.alarm = alarm
        self._wall = wall_clock
        self.exact_lines = exact_lines

    def run(self, queue: Queue, claim: Claim, log: logmod.Logger) -> Outcome | Produced:
        """Run the pipeline into the output; a success comes back as Produced, to be completed.

        The output is published but its folder is not yet fsynced: the caller fsyncs it once
        for a batch of files, then completes each (finish), so a backlog of small files pays
        one output-folder fsync per batch instead of one per file.
        """
        tel = self.telemetry
        attributes: dict[str, str | int] = {
            # The path the producer used; where it sits while claimed is the claim path.
            "file.path": str(queue.layout.unprocessed / claim.name),
            "foldermon.claim.path": str(claim.path),
            "file.name": claim.name,
            "file.size": claim.size,
            **queue.attributes,
            "foldermon.attempt": claim.attempt,
        }
        if claim.attempt == 1 and self.exact_lines is None:  # not again by its line-by-line run
            latency = max(0.0, self._wall() - claim.arrived)
            tel.instruments.pickup_latency.record(latency, queue.attributes)
        started, start_ns = time.monotonic(), time.time_ns()
        pipeline = build_pipeline(self.config.processors, self.registry)
        if self.exact_lines is not None:
            attributes["foldermon.lines.exact"] = True
        span = tel.tracer.start_span(
            "foldermon.process_file", attributes=attributes, links=_links(claim.traces), start_time=start_ns
        )
        # A compressed input's output is named as if it were plain, and compressed as configured.
        kind = sniff(claim.path)
        out_kind = output_kind(self.config.output.compress, kind)
        filename = queue.output_filename(plain_name(claim.name, kind)) + output_suffix(out_kind)
        run = _Run(queue, claim, queue.output_target(claim, filename), pipeline, span, started, start_ns, log)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            try:
                with self.alarm.interruptible(self.config.pipeline.max_file_seconds):
                    produced = self._produce(run, compressing(out_kind))
                output = run.target.publish(fence=lambda: queue.confirm_lease(claim))
            except LeaseLostError as lost:
                with contextlib.suppress(OSError):
                    run.target.tmp.unlink(missing_ok=True)
                outcome = _taken_over(lost, log)
            except (InterruptedError, DrainExpired):
                run.target.tmp.unlink(missing_ok=True)
                queue.release(claim)
                log.info("file released for another run", reason="shutdown deadline")
                outcome = Outcome("retry", released=True)
            except FileTimeLimit:
                if self.exact_lines is not None:
                    # Line by line (slower than in batches) the file ran out of time before it
                    # failed again: the processor's error stands, without its line.
                    log.warning(
                        "running the file line by line to find the failing line took longer than "
                        "max_file_seconds; the processor's error stands without it",
                        error=describe(self.exact_lines),
                    )
                    outcome = self._error(run, self.exact_lines)
                else:
                    stage = pipeline.active_stage()
                    limit = ProcessingTimeLimitError(
                        self.config.pipeline.max_file_seconds,
                        stage.id if stage else None,
                        stage.type if stage else None,
                    )
                    outcome = self._error(run, limit)
            except Exception as exc:  # noqa: BLE001 - processors are plugin code; any failure is the file's
                if isinstance(exc, OSError) and queue.lease > 0 and queue.lost(claim):
                    # The input went with the claim folder another instance took over.
                    outcome = _taken_over(LeaseLostError(describe(exc)), log)
                else:
                    outcome = self._error(run, exc)
            else:
                return Produced(self, run, produced, output)
        return self._end(run, outcome)

    def finish_again(self, queue: Queue, claim: Claim, target: OutputTarget, log: logmod.Logger) -> Outcome:
        """Finish an input whose output is already published, after its finish failed."""
        try:
            fsync_dir(target.folder)
            processed_as = queue.finish(claim, target, sync=False)
        except LeaseLostError as exc:
            return _taken_over(exc, log)
        except OSError as exc:
            return self._finish_failed(exc, log)
        log.info("file processed", processed_as=processed_as)
        ins = self.telemetry.instruments
        ins.tally.add(ins.files, 1, {"foldermon.outcome": "processed", **queue.attributes})
        return Outcome("processed")

    def complete(self, produced: Produced, commit_error: OSError | None) -> Outcome:
        """Finish a produced input once its output folder is fsynced; a failed fsync fails the attempt."""
        run, result = produced.run, produced.result
        with trace.use_span(run.span, record_exception=False, set_status_on_exception=False):
            run.span.set_attribute("foldermon.lines.in", result.lines_in)
            run.span.set_attribute("foldermon.lines.out", result.lines_out)
            try:
                if commit_error is not None:
                    raise commit_error  # handled like a failed finish
                # The service group-commits finishes (Queue.sync) to save two fsyncs per file.
                processed_as = run.queue.finish(run.claim, run.target, sync=False)
            except LeaseLostError as exc:
                outcome = _taken_over(exc, run.log)
            except OSError as exc:
                outcome = self._finish_failed(exc, run.log)
            else:
                run.log.info(
                    "file processed",
                    processed_as=processed_as,
                    output=str(produced.output),
                    lines_in=result.lines_in,
                    lines_out=result.lines_out,
                )
                outcome = Outcome("processed", lines_in=result.lines_in)
        return self._end(run, outcome)

    def _finish_failed(self, exc: OSError, log: logmod.Logger) -> Outcome:
        """The output is published, so the input must end in processed/: retry the finish alone,
        without counting an attempt, however long it takes (and never quarantine it)."""
        delay = self.config.retry.backoff
        log.warning(
            "output published but the input could not be finished; will retry",
            error=describe(exc),
            retry_in=delay,
        )
        return Outcome("retry", retry_in=delay, counted=False, finish_only=True, environment=True)

    def _error(self, run: _Run, exc: Exception) -> Outcome:
        with contextlib.suppress(OSError):  # the filesystem may be what failed
            run.target.tmp.unlink(missing_ok=True)
        run.span.record_exception(exc)
        run.span.set_attribute("error.type", type(exc).__qualname__)
        run.span.set_status(Status(StatusCode.ERROR, describe(exc)))
        return self._failed(run.queue, run.claim, exc, run.span, run.log)

    def _end(self, run: _Run, outcome: Outcome) -> Outcome:
        processor_spans(self.telemetry.line_spans, run.span, run.pipeline, run.start_ns)
        if outcome.outcome != "processed":  # what went through before it stopped
            stats = run.pipeline.stats()
            lines_in = run.pipeline.lines_fed
            run.span.set_attribute("foldermon.lines.in", lines_in)
            run.span.set_attribute("foldermon.lines.out", stats[-1].lines_out if stats else lines_in)
        run.span.set_attribute("foldermon.outcome", outcome.outcome)
        run.span.end()
        outcome = replace(outcome, trace=_trace_ref(run.claim.attempt, run.span))
        self._record(run.pipeline, outcome, time.monotonic() - run.started, run.queue.attributes)
        return outcome

    def _produce(self, run: _Run, compress: Callable[[BinaryIO], Any] | None) -> StreamResult:
        pipeline = run.pipeline
        tracer: LineTracer | None = None
        limit = self.config.pipeline.max_input_bytes or DEFAULT_MAX_INPUT_BYTES
        try:
            with open_input(run.claim.path, max_input_bytes=limit) as src:
                tracer = LineTracer.for_config(
                    pipeline,
                    self.telemetry.line_spans,
                    run.span,
                    self.config.telemetry,
                    source=src,
                    exact=self.exact_lines is not None,
                )
                feed: Callable[[list[str]], list[str]] = tracer or pipeline.feed
                if tracer is None and self.exact_lines is not None:
                    feed = pipeline.feed_exact
                ins, attributes = self.telemetry.instruments, run.queue.attributes

                def on_batch(lines: list[str]) -> list[str]:
                    ins.tally.add(ins.lines_read, len(lines), attributes)
                    return feed(lines)

                fd = run.queue.open_temp(run.target)
                try:
                    return stream(
                        src,
                        fd,
                        pipeline,
                        max_line_bytes=self.config.pipeline.max_line_bytes,
                        on_batch=on_batch,
                        keep_going=self.keep_going,
                        compress=compress,
                        room=room_guard(run.target.folder, self.config.guard.min_free),
                    )
                finally:
                    os.close(fd)
        finally:
            if tracer is not None:
                run.span.set_attributes(tracer.summary())

    def _failed(self, queue: Queue, claim: Claim, exc: Exception, span: Span, log: logmod.Logger) -> Outcome:
        kept = span.get_span_context().trace_flags.sampled
        if isinstance(exc, ProcessorError) and self.exact_lines is None and (exc.line is None or not kept):
            # Batches do not say which line failed (and a line traced one by one is not exported
            # when the sampler dropped the batch run): the same attempt runs again at once, line
            # by line, traced whatever the sampler says, so its record and its trace name the line.
            log.info(
                "processor failed; running the file again line by line to find the line", error=describe(exc)
            )
            return Outcome("retry", retry_in=0.0, counted=False, exact=exc, rerun=True)
        environment = isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS
        if environment or (not isinstance(exc, _PERMANENT) and claim.attempt < queue.max_attempts):
            delay = self.config.retry.backoff * 2 ** (claim.attempt - 1)
            log.warning("attempt failed; will retry", error=describe(exc), retry_in=delay)
            # After a processor error every retry runs line by line, so each names the line.
            exact = exc if isinstance(exc, ProcessorError) else None
            return Outcome(
                "retry",
                retry_in=delay,
                counted=not environment,
                exact=exact,
                environment=environment,
                room_needed=getattr(exc, "needed", 0),
                failure=None if environment else _failure(exc, claim.attempt),
            )
        record = fail_record(
            exc,
            claim.attempt,
            claim.first_attempt,
            now=self._wall(),
            instance=self.instance_id,
            **_details(exc),
            note=_LINE_NOT_FOUND if exc is self.exact_lines else None,
        )
        record.update(trace_fields(claim.traces, _trace_ref(claim.attempt, span)))
        try:
            failed_as = queue.fail(claim, record)
        except OSError as quarantine_exc:
            # Not durably quarantined: the file stays claimed and this last attempt runs again.
            delay = self.config.retry.backoff
            log.warning("quarantine failed; will retry", error=describe(quarantine_exc), retry_in=delay)
            return Outcome("retry", retry_in=delay, counted=False, environment=True)
        log.error("file failed", failed_as=failed_as, error=describe(exc))
        return Outcome("failed", error_type=type(exc).__qualname__)

    def _record(self, pipeline: Pipeline, outcome: Outcome, seconds: float, root: Mapping[str, str]) -> None:
        """Metrics once per file attempt: the hot loop only counted locally, and counters are
        summed per claim batch (the service flushes the tally)."""
        if outcome.rerun:
            return  # the attempt is recorded once, by its line-by-line run (as with --trace)
        ins = self.telemetry.instruments
        for stage, stats in zip(pipeline.stages, pipeline.stats(), strict=True):
            attrs = {"foldermon.processor.id": stage.id, "foldermon.processor.type": stage.type}
            ins.tally.add(ins.lines_in, stats.lines_in, attrs)
            ins.tally.add(ins.lines_out, stats.lines_out, attrs)
            ins.processor_duration.record(stats.seconds, attrs)
            if stats.errors:
                ins.tally.add(ins.processor_errors, stats.errors, attrs)
        attrs = {**root, "foldermon.outcome": outcome.outcome}
        ins.file_duration.record(seconds, attrs)
        if outcome.error_type:
            attrs["error.type"] = outcome.error_type
        ins.tally.add(ins.files, 1, attrs)
