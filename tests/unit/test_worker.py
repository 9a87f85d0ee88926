"""Reading inputs in batches of complete lines: chunk boundaries, undecodable bytes, the line limit."""

from __future__ import annotations

import io

import pytest

from foldermon.worker import CHUNK_BYTES, LineTooLongError, read_batches


def _lines(data: bytes, max_line_bytes: int = 1 << 30) -> list[str]:
    return [line for batch in read_batches(io.BytesIO(data), max_line_bytes) for line in batch]


def test_lines_split_across_chunks_come_out_whole_and_in_order() -> None:
    """Lines that straddle chunk boundaries are joined again; a last line without newline is kept."""
    lines = [f"line {i} " + "x" * (i % 97) for i in range(CHUNK_BYTES // 20)]
    data = ("\n".join(lines) + "\nno newline at the end").encode()
    assert _lines(data) == [*lines, "no newline at the end"]


def test_undecodable_bytes_survive_the_round_trip() -> None:
    """Latin-1 and NUL bytes decode with surrogateescape and encode back to the same bytes."""
    data = b"caf\xe9\n\x00nul\xff\n" * (CHUNK_BYTES // 8)
    text = "\n".join(_lines(data)) + "\n"
    assert text.encode("utf-8", "surrogateescape") == data


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_a_line_spanning_chunks_is_held_to_the_limit(extra: int) -> None:
    """A line longer than max_line_bytes fails even when it starts in one chunk and ends in another."""
    limit = CHUNK_BYTES + 1000
    data = b"short\n" + b"y" * (limit + extra) + b"\nafter\n"
    if extra > 0:
        with pytest.raises(LineTooLongError):
            _lines(data, limit)
    else:
        assert _lines(data, limit)[1] == "y" * (limit + extra)


@pytest.mark.parametrize("newline", [b"\n", b""])
def test_a_last_line_is_held_to_the_limit_with_or_without_its_newline(newline: bytes) -> None:
    """The last line shares its chunk with earlier ones; without a newline it is still checked."""
    with pytest.raises(LineTooLongError):
        _lines(b"a\n" + b"x" * 5000 + newline, 100)
    assert _lines(b"a\n" + b"x" * 100 + newline, 100) == ["a", "x" * 100]


@pytest.mark.parametrize(
    ("data", "limit", "line"),
    [
        (b"a\nb\n" + b"x" * 500 + b"\nc\n", 100, 3),  # in the first chunk, after two lines
        (b"x" * 500 + b"\n", 100, 1),
        (b"a\n" * 100_000 + b"x" * 500 + b"\n", 100, 100_001),  # in a later chunk
        (b"a\n" + b"y" * (CHUNK_BYTES + 10), CHUNK_BYTES, 2),  # no newline in a whole chunk
    ],
)
def test_a_line_too_long_is_named_after_the_lines_before_it(data: bytes, limit: int, line: int) -> None:
    """The lines before a line too long are handed out first, and the error names its number."""
    got: list[str] = []
    with pytest.raises(LineTooLongError) as raised:
        got.extend(line for batch in read_batches(io.BytesIO(data), limit) for line in batch)
    assert raised.value.line == line
    assert f"line {line} is longer" in str(raised.value)
    assert len(got) == line - 1


def test_the_line_limit_counts_bytes_not_characters() -> None:
    """Four-byte characters: 30 of them are 120 bytes, over a limit of 100; 25 are not."""
    with pytest.raises(LineTooLongError):
        _lines(("a\n" + "😀" * 30 + "\n").encode(), 100)
    assert _lines(("a\n" + "😀" * 25 + "\n").encode(), 100) == ["a", "😀" * 25]
