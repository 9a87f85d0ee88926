"""Streams one input through the pipeline into a temp output file, in batches of lines."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

from foldermon.compression import Decompressed, kind_at
from foldermon.config import DEFAULT_MAX_INPUT_BYTES
from foldermon.errors import FoldermonError, InputRejectedError
from foldermon.pipeline import Pipeline
from foldermon.queue.fsio import fsync_fd

# Reads of 256 KiB keep memory flat and small (a batch's lines, copied by each processor, are
# several times its bytes) while the batches stay big enough for the processors to run in C;
# 1 MiB batches were no faster and cost 13 MiB more peak memory.
CHUNK_BYTES = 1 << 18
# The disk guard looks at the output folder's free space after this much more output.
ROOM_EVERY = 1 << 18


class LineTooLongError(FoldermonError):
    """A line is longer than ``[pipeline] max_line_bytes``; the file fails instead of exhausting
    memory. ``line`` is its number in the file."""

    def __init__(self, max_line_bytes: int, line: int) -> None:
        self.line = line
        super().__init__(f"line {line} is longer than max_line_bytes ({max_line_bytes} bytes)")


class StreamResult(NamedTuple):
    lines_in: int
    lines_out: int
    bytes_in: int


def open_input(path: Path, *, max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> BinaryIO:
    """Open an input for reading without following links or blocking on FIFOs; a compressed one
    (by its magic bytes) reads decompressed, up to ``max_input_bytes``."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the entry became a symlink after it was checked
            raise InputRejectedError(
                f"{path.name or path} is a symbolic link; links are never followed"
            ) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputRejectedError(f"{path.name or path} is not a regular file")
    raw = os.fdopen(fd, "rb", buffering=0)
    kind = kind_at(fd)
    if kind is None:
        return raw
    return cast(BinaryIO, Decompressed(raw, kind, max_input_bytes))


def read_batches(src: BinaryIO, max_line_bytes: int) -> Iterator[list[str]]:
    """Yield lists of complete lines (newline removed), decoded so that every byte survives.
    A line longer than ``max_line_bytes`` raises LineTooLongError once the lines before it have
    been yielded."""
    rest = bytearray()
    done = 0  # lines yielded so far
    while chunk := src.read(CHUNK_BYTES):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest += chunk
            if len(rest) > max_line_bytes:
                raise LineTooLongError(max_line_bytes, done + 1)
            continue
        if rest and len(rest) + chunk.find(b"\n") > max_line_bytes:
            raise LineTooLongError(max_line_bytes, done + 1)
        head = bytes(rest) + chunk[:cut] if rest else chunk[:cut]
        rest = bytearray(chunk[cut + 1 :])
        lines = head.decode("utf-8", "surrogateescape").split("\n")
        # A character is at most 4 bytes: only longer lines are measured in bytes.
        if max_line_bytes < CHUNK_BYTES and max(map(len, lines)) * 4 > max_line_bytes:
            sizes = [len(line) for line in head.split(b"\n")]
            long = next((i for i, size in enumerate(sizes) if size > max_line_bytes), None)
            if long is not None:
                if long:
                    yield lines[:long]
                raise LineTooLongError(max_line_bytes, done + long + 1)
        done += len(lines)
        yield lines
    if rest:
        # The last line, without a newline: held to the same limit as every other.
        if len(rest) > max_line_bytes:
            raise LineTooLongError(max_line_bytes, done + 1)
        yield [rest.decode("utf-8", "surrogateescape")]


def _encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape") if lines else b""


def _watched(
    write: Callable[[bytes], Any], out: BinaryIO, room: Callable[[int], None]
) -> Callable[[bytes], None]:
    """``write``, telling ``room`` the bytes in ``out`` after every ROOM_EVERY bytes of records,
    however much one batch of lines makes (a pipeline may make far more text than it reads)."""
    unchecked = 0

    def watched(records: bytes) -> None:
        nonlocal unchecked
        for at in range(0, len(records), ROOM_EVERY):
            piece = records[at : at + ROOM_EVERY]
            write(piece)
            unchecked += len(piece)
            if unchecked >= ROOM_EVERY:
                unchecked = 0
                room(out.tell())

    return watched


def stream(
    src: BinaryIO,
    dst_fd: int,
    pipeline: Pipeline,
    *,
    max_line_bytes: int,
    on_batch: Callable[[list[str]], list[str]] | None = None,
    keep_going: Callable[[], bool] = lambda: True,
    compress: Callable[[BinaryIO], Any] | None = None,
    room: Callable[[int], None] | None = None,
) -> StreamResult:
    """Run every line of ``src`` through ``pipeline`` and write the records to ``dst_fd``, then fsync it.

    ``on_batch`` replaces ``pipeline.feed`` (line tracing uses it); ``keep_going`` is asked between
    batches so a shutdown can abandon a long file; ``compress`` wraps the output in a compressor;
    ``room`` is told the bytes written to ``dst_fd`` every ROOM_EVERY bytes of records (the disk
    guard, which raises to stop).
    """
    feed = on_batch or pipeline.feed
    lines_in = lines_out = 0
    with os.fdopen(os.dup(dst_fd), "wb", buffering=CHUNK_BYTES) as out:
        sink = compress(out) if compress else out
        write = sink.write if room is None else _watched(sink.write, out, room)
        for lines in read_batches(src, max_line_bytes):
            if not keep_going():
                raise InterruptedError("shutdown requested before the file was finished")
            lines_in += len(lines)
            result = feed(lines)
            lines_out += len(result)
            write(_encode(result))
        tail = pipeline.finish()
        lines_out += len(tail)
        write(_encode(tail))
        if compress:
            sink.close()  # writes the compressed stream's end; the file itself stays open
        out.flush()
        fsync_fd(out.fileno())
    return StreamResult(lines_in, lines_out, src.tell())
