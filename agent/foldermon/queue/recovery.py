"""Recovery: the claims and temp outputs of instances that are no longer alive.

An instance is dead when the flock on its claim folder's lock is free, never judged by pid
(pids repeat across hosts). Each input it left is finished when its output was published
(its temp output has a second link) and returned to ``unprocessed/`` otherwise; then its temp
outputs for this root are removed. Only a provably dead instance's files are touched.

With a lease (hosts sharing a root on a network filesystem, see ``Queue.confirm_lease``) a
free lock is not proof enough: a host cut off from the filesystem loses its lock without
knowing it, and may still be running. Its claim folder is first fenced, renamed to
``.fenced-<id>.<random>`` (from then on that host can neither publish nor move anything it
claimed), and settled only once it has been fenced for ``2 * lease`` seconds.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from foldermon.queue.counter import counter_name, read_counter, write_counter
from foldermon.queue.fsio import fsync_dir, unique_name
from foldermon.queue.ids import FENCED_PREFIX, NEW_PREFIX, is_instance_id, owner_of
from foldermon.queue.instance import (
    LockInfo,
    fence,
    folder_id,
    read_lock,
    try_lock,
)
from foldermon.queue.layout import LOCK_NAME, is_input_name, is_watch_root
from foldermon.queue.moves import move_unique, return_input
from foldermon.queue.output import TMP_MARK, identity, is_committed, temp_names, temp_owner, temp_prefix
from foldermon.queue.records import drop_orphan_records

if TYPE_CHECKING:
    from foldermon.queue.lifecycle import Queue


@dataclass(slots=True)
class Recovery:
    returned: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    dead_instances: list[str] = field(default_factory=list)
    temps_removed: int = 0
    errors: list[str] = field(default_factory=list)
    # Second names of inputs that a move interrupted between link and unlink had already put
    # elsewhere (filesystems without RENAME_NOREPLACE): dropped, never processed again.
    leftovers: list[str] = field(default_factory=list)
    # Claim folders left as they are: their instance's output folder is not reachable here.
    unreachable: list[str] = field(default_factory=list)


def recover(queue: Queue, *, sweep_temps: bool = True) -> Recovery:
    """Settle the claims of dead instances and remove their temp outputs.

    With ``sweep_temps`` (at start) temp outputs of this root whose owner has no claim folder
    here are removed too: their owner is gone.
    """
    report = Recovery()
    underprocess = queue.layout.underprocess
    entries = os.listdir(underprocess)
    for name in set(queue.fenced_seen) - set(entries):
        del queue.fenced_seen[name]
    for entry in entries:
        folder = underprocess / entry
        if entry == queue.instance.id or not is_instance_id(owner_of(entry)):
            continue
        if not folder.is_dir() or folder.is_symlink() or is_watch_root(folder):
            continue  # a claim folder holds files only: never another root's folders
        fd = try_lock(folder / LOCK_NAME)
        if fd is None and os.path.lexists(folder / LOCK_NAME):
            continue  # alive
        try:
            # A half-built folder (.new-) never held a claim: nothing to fence.
            fencing = queue.lease > 0 and not entry.startswith(NEW_PREFIX)
            if fencing and not _fenced_long_enough(queue, folder):
                continue
            _recover_folder(queue, folder, entry, report, read_lock(fd))
        except FileNotFoundError:
            continue  # settled meanwhile by another instance
        finally:
            if fd is not None:
                os.close(fd)
    if sweep_temps:
        report.temps_removed += _sweep_orphans(queue)
    return report


def _fenced_long_enough(queue: Queue, folder: Path) -> bool:
    """Fence a dead-looking instance's claim folder, or say whether it has been fenced long enough.

    Called with the folder's lock held, so one instance at a time renames it. The time counts
    from when this instance first saw it fenced, which is never before it was.
    """
    if not folder.name.startswith(FENCED_PREFIX):
        queue.fenced_seen[fence(folder)] = queue.clock()
        return False
    first = queue.fenced_seen.setdefault(folder.name, queue.clock())
    return queue.clock() - first >= 2 * queue.lease


def _recover_folder(queue: Queue, folder: Path, entry: str, report: Recovery, lock: LockInfo) -> None:
    instance_id = owner_of(entry)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return  # removed meanwhile by another instance's recovery or its owner's clean exit
    prefix = temp_prefix(instance_id, queue.root_tag)
    # Its temp outputs (and proofs of publication) are in its own output folder, which may not be
    # this instance's (another config, or output.dir changed since); in this one if it is not here.
    output_dir = _output_dir(queue, lock)
    if output_dir is None:
        # Whether it published an output cannot be told from here: returned, an input could get
        # a second output. Left claimed for an instance that reaches that folder.
        report.unreachable.append(f"{entry}: {lock.output_dir}")
        return
    kept: set[str] = set()
    temps: set[str] = set()
    for name in filter(is_input_name, names):
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            continue
        tmp = output_dir / f"{prefix}{identity(queue.root_id, name, st)}.tmp"
        temps.update(name.name for name in temp_names(tmp))
        if st.st_nlink > 1 and not queue.atomic_moves and _moved_already(queue, folder, name, st):
            (folder / name).unlink()
            report.leftovers.append(name)
        elif is_committed(tmp):
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
                _count_interrupted(queue, folder, name, st, lock.active_since)
                # Its attempt may have been quarantining it: a record without its input goes.
                drop_orphan_records(queue.layout, instance_id, name, queue.stored_name(name))
            report.returned.append(return_input(queue.layout, folder, name))
    if report.finished:
        fsync_dir(folder)  # the finished inputs' old names are gone before their proof is
    # A fenced instance that is running again (under the same id, in a new claim folder) has
    # temp outputs of its new claims too: only those of this folder's inputs are removed.
    back = entry != instance_id and os.path.lexists(queue.layout.underprocess / instance_id)
    report.temps_removed += _remove_temps(output_dir, instance_id, prefix, kept, temps if back else None)
    if kept:
        return  # finished at a later recovery; the folder stays as the record of what is left
    shutil.rmtree(folder, ignore_errors=True)
    fsync_dir(queue.layout.underprocess)
    queue.fenced_seen.pop(entry, None)
    report.dead_instances.append(instance_id)


def _output_dir(queue: Queue, lock: LockInfo) -> Path | None:
    """Where the dead instance wrote its temp outputs: as its lock file says (a path on the
    root's mount is relative to the root, so every host finds it), where this instance writes
    for a lock of an older version that does not say; None when that folder is not here (a
    host's own disk, a path that leads elsewhere from this mount of the root), or another
    folder stands at its path."""
    if lock.output_dir is None:
        return queue.layout.output_dir
    path = queue.layout.root / lock.output_dir  # an absolute path stays as it is
    try:
        found = path.is_dir() and lock.output_id in (None, folder_id(path))
    except OSError:
        found = False
    return path if found else None


def _moved_already(queue: Queue, folder: Path, name: str, st: os.stat_result) -> bool:
    """Whether an input with more than one link was already moved out of ``folder``: a move that
    links then unlinks (no RENAME_NOREPLACE) stopped between the two, so the same file is also
    in ``processed/``, ``failed/`` or ``unprocessed/`` (as ``name`` or a ``.N`` form of it) or
    in another claim folder. A file a producer hard-linked in has its other name elsewhere."""
    layout = queue.layout
    candidates = [layout.underprocess / entry / name for entry in os.listdir(layout.underprocess)]
    for target in (layout.processed, layout.failed, layout.unprocessed):
        n = 0
        while os.path.lexists(target / unique_name(name, n)):
            candidates.append(target / unique_name(name, n))
            n += 1
    for path in candidates:
        if path.parent == folder:
            continue
        try:
            other = os.lstat(path)
        except FileNotFoundError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _count_interrupted(
    queue: Queue, folder: Path, name: str, st: os.stat_result, since: float | None
) -> None:
    """The claim its instance was working on when it died counts as one attempt (it may be the
    cause); a first attempt is dated from when it began."""
    count = read_counter(folder / counter_name(name), st)
    first = count.first or since or queue._now()
    write_counter(folder, name, st, replace(count, attempts=count.attempts + 1, first=first))


def _remove_temps(
    output_dir: Path, instance_id: str, prefix: str, keep: set[str], only: set[str] | None
) -> int:
    """Remove a dead instance's temp outputs: this root's, and unpublished ones of any root
    (with ``only``, just those names)."""
    removed = 0
    for name in _listdir(output_dir):
        if temp_owner(name) != instance_id or name in keep or (only is not None and name not in only):
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
    # Alive, or dead (or fenced) with claims that its folder's recovery settles.
    owners = {owner_of(entry) for entry in os.listdir(queue.layout.underprocess)}
    for name in _listdir(queue.layout.output_dir):
        owner = temp_owner(name)
        if owner is None or name.startswith(own) or not name.startswith(temp_prefix(owner, queue.root_tag)):
            continue
        if owner in owners:
            continue
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
