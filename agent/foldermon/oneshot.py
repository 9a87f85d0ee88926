"""``foldermon-agent process FILE``: one file through the pipeline, outside the queue."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import BinaryIO

from foldermon.config import Config
from foldermon.errors import FoldermonError
from foldermon.pipeline import Pipeline, build_pipeline
from foldermon.processors import Registry
from foldermon.queue.fsio import fsync_dir
from foldermon.worker import open_input, stream


def process_file(config: Config, registry: Registry, src: Path, dst: Path | None) -> int:
    """Process ``src`` into ``dst`` (atomically replaced) or stdout; returns the exit code."""
    pipeline = build_pipeline(config.processors, registry)
    limit = config.pipeline.max_line_bytes
    try:
        with open_input(src) as fin:
            if dst is None or str(dst) == "-":
                sys.stdout.flush()
                stream(fin, sys.stdout.fileno(), pipeline, max_line_bytes=limit)
            else:
                _to_file(fin, dst.absolute(), pipeline, limit)
    except OSError as exc:
        raise FoldermonError(f"cannot process {src}: {exc.strerror or exc}") from exc
    return 0


def _to_file(fin: BinaryIO, dst: Path, pipeline: Pipeline, limit: int) -> None:
    """Write through a temp file so no partial output ever carries the final name."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        stream(fin, fd, pipeline, max_line_bytes=limit)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    tmp.replace(dst)
    fsync_dir(dst.parent)
