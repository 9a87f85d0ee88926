"""Queue counts per watch root, for ``foldermon-agent status``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from foldermon.queue.layout import Layout, claimed_count, input_names, known_root_id, oldest_age
from foldermon.queue.records import read_record
from foldermon.queue.requeue import failed_inputs
from foldermon.scheduler import disk_free, low_disk, read_pause
from foldermon.watch import NameRules


def _failed_reason(failed: Path, name: str) -> str:
    record = read_record(failed, name)
    if not record:
        return "no error record"
    return f"{record.get('error_type', 'Error')}: {record.get('message', '')}"


def failed_files(layout: Layout) -> list[dict[str, Any]]:
    """Each quarantined input with its reason, attempts, trace id and time, for ``failed``."""
    files = []
    for name in failed_inputs(layout):
        record = read_record(layout.failed, name)
        files.append(
            {
                "name": name,
                "reason": _failed_reason(layout.failed, name),
                "attempts": record.get("attempts"),
                "trace_id": record.get("trace_id"),
                "failed_at": record.get("failed_at"),
                "processor_id": record.get("processor_id"),
            }
        )
    return files


def root_status(
    root: Path,
    now: float | None = None,
    *,
    min_free: str = "",
    output_dir: Path | None = None,
    rules: NameRules | None = None,
) -> dict[str, Any]:
    """The ``status --json`` entry of one root; ``rules``: the ``[watch]`` names never claimed."""
    layout = Layout.for_root(root, output_dir)
    now = time.time() if now is None else now
    unprocessed = (rules or NameRules()).waiting(layout.unprocessed)
    failed = failed_inputs(layout)
    return {
        "path": str(layout.root),
        "root_id": known_root_id(layout.root),
        "unprocessed": len(unprocessed),
        "underprocess": claimed_count(layout),
        "processed": len(input_names(layout.processed)),
        "failed": len(failed),
        "oldest_unprocessed_age_s": oldest_age(layout.unprocessed, unprocessed, now),
        "failed_files": [{"name": n, "reason": _failed_reason(layout.failed, n)} for n in failed],
        **_paused(layout, min_free),
    }


def _paused(layout: Layout, min_free: str) -> dict[str, Any]:
    """Whether the agents hold this root, and why: a manual pause or too little free disk."""
    manual = read_pause(layout)
    if manual is not None:
        reason = f"paused by {manual.get('by', 'someone')} since {manual.get('since_iso', '?')}"
        if manual.get("reason"):
            reason += f": {manual['reason']}"
        return {"paused": True, "paused_reason": reason, "paused_by": manual.get("by")}
    try:
        low = low_disk(disk_free(layout), min_free) if layout.root.is_dir() else None
    except OSError:
        low = None
    return {"paused": low is not None, "paused_reason": low}


def printable(text: object) -> str:
    """``text`` for a line of plain output: control characters, line separators and bytes that
    are not UTF-8 (a file's name, a pause reason) written as escapes, so none can break a line,
    forge another or drive the terminal; a backslash too, so that no two texts print alike."""
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in str(text))


def render_text(roots: list[dict[str, Any]]) -> str:
    """A plain table for people."""
    lines = []
    for r in roots:
        age = r["oldest_unprocessed_age_s"]
        lines.append(printable(r["path"]))
        lines.append(
            f"  unprocessed {r['unprocessed']}  underprocess {r['underprocess']}  "
            f"processed {r['processed']}  failed {r['failed']}  "
            f"oldest waiting {'-' if age is None else f'{age:.1f}s'}"
        )
        if r.get("paused"):
            lines.append(f"  held: {printable(r['paused_reason'])}")
        lines.extend(f"  failed: {printable(f['name'])}: {printable(f['reason'])}" for f in r["failed_files"])
    return "\n".join(lines)
