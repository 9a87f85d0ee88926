"""Compressed inputs and outputs: gzip, bzip2, xz and zstd, recognised by their magic bytes.

Inputs are decompressed as a stream (constant memory). A corrupt or truncated stream fails
the file with the offset where it broke; a stream that expands past ``max_input_bytes`` (a
decompression bomb) fails it too. Outputs can be written compressed (``[output] compress``).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from foldermon.errors import InputRejectedError

# Magic bytes at the start of each format, and the suffix its files usually carry.
FORMATS = {
    "gzip": (b"\x1f\x8b", ".gz"),
    "bzip2": (b"BZh", ".bz2"),
    "xz": (b"\xfd7zXZ\x00", ".xz"),
    "zstd": (b"\x28\xb5\x2f\xfd", ".zst"),
}
SUFFIXES = {suffix: kind for kind, (_, suffix) in FORMATS.items()}


def sniff(path: Path) -> str | None:
    """The compression of a file by its first bytes, or None for plain data."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None  # opened for real later, where the error is reported
    try:
        return kind_of(os.pread(fd, 8, 0))
    except OSError:
        return None
    finally:
        os.close(fd)


def kind_of(head: bytes) -> str | None:
    return next((kind for kind, (magic, _) in FORMATS.items() if head.startswith(magic)), None)


def plain_name(name: str, kind: str | None) -> str:
    """The name without the compression suffix of ``kind`` (``data.csv.gz`` → ``data.csv``)."""
    if kind is not None and name.endswith(FORMATS[kind][1]) and len(name) > len(FORMATS[kind][1]):
        return name[: -len(FORMATS[kind][1])]
    return name


def output_kind(setting: str, input_kind: str | None) -> str | None:
    """How an output is compressed: ``none``, ``same`` as its input, ``gzip`` or ``zstd``."""
    if setting == "same":
        return input_kind
    return None if setting == "none" else setting


def output_suffix(kind: str | None) -> str:
    return "" if kind is None else FORMATS[kind][1]


def _zstd_reader(raw: BinaryIO) -> BinaryIO:
    import zstandard  # noqa: PLC0415 - loaded only for zstd files

    reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return reader


# Each reader is closed with the Decompressed that owns it.
_READERS: dict[str, Callable[[BinaryIO], Any]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    "xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),  # noqa: SIM115
    "zstd": _zstd_reader,
}


class Decompressed:
    """A decompressing reader that turns every way a stream can break into InputRejectedError."""

    def __init__(self, raw: BinaryIO, kind: str, limit: int) -> None:
        self._raw = raw
        self._kind = kind
        self._limit = limit
        self._inner = _READERS[kind](raw)
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._inner.read(size)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            raise self._broken(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("zstandard"):
                raise self._broken(exc) from exc
            raise
        self._count += len(data)
        if self._count > self._limit:
            raise InputRejectedError(
                f"{self._kind} data expands past max_input_bytes ({self._limit} bytes) "
                f"at compressed offset {self._offset()}: a decompression bomb, or raise the limit"
            )
        return data

    def tell(self) -> int:
        """How far into the file (the compressed bytes) reading has come, as for a plain file."""
        return self._offset()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._inner.close()
        self._raw.close()

    def __enter__(self) -> Decompressed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _offset(self) -> int:
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return -1

    def _broken(self, exc: BaseException) -> InputRejectedError:
        what = "truncated" if isinstance(exc, EOFError) else "corrupt"
        return InputRejectedError(
            f"{what} {self._kind} data at compressed offset {self._offset()} "
            f"(after {self._count} bytes decompressed): {exc or type(exc).__name__}"
        )


def _zstd_writer(out: BinaryIO) -> Any:
    import zstandard  # noqa: PLC0415 - loaded only when outputs are zstd

    return zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)


# Each writer leaves the file it wraps open when closed: the caller fsyncs it.
_WRITERS: dict[str, Callable[[BinaryIO], Any]] = {
    "gzip": lambda out: gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0),
    "bzip2": lambda out: bz2.BZ2File(out, mode="wb"),
    "xz": lambda out: lzma.LZMAFile(out, mode="wb"),  # noqa: SIM115
    "zstd": _zstd_writer,
}


def compressing(kind: str | None) -> Callable[[BinaryIO], Any] | None:
    """A wrapper that compresses what is written to an output, or None for plain output."""
    return None if kind is None else _WRITERS[kind]
