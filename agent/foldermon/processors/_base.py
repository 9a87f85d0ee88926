"""The processor protocol, processor specs and the option checks processors share."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from foldermon.errors import OptionError

__all__ = [
    "Processor",
    "ProcessorBuilder",
    "ProcessorFactory",
    "ProcessorSpec",
    "SpecError",
    "bool_option",
    "delimiter_option",
    "format_option",
    "index_option",
    "spec_from_table",
    "str_option",
]


@runtime_checkable
class Processor(Protocol):
    """Turns a file's lines into output lines, one batch at a time.

    A pipeline builds a fresh processor for every input file, so anything a
    processor remembers (a line counter, a held line, running totals) is
    per file: processing the same file twice gives the same output.

    ``process(lines)`` receives a batch of lines without their trailing
    newline and returns the lines to pass on: the same lines, changed lines,
    fewer (a filter) or more (a splitter). It must not modify the list it is
    given; it may return that list unchanged. Batches can be large, so work
    over the whole list at once (list comprehensions, ``map``, precompiled
    regular expressions) rather than doing per-line bookkeeping.

    ``finish()`` is called once at the end of the file and returns any lines
    still held back: the odd last line of a joiner, the summary of an
    aggregator, or ``[]``. A processor whose ``finish()`` always returns ``[]`` may say so
    with a class attribute ``emits_at_finish = False``: ``explain`` then knows that what it
    shows for a line is all that line becomes (without it, it warns that more may come).

    Lines are ``str`` decoded with ``surrogateescape``: bytes that are not
    valid UTF-8 arrive as lone surrogates and are written back as the same
    bytes, as long as the processor leaves them in place.

    A processor type is any callable that takes the processor's options as
    keyword arguments and returns a processor, usually a class::

        from foldermon.errors import OptionError

        class Reverse:
            def __init__(self, *, keep_empty: bool = True) -> None:
                if not isinstance(keep_empty, bool):
                    raise OptionError("keep_empty", "must be true or false")
                self._keep_empty = keep_empty

            def process(self, lines: list[str]) -> list[str]:
                return [s[::-1] for s in lines if s or self._keep_empty]

            def finish(self) -> list[str]:
                return []

    Third-party types register under the entry-point group
    ``foldermon.processors``; in the plugin's ``pyproject.toml``::

        [project.entry-points."foldermon.processors"]
        reverse = "my_plugin:Reverse"

    Options the callable's signature does not name are reported at config load
    with the list of known options, and parameters without a default are
    required options; bad values should raise
    ``foldermon.errors.OptionError(key, message)`` so the message names the
    option. A type that declares a keyword-only ``registry`` parameter gets the
    registry passed in (``registry`` is not an option) so it can build nested
    processors, as ``tag_router`` does.
    """

    def process(self, lines: list[str]) -> list[str]:
        """Return the output lines for one batch of input lines."""
        ...

    def finish(self) -> list[str]:
        """Return the lines held back until the end of the file."""
        ...


ProcessorFactory = Callable[..., Processor]
"""A processor type: called with the options as keyword arguments."""


class ProcessorSpec(NamedTuple):
    """One configured processor: its type, its id and its options.

    ``options`` holds every configured key except ``type`` and ``id``.
    """

    type: str
    id: str
    options: Mapping[str, Any]


class ProcessorBuilder(Protocol):
    """What a processor that nests other processors needs from the registry."""

    def try_build(self, spec: ProcessorSpec) -> tuple[Processor | None, list[str]]:
        """Return a fresh processor, or ``None`` and the problems with ``spec``."""
        ...


class SpecError(OptionError):
    """A spec has problems; ``problems`` lists them all, each a full sentence."""

    def __init__(self, key: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(key, "; ".join(self.problems))
        # Each problem already names its option; skip OptionError's prefix.
        self.args = ("; ".join(self.problems),)


def spec_from_table(table: object, spec_id: str) -> tuple[ProcessorSpec | None, list[str]]:
    """Read a processor config table, flat or with its options under ``"config"``.

    ``{"type": "line_counter", "format": "..."}`` and
    ``{"type": "line_counter", "config": {"format": "..."}}`` give the same
    spec. An ``"id"`` key, when present, replaces ``spec_id``.
    """
    if not isinstance(table, Mapping):
        return None, ['must be a table with a "type" key']
    kind = table.get("type")
    if not isinstance(kind, str) or not kind:
        return None, ['"type" must be a non-empty string']
    given_id = table.get("id", spec_id)
    if not isinstance(given_id, str) or not given_id:
        return None, ['"id" must be a non-empty string']
    options = {k: v for k, v in table.items() if k not in {"type", "id", "config"}}
    nested = table.get("config", {})
    if not isinstance(nested, Mapping):
        return None, ['"config" must be a table of options']
    clashes = sorted(set(options) & set(nested))
    if clashes:
        names = ", ".join(f'"{k}"' for k in clashes)
        return None, [f'option {names} given both directly and under "config"']
    options.update(nested)
    return ProcessorSpec(type=kind, id=given_id, options=options), []


def str_option(key: str, value: object) -> str:
    """Return ``value`` if it is a string, else raise an error naming ``key``."""
    if not isinstance(value, str):
        raise OptionError(key, "must be a string")
    return value


def delimiter_option(key: str, value: object) -> str:
    """Return ``value`` if it is a non-empty string (``str.split`` needs one)."""
    if not isinstance(value, str) or not value:
        raise OptionError(key, "must be a non-empty string")
    return value


def bool_option(key: str, value: object) -> bool:
    """Return ``value`` if it is a boolean, else raise an error naming ``key``."""
    if not isinstance(value, bool):
        raise OptionError(key, "must be true or false")
    return value


def index_option(key: str, value: object) -> int:
    """Return ``value`` if it is an integer from 0 to the largest index Python takes (a field
    index or a count: a larger one fails every line with OverflowError)."""
    # bool is an int subclass, but `true` as a field index is a config mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionError(key, "must be a non-negative integer")
    if value > sys.maxsize:
        raise OptionError(key, f"must be at most {sys.maxsize}")
    return value


MAX_FORMAT_WIDTH = 1000


def format_option(key: str, value: object, *samples: Mapping[str, object]) -> str:
    """Return ``value`` if it is a ``str.format`` template over the samples' fields.

    Every field must be one of the samples' names, used without attribute or
    index access; each sample must format without error, which catches bad
    format specs (``{count:q}``) at config load instead of mid-file.
    """
    text = str_option(key, value)
    allowed = ", ".join("{" + name + "}" for name in samples[0])
    try:
        import string  # only for a configured format

        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise OptionError(key, f"invalid format string: {exc}") from exc
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        # A width taken from a line ({count:{line}}) or a huge one would build huge strings per line.
        if spec and (
            "{" in spec or any(len(n) > 4 or int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec))
        ):
            raise OptionError(
                key, f"format spec {spec!r} too wide or nested (widths up to {MAX_FORMAT_WIDTH})"
            )
        if field not in samples[0]:
            if field == "" or field.isdigit():
                raise OptionError(key, f"positional field {{{field}}} not allowed; fields: {allowed}")
            raise OptionError(key, f"unknown field {{{field}}}; fields: {allowed}")
    for sample in samples:
        try:
            text.format(**sample)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise OptionError(key, f"invalid format string: {exc}") from exc
    return text
