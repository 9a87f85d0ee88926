"""``explain``'s words: the ``--line`` list it takes, and the report and error record it prints."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foldermon.configcheck import short
from foldermon.errors import FoldermonError
from foldermon.queue.layout import FAILED
from foldermon.queue.records import read_record

MAX_LINES = 10_000  # distinct line numbers one command may ask about
# ASCII digits only: str.isdigit() also takes "²" and "٣", which int() refuses or reads as 3.
_NUMBER = re.compile(r"[0-9]{1,18}")


class LineSpecError(FoldermonError):
    """``--line`` is not a list of line numbers and ranges."""


def parse_lines(text: str) -> list[int]:
    """``"10,200-205"`` as sorted distinct line numbers (1-based); a sentence for anything else."""
    spans: list[tuple[int, int]] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if any(len(n) > 18 and n.isascii() and n.isdigit() for n in (low, high)):
            raise LineSpecError(
                f"{short(text)}: a line number of more than 18 digits; no file has that many lines"
            )
        if not _NUMBER.fullmatch(low) or (dash and not _NUMBER.fullmatch(high)):
            raise LineSpecError(
                f"{short(text)}: give line numbers and ranges in digits 0-9, such as 10,200-205"
            )
        first, last = int(low), int(high) if dash else int(low)
        if first < 1 or last < first:
            raise LineSpecError(
                f"{short(text)}: lines are numbered from 1, ranges go upwards ({short(part)})"
            )
        spans.append((first, last))
    merged: list[list[int]] = []
    for first, last in sorted(spans):  # overlapping ranges count their lines once
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    count = sum(last - first + 1 for first, last in merged)
    if count > MAX_LINES:
        raise LineSpecError(f"{short(text)}: at most {MAX_LINES} lines at once, this asks for {count}")
    return [n for first, last in merged for n in range(first, last + 1)]


def to_json(doc: Mapping[str, Any]) -> str:
    """The ``--json`` document, UTF-8 text as it is; a byte that is not UTF-8 (a lone surrogate
    after decoding) is written as its ``\\udcXX`` escape, as ``status --json`` writes it: raw, it
    would make the output invalid JSON (RFC 8259 requires UTF-8)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m[0]):04x}", text)


def ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def record_summary(path: Path, folder: str | None) -> dict[str, Any] | None:
    """What the agent's error record says about a file in ``failed/``, for the header."""
    if folder != FAILED:
        return None
    record = read_record(path.parent, path.name)
    return record or None


def render(doc: Mapping[str, Any], record: Mapping[str, Any] | None) -> str:
    """``explain`` for people: each asked line, each processor it reached, its output lines."""
    out = []
    if record:
        out.append(record_text(record))
    for entry in doc["lines"]:
        out.append(f"line {entry['number']}: {_show(entry['text'])}")
        for i, step in enumerate(entry["steps"], 1):
            what = f"{step['processor_id']} ({step['processor_type']})"
            if step["result"] == "failed":
                out.append(f"  {i}. {what}: failed: {step['error']}")
            elif step["result"] == "dropped" and entry["output_lines"]:
                out.append(f"  {i}. {what}: nothing out now; held, and emitted with a later line")
            elif step["result"] == "dropped" and step["processor_id"] in doc["may_emit_later"]:
                out.append(f"  {i}. {what}: nothing out now; it may hold the line for later (see the note)")
            elif step["result"] == "dropped":
                out.append(f"  {i}. {what}: dropped")
            else:
                more = " ..." if len(step["out"]) > 5 else ""
                shown = ", ".join(_show(s) for s in step["out"][:5]) + more
                out.append(f"  {i}. {what}: {step['result']} -> {shown}")
        lines = entry["output_lines"]
        if lines:
            out.append(f"  output line{'s' if len(lines) > 1 else ''} {ranges(lines)}")
        elif entry["steps"] and entry["steps"][-1]["processor_id"] in doc["may_emit_later"]:
            out.append("  no output line from it so far")
        elif entry["steps"] and entry["steps"][-1]["result"] != "failed":
            out.append("  not in the output")
    out.extend(f"note: {n}" for n in doc["notes"])
    if doc.get("trace_id"):
        out.append(_replay_trace(doc))
    return "\n".join(out)


def _replay_trace(doc: Mapping[str, Any]) -> str:
    if doc.get("trace_sampled", True):
        return f"this replay is trace {doc['trace_id']}"
    return "this replay was not sampled (the traces sampler): no trace of it was kept"


def record_text(record: Mapping[str, Any]) -> str:
    """What the error record of a quarantined file says: the attempts, the error, the failing trace."""
    attempts = record.get("attempts")
    text = f"the agent quarantined this file after {attempts} attempt(s): {record.get('error_type')}"
    if record.get("processor_id"):
        text += f" in {record['processor_id']} ({record.get('processor_type')})"
    if record.get("line"):
        text += f" on line {record['line']}"
    # A processor's own exception says more than "processor X failed"; the agent's sentence
    # (a truncated input, a line too long) says more than the exception under it.
    first, second = ("cause", "message") if record.get("processor_id") else ("message", "cause")
    if record.get(first) or record.get(second):
        text += f": {record.get(first) or record.get(second)}"
    traces = [t for t in record.get("attempt_traces") or [] if isinstance(t, dict)]
    failing = traces[-1] if traces else None
    if failing and failing.get("sampled"):
        text += f"\nthe failing attempt ({failing.get('attempt')}) is trace {failing.get('trace_id')}"
    elif failing:
        text += f"\nthe failing attempt ({failing.get('attempt')}) was not sampled: no trace was kept"
    return text


def _show(text: str, width: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 4] + "...'"
