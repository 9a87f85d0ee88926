"""Durable attempt counters: ``.<name>.attempts`` beside an input while it is in the queue."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from foldermon.queue.fsio import write_durable


def counter_name(name: str) -> str:
    """The durable attempt counter kept beside an input while it is in the queue."""
    return f".{name}.attempts"


def read_counter(path: Path, ino: int) -> tuple[int, float]:
    """(attempts made, time of the first) from a counter; (0, 0.0) when absent or another file's."""
    # Never followed: a counter comes along from unprocessed/, where a producer may plant a
    # link (to a file outside the root, or a FIFO that would block the open).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(path, flags), "rb") as counter:
            is_file = stat.S_ISREG(os.fstat(counter.fileno()).st_mode)
            data = json.loads(counter.read(4096)) if is_file else None
    except (OSError, ValueError):
        return 0, 0.0
    # A counter left by another file of the same name (deleted by hand) does not count.
    if not isinstance(data, dict) or data.get("ino") != ino:
        return 0, 0.0
    try:
        return int(data.get("attempts", 0)), float(data.get("first_attempt", 0.0))
    except (TypeError, ValueError):
        return 0, 0.0


def write_counter(folder: Path, name: str, ino: int, attempts: int, first: float) -> None:
    record = {"ino": ino, "attempts": attempts, "first_attempt": first}
    write_durable(folder / counter_name(name), json.dumps(record).encode())
