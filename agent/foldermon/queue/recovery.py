"""Recovery: the claims and temp outputs of instances that are no longer alive.

An instance is dead when the flock on its claim folder's lock is free, never judged by pid
(pids repeat across hosts). Each input it left is finished when its output was published
(its temp output has a second link) and returned to ``unprocessed/`` otherwise; then its temp
outputs for this root are removed. Only a provably dead instance's files are touched.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from foldermon.queue.counter import counter_name, read_counter, write_counter
from foldermon.queue.fsio import fsync_dir
from foldermon.queue.instance import NEW_PREFIX, LockInfo, read_lock, try_lock
from foldermon.queue.layout import LOCK_NAME, is_input_name
from foldermon.queue.moves import move_unique, return_input
from foldermon.queue.output import TMP_MARK, identity, is_committed, temp_owner, temp_prefix

if TYPE_CHECKING:
    from foldermon.queue.lifecycle import Queue


@dataclass(slots=True)
class Recovery:
    returned: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    dead_instances: list[str] = field(default_factory=list)
    temps_removed: int = 0
    errors: list[str] = field(default_factory=list)


def recover(queue: Queue, *, sweep_temps: bool = True) -> Recovery:
    """Settle the claims of dead instances and remove their temp outputs.

    With ``sweep_temps`` (at start) temp outputs of this root whose owner has no claim folder
    here are removed too: their owner is gone.
    """
    report = Recovery()
    underprocess = queue.layout.underprocess
    for entry in os.listdir(underprocess):
        folder = underprocess / entry
        if entry == queue.instance.id or not folder.is_dir() or folder.is_symlink():
            continue
        fd = try_lock(folder / LOCK_NAME)
        if fd is None and os.path.lexists(folder / LOCK_NAME):
            continue  # alive
        try:
            _recover_folder(queue, folder, entry, report, read_lock(fd))
        finally:
            if fd is not None:
                os.close(fd)
    if sweep_temps:
        report.temps_removed += _sweep_orphans(queue)
    return report


def _recover_folder(queue: Queue, folder: Path, entry: str, report: Recovery, lock: LockInfo) -> None:
    instance_id = entry
    if entry.startswith(NEW_PREFIX):  # a half-built folder, named .new-<id>.<try>
        instance_id = entry.removeprefix(NEW_PREFIX).rsplit(".", 1)[0]
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return  # removed meanwhile by another instance's recovery or its owner's clean exit
    prefix = temp_prefix(instance_id, queue.root_tag)
    # Its temp outputs (and proofs of publication) are in its own output folder, which may not be
    # this instance's (another config, or output.dir changed since); in this one if it is not here.
    output_dir = lock.output_dir if lock.output_dir and lock.output_dir.is_dir() else queue.layout.output_dir
    kept: set[str] = set()
    for name in filter(is_input_name, names):
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            continue
        tmp = output_dir / f"{prefix}{identity(queue.root_id, name, st)}.tmp"
        if is_committed(tmp):
            # Its output is published: the instance died before finishing it. Finish it now.
            try:
                report.finished.append(move_unique(folder / name, queue.layout.processed, name))
                fsync_dir(queue.layout.processed)
            except OSError as exc:
                report.errors.append(f"{name}: {exc}")
                kept.add(tmp.name)
                continue
        else:
            if name == lock.active:
                _count_interrupted(queue, folder, name, st.st_ino)
            report.returned.append(return_input(queue.layout, folder, name))
    if report.finished:
        fsync_dir(folder)  # the finished inputs' old names are gone before their proof is
    report.temps_removed += _remove_temps(output_dir, instance_id, prefix, kept)
    if kept:
        return  # finished at a later recovery; the folder stays as the record of what is left
    shutil.rmtree(folder, ignore_errors=True)
    fsync_dir(queue.layout.underprocess)
    report.dead_instances.append(instance_id)


def _count_interrupted(queue: Queue, folder: Path, name: str, ino: int) -> None:
    """The claim its instance was working on when it died counts as one attempt (it may be the cause)."""
    count = read_counter(folder / counter_name(name), ino)
    write_counter(
        folder, name, ino, replace(count, attempts=count.attempts + 1, first=count.first or queue._now())
    )


def _remove_temps(output_dir: Path, instance_id: str, prefix: str, keep: set[str]) -> int:
    """Remove a dead instance's temp outputs: this root's, and unpublished ones of any root."""
    removed = 0
    for name in _listdir(output_dir):
        if temp_owner(name) != instance_id or name in keep:
            continue
        path = output_dir / name
        try:
            if not name.startswith(prefix) and os.lstat(path).st_nlink > 1:
                continue  # published for another root: that root's recovery finishes its input
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def _sweep_orphans(queue: Queue) -> int:
    """Remove this root's temp outputs whose owner has no claim folder here (it is gone)."""
    removed = 0
    own = temp_prefix(queue.instance.id)
    for name in _listdir(queue.layout.output_dir):
        owner = temp_owner(name)
        if owner is None or name.startswith(own) or not name.startswith(temp_prefix(owner, queue.root_tag)):
            continue
        if os.path.lexists(queue.layout.underprocess / owner):
            continue  # alive, or dead with claims that its folder's recovery settles
        try:
            (queue.layout.output_dir / name).unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def _listdir(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if n.startswith(TMP_MARK)]
    except FileNotFoundError:
        return []
