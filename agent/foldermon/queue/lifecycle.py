"""The folder-queue lifecycle of one instance: claim, output, finish, fail, release.

Every move is an atomic rename followed by an fsync of the directories involved. A claim is
a plain rename into this instance's own folder, where only this instance writes and which
it knows the content of (exactly one instance wins, on every filesystem); every final name
(``processed/``, ``failed/``, outputs, error records) is taken without replacing anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from foldermon.queue.claims import (
    Claim,
    ClaimFolderGoneError,
    ClaimResult,
    Directory,
    Exhausted,
    Held,
    LeaseLostError,
    Rejected,
    Unclaimable,
)
from foldermon.queue.counter import Count, counter_name, read_counter, write_counter
from foldermon.queue.fsio import file_kind, fsync_dir, renames_atomically, unique_name
from foldermon.queue.instance import Instance, fence
from foldermon.queue.layout import ERROR_SUFFIX, Layout, make_dir, root_id
from foldermon.queue.moves import move_unique, return_input
from foldermon.queue.output import (
    OutputTarget,
    identity,
    output_filename,
    published_name,
    temp_names,
    temp_prefix,
)
from foldermon.queue.records import quarantine
from foldermon.queue.recovery import Recovery, recover

# Bytes in one file name (NAME_MAX on Linux filesystems), and the room kept for a ".N" clash suffix.
_NAME_MAX = 255
_SUFFIX_ROOM = 8


def _shortened(name: str) -> str:
    """A name short enough for ``failed/``: the first 160 bytes, ``~`` and a digest of the whole."""
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{os.fsdecode(os.fsencode(name)[:160])}~{digest}"


class Queue:
    """The lifecycle of inputs under one watch root, for one instance."""

    def __init__(
        self,
        layout: Layout,
        instance: Instance,
        *,
        output_name: str = "{stem}_processed{suffix}",
        max_attempts: int = 3,
        lease: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.instance = instance
        self.output_name = output_name
        self.max_attempts = max_attempts
        self.lease = lease
        self._now = wall_clock
        self.clock = clock
        # Dead instances' claim folders fenced (renamed away) and when this instance first saw
        # each: recovered once they are 2 * lease old (see recovery.recover).
        self.fenced_seen: dict[str, float] = {}
        self.root_id = root_id(layout.root, instance.dir)
        # Where moves are single renames, no input is ever left under two names by a cut move:
        # a second name is then a producer's hard link (recovery.py).
        self.atomic_moves = renames_atomically(instance.dir)
        # Names in this instance's claim folder: nobody else writes there, so a claim that is
        # not in this set can be a plain rename.
        self.held: set[str] = set()
        self.generation = 0  # counts the claim folders made again by reopen()
        self._unsynced = False
        self._markers: list[Path] = []

    @property
    def root_tag(self) -> str:
        return self.root_id[:8]

    @property
    def attributes(self) -> dict[str, str]:
        """The root as telemetry names it: its path here, and its id, the same on every host."""
        return {"foldermon.watch.root": str(self.layout.root), "foldermon.watch.root.id": self.root_id}

    def reopen(self) -> None:
        """Make the root's folders and this instance's claim folder again, after they were removed.

        What the old claim folder held (if it still exists somewhere, say behind a switched root
        symlink) is left to whoever recovers it there. An old folder still at its path (this
        instance lost its lock, or could not reach the filesystem for a while) is fenced first,
        so that what it holds is settled by recovery, never by this instance.
        """
        self.layout.create()
        self.instance.close()
        if os.path.lexists(self.instance.dir):
            with contextlib.suppress(FileNotFoundError):  # fenced by another instance meanwhile
                fence(self.instance.dir)
        self.instance = Instance(self.layout, self.instance.id)
        self.root_id = root_id(self.layout.root, self.instance.dir)
        self.held.clear()
        self.generation += 1

    # -- claim -----------------------------------------------------------------------------

    def claim(self, name: str) -> ClaimResult | None:
        """Take ``unprocessed/name`` for this instance; None when it is gone (another instance won)."""
        taken = self.claim_batch([name])
        return taken[0] if taken else None

    def claim_batch(self, names: Iterable[str]) -> list[ClaimResult]:
        """Take several inputs with one fsync of the two folders; names that are gone are left out.

        Each name has its own outcome: one that cannot be claimed never holds back the others.
        Raises ClaimFolderGoneError (after settling the names already taken) when the claim folder
        is gone.
        """
        results: list[ClaimResult] = []
        moved: list[tuple[str, os.stat_result]] = []
        gone: ClaimFolderGoneError | None = None
        for name in names:
            try:
                taken = self._take(name)
            except ClaimFolderGoneError as exc:
                gone = exc
                break
            if isinstance(taken, os.stat_result):
                moved.append((name, taken))
            elif taken is not None:
                results.append(taken)
        if moved:
            results.extend(self._settle_claims(moved))
        if gone is not None:
            raise gone
        return results

    def _settle_claims(self, moved: list[tuple[str, os.stat_result]]) -> list[ClaimResult]:
        try:
            fsync_dir(self.instance.dir)
            fsync_dir(self.layout.unprocessed)
            for name, _ in moved:
                self._take_counter(name)
        except OSError:
            # Not durably claimed: give them back rather than strand them in this claim folder.
            for name, _ in moved:
                with contextlib.suppress(FileNotFoundError):
                    return_input(self.layout, self.instance.dir, name)
                self.held.discard(name)
            raise
        results: list[ClaimResult] = []
        for name, st in moved:
            ident = identity(self.root_id, name, st)
            count = read_counter(self.instance.dir / counter_name(name), st)
            if count.attempts >= self.max_attempts:
                results.append(Exhausted(name, count))
                continue
            # The counter holds the attempts already made; this one is counted on disk only if
            # it fails (``again``) or its instance dies during it (recovery), so the happy path
            # writes nothing.
            path = self.instance.dir / name
            results.append(
                Claim(
                    name,
                    path,
                    count.attempts + 1,
                    count.first or self._now(),
                    st.st_size,
                    st.st_ctime,
                    ident,
                    count.traces,
                    self.generation,
                    error=count.error,
                )
            )
        return results

    def _take(self, name: str) -> os.stat_result | ClaimResult | None:
        """Rename one input into the claim folder, not yet durably; other kinds are not moved."""
        if name in self.held:
            return Held(name)
        src = self.layout.unprocessed / name
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return Unclaimable(name, exc)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            return Directory(name)
        if kind != stat.S_IFREG:
            never = "followed" if kind == stat.S_IFLNK else "opened: reading it could block"
            reason: str | None = f"not a regular file: {file_kind(kind)} (never {never})"
        else:
            reason = self._name_problem(name)
        if reason is not None:
            return self._reject(src, name, reason)
        return self._move_in(src, name, st)

    def _move_in(self, src: Path, name: str, st: os.stat_result) -> os.stat_result | Unclaimable | None:
        try:
            os.rename(src, self.instance.dir / name)
        except FileNotFoundError:
            if os.path.lexists(src) and not self.instance.dir.is_dir():
                raise ClaimFolderGoneError(f"claim folder {self.instance.dir} is gone") from None
            return None
        except OSError as exc:
            return Unclaimable(name, exc)
        self.held.add(name)
        return st

    def _reject(self, src: Path, name: str, reason: str) -> Rejected | Unclaimable | None:
        """Quarantine an entry that is never processed; None when it is gone meanwhile."""
        record = {"error_type": "InputRejected", "message": reason}
        try:
            moved = self._quarantine(src, name, record)
        except OSError as exc:
            return Unclaimable(name, exc)
        return Rejected(name, reason) if moved else None

    def _name_problem(self, name: str) -> str | None:
        """Why an input's name cannot be used: its output or bookkeeping names would be too long."""
        derived = (self.output_filename(name), "." + name + ERROR_SUFFIX, counter_name(name))
        excess = max(len(os.fsencode(n)) for n in derived) + _SUFFIX_ROOM - _NAME_MAX
        if excess <= 0:
            return None
        size = len(os.fsencode(name))
        return (
            f"name too long ({size} bytes): its output and error record names would pass the "
            f"{_NAME_MAX}-byte limit; rename it to at most {size - excess} bytes and drop it again"
        )

    def attempt_failed(self, claim: Claim) -> None:
        """Record a failed attempt (and where it is traced) on disk as soon as its retry is
        scheduled: a stop or a crash while the file waits neither forgets nor counts it twice."""
        st = os.lstat(claim.path)
        count = Count(claim.attempt, claim.first_attempt, claim.traces, claim.error)
        write_counter(self.instance.dir, claim.name, st, count)
        self.instance.mark_active("")

    def wait_for_room(self, claim: Claim, needed: int) -> None:
        """An attempt stopped by ``[guard] min_free`` after ``needed`` bytes of output: not counted,
        and on disk how much room the file waits for, so that no restart runs it sooner (and
        no crash while it waits counts an attempt)."""
        st = os.lstat(claim.path)
        count = Count(claim.attempt - 1, claim.first_attempt, claim.traces, claim.error, needed)
        write_counter(self.instance.dir, claim.name, st, count)
        self.instance.mark_active("")

    def again(self, claim: Claim) -> Claim:
        """Record the failed attempt (and where its attempts are traced) on disk, then start the next."""
        st = os.lstat(claim.path)
        count = Count(claim.attempt, claim.first_attempt, claim.traces, claim.error)
        write_counter(self.instance.dir, claim.name, st, count)
        return replace(claim, attempt=claim.attempt + 1, size=st.st_size)

    def _take_counter(self, name: str) -> None:
        src = self.layout.unprocessed / counter_name(name)
        if os.path.lexists(src):
            os.replace(src, self.instance.dir / counter_name(name))
            fsync_dir(self.instance.dir)
            fsync_dir(self.layout.unprocessed)

    # -- output ----------------------------------------------------------------------------

    def output_target(self, claim: Claim, filename: str | None = None) -> OutputTarget:
        """Where this input's output goes (``filename``, by default the template's name for it): the
        first n free both in ``processed/`` and for the output, so an input and its output usually
        share their ``.N``; publishing takes the name."""
        name = filename or self.output_filename(claim.name)
        folder = self.layout.output_dir
        n = 0
        while os.path.lexists(self.layout.processed / unique_name(claim.name, n)) or os.path.lexists(
            folder / unique_name(name, n)
        ):
            n += 1
        tmp = folder / f"{temp_prefix(self.instance.id, self.root_tag)}{claim.identity}.tmp"
        return OutputTarget(folder, name, tmp, n)

    def open_temp(self, target: OutputTarget) -> int:
        """Create the temp output new and empty, never opening an inode that exists already.

        The name can still be the proof of publication of this same input's earlier output: it
        was processed, then moved back to unprocessed/ before the group commit dropped the
        proof. That earlier finish is made durable first (so the proof is no longer needed),
        then the name is freed; the published output keeps its final name.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(target.tmp, flags, 0o640)
        except FileNotFoundError:
            make_dir(target.folder)  # the output folder was removed while running: made again
        except FileExistsError:
            self.sync()
            for name in temp_names(target.tmp):
                name.unlink(missing_ok=True)
        return os.open(target.tmp, flags, 0o640)

    def output_filename(self, name: str) -> str:
        return output_filename(self.output_name, name)

    def confirm_lease(self, claim: Claim) -> None:
        """Prove, just before an output takes its final name, that the claims are still ours.

        Where hosts share a root, a host cut off from the filesystem loses its flock without
        being told. So another instance takes a dead-looking instance's claims over in two
        steps: it renames the claim folder away (the fence: from then on this check fails and
        every move out of the old path fails), and settles what the folder holds only ``2 *
        lease`` seconds later. An output published within ``lease`` of a check that passed is
        therefore seen by that recovery (and its input finished, not processed again), and none
        is published after it. A check slower than ``lease`` (the filesystem hung) is made
        again. Raises LeaseLostError when the folder is no longer ours, or ``claim`` was made in
        an earlier claim folder (before ``reopen``); nothing else when the lease is off (0).
        """
        self._same_generation(claim)
        if self.lease <= 0:
            return
        while True:
            started = self.clock()
            if not self.instance.is_current():
                raise LeaseLostError(f"claim folder {self.instance.dir} was taken over by another instance")
            if self.clock() - started < self.lease:
                return

    def _same_generation(self, claim: Claim) -> None:
        if claim.generation != self.generation:
            raise LeaseLostError(f"{claim.name} was claimed into a claim folder that is gone")

    def lost(self, claim: Claim) -> bool:
        """Whether ``claim`` is known to be out of this instance's keeping: claimed into an
        earlier claim folder, or this one fenced or its lock gone. False when it cannot tell."""
        if claim.generation != self.generation:
            return True
        try:
            return not self.instance.is_current()
        except OSError:
            return False

    # -- finish / fail / release ---------------------------------------------------------

    def finish(self, claim: Claim, target: OutputTarget, *, sync: bool = True) -> str:
        """Move the input of a published output to ``processed/`` (never clobbering); its new name.

        With ``sync=False`` the two folders are fsynced later by ``sync()``, together for a group
        of files. The output's temp name (the proof that it is published) goes only once the
        finish is durable. An input already gone from the claim folder was moved by an earlier
        finish of this claim whose later step failed (only this instance moves what it holds),
        or by the instance that took this one's claims over (LeaseLostError then: it finishes
        the input, since the output was published before it settled the claim).
        """
        self._same_generation(claim)
        dst = claim.name
        if os.path.lexists(claim.path):
            dst = move_unique(claim.path, self.layout.processed, claim.name, target.n)
        elif self.lease > 0 and not self.instance.is_current():
            raise LeaseLostError(f"claim folder {self.instance.dir} was taken over by another instance")
        self.held.discard(claim.name)
        if sync:
            fsync_dir(self.layout.processed)
            fsync_dir(self.instance.dir)
            target.tmp.unlink(missing_ok=True)
            published_name(target.tmp).unlink(missing_ok=True)
        else:
            self._unsynced = True
            self._markers += (target.tmp, published_name(target.tmp))
        self._drop_counter(claim.name)
        return dst

    def sync(self) -> None:
        """fsync the folders of finishes made with ``sync=False`` (one group commit)."""
        if self._unsynced:
            fsync_dir(self.layout.processed)
            fsync_dir(self.instance.dir)
            self._unsynced = False
        for marker in self._markers:
            marker.unlink(missing_ok=True)
        self._markers.clear()

    def fail(self, claim: Claim | Exhausted, record: Mapping[str, Any]) -> str:
        """Quarantine a claimed input in ``failed/`` with its error record; returns its name there."""
        src = self.instance.dir / claim.name
        name = self._quarantine(src, claim.name, record)
        self.held.discard(claim.name)
        self._drop_counter(claim.name)
        return name or claim.name

    @staticmethod
    def stored_name(name: str) -> str:
        """The name an input is quarantined under: a long one shortened so its record's name
        fits (the record keeps the full name under "file")."""
        if len(os.fsencode("." + name + ERROR_SUFFIX)) + _SUFFIX_ROOM > _NAME_MAX:
            return _shortened(name)
        return name

    def _quarantine(self, src: Path, name: str, record: Mapping[str, Any]) -> str | None:
        return quarantine(
            self.layout,
            src,
            name=name,
            stored=self.stored_name(name),
            record=record,
            tmp_dir=self.instance.dir,
            now=self._now(),
        )

    def release(self, claim: Claim) -> None:
        """Give an unfinished input back to ``unprocessed/``; the interrupted attempt is not counted.

        The counter on disk already holds only the attempts made before this one.
        """
        return_input(self.layout, self.instance.dir, claim.name)
        self.held.discard(claim.name)

    def forget(self, claim: Claim) -> None:
        """A claimed input that is gone (removed by hand): its name and counter are free again,
        for a new file of that name."""
        self.held.discard(claim.name)
        self._drop_counter(claim.name)

    def _drop_counter(self, name: str) -> None:
        # Not fsynced: a counter that comes back after a crash has no input beside it in this
        # claim folder, and goes with the folder.
        (self.instance.dir / counter_name(name)).unlink(missing_ok=True)

    # -- recovery --------------------------------------------------------------------------

    def recover(self, *, sweep_temps: bool = True) -> Recovery:
        """Settle the claims of dead instances (see ``recovery.recover``)."""
        return recover(self, sweep_temps=sweep_temps)
