"""Error records: ``failed/.<name>.error.json`` beside each quarantined input.

Records are dotfiles, so no input (an input may be called ``x.error.json``) ever shares a
name with one, and each is taken with a no-replace link like every other final name.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from foldermon.queue.fsio import fsync_dir, rename_noreplace, unique_name, write_new
from foldermon.queue.layout import ERROR_SUFFIX, Layout, input_names, record_name


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC, for people reading a record."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def fail_record(
    exc: BaseException, attempts: int, first: float | None, *, now: float, **extra: Any
) -> dict[str, Any]:
    """The content of an input's error record."""
    record: dict[str, Any] = {
        "error_type": type(exc).__name__,
        "message": str(exc),
        "attempts": attempts,
        "first_attempt": first,
        "last_attempt": now,
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    if isinstance(exc, OSError) and exc.errno is not None:
        record["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
    return record


def read_record(failed: Path, name: str) -> dict[str, Any]:
    """The record of ``failed/<name>``; {} when it has none or it is not a JSON object."""
    return _read(failed / record_name(name))


def _read(path: Path) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            record = json.loads(f.read(1 << 20))
    except (OSError, ValueError, RecursionError):
        return {}
    # Edited by hand, a record may be any JSON: one bad record must not break status.
    return record if isinstance(record, dict) else {}


def quarantine(
    layout: Layout,
    src: Path,
    *,
    name: str,
    stored: str,
    record: Mapping[str, Any],
    tmp_dir: Path,
    now: float,
) -> str | None:
    """Move ``src`` into ``failed/`` with its record, both under free names; None if ``src`` is gone.

    The record's name is taken first: it reserves the input's name there against another
    instance failing a same-named input at the same moment. A record that is there already is
    never replaced, whoever left it (an input moved out by hand): the input takes the next name.
    (A quarantine cut short by a crash has its record removed by the recovery that returns the
    input: ``drop_orphan_records``.)
    """
    failed = layout.failed
    n = 0
    while True:
        dst = unique_name(stored, n)
        n += 1
        if os.path.lexists(failed / dst):
            continue
        full = {"file": name, "failed_name": dst, "failed_at": now, "failed_at_iso": iso(now), **record}
        for key in ("first_attempt", "last_attempt"):
            if isinstance(full.get(key), float):
                full[f"{key}_iso"] = iso(full[key])
        data = json.dumps(full, indent=2).encode() + b"\n"
        rec = failed / record_name(dst)
        try:
            write_new(rec, data, tmp_dir)
        except FileExistsError:
            continue
        try:
            rename_noreplace(src, failed / dst)
        except FileExistsError:
            rec.unlink(missing_ok=True)  # an input arrived there without a record: not ours to name
            continue
        except FileNotFoundError:
            rec.unlink(missing_ok=True)
            return None
        except OSError:
            rec.unlink(missing_ok=True)  # not quarantined (a full disk, say): the next try starts clean
            raise
        fsync_dir(failed)
        fsync_dir(src.parent)
        return dst


def drop_orphan_records(layout: Layout, instance_id: str, name: str, stored: str) -> int:
    """Remove the records a quarantine of ``name`` by ``instance_id`` left without their input
    (the instance died between taking the record's name and moving the input in); the input,
    returned by recovery, is tried again and gets a record of its own. How many were removed."""
    failed, n, dropped = layout.failed, 0, 0
    while True:
        dst = unique_name(stored, n)
        n += 1
        record = failed / record_name(dst)
        if not os.path.lexists(record):
            if os.path.lexists(failed / dst):
                continue  # an input whose record is gone: a later name may still be this one's
            return dropped
        if os.path.lexists(failed / dst):
            continue
        try:
            fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                said = json.loads(f.read(1 << 20))
        except (OSError, ValueError):
            continue  # not a record this agent wrote: left alone
        if isinstance(said, dict) and said.get("instance") == instance_id and said.get("file") == name:
            record.unlink(missing_ok=True)
            fsync_dir(failed)
            dropped += 1


def migrate_legacy_records(layout: Layout) -> int:
    """Records of earlier versions (``failed/<name>.error.json``) become dotfiles; returns how many.

    Only a JSON record naming an input that is there beside it (``failed_name``) is moved, so an
    input that merely ends in ``.error.json`` stays an input.
    """
    moved = 0
    names = set(input_names(layout.failed))
    for entry in names:
        stem = entry[: -len(ERROR_SUFFIX)]
        if not entry.endswith(ERROR_SUFFIX) or stem not in names:
            continue
        data = _read(layout.failed / entry)
        if data.get("failed_name") == stem and "error_type" in data:
            with contextlib.suppress(FileExistsError, FileNotFoundError):
                rename_noreplace(layout.failed / entry, layout.failed / record_name(stem))
                moved += 1
    return moved
