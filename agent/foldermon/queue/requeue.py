"""Moving quarantined inputs from ``failed/`` back to ``unprocessed/`` (``foldermon-agent retry``)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from foldermon.errors import FoldermonError
from foldermon.queue.fsio import durable_rename_unique
from foldermon.queue.layout import ERROR_SUFFIX, Layout, input_names, record_name

HISTORY = ".history"


def failed_inputs(layout: Layout) -> list[str]:
    """Names of the inputs in ``failed/`` (their error records are dotfiles, never listed)."""
    return sorted(input_names(layout.failed))


def requeue(
    layout: Layout, names: Sequence[str] | None, *, now: float | None = None
) -> list[tuple[str, str]]:
    """Move the named failed inputs (all when ``names`` is None) back to ``unprocessed/``.

    Safe while an agent runs: each move is one no-clobber rename, and the agent takes the
    file like any new arrival, with a fresh attempt count. The error record is kept under
    ``failed/.history/``. Returns (name in failed/, name in unprocessed/) pairs.
    """
    available = failed_inputs(layout)
    wanted = available if names is None else list(names)
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise FoldermonError(
            f"not in {layout.failed}: {', '.join(unknown)}; see `foldermon-agent failed` for the names"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    moved = []
    for name in wanted:
        moved.append((name, durable_rename_unique(layout.failed / name, layout.unprocessed, name)))
        _keep_record(layout, name, stamp)
    return moved


def _keep_record(layout: Layout, name: str, stamp: str) -> None:
    record = layout.failed / record_name(name)
    if not os.path.lexists(record):
        return
    history: Path = layout.failed / HISTORY
    history.mkdir(exist_ok=True)
    durable_rename_unique(record, history, f"{name}.{stamp}{ERROR_SUFFIX}")
