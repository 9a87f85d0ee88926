"""Where things are in a config file's text: the line of a TOML syntax error (and of the bracket
or string left open before it), and the order of the file's tables, so problems are listed as
the file has them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from foldermon.configcheck import short


def toml_problem(exc: ValueError, text: str) -> str:
    """A TOML syntax error with its line shown. The parser names the place where it stopped: at
    the start of a line the mistake is usually at the end of the line before, and a bracket or
    string still open there (or at the end of the file) was opened on the line named with it."""
    message = str(exc)
    lines = text.split("\n")  # as the parser counts them (splitlines() also cuts at \x0c, \u2028...)
    at = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if at is None and message.endswith(" (at end of document)"):
        return _toml_eof_problem(message.removesuffix(" (at end of document)"), text, lines)
    if at is None:
        return f"invalid TOML: {message}"
    line, column = int(at[1]), int(at[2])
    where = f"line {line}, column {column}"
    if column == 1 and line > 1:
        where = f"line {line} (or the end of line {line - 1})"
    shown = {line - 1, line} if column == 1 else {line}
    opened, _ = _toml_walk(text[: sum(len(s) + 1 for s in lines[: line - 1]) + column - 1])
    if opened is not None and opened[1] < line:
        where += f"; the {opened[0]} opened on line {opened[1]} is not closed before it"
        shown.add(opened[1])
    return f"invalid TOML at {where}: {message[: at.start()]}" + _quoted(sorted(shown), lines)


def _toml_eof_problem(what: str, text: str, lines: list[str]) -> str:
    """The parser reached the end of the file inside something: name the line where it began."""
    opened, _ = _toml_walk(text)
    if opened is not None:
        where = f"the end of the file; the {opened[0]} opened on line {opened[1]} is never closed"
        return f"invalid TOML at {where}: {what}" + _quoted([opened[1]], lines)
    last = max((n for n, s in enumerate(lines, 1) if s.strip()), default=1)
    return f"invalid TOML at the end of the file (line {last}): {what}" + _quoted([last], lines)


def _quoted(numbers: list[int], lines: list[str]) -> str:
    shown = "; ".join(f"line {n}: {short(lines[n - 1].strip())}" for n in numbers if 0 < n <= len(lines))
    return f" ({shown})" if shown else ""


_TOML_TOKEN = re.compile(r"\"\"\"|'''|[\"'#\[\]{}\n]")
_TOML_STRING_END = {  # what closes a string, from just after its opening quotes
    '"""': re.compile(r'(?:[^"\\]|\\[\s\S]|"(?!""))*"""'),
    "'''": re.compile(r"(?:[^']|'(?!''))*'''"),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"'),
    "'": re.compile(r"[^'\n]*'"),
}
# A table header, from its first bracket: `[name]`, `[name.sub]` or `[[name]]`, bare or quoted.
_TOML_HEADER = re.compile(r"\[(\[)?[ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[A-Za-z0-9_-]+)[ \t]*([.\]])")


def _toml_walk(text: str) -> tuple[tuple[str, int] | None, list[tuple[str, bool]]]:
    """The outermost bracket, or the string, still open at the end of ``text`` with the line it
    was opened on; and the table headers (name, whether ``[[array]]``) in the order they come.
    Comments and strings are skipped as the parser skips them."""
    stack: list[tuple[str, int]] = []
    headers: list[tuple[str, bool]] = []
    line, pos, blank = 1, 0, True  # blank: nothing yet on this line but spaces and tabs
    while found := _TOML_TOKEN.search(text, pos):
        blank = blank and not text[pos : found.start()].strip(" \t")
        mark, pos = found[0], found.end()
        if mark == "\n":
            line, blank = line + 1, True
        elif mark == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif mark in _TOML_STRING_END:
            closed = _TOML_STRING_END[mark].match(text, pos)
            if closed is None:
                return (f"{mark} string", line), headers
            line += text.count("\n", pos, closed.end())
            pos, blank = closed.end(), False
        else:
            if mark == "[" and not stack and blank and (header := _TOML_HEADER.match(text, found.start())):
                headers.append((header[2].strip("\"'"), bool(header[1]) and header[3] == "]"))
            if mark in "[{":
                stack.append((mark, line))
            elif stack:
                stack.pop()
            blank = False
    return (stack[0] if stack else None), headers


_PROBLEM_PLACE = re.compile(
    r'^(?:\[(?P<section>\w+)\] (?:unknown key "(?P<unknown>[^"]*)"|(?P<key>\w+))?'
    r'|processors\[(?P<index>\d+)\]|unknown section "(?P<name>[^"]*)")'
)


def place(problem: str, raw: Mapping[str, Any], places: list[tuple[str, int | None]]) -> tuple[int, int]:
    """Where a problem's table (or ``[[processors]]`` entry) and key come in the file, so
    problems are listed in its order (parsed tables keep the file's order of keys)."""
    m = _PROBLEM_PLACE.match(problem)
    if m is None:
        return (len(places), 0)
    if m["index"]:
        index = int(m["index"])
        entry = ("processors", index) if ("processors", index) in places else ("processors", None)
        return (places.index(entry) if entry in places else len(places), index)
    section = m["section"] or m["name"] or ""
    first = places.index((section, None)) if (section, None) in places else len(places)
    keys = list(raw[section]) if isinstance(raw.get(section), Mapping) else []
    key = m["unknown"] or m["key"]
    return (first, keys.index(key) if key in keys else len(keys))


def file_places(text: str, raw: Mapping[str, Any]) -> list[tuple[str, int | None]] | None:
    """A TOML file's top-level tables in the order they come, each ``[[processors]]`` entry in
    its own place: ``[("watch", None), ("processors", 0), ("agent", None), ("processors", 1)]``.
    Tables set before the first header (``processors = [...]``, ``agent.workers = 2``) come
    first. None when the headers do not account for what was parsed."""
    places: list[tuple[str, int | None]] = []
    entries = 0
    for name, array in _toml_walk(text)[1]:
        if array and name == "processors":
            places.append(("processors", entries))
            entries += 1
        elif not array and (name, None) not in places:
            places.append((name, None))
    named = {name for name, _ in places}
    processors = raw.get("processors")
    counted = not entries or (isinstance(processors, list) and len(processors) == entries)
    if not counted or not named <= set(raw):
        return None
    return [(name, None) for name in raw if name not in named] + places
