"""``foldermon-agent explain FILE --line N``: the path of chosen lines through the pipeline.

Line spans are capped per file, so a trace cannot answer for every line; but processing is
deterministic (a processor's state is per file), so the answer can be recomputed. The file
is replayed from its start through fresh processors: batches before an asked line run as
the agent runs them, each asked line runs alone, recording what each processor took in and
gave out, and reading stops after the last asked line. Memory stays that of one batch plus
the asked lines, whatever the file's size. ``[pipeline] max_file_seconds`` interrupts the
replay where it interrupts the agent.

A processor that may emit more at the end of the file (a held line, a summary) is named in
the notes: what it will emit after the point where reading stopped is not shown.
"""

from __future__ import annotations

import bisect
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foldermon.config import DEFAULT_MAX_INPUT_BYTES, Config
from foldermon.deadline import FileTimeLimit, time_limit
from foldermon.errors import FoldermonError, ProcessingTimeLimitError, ProcessorError
from foldermon.explaintext import ranges
from foldermon.pipeline import Pipeline, Step, build_pipeline, may_hold, step_result
from foldermon.processors import Registry
from foldermon.queue.fsio import file_kind
from foldermon.queue.layout import FAILED, PROCESSED
from foldermon.worker import LineTooLongError, open_input, read_batches

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Tracer


def find_file(name: Path, roots: Iterable[Path], *, roots_first: bool = False) -> tuple[Path, str | None]:
    """The file to replay and the queue folder it was found in (None: the path as given);
    ``roots_first`` (a bare name with --watch) looks in the roots before the current folder."""
    roots = list(roots)
    in_roots = [(r / f / name.name, f) for r in roots for f in (PROCESSED, FAILED)]
    as_given: list[tuple[Path, str | None]] = [(name, None)]
    for path, folder in [*in_roots, *as_given] if roots_first else [*as_given, *in_roots]:
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            # The agent quarantines a FIFO, socket or folder unread: there are no lines to replay.
            raise FoldermonError(
                f"{path} is {file_kind(mode)}, not a regular file: the agent does not read it, so there "
                "is nothing to replay"
            )
        return path, folder
    where = " or ".join(f"{r}/{{processed,failed}}/" for r in roots)
    raise FoldermonError(f"no such file: {name}" + (f" (nor {name.name} in {where})" if where else ""))


def explain(
    config: Config,
    registry: Registry,
    path: Path,
    numbers: list[int],
    *,
    tracer: Tracer | None = None,
    links: Iterable[Link] = (),
) -> dict[str, Any]:
    """Replay ``path`` until the last of ``numbers`` has been through the pipeline; the
    ``explain --json`` document (with ``notes`` and ``lines_read`` beside ``file`` and ``lines``)."""
    limit = config.pipeline.max_file_seconds
    replay = _Replay(build_pipeline(config.processors, registry), numbers, limit)
    span = None
    if tracer is not None:
        attributes = {"file.path": str(path.absolute()), "file.name": path.name}
        span = tracer.start_span("foldermon.explain", attributes=attributes, links=list(links))
    try:
        with time_limit(limit):
            _read(replay, path, config)
    except FileTimeLimit:
        replay.out_of_time()
    finally:
        if span is not None and tracer is not None:
            replay.export(tracer, span)
            span.end()
    doc = {
        "file": str(path),
        "lines": replay.entries,
        "lines_read": replay.read,
        "may_emit_later": replay.holders(),
        "notes": replay.notes(),
    }
    if span is not None:
        context = span.get_span_context()
        doc["trace_id"] = format(context.trace_id, "032x")
        doc["trace_sampled"] = context.trace_flags.sampled  # an unsampled trace is kept nowhere
    return doc


def _read(replay: _Replay, path: Path, config: Config) -> None:
    limit = config.pipeline.max_input_bytes or DEFAULT_MAX_INPUT_BYTES
    try:
        with open_input(path, max_input_bytes=limit) as fin:
            for batch in read_batches(fin, config.pipeline.max_line_bytes):
                if not replay.feed(batch):
                    break
    except LineTooLongError as exc:  # the lines before it have been replayed
        replay.failure, replay.error_type = str(exc), type(exc).__qualname__
    except OSError as exc:
        raise FoldermonError(f"cannot read {path}: {exc.strerror or exc}") from exc


class _Replay:
    """The pipeline fed as the agent feeds it, with the asked lines run one at a time.

    An asked line a processor holds (``line_joiner`` waiting for the next line) is followed: the
    lines after it run one at a time too, until that processor emits something containing what it
    held; the output lines of that call are the held line's.
    """

    def __init__(self, pipeline: Pipeline, numbers: list[int], time_limit: float = 0.0) -> None:
        self.pipeline = pipeline
        self.numbers = numbers
        self.wanted = set(numbers)
        self.time_limit = time_limit
        self.entries: list[dict[str, Any]] = []
        self.read = 0  # input lines read so far
        self.written = 0  # output lines so far
        self.failure: str | None = None
        self.error_type: str | None = None  # of the exception behind ``failure``
        self._line_errors: dict[int, str] = {}  # asked line -> error.type of its failed step
        self.stopped = False  # by the time limit
        self._at = (0, 0)  # the input lines being fed
        self._held: list[tuple[dict[str, Any], int, list[str]]] = []  # entry, stage, what it held
        self._holding = {i for i, s in enumerate(pipeline.stages) if may_hold(s)}
        self._times: list[tuple[int, int]] = []  # per entry: start and end, in ns

    def feed(self, batch: list[str]) -> bool:
        """Run one batch; False once nothing more is needed (or the file would fail)."""
        first, end = self.read + 1, self.read + len(batch)
        at = bisect.bisect_left(self.numbers, first)
        if not self._held and (at == len(self.numbers) or self.numbers[at] > end):
            return self._run(batch, first)
        for offset, line in enumerate(batch):
            number = first + offset
            done = self._asked(number, line) if number in self.wanted else self._one(number, line)
            if not done or number >= self.numbers[-1]:
                return False
        return True

    def _run(self, lines: list[str], first: int) -> bool:
        end = first + len(lines) - 1
        self._at = (first, end)
        try:
            self.written += len(self.pipeline.feed(lines))
        except ProcessorError as exc:
            self.failure, self.error_type = f"{_failure(exc)} on {_where(first, end)}", _type(exc)
            self.read = end
            return False
        self.read = end
        return True

    def _one(self, number: int, line: str) -> bool:
        """A line nobody asked about; alone, and step by step while an asked line is held."""
        if not self._held:
            return self._run([line], number)
        steps: list[Step] = []
        self._at = (number, number)
        try:
            out = self.pipeline.feed_steps(line, steps)
        except ProcessorError as exc:
            self.failure, self.error_type = f"{_failure(exc)} on line {number}", _type(exc)
            self.read = number
            return False
        self._release(steps, len(out))
        self.written += len(out)
        self.read = number
        return True

    def _asked(self, number: int, line: str) -> bool:
        steps: list[Step] = []
        start = time.time_ns()
        entry: dict[str, Any] = {"number": number, "text": line, "steps": [], "output_lines": []}
        self.entries.append(entry)
        self._at = (number, number)
        try:
            out = self.pipeline.feed_steps(line, steps)
        except ProcessorError as exc:
            cause = exc.__cause__ or exc
            failed = self._failed(steps, line, exc.processor_id, exc.processor_type, _error(cause))
            entry["steps"] = [*self._steps(steps), failed]
            self._line_errors[number] = _type(exc)
            self.failure, self.error_type = f"{_failure(exc)} on line {number}", _type(exc)
            self.read = number
            return False
        except FileTimeLimit:
            stage = self.pipeline.active_stage()
            error = f"stopped by [pipeline] max_file_seconds ({self.time_limit:g} s)"
            stopped = [self._failed(steps, line, stage.id, stage.type, error)] if stage else []
            entry["steps"] = [*self._steps(steps), *stopped]
            self._line_errors[number] = ProcessingTimeLimitError.__qualname__  # as the agent names it
            raise
        finally:
            self._times.append((start, time.time_ns()))
        entry["steps"] = self._steps(steps)
        self._release(steps, len(out))
        entry["output_lines"] = list(range(self.written + 1, self.written + len(out) + 1))
        self.written += len(out)
        self.read = number
        if steps and not steps[-1][2] and steps[-1][0] in self._holding:
            self._held.append((entry, steps[-1][0], steps[-1][1]))
        return True

    def _release(self, steps: list[Step], count: int) -> None:
        """Held asked lines whose processor emitted them in this call get its output lines."""
        emitted = {index: after for index, _before, after in steps}
        lines = list(range(self.written + 1, self.written + count + 1))
        still = []
        for entry, index, held in self._held:
            if any(h in e for h in held for e in emitted.get(index, ())):
                entry["output_lines"] = lines
            else:
                still.append((entry, index, held))
        self._held = still

    def out_of_time(self) -> None:
        """The time limit interrupted the replay, as it interrupts the agent's attempt."""
        stage = self.pipeline.active_stage()
        who = f"{stage.id} ({stage.type}) was still running" if stage else "the file was being read"
        self.failure = f"{who} on {_where(*self._at)}"
        self.error_type = ProcessingTimeLimitError.__qualname__  # the error.type the agent gives it
        self.stopped = True
        self.read = self._at[1]

    def _steps(self, steps: list[Step]) -> list[dict[str, Any]]:
        stages = self.pipeline.stages
        return [
            {
                "processor_id": stages[index].id,
                "processor_type": stages[index].type,
                "result": step_result(before, after),
                "in": list(before),
                "out": list(after),
            }
            for index, before, after in steps
        ]

    @staticmethod
    def _failed(steps: list[Step], line: str, ident: str, kind: str, error: str) -> dict[str, Any]:
        """The step of the processor that failed (or was stopped), with what came into it."""
        return {
            "processor_id": ident,
            "processor_type": kind,
            "result": "failed",
            "in": list(steps[-1][2]) if steps else [line],
            "out": [],
            "error": error,
        }

    def holders(self) -> list[str]:
        """The ids of the processors that may emit more for lines already read."""
        return [self.pipeline.stages[i].id for i in sorted(self._holding)]

    def notes(self) -> list[str]:
        said = []
        asked = {e["number"] for e in self.entries}
        if self.stopped:
            said.append(
                f"the replay was stopped by [pipeline] max_file_seconds ({self.time_limit:g} s): "
                f"{self.failure}; the agent's attempts stop the same way and it writes no output for the file"
            )
        elif self.failure is not None:
            said.append(f"the file fails: {self.failure}; the agent writes no output for it")
        missing = [n for n in self.numbers if n not in asked]
        if missing and self.failure is None:
            said.append(f"the file has {self.read} lines: {ranges(missing)} not in it")
        elif missing:
            said.append(f"not reached, the file failing at or before: {ranges(missing)}")
        later = [f"{s.id} ({s.type})" for i, s in enumerate(self.pipeline.stages) if i in self._holding]
        if later and self.failure is None:
            said.append(
                f"reading stopped after line {self.read}: {', '.join(later)} may emit more later "
                "(a held line with a later line, a summary at the end of the file), which is not shown"
            )
        return said

    def export(self, tracer: Tracer, parent: Any) -> None:
        """One ``foldermon.line`` span per asked line, with a step event per processor."""
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        from foldermon.telemetry._linespans import step_attributes

        context = trace.set_span_in_context(parent)
        for entry, (start, end) in zip(self.entries, self._times, strict=False):
            span = tracer.start_span(
                "foldermon.line",
                context=context,
                start_time=start,
                attributes={
                    "foldermon.line.number": entry["number"],
                    "foldermon.line.output_lines": entry["output_lines"],
                },
            )
            for index, step in enumerate(entry["steps"]):
                held = step["result"] == "dropped" and index in self._holding
                span.add_event(
                    "foldermon.processor.step",
                    step_attributes(step["processor_id"], step["processor_type"], step["result"], held=held),
                )
                if step["result"] == "failed":
                    span.set_attribute("error.type", self._line_errors.get(entry["number"], "_OTHER"))
                    span.set_status(Status(StatusCode.ERROR, step["error"]))
            span.end(end_time=end)
        parent.set_attribute("foldermon.lines.in", self.read)
        if self.failure:
            parent.set_attribute("error.type", self.error_type or "_OTHER")
            parent.set_status(Status(StatusCode.ERROR, self.failure))


def _where(first: int, end: int) -> str:
    return f"line {first}" if first == end else f"lines {first}-{end}"


def _type(exc: ProcessorError) -> str:
    """The ``error.type`` of a processor's failure: the type of what it raised."""
    return type(exc.__cause__ or exc).__qualname__


def _error(cause: BaseException) -> str:
    return f"{type(cause).__name__}: {cause}"


def _failure(exc: ProcessorError) -> str:
    return f"{exc.processor_id} ({exc.processor_type}) raised {_error(exc.__cause__ or exc)}"
