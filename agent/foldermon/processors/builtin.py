"""Stateless built-in processors: each output depends only on the batch at hand.

Every ``process`` works over the whole batch with C-level string methods or
precompiled regular expressions, because a pipeline pushes millions of lines
through these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import filterfalse

from foldermon.errors import OptionError
from foldermon.processors._base import bool_option, delimiter_option, index_option, str_option

__all__ = ["Filter", "LineSplitter", "Lowercase", "Replace", "Strip", "Uppercase"]


class _Stateless:
    """Gives the processors of this module their empty end-of-file flush."""

    __slots__ = ()
    emits_at_finish = False

    def finish(self) -> list[str]:
        """Return nothing: a stateless processor holds no lines back."""
        return []


def _compile(key: str, pattern: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise OptionError(key, f"invalid regular expression: {exc}") from exc


class Uppercase(_Stateless):
    """``uppercase``: every line in upper case (undecodable bytes are left alone)."""

    __slots__ = ()

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines upper-cased."""
        return list(map(str.upper, lines))


class Lowercase(_Stateless):
    """``lowercase``: every line in lower case (undecodable bytes are left alone)."""

    __slots__ = ()

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines lower-cased."""
        return list(map(str.lower, lines))


class Filter(_Stateless):
    """``filter``: keep the lines that contain ``pattern``.

    By default ``pattern`` is a plain, case-sensitive substring. With
    ``regex = true`` it is a Python regular expression matched anywhere in the
    line (``re.search``); ``ignore_case`` compares case-insensitively (Unicode
    case folding for plain patterns, ``re.IGNORECASE`` for regexes); ``invert``
    keeps the lines that do *not* match instead.
    """

    __slots__ = ("_folded", "_invert", "_pattern", "_search")

    def __init__(
        self,
        *,
        pattern: str,
        regex: bool = False,
        ignore_case: bool = False,
        invert: bool = False,
    ) -> None:
        text = str_option("pattern", pattern)
        self._invert = bool_option("invert", invert)
        use_regex = bool_option("regex", regex)
        fold = bool_option("ignore_case", ignore_case)
        self._search: Callable[[str], object] | None = None
        self._folded = fold and not use_regex
        self._pattern = text.casefold() if self._folded else text
        if use_regex:
            self._search = _compile("pattern", text, re.IGNORECASE if fold else 0).search

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines that match (or, with ``invert``, that do not)."""
        search, pat = self._search, self._pattern
        if search is not None:
            return list(filterfalse(search, lines) if self._invert else filter(search, lines))
        if self._folded:
            if self._invert:
                return [s for s in lines if pat not in s.casefold()]
            return [s for s in lines if pat in s.casefold()]
        if self._invert:
            return [s for s in lines if pat not in s]
        return [s for s in lines if pat in s]


class LineSplitter(_Stateless):
    """``line_splitter``: one output line per non-empty, stripped part of a line."""

    __slots__ = ("_delimiter",)

    def __init__(self, *, delimiter: str = ",") -> None:
        self._delimiter = delimiter_option("delimiter", delimiter)

    def process(self, lines: list[str]) -> list[str]:
        """Return the stripped parts of every line, dropping empty ones."""
        d = self._delimiter
        return [part for s in lines for p in s.split(d) if (part := p.strip())]


class Strip(_Stateless):
    """``strip``: remove leading and trailing ``chars`` (default: whitespace)."""

    __slots__ = ("_chars",)

    def __init__(self, *, chars: str | None = None) -> None:
        self._chars = None if chars is None else str_option("chars", chars)

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines stripped."""
        chars = self._chars
        if chars is None:
            return list(map(str.strip, lines))
        return [s.strip(chars) for s in lines]


class Replace(_Stateless):
    """``replace``: ``re.sub(pattern, replacement, line, count)`` on every line.

    ``replacement`` may refer to groups (``\\1``, ``\\g<name>``); ``count = 0``
    replaces every match.
    """

    __slots__ = ("_count", "_replacement", "_sub")

    def __init__(self, *, pattern: str, replacement: str = "", count: int = 0) -> None:
        compiled = _compile("pattern", str_option("pattern", pattern))
        self._replacement = str_option("replacement", replacement)
        self._count = index_option("count", count)
        try:
            # sub() parses the template even when nothing matches, so bad
            # escapes and group references surface now, not mid-file.
            compiled.sub(self._replacement, "")
        except (re.error, IndexError) as exc:
            raise OptionError("replacement", f"invalid replacement: {exc}") from exc
        self._sub = compiled.sub

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines with the pattern's matches replaced."""
        sub, repl, count = self._sub, self._replacement, self._count
        return [sub(repl, s, count) for s in lines]
