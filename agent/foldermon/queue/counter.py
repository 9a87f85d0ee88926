"""Durable attempt counters: ``.<name>.attempts`` beside an input while it is in the queue."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foldermon.queue.fsio import write_durable


def counter_name(name: str) -> str:
    """The durable attempt counter kept beside an input while it is in the queue."""
    return f".{name}.attempts"


@dataclass(frozen=True, slots=True)
class TraceRef:
    """Where an earlier attempt of a file is traced (ids in hex), and whether its trace was kept."""

    attempt: int
    trace_id: str
    span_id: str
    sampled: bool


@dataclass(frozen=True, slots=True)
class Count:
    """The attempts a file has used, when the first began, and the traces of the recent ones."""

    attempts: int = 0
    first: float = 0.0
    traces: tuple[TraceRef, ...] = ()
    # How the last attempt that failed (rather than ended the agent) failed: error_type, message,
    # processor_id, processor_type, line, cause and its attempt number.
    error: dict[str, Any] | None = None
    # Bytes of output an attempt stopped by [guard] min_free had written: the file is not run
    # again (after a restart either) until its output folder has room for that much.
    room_needed: int = 0


# The traces of this many attempts are kept (a counter of a file that failed often stays small).
MAX_TRACES = 10


def read_counter(path: Path, st: os.stat_result) -> Count:
    """The count in a counter file; an empty Count when absent, unreadable or another file's (the
    input ``st`` describes)."""
    # Never followed: a counter comes along from unprocessed/, where a producer may plant a
    # link (to a file outside the root, or a FIFO that would block the open).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(path, flags), "rb") as counter:
            is_file = stat.S_ISREG(os.fstat(counter.fileno()).st_mode)
            data = json.loads(counter.read(1 << 16)) if is_file else None
    except (OSError, ValueError, RecursionError):
        return Count()
    # A counter left by another file of the same name (deleted by hand, its inode number taken
    # again by a new file) does not count.
    if not isinstance(data, dict) or not _same_file(data, st):
        return Count()
    try:
        traces = tuple(TraceRef(**t) for t in data.get("traces", ()))
        error = data.get("error")
        return Count(
            int(data.get("attempts", 0)),
            float(data.get("first_attempt", 0.0)),
            traces,
            error if isinstance(error, dict) else None,
            int(data.get("room_needed", 0)),
        )
    except (TypeError, ValueError):
        return Count()


def _same_file(data: dict[str, object], st: os.stat_result) -> bool:
    """Whether a counter describes the input ``st`` is: its inode, and (in counters that say them)
    its size and modification time, which the queue's renames keep."""
    return (
        data.get("ino") == st.st_ino
        and data.get("size", st.st_size) == st.st_size
        and data.get("mtime_ns", st.st_mtime_ns) == st.st_mtime_ns
    )


def write_counter(folder: Path, name: str, st: os.stat_result, count: Count) -> None:
    record = {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "attempts": count.attempts,
        "first_attempt": count.first,
        "traces": [asdict(t) for t in count.traces[-MAX_TRACES:]],
        **({"error": count.error} if count.error else {}),
        **({"room_needed": count.room_needed} if count.room_needed else {}),
    }
    write_durable(folder / counter_name(name), json.dumps(record).encode())
