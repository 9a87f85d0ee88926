"""``foldermon-agent process FILE``: one file through the pipeline, outside the queue."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from foldermon.config import Config
from foldermon.errors import FoldermonError
from foldermon.pipeline import Pipeline, build_pipeline
from foldermon.processors import Registry
from foldermon.queue.fsio import fsync_dir
from foldermon.telemetry import LineTracer, Telemetry, processor_spans
from foldermon.worker import StreamResult, open_input, stream


def process_file(
    config: Config, registry: Registry, telemetry: Telemetry, src: Path, dst: Path | None
) -> int:
    """Process ``src`` into ``dst`` (atomically replaced) or stdout; returns the exit code."""
    pipeline = build_pipeline(config.processors, registry)
    start_ns = time.time_ns()
    attributes = {"file.path": str(src.absolute()), "file.name": src.name}
    with telemetry.tracer.start_as_current_span("foldermon.process_file", attributes=attributes) as span:
        feed: Callable[[list[str]], list[str]] = pipeline.feed
        t = config.telemetry
        if t.trace_lines and t.max_line_spans_per_file > 0:
            feed = LineTracer(
                pipeline, telemetry.tracer, span, ratio=t.line_sample_ratio, cap=t.max_line_spans_per_file
            )
        try:
            with open_input(src) as fin:
                span.set_attribute("file.size", os.fstat(fin.fileno()).st_size)
                if dst is None or str(dst) == "-":
                    sys.stdout.flush()
                    result = stream(
                        fin,
                        sys.stdout.fileno(),
                        pipeline,
                        max_line_bytes=config.pipeline.max_line_bytes,
                        on_batch=feed,
                    )
                else:
                    result = _to_file(fin, dst.absolute(), pipeline, config.pipeline.max_line_bytes, feed)
        except OSError as exc:
            raise FoldermonError(f"cannot process {src}: {exc.strerror or exc}") from exc
        finally:
            processor_spans(telemetry.tracer, span, pipeline, start_ns)
        span.set_attribute("foldermon.outcome", "processed")
        span.set_attribute("foldermon.lines.in", result.lines_in)
        span.set_attribute("foldermon.lines.out", result.lines_out)
    return 0


def _to_file(
    fin: BinaryIO, dst: Path, pipeline: Pipeline, limit: int, feed: Callable[[list[str]], list[str]]
) -> StreamResult:
    """Write through a temp file so no partial output ever carries the final name."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        result = stream(fin, fd, pipeline, max_line_bytes=limit, on_batch=feed)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    tmp.replace(dst)
    fsync_dir(dst.parent)
    return result
