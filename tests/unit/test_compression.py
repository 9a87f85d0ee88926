"""The decompressed size a compressed file declares, and the share of it a reader has read."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
from pathlib import Path

import pytest
import zstandard

from foldermon.compression import declared_size, kind_at
from foldermon.worker import open_input

TEXT = b"".join(b"line %d of a test file\n" % i for i in range(50_000))


def _declared(path: Path) -> int | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        kind = kind_at(fd)
        assert kind is not None
        return declared_size(kind, fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data",
    [
        gzip.compress(TEXT),
        lzma.compress(TEXT),
        lzma.compress(TEXT) + b"\0" * 8,  # stream padding
        zstandard.ZstdCompressor().compress(TEXT),
    ],
    ids=["gzip", "xz", "xz-padded", "zstd"],
)
def test_a_single_stream_declares_its_size(tmp_path: Path, data: bytes) -> None:
    assert _declared(_file(tmp_path, "f", data)) == len(TEXT)


def test_an_xz_file_of_many_blocks_declares_them_all(tmp_path: Path) -> None:
    src = _file(tmp_path, "plain", TEXT)
    done = subprocess.run(
        ["xz", "-T2", "--block-size=100KiB", "-c", str(src)], capture_output=True, check=True
    )
    assert _declared(_file(tmp_path, "f.xz", done.stdout)) == len(TEXT)


@pytest.mark.parametrize(
    ("data", "declared"),
    [
        (gzip.compress(TEXT) + gzip.compress(b"tail\n"), 5),  # the last member only
        (lzma.compress(TEXT) + lzma.compress(b"tail\n"), 5),  # the last stream only
        (zstandard.ZstdCompressor().compress(b"head\n") + zstandard.ZstdCompressor().compress(TEXT), 5),
        (zstandard.ZstdCompressor(write_content_size=False).compress(TEXT), None),
        (bz2.compress(TEXT), None),
        (lzma.compress(TEXT)[:-20], None),  # cut: no index to read
        (lzma.compress(TEXT) + b"\0" * (1 << 20), None),  # padding past what is looked at
        (b"\xfd7zXZ\x00" + b"\0" * 30 + b"\xff\xff\xff\xff\0\0YZ", None),  # an index of 16 GiB
        (b"\xfd7zXZ\x00" + b"\xff" * 40 + b"YZ", None),  # a footer pointing nowhere
    ],
    ids=[
        "gzip-members",
        "xz-streams",
        "zstd-frames",
        "zstd-unsized",
        "bzip2",
        "xz-cut",
        "xz-long-padding",
        "xz-huge-index",
        "xz-garbage",
    ],
)
def test_what_a_file_of_several_parts_or_none_declares(
    tmp_path: Path, data: bytes, declared: int | None
) -> None:
    assert _declared(_file(tmp_path, "f", data)) == declared


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress, zstandard.ZstdCompressor().compress])
def test_progress_of_very_compressible_text_follows_the_text(tmp_path: Path, compress: object) -> None:
    """One line repeated compresses to a few KB that the decompressor reads at once: the share
    read still follows the text handed out, not the stored bytes."""
    text = b"the same line\n" * 400_000
    path = _file(tmp_path, "f", compress(text))  # type: ignore[operator]
    with open_input(path) as src:
        first = src.read(1 << 16)
        share = src.progress()  # type: ignore[attr-defined]
        assert 0 < share < 0.05
        assert share == pytest.approx(len(first) / len(text), rel=0.01)
        while src.read(1 << 20):
            pass
        assert src.progress() == 1.0  # type: ignore[attr-defined]
