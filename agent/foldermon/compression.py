"""Compressed inputs and outputs: gzip, bzip2, xz and zstd, recognised by their magic bytes.

Inputs are decompressed as a stream (constant memory). A corrupt or truncated stream fails
the file with the offset where it broke; a stream that expands past ``max_input_bytes`` (a
decompression bomb) fails it too. Outputs can be written compressed (``[output] compress``).
Each codec is imported when a file needs it.
"""

from __future__ import annotations

import functools
import importlib
import os
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
# Bytes read to recognise a format: text which merely begins with a magic ("BZh..." in a plain
# file) is not taken for compressed data, since gzip's method byte (8, deflate, the only one
# defined) and bzip2's block size digit and block or end-of-stream marker are checked too.
HEAD_BYTES = 10
_BZIP2_MARKERS = (b"1AY&SY", b"\x17rE8P\x90")
_SKIPPABLE = 0x184D2A50  # zstd's skippable frames: this magic to 0x184D2A5F
_MAX_SKIPPABLE = 16  # looked past at the start of a file


def sniff(path: Path) -> str | None:
    """The compression of a file by its first bytes, or None for plain data."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None  # opened for real later, where the error is reported
    try:
        return kind_at(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def output_estimate(path: Path, setting: str, limit: int) -> int:
    """About how many bytes the output of the input at ``path`` takes (``setting``: ``[output]
    compress``): its size as stored, or the decompressed size a compressed input declares when
    its output is written plain, at most ``limit`` (``max_input_bytes``: a file that expands
    past it fails there, whatever its header claims). 0 for a file that cannot be opened (the
    claim reports it)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return 0
    try:
        stored = os.fstat(fd).st_size
        kind = kind_at(fd)
        if kind is None or output_kind(setting, kind) is not None:
            return stored
        return max(stored, min(declared_size(kind, fd, stored) or 0, limit))
    except OSError:
        return 0
    finally:
        os.close(fd)


def kind_at(fd: int) -> str | None:
    """The compression of the open file ``fd`` by its first bytes, or None for plain data.
    zstd data may begin with skippable frames (``pzstd`` writes one): a file that does is zstd
    when a zstd frame follows them."""
    head = os.pread(fd, HEAD_BYTES, 0)
    pos = 0
    for _ in range(_MAX_SKIPPABLE):
        if len(head) < 8 or int.from_bytes(head[:4], "little") & 0xFFFFFFF0 != _SKIPPABLE:
            break
        pos += 8 + int.from_bytes(head[4:8], "little")
        head = os.pread(fd, 8, pos)
        if head.startswith(FORMATS["zstd"][0]):
            return "zstd"
    return kind_of(head) if pos == 0 else None


def kind_of(head: bytes) -> str | None:
    """The compression whose header ``head`` (the first HEAD_BYTES of a file) starts with. A
    whole file shorter than that which is the start of a gzip or bzip2 header is that format, cut
    short (as ``gzip -t`` and ``bzip2 -t`` say): it fails as truncated, never passes as text."""
    if head.startswith(b"\x1f\x8b\x08") or head == b"\x1f\x8b":
        return "gzip"
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[3:4] != b"0":
        cut_short = len(head) < HEAD_BYTES and any(m.startswith(head[4:]) for m in _BZIP2_MARKERS)
        if head[4:10] in _BZIP2_MARKERS or cut_short:
            return "bzip2"
    return next((kind for kind in ("xz", "zstd") if head.startswith(FORMATS[kind][0])), None)


def plain_name(name: str, kind: str | None) -> str:
    """The name of compressed data without its compression suffix (``data.csv.gz`` →
    ``data.csv``), whichever of the four it carries: a zstd file named ``.gz`` is compressed
    data too. Plain data keeps its name."""
    if kind is not None:
        for suffix in SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)]
    return name


def output_kind(setting: str, input_kind: str | None) -> str | None:
    """How an output is compressed: ``none``, ``same`` as its input, ``gzip`` or ``zstd``."""
    if setting == "same":
        return input_kind
    return None if setting == "none" else setting


def output_suffix(kind: str | None) -> str:
    return "" if kind is None else FORMATS[kind][1]


# The codecs' modules, imported on first use (they cost start-up time every command would pay).
_MODULES = {"gzip": "gzip", "bzip2": "bz2", "xz": "lzma", "zstd": "zstandard"}
# Errors a broken stream raises besides OSError, EOFError and ValueError, by their module.
_CODEC_ERROR_MODULES = ("zlib", "_lzma", "zstandard")


def _codec(kind: str) -> Any:
    return importlib.import_module(_MODULES[kind])


def _reader(kind: str, raw: BinaryIO) -> Any:
    """A decompressing reader over ``raw``; closed with the Decompressed that owns it."""
    codec = _codec(kind)
    if kind == "zstd":
        return codec.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if kind == "gzip":
        return codec.GzipFile(fileobj=raw, mode="rb")
    return codec.BZ2File(raw, mode="rb") if kind == "bzip2" else _XzStreams(raw, codec)


_XZ_CHUNK = 1 << 16


class _XzStreams:
    """xz streams one after another, as ``xz -d`` reads them: with the stream padding the format
    allows after each (zero bytes, in fours), and anything else after a stream is corrupt data.
    (Python's LZMAFile stops without a word at padding between streams, and at any trailing
    bytes it cannot read, and refuses padding at the end.)"""

    def __init__(self, raw: BinaryIO, codec: Any) -> None:
        self._raw = raw
        self._codec = codec
        self._decoder = codec.LZMADecompressor(codec.FORMAT_XZ)
        self._input = b""  # read from the file, not yet given to a decoder

    def read(self, size: int = -1) -> bytes:
        limit = size if size > 0 else _XZ_CHUNK
        while True:
            if self._decoder.eof and not self._next_stream():
                return b""
            if self._decoder.needs_input and not self._input:
                self._input = self._raw.read(_XZ_CHUNK)
                if not self._input:
                    raise EOFError("the file ends inside an xz stream")
            data: bytes = self._decoder.decompress(self._input, limit)
            self._input = b""
            if data:
                return data

    def _next_stream(self) -> bool:
        """Past a finished stream's padding: False at the end of the file, True with a new
        decoder when another stream follows."""
        rest = self._decoder.unused_data + self._input
        zeros = 0
        while not rest.lstrip(b"\0"):
            zeros += len(rest)
            rest = self._raw.read(_XZ_CHUNK)
            if not rest:
                if zeros % 4:
                    raise self._codec.LZMAError("stream padding that is not a multiple of four bytes")
                self._input = b""
                return False
        stripped = rest.lstrip(b"\0")
        if (zeros + len(rest) - len(stripped)) % 4:
            raise self._codec.LZMAError("stream padding that is not a multiple of four bytes")
        self._decoder = self._codec.LZMADecompressor(self._codec.FORMAT_XZ)
        self._input = stripped
        return True

    def close(self) -> None:
        pass  # the Decompressed that owns the file closes it


class Decompressed:
    """A decompressing reader that turns every way a stream can break into InputRejectedError."""

    def __init__(self, raw: BinaryIO, kind: str, limit: int) -> None:
        self._raw = raw
        self._kind = kind
        self._limit = limit
        self._inner = _reader(kind, raw)
        self._count = 0
        self._stored = os.fstat(raw.fileno()).st_size
        self._declared: int | None = -1  # read when progress() is first asked

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._inner.read(size)
            if not data and size and self._kind == "zstd":
                # The zstd reader ends quietly where a cut-off stream ends: check that the last
                # frame was whole, as the other codecs do themselves.
                _zstd_frames_end(self._raw.fileno())
        except (OSError, EOFError, ValueError) as exc:
            raise self._broken(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith(_CODEC_ERROR_MODULES):
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

    def progress(self) -> float:
        """The share of the input read so far, from 0 to 1: the share of the stored (compressed)
        bytes read, or the decompressed bytes against the size the format declares when that
        says less. A decompressor may read a very compressible file whole at once, while its
        text is still to come."""
        offset = self._offset()
        share = offset / self._stored if self._stored > 0 and offset >= 0 else 0.0
        if self._declared == -1:
            self._declared = declared_size(self._kind, self._raw.fileno(), self._stored)
        if self._declared:
            share = min(share, self._count / self._declared)
        return min(1.0, share)

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


_ZSTD_MAGIC = 0xFD2FB528
_XZ_FOOTER = 12
_XZ_MAX_INDEX = 1 << 24  # a few bytes a block: millions of blocks
_XZ_TAIL = 1 << 16  # read from the end for the footer: stream padding beyond that is not looked past


def declared_size(kind: str, fd: int, stored: int) -> int | None:
    """The decompressed size the file declares, or None: gzip's ISIZE (of the last member, modulo
    4 GiB), the index of the last xz stream, the first zstd frame's content size. Only an
    estimate of how much text is to come (a file of several members, streams or frames declares
    less than it holds); never a reason to refuse the file, which its reader checks."""
    try:
        if kind == "gzip" and stored >= 18:
            return int.from_bytes(os.pread(fd, 4, stored - 4), "little") or None
        if kind == "xz":
            return _xz_declared(fd, stored)
        if kind == "zstd":
            return _zstd_declared(fd)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _xz_declared(fd: int, stored: int) -> int | None:
    """The sum of the uncompressed sizes in the index of the last xz stream of the file."""
    tail = os.pread(fd, _XZ_TAIL, max(0, stored - _XZ_TAIL))
    end = stored - (len(tail) - len(tail.rstrip(b"\0")))  # past the stream padding (a footer ends in "YZ")
    footer = os.pread(fd, _XZ_FOOTER, end - _XZ_FOOTER)
    if len(footer) != _XZ_FOOTER or footer[-2:] != b"YZ":
        return None
    index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
    if index_size > min(end, _XZ_MAX_INDEX):
        return None
    index = os.pread(fd, index_size, end - _XZ_FOOTER - index_size)
    if len(index) != index_size or index[0] != 0:
        return None
    pos = 1

    def number() -> int:  # the format's multibyte integer: 7 bits a byte, low bits first
        nonlocal pos
        value = 0
        for shift in range(0, 63, 7):
            byte = index[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise ValueError("an xz index number longer than 9 bytes")

    total = 0
    for _ in range(number()):
        number()  # the block's unpadded size
        total += number()
    return total or None


def _zstd_declared(fd: int) -> int | None:
    """The content size in the header of the first zstd frame (after any skippable frames)."""
    zstandard = _codec("zstd")
    pos = 0
    for _ in range(_MAX_SKIPPABLE):
        head = os.pread(fd, 8, pos)
        if len(head) < 8 or int.from_bytes(head[:4], "little") & 0xFFFFFFF0 != _SKIPPABLE:
            break
        pos += 8 + int.from_bytes(head[4:8], "little")
    try:
        size: int = zstandard.frame_content_size(os.pread(fd, 18, pos))
    except zstandard.ZstdError:
        return None
    return size if size > 0 else None


def _zstd_frames_end(fd: int) -> None:
    """Walk the frames and block headers of a zstd file (RFC 8878) without decompressing;
    EOFError when the file ends inside a frame, ValueError at a structure no frame can have."""
    size = os.fstat(fd).st_size
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        data = os.pread(fd, n, pos)
        if len(data) < n:
            raise EOFError(f"the file ends inside a frame (at byte {size} of it)")
        pos += n
        return data

    while pos < size:
        magic = int.from_bytes(take(4), "little")
        if magic & 0xFFFFFFF0 == _SKIPPABLE:
            skip = int.from_bytes(take(4), "little")
            if pos + skip > size:
                raise EOFError(f"the file ends inside a skippable frame (at byte {size} of it)")
            pos += skip
            continue
        if magic != _ZSTD_MAGIC:
            raise ValueError(f"no zstd frame at byte {pos - 4}")
        descriptor = take(1)[0]
        single_segment = descriptor >> 5 & 1
        content_size_bytes = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
        header = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
        take(header)
        while True:
            block = int.from_bytes(take(3), "little")
            kind, length = block >> 1 & 3, block >> 3
            if kind == 3:
                raise ValueError(f"a reserved block type at byte {pos - 3}")
            if pos + (1 if kind == 1 else length) > size:
                raise EOFError(f"the file ends inside a block (at byte {size} of it)")
            pos += 1 if kind == 1 else length
            if block & 1:
                break
        if descriptor >> 2 & 1:
            take(4)  # the content checksum


def _writer(kind: str, out: BinaryIO) -> Any:
    """A compressing writer that leaves the file it wraps open when closed: the caller fsyncs it."""
    codec = _codec(kind)
    if kind == "zstd":
        return codec.ZstdCompressor(level=3).stream_writer(out, closefd=False)
    if kind == "gzip":
        return codec.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
    return codec.BZ2File(out, mode="wb") if kind == "bzip2" else codec.LZMAFile(out, mode="wb")


def compressing(kind: str | None) -> Callable[[BinaryIO], Any] | None:
    """A wrapper that compresses what is written to an output, or None for plain output."""
    return None if kind is None else functools.partial(_writer, kind)
