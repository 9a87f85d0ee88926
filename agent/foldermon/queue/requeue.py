"""Moving quarantined inputs from ``failed/`` back to ``unprocessed/`` (``foldermon-agent retry``)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from foldermon import early
from foldermon.errors import FoldermonError
from foldermon.queue.fsio import durable_rename_unique
from foldermon.queue.layout import ERROR_SUFFIX, Layout, is_input_name, record_name

HISTORY = ".history"
_NAME_MAX = 255
_SUFFIX_ROOM = 8  # for the ".N" of a clash


def failed_inputs(layout: Layout) -> list[str]:
    """Names of the inputs in ``failed/`` (their error records are dotfiles, never listed; a
    folder is never one: nothing quarantines folders)."""
    try:
        with os.scandir(layout.failed) as entries:
            return sorted(
                e.name for e in entries if is_input_name(e.name) and not e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


def requeue(
    layout: Layout,
    names: Sequence[str] | None,
    *,
    now: float | None = None,
    report: Callable[[str, str], object] | None = None,
) -> list[tuple[str, str]]:
    """Move the named failed inputs (all when ``names`` is None) back to ``unprocessed/``.

    Safe while an agent runs: each move is one no-clobber rename, and the agent takes the
    file like any new arrival, with a fresh attempt count. The error record is kept under
    ``failed/.history/``. Returns (name in failed/, name in unprocessed/) pairs; ``report`` is
    told of each as it is made, before a stop signal arrives.
    """
    available = failed_inputs(layout)
    wanted = available if names is None else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise FoldermonError(
            f"not in {layout.failed}: {', '.join(unknown)}; see `foldermon-agent failed` for the names"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    moved: list[tuple[str, str]] = []
    for name in wanted:
        # A stop signal waits until the file and its record have both moved (it arrives between
        # two files), so `retry --all` cut short leaves no input in failed/ without its record.
        early.blocked_while(functools.partial(_requeue_one, layout, name, stamp, moved, report))
    return moved


def _requeue_one(
    layout: Layout,
    name: str,
    stamp: str,
    moved: list[tuple[str, str]],
    report: Callable[[str, str], object] | None,
) -> None:
    # The record first: a retry cut short (a SIGKILL) leaves the input in failed/ with its record
    # kept in the history, never a record in failed/ that has lost its input. A name gone
    # meanwhile (another retry took it) is skipped.
    with contextlib.suppress(FileNotFoundError):
        _keep_record(layout, name, stamp)
        moved.append((name, durable_rename_unique(layout.failed / name, layout.unprocessed, name)))
        if report is not None:
            report(*moved[-1])


def _keep_record(layout: Layout, name: str, stamp: str) -> None:
    record = layout.failed / record_name(name)
    if not os.path.lexists(record):
        return
    history: Path = layout.failed / HISTORY
    history.mkdir(exist_ok=True)
    kept = f"{name}.{stamp}{ERROR_SUFFIX}"
    if len(os.fsencode(kept)) > _NAME_MAX - _SUFFIX_ROOM:  # a long name: kept under a digest
        kept = f"{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}.{stamp}{ERROR_SUFFIX}"
    durable_rename_unique(record, history, kept)
