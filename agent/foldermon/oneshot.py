"""``foldermon-agent process FILE``: one file through the pipeline, outside the queue."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from foldermon import console
from foldermon.config import DEFAULT_MAX_INPUT_BYTES, Config
from foldermon.deadline import FileTimeLimit, time_limit
from foldermon.errors import FoldermonError, ProcessingTimeLimitError, ProcessorError
from foldermon.pipeline import Pipeline, build_pipeline
from foldermon.processors import Registry
from foldermon.queue.fsio import file_kind, fsync_dir
from foldermon.worker import StreamResult, open_input, stream

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

    from foldermon.telemetry import Telemetry

Feed = Callable[[list[str]], list[str]]


def process_file(
    config: Config,
    registry: Registry,
    telemetry: Telemetry | None,
    src: Path,
    dst: Path | None,
    *,
    progress: bool = False,
) -> int:
    """Process ``src`` into ``dst`` (atomically replaced) or stdout; returns the exit code.

    Without ``telemetry`` (nothing asks for it) no span is made and OpenTelemetry is not loaded.
    A processor failing in a batch does not say on which line: the file then runs again line by
    line, its output discarded, so that the error (and, traced, an ERROR line span) names it.
    """
    traced_as: list[SpanContext] = []  # the span context of the batch run, for the rerun's link
    try:
        _one_run(config, registry, telemetry, src, dst, progress=progress, traced_as=traced_as)
    except ProcessorError as exc:
        # Run again when the line is not known, or its trace was not kept (the sampler's choice):
        # the line-by-line run is traced whatever the sampler says, as the agent's retries are.
        if exc.line is not None and all(context.trace_flags.sampled for context in traced_as):
            raise
        try:
            _one_run(config, registry, telemetry, src, None, exact=True, traced_as=traced_as)
        except ProcessingTimeLimitError:
            raise exc  # noqa: B904 - line by line it ran out of time: the error stands, without its line
        raise  # the line-by-line run passed: a processor failing by chance; its error stands
    return 0


def _one_run(
    config: Config,
    registry: Registry,
    telemetry: Telemetry | None,
    src: Path,
    dst: Path | None,
    *,
    progress: bool = False,
    exact: bool = False,
    traced_as: list[SpanContext],
) -> StreamResult:
    """One run of ``src`` through a new pipeline; ``exact`` runs it line by line into nothing.
    Traced, its span links to the spans in ``traced_as`` and joins them."""
    pipeline = build_pipeline(config.processors, registry)
    plain = pipeline.feed_exact if exact else pipeline.feed
    if telemetry is None:
        return _process(config, pipeline, src, dst, lambda _fin: plain, progress=progress, discard=exact)
    from opentelemetry.trace import Link  # see above

    from foldermon.telemetry import LineTracer, processor_spans

    start_ns = time.time_ns()
    attributes: dict[str, str | bool] = {"file.path": str(src.absolute()), "file.name": src.name}
    if exact:
        attributes["foldermon.lines.exact"] = True
    links = [Link(context) for context in traced_as]
    with telemetry.tracer.start_as_current_span(
        "foldermon.process_file", attributes=attributes, links=links, start_time=start_ns
    ) as span:
        tracers: list[LineTracer] = []

        def traced(fin: BinaryIO) -> Feed:
            span.set_attribute("file.size", os.fstat(fin.fileno()).st_size)
            tracer = LineTracer.for_config(
                pipeline, telemetry.line_spans, span, config.telemetry, source=fin, exact=exact
            )
            tracers.extend([tracer] if tracer else [])
            return tracer or plain

        try:
            result = _process(config, pipeline, src, dst, traced, progress=progress, discard=exact)
        except Exception as exc:
            span.set_attribute("foldermon.outcome", "failed")
            span.set_attribute("error.type", type(exc).__qualname__)  # as the agent's file span
            traced_as.append(span.get_span_context())
            raise  # recorded on the span, with status ERROR, as it leaves
        finally:
            processor_spans(telemetry.line_spans, span, pipeline, start_ns)
            for tracer in tracers:  # how many lines were traced, of how many examined, as run says
                span.set_attributes(tracer.summary())
        span.set_attribute("foldermon.outcome", "processed")
        span.set_attribute("foldermon.lines.in", result.lines_in)
        span.set_attribute("foldermon.lines.out", result.lines_out)
    return result


def _process(
    config: Config,
    pipeline: Pipeline,
    src: Path,
    dst: Path | None,
    feed_for: Callable[[BinaryIO], Feed],
    *,
    progress: bool,
    discard: bool = False,
) -> StreamResult:
    """``src`` through the pipeline, fed by ``feed_for(the open input)``, to ``dst``, stdout or
    (``discard``) nowhere, within ``[pipeline] max_file_seconds``."""
    seconds = config.pipeline.max_file_seconds
    # Resolved before descriptor 1 moves; None: the records go to stdout (or, discarded, nowhere).
    target = output_target(dst) if dst is not None and str(dst) != "-" and not discard else None
    try:
        limit = config.pipeline.max_input_bytes or DEFAULT_MAX_INPUT_BYTES
        with open_input(src, max_input_bytes=limit) as fin:
            size = os.fstat(fin.fileno()).st_size
            feed = feed_for(fin)
            with (
                _progress(fin, size, src.name, enabled=progress) as keep_going,
                data_on_stdout() as out,
                time_limit(seconds),
            ):
                run = _Run(fin, feed, config.pipeline.max_line_bytes, keep_going)
                if discard:
                    return run.to_nowhere(pipeline)
                if target is None:
                    return run.to_fd(pipeline, out)
                return run.to_file(pipeline, *target)
    except FileTimeLimit:
        stage = pipeline.active_stage()
        raise ProcessingTimeLimitError(
            seconds, stage.id if stage else None, stage.type if stage else None
        ) from None
    except OSError as exc:
        raise FoldermonError(f"cannot process {src}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _progress(fin: BinaryIO, size: int, label: str, *, enabled: bool) -> Iterator[Callable[[], bool]]:
    """A keep-going callback that, on a terminal, moves a byte progress bar between batches. The
    bar keeps to the terminal on stdout while plugin code runs with stdout pointed at stderr."""
    if not enabled:
        yield lambda: True
        return
    from rich.console import Console

    with (
        os.fdopen(os.dup(sys.stdout.fileno()), "w") as terminal,
        console.byte_progress(size, label, Console(file=terminal)) as show,
    ):

        def keep_going() -> bool:
            show(fin.tell())
            return True

        yield keep_going
        show(size)


class _Run:
    """One input stream, written to stdout or atomically to a file."""

    def __init__(self, fin: BinaryIO, feed: Feed, limit: int, keep_going: Callable[[], bool]) -> None:
        self.fin, self.feed, self.limit, self.keep_going = fin, feed, limit, keep_going

    def _stream(self, pipeline: Pipeline, fd: int) -> StreamResult:
        return stream(
            self.fin, fd, pipeline, max_line_bytes=self.limit, on_batch=self.feed, keep_going=self.keep_going
        )

    def to_fd(self, pipeline: Pipeline, fd: int) -> StreamResult:
        return self._stream(pipeline, fd)

    def to_nowhere(self, pipeline: Pipeline) -> StreamResult:
        with open(os.devnull, "wb") as sink:
            return self._stream(pipeline, sink.fileno())

    def to_file(self, pipeline: Pipeline, dst: Path, st: os.stat_result | None) -> StreamResult:
        """Write through a temp file so no partial output ever carries the final name: ``dst``
        and what is there now (``st``) as ``output_target`` found them. A file already there
        keeps its mode (and, for root, its owner)."""
        import tempfile  # only for an output file: stdout needs none of it

        try:
            fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        except OSError as exc:
            raise FoldermonError(f"cannot write {dst}: {exc.strerror or exc} (in {dst.parent})") from exc
        tmp = Path(name)
        try:
            try:
                _take_over(fd, st)
                result = self._stream(pipeline, fd)
            finally:
                os.close(fd)
            tmp.replace(dst)
        except BaseException:  # a rename refused (a full folder) included: no temp is left
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(dst.parent)
        return result


def output_target(dst: Path) -> tuple[Path, os.stat_result | None]:
    """The file ``--output`` names, links followed, and what is there now (None: nothing);
    anything there that is not a file is refused. Resolved before descriptor 1 is moved (a
    name such as /dev/stdout leads through it)."""
    try:
        st: os.stat_result | None = os.stat(dst)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise FoldermonError(f"cannot write {dst}: {exc.strerror or exc}") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise FoldermonError(f"cannot write {dst}: it is a folder; give a file name")
        raise FoldermonError(
            f"cannot write {dst}: it is {file_kind(st.st_mode)}, not a file (without --output, "
            "process writes to stdout)"
        )
    return Path(os.path.realpath(dst)), st


@contextlib.contextmanager
def data_on_stdout() -> Iterator[int]:
    """While plugin code runs, descriptor 1 is stderr, so that nothing a plugin writes (``print``,
    or bytes to descriptor 1 itself) mixes with a verb's data; yields the real stdout's descriptor."""
    sys.stdout.flush()
    if sys.stderr is None:  # started without stderr: descriptor 2 may be any file opened since
        yield 1
        return
    try:
        out = os.dup(1)
    except OSError:  # stdout is closed: the first write says so
        yield 1
        return
    try:
        os.dup2(2, 1)
    except OSError:  # no stderr: plugins' bytes cannot be moved out of the way
        os.close(out)
        yield 1
        return
    try:
        yield out
    finally:
        sys.stdout.flush()
        os.dup2(out, 1)
        os.close(out)


def _take_over(fd: int, st: os.stat_result | None) -> None:
    """Give the temp output the mode of the file it replaces (0644 for a new one), and as root
    its owner too (first: a change of owner clears the set-id bits)."""
    if st is not None and os.geteuid() == 0:
        os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o644)
