"""``foldermon-agent explain FILE --line N``: the path of chosen lines through the pipeline.

Line spans are capped per file, so a trace cannot answer for every line; but processing is
deterministic (a processor's state is per file), so the answer can be recomputed. The file
is replayed from its start through fresh processors: batches before an asked line run as
the agent runs them, each asked line runs alone, recording what each processor took in and
gave out, and reading stops after the last asked line. Memory stays that of one batch plus
the asked lines, whatever the file's size.

A processor that may emit more at the end of the file (a held line, a summary) is named in
the notes: what it will emit after the point where reading stopped is not shown.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foldermon.config import DEFAULT_MAX_INPUT_BYTES, Config
from foldermon.errors import FoldermonError, ProcessorError
from foldermon.pipeline import Pipeline, Step, build_pipeline, step_result
from foldermon.processors import Registry
from foldermon.queue.layout import FAILED, PROCESSED
from foldermon.queue.records import read_record
from foldermon.worker import open_input, read_batches

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Tracer

MAX_LINES = 10_000  # line numbers one command may ask about


class LineSpecError(FoldermonError):
    """``--line`` is not a list of line numbers and ranges."""


def parse_lines(text: str) -> list[int]:
    """``"10,200-205"`` as sorted line numbers (1-based); a sentence for anything else."""
    numbers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise LineSpecError(f"--line {text!r}: give line numbers and ranges such as 10,200-205")
        first, last = int(low), int(high) if dash else int(low)
        if first < 1 or last < first:
            raise LineSpecError(f"--line {text!r}: lines are numbered from 1, ranges go upwards ({part})")
        if last - first + 1 + len(numbers) > MAX_LINES:
            raise LineSpecError(f"--line {text!r}: at most {MAX_LINES} lines at once")
        numbers.update(range(first, last + 1))
    return sorted(numbers)


def find_file(name: Path, roots: Iterable[Path]) -> tuple[Path, str | None]:
    """The file to replay and the queue folder it was found in (None: the path as given)."""
    if name.exists():
        return name, None
    for root in roots:
        for folder in (PROCESSED, FAILED):
            candidate = root / folder / name.name
            if candidate.is_file():
                return candidate, folder
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
    replay = _Replay(build_pipeline(config.processors, registry), numbers)
    limit = config.pipeline.max_input_bytes or DEFAULT_MAX_INPUT_BYTES
    span = None
    if tracer is not None:
        attributes = {"file.path": str(path.absolute()), "file.name": path.name}
        span = tracer.start_span("foldermon.explain", attributes=attributes, links=list(links))
    try:
        with open_input(path, max_input_bytes=limit) as fin:
            for batch in read_batches(fin, config.pipeline.max_line_bytes):
                if not replay.feed(batch):
                    break
    except OSError as exc:
        raise FoldermonError(f"cannot read {path}: {exc.strerror or exc}") from exc
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
        doc["trace_id"] = format(span.get_span_context().trace_id, "032x")
    return doc


class _Replay:
    """The pipeline fed as the agent feeds it, with the asked lines run one at a time."""

    def __init__(self, pipeline: Pipeline, numbers: list[int]) -> None:
        self.pipeline = pipeline
        self.numbers = numbers
        self.wanted = set(numbers)
        self.entries: list[dict[str, Any]] = []
        self.read = 0  # input lines read so far
        self.written = 0  # output lines so far
        self.failure: str | None = None
        self._times: list[tuple[int, int]] = []  # per entry: start and end, in ns

    def feed(self, batch: list[str]) -> bool:
        """Run one batch; False once nothing more is needed (or the file would fail)."""
        first, end = self.read + 1, self.read + len(batch)
        at = bisect.bisect_left(self.numbers, first)
        if at == len(self.numbers) or self.numbers[at] > end:
            return self._run(lambda: self.pipeline.feed(batch), first, end)
        for offset, line in enumerate(batch):
            number = first + offset
            if number in self.wanted:
                if not self._asked(number, line):
                    return False
            elif not self._run(lambda line=line: self.pipeline.feed([line]), number, number):
                return False
            if number >= self.numbers[-1]:
                return False
        return True

    def _run(self, feed: Any, first: int, end: int) -> bool:
        try:
            self.written += len(feed())
        except ProcessorError as exc:
            where = f"line {first}" if first == end else f"lines {first}-{end}"
            self.failure = f"{_failure(exc)} on {where}"
            self.read = end
            return False
        self.read = end
        return True

    def _asked(self, number: int, line: str) -> bool:
        steps: list[Step] = []
        start = time.time_ns()
        entry: dict[str, Any] = {"number": number, "text": line, "steps": [], "output_lines": []}
        self.entries.append(entry)
        try:
            out = self.pipeline.feed_steps(line, steps)
        except ProcessorError as exc:
            entry["steps"] = [*self._steps(steps), _failed_step(exc)]
            self.failure = f"{_failure(exc)} on line {number}"
            self.read = number
            self._times.append((start, time.time_ns()))
            return False
        entry["steps"] = self._steps(steps)
        entry["output_lines"] = list(range(self.written + 1, self.written + len(out) + 1))
        self.written += len(out)
        self.read = number
        self._times.append((start, time.time_ns()))
        return True

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

    def holders(self) -> list[str]:
        """The ids of the processors that may emit more for lines already read."""
        return [
            s.id for s in self.pipeline.stages if getattr(s.processor, "emits_at_finish", True) is not False
        ]

    def notes(self) -> list[str]:
        said = []
        asked = {e["number"] for e in self.entries}
        if self.failure is not None:
            said.append(f"the file fails: {self.failure}; the agent writes no output for it")
        missing = [n for n in self.numbers if n not in asked]
        if missing and self.failure is None:
            said.append(f"the file has {self.read} lines: {_ranges(missing)} not in it")
        elif missing:
            said.append(f"not reached, the file failing before: {_ranges(missing)}")
        later = [f"{s.id} ({s.type})" for s in self.pipeline.stages if s.id in self.holders()]
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
            for step in entry["steps"]:
                span.add_event(
                    "foldermon.processor.step",
                    {
                        "foldermon.processor.id": step["processor_id"],
                        "foldermon.processor.type": step["processor_type"],
                        "foldermon.line.result": step["result"],
                    },
                )
                if step["result"] == "failed":
                    span.set_status(Status(StatusCode.ERROR, step["error"]))
            span.end(end_time=end)
        parent.set_attribute("foldermon.lines.in", self.read)
        if self.failure:
            parent.set_status(Status(StatusCode.ERROR, self.failure))


def _failure(exc: ProcessorError) -> str:
    cause = exc.__cause__ or exc
    return f"{exc.processor_id} ({exc.processor_type}) raised {type(cause).__name__}: {cause}"


def _failed_step(exc: ProcessorError) -> dict[str, Any]:
    cause = exc.__cause__ or exc
    return {
        "processor_id": exc.processor_id,
        "processor_type": exc.processor_type,
        "result": "failed",
        "out": [],
        "error": f"{type(cause).__name__}: {cause}",
    }


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def record_summary(path: Path, folder: str | None) -> dict[str, Any] | None:
    """What the agent's error record says about a file in ``failed/``, for the header."""
    if folder != FAILED:
        return None
    record = read_record(path.parent, path.name)
    return record or None


def render(doc: Mapping[str, Any], record: Mapping[str, Any] | None) -> str:
    """``explain`` for people: each asked line, each processor it reached, its output lines."""
    out = []
    if record:
        out.append(_record_text(record))
    for entry in doc["lines"]:
        out.append(f"line {entry['number']}: {_show(entry['text'])}")
        for i, step in enumerate(entry["steps"], 1):
            what = f"{step['processor_id']} ({step['processor_type']})"
            if step["result"] == "failed":
                out.append(f"  {i}. {what}: failed: {step['error']}")
            elif step["result"] == "dropped" and step["processor_id"] in doc["may_emit_later"]:
                out.append(f"  {i}. {what}: nothing out now; it may hold the line for later (see the note)")
            elif step["result"] == "dropped":
                out.append(f"  {i}. {what}: dropped")
            else:
                more = " ..." if len(step["out"]) > 5 else ""
                shown = ", ".join(_show(s) for s in step["out"][:5]) + more
                out.append(f"  {i}. {what}: {step['result']} -> {shown}")
        lines = entry["output_lines"]
        if lines:
            out.append(f"  output line{'s' if len(lines) > 1 else ''} {_ranges(lines)}")
        elif entry["steps"] and entry["steps"][-1]["processor_id"] in doc["may_emit_later"]:
            out.append("  no output line from it so far")
        elif entry["steps"] and entry["steps"][-1]["result"] != "failed":
            out.append("  not in the output")
    out.extend(f"note: {n}" for n in doc["notes"])
    if doc.get("trace_id"):
        out.append(f"this replay is trace {doc['trace_id']}")
    return "\n".join(out)


def _record_text(record: Mapping[str, Any]) -> str:
    attempts = record.get("attempts")
    text = f"the agent quarantined this file after {attempts} attempt(s): {record.get('error_type')}"
    if record.get("processor_id"):
        text += f" in {record['processor_id']} ({record.get('processor_type')})"
    if record.get("line"):
        text += f" on line {record['line']}"
    if record.get("cause") or record.get("message"):
        text += f": {record.get('cause') or record.get('message')}"
    traces = [t for t in record.get("attempt_traces") or [] if isinstance(t, dict)]
    failing = traces[-1] if traces else None
    if failing and failing.get("sampled"):
        text += f"\nthe failing attempt ({failing.get('attempt')}) is trace {failing.get('trace_id')}"
    elif failing:
        text += f"\nthe failing attempt ({failing.get('attempt')}) was not sampled: no trace was kept"
    return text


def _show(text: str, width: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 4] + "...'"
