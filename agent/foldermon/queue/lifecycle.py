"""The folder-queue lifecycle: claim, commit output, finish, fail, release, recover.

Every move is an atomic rename followed by an fsync of the directories involved; a
rename into ``processed/`` or ``failed/`` never replaces an existing entry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foldermon.queue.fsio import durable_rename, fsync_dir, rename_noreplace, unique_name, write_durable
from foldermon.queue.instance import NEW_PREFIX, Instance, active_name, try_lock
from foldermon.queue.layout import ERROR_SUFFIX, LOCK_NAME, Layout, is_input_name

_TMP_MARK = ".foldermon-"
# Bytes in one file name (NAME_MAX on Linux filesystems), and the room kept for a ".N" clash suffix.
_NAME_MAX = 255
_SUFFIX_ROOM = 8


def counter_name(name: str) -> str:
    """The durable attempt counter kept beside an input while it is in the queue."""
    return f".{name}.attempts"


def _digest(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _shortened(name: str) -> str:
    """A name short enough for ``failed/``: the first 160 bytes, ``~`` and a digest of the whole."""
    return f"{os.fsdecode(os.fsencode(name)[:160])}~{_digest(name)[:16]}"


@dataclass(frozen=True, slots=True)
class Claim:
    name: str
    path: Path
    attempt: int
    first_attempt: float
    size: int
    arrived: float


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry quarantined at claim, never opened: not a regular file, or a name too long to use."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Directory:
    name: str


@dataclass(frozen=True, slots=True)
class Exhausted:
    """An input that used up its attempts in earlier runs (e.g. it crashed the agent each time)."""

    name: str
    attempts: int


@dataclass(slots=True)
class Recovery:
    returned: list[str] = field(default_factory=list)
    dead_instances: list[str] = field(default_factory=list)
    temps_removed: int = 0


@dataclass(frozen=True, slots=True)
class OutputTarget:
    final: Path
    tmp: Path
    n: int


_KIND = {
    stat.S_IFLNK: "a symbolic link (never followed)",
    stat.S_IFIFO: "a FIFO (never opened: reading it would block)",
    stat.S_IFSOCK: "a socket (never opened)",
    stat.S_IFCHR: "a character device (never opened)",
    stat.S_IFBLK: "a block device (never opened)",
}


class Queue:
    """The lifecycle of inputs under one watch root, for one instance."""

    def __init__(
        self,
        layout: Layout,
        instance: Instance,
        *,
        output_name: str = "{stem}_processed{suffix}",
        max_attempts: int = 3,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.layout = layout
        self.instance = instance
        self.output_name = output_name
        self.max_attempts = max_attempts
        self._now = wall_clock
        self._unsynced = False

    # -- claim -----------------------------------------------------------------------------

    def claim(self, name: str) -> Claim | Rejected | Directory | Exhausted | None:
        """Take ``unprocessed/name`` for this instance; None when it is gone (another instance won)."""
        taken = self.claim_batch([name])
        return taken[0] if taken else None

    def claim_batch(self, names: Iterable[str]) -> list[Claim | Rejected | Directory | Exhausted]:
        """Take several inputs with one fsync of the two folders; names that are gone are left out.

        A backlog of small files is claimed in batches because the two directory fsyncs cost
        more than processing such a file.
        """
        results: list[Claim | Rejected | Directory | Exhausted] = []
        moved: list[tuple[str, os.stat_result]] = []
        for name in names:
            taken = self._take(name)
            if isinstance(taken, os.stat_result):
                moved.append((name, taken))
            elif taken is not None:
                results.append(taken)
        if not moved:
            return results
        try:
            fsync_dir(self.instance.dir)
            fsync_dir(self.layout.unprocessed)
            for name, _ in moved:
                self._take_counter(name, self.instance.dir / name)
        except OSError:
            # Not durably claimed: give them back rather than strand them in this claim folder.
            for name, _ in moved:
                self._return(self.instance.dir, name)
            raise
        for name, st in moved:
            attempts, first = self._read_counter(self.instance.dir / counter_name(name), st.st_ino)
            if attempts >= self.max_attempts:
                results.append(Exhausted(name, attempts))
                continue
            # The counter holds the attempts already made; this one is counted on disk only if
            # it fails (``again``) or its instance dies during it (``recover``), so the happy path
            # writes nothing.
            path = self.instance.dir / name
            results.append(Claim(name, path, attempts + 1, first or self._now(), st.st_size, st.st_ctime))
        return results

    def _take(self, name: str) -> os.stat_result | Rejected | Directory | None:
        """Rename one input into the claim folder, not yet durably; other kinds are not moved."""
        src = self.layout.unprocessed / name
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return None
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            return Directory(name)
        if kind != stat.S_IFREG:
            reason: str | None = f"not a regular file: {_KIND.get(kind, 'an unknown file type')}"
        else:
            reason = self._name_problem(name)
        if reason is not None:
            moved = self._quarantine(src, name, {"error_type": "InputRejected", "message": reason})
            return Rejected(name, reason) if moved else None
        try:
            rename_noreplace(src, self.instance.dir / name)
        except FileNotFoundError:
            return None
        return st

    def _name_problem(self, name: str) -> str | None:
        """Why an input's name cannot be used: its output or bookkeeping names would be too long."""
        derived = (self.output_filename(name), name + ERROR_SUFFIX, counter_name(name))
        excess = max(len(os.fsencode(n)) for n in derived) + _SUFFIX_ROOM - _NAME_MAX
        if excess <= 0:
            return None
        size = len(os.fsencode(name))
        return (
            f"name too long ({size} bytes): its output and error record names would pass the "
            f"{_NAME_MAX}-byte limit; rename it to at most {size - excess} bytes and drop it again"
        )

    def again(self, claim: Claim) -> Claim:
        """Record the failed attempt on disk, then start the next one (a retry after backoff)."""
        st = os.lstat(claim.path)
        self._write_counter(self.instance.dir, claim.name, st.st_ino, claim.attempt, claim.first_attempt)
        return Claim(
            claim.name,
            claim.path,
            claim.attempt + 1,
            claim.first_attempt,
            st.st_size,
            claim.arrived,
        )

    def _take_counter(self, name: str, claimed: Path) -> None:
        src = self.layout.unprocessed / counter_name(name)
        with contextlib.suppress(FileNotFoundError):
            durable_rename(src, claimed.with_name(counter_name(name)), replace=True)

    def _read_counter(self, path: Path, ino: int) -> tuple[int, float]:
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
        return int(data.get("attempts", 0)), float(data.get("first_attempt", 0.0))

    def _write_counter(self, folder: Path, name: str, ino: int, attempts: int, first: float) -> None:
        record = {"ino": ino, "attempts": attempts, "first_attempt": first}
        write_durable(folder / counter_name(name), json.dumps(record).encode())

    # -- output ----------------------------------------------------------------------------

    def output_target(self, claim: Claim) -> OutputTarget:
        """Where this input's output goes.

        The smallest n whose ``processed/`` name is free wins; an output already under that
        name is from an interrupted attempt of this same input and is replaced atomically.
        """
        n = 0
        while os.path.lexists(self.layout.processed / unique_name(claim.name, n)):
            n += 1
        final = self.layout.output_dir / unique_name(self.output_filename(claim.name), n)
        tmp_name = f"{_TMP_MARK}{self.instance.id}-{final.name}.tmp"
        if len(os.fsencode(tmp_name)) > _NAME_MAX:  # a long input name: the temp is named by a digest
            tmp_name = f"{_TMP_MARK}{self.instance.id}-{_digest(final.name)}.tmp"
        return OutputTarget(final, final.with_name(tmp_name), n)

    def output_filename(self, name: str) -> str:
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            stem, suffix = name, ""
        else:
            suffix = "." + suffix
        return self.output_name.format(stem=stem, suffix=suffix, name=name)

    # -- finish / fail / release ---------------------------------------------------------

    def finish(self, claim: Claim, target: OutputTarget, *, sync: bool = True) -> str:
        """Move the input to ``processed/`` (never clobbering), drop its counter; returns its new name.

        With ``sync=False`` the two folders are fsynced later by ``sync()``, together for a group
        of files: the output is already durable, so a finish lost in a crash only means the input
        is processed again and its output replaced with the same content.
        """
        n = target.n
        output = target.final
        while True:
            dst_name = unique_name(claim.name, n)
            try:
                if sync:
                    durable_rename(claim.path, self.layout.processed / dst_name)
                else:
                    rename_noreplace(claim.path, self.layout.processed / dst_name)
                    self._unsynced = True
                break
            except FileExistsError:
                # Another instance finished a same-named input meanwhile: keep both, suffixed.
                n += 1
                while os.path.lexists(self.layout.processed / unique_name(claim.name, n)):
                    n += 1
                # processed/ has no input under n, so an output under n is from an interrupted
                # attempt of this input (the rule output_target follows) and is replaced.
                new_output = self.layout.output_dir / unique_name(self.output_filename(claim.name), n)
                durable_rename(output, new_output, replace=True)
                output = new_output
        self._drop_counter(claim.name)
        return dst_name

    def sync(self) -> None:
        """fsync the folders of finishes made with ``sync=False`` (one group commit)."""
        if self._unsynced:
            fsync_dir(self.layout.processed)
            fsync_dir(self.instance.dir)
            self._unsynced = False

    def fail(self, claim: Claim | Exhausted, record: Mapping[str, Any]) -> str:
        """Quarantine a claimed input in ``failed/`` with its error record; returns its name there."""
        src = self.instance.dir / claim.name
        name = self._quarantine(src, claim.name, record)
        self._drop_counter(claim.name)
        return name or claim.name

    def _quarantine(self, src: Path, name: str, record: Mapping[str, Any]) -> str | None:
        failed = self.layout.failed
        stored = name
        if len(os.fsencode(name + ERROR_SUFFIX)) + _SUFFIX_ROOM > _NAME_MAX:
            stored = _shortened(name)  # the record keeps the full name under "file"
        n = 0
        while True:
            dst_name = unique_name(stored, n)
            if not os.path.lexists(failed / dst_name):
                # The record goes first: a record without its input is from an interrupted
                # attempt of this same input and is replaced.
                full = {"file": name, "failed_name": dst_name, "failed_at": self._now(), **record}
                write_durable(failed / (dst_name + ERROR_SUFFIX), json.dumps(full, indent=2).encode() + b"\n")
                try:
                    durable_rename(src, failed / dst_name)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    (failed / (dst_name + ERROR_SUFFIX)).unlink(missing_ok=True)
                    return None
                else:
                    return dst_name
            n += 1

    def release(self, claim: Claim) -> None:
        """Give an unfinished input back to ``unprocessed/``; the interrupted attempt is not counted.

        The counter on disk already holds only the attempts made before this one.
        """
        self._return(self.instance.dir, claim.name)

    def _drop_counter(self, name: str) -> None:
        try:
            (self.instance.dir / counter_name(name)).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.instance.dir)

    def _return(self, folder: Path, name: str) -> str:
        """Move an input and its counter from a claim folder back to ``unprocessed/``.

        The counter goes first: a crash between the two moves leaves the input in the dead
        folder, where the next recovery finds it, and its count already waiting for it.
        """
        n = 0
        while os.path.lexists(self.layout.unprocessed / unique_name(name, n)):
            n += 1
        self._move_counter(folder / counter_name(name), unique_name(name, n))
        while True:
            dst_name = unique_name(name, n)
            try:
                durable_rename(folder / name, self.layout.unprocessed / dst_name)
            except FileExistsError:
                # A producer dropped the same name meanwhile: the counter follows to the next name.
                n += 1
                self._move_counter(self.layout.unprocessed / counter_name(dst_name), unique_name(name, n))
            else:
                return dst_name

    def _move_counter(self, counter: Path, input_name: str) -> None:
        if counter.exists():
            durable_rename(counter, self.layout.unprocessed / counter_name(input_name), replace=True)

    # -- recovery --------------------------------------------------------------------------

    def recover(self, *, sweep_temps: bool = True) -> Recovery:
        """Return the claims of dead instances to ``unprocessed/`` and remove their temp files.

        An instance is dead when its lock is free, never judged by pid (pids repeat across hosts).
        Without ``sweep_temps`` the output folder is only swept when a dead instance was found.
        """
        report = Recovery()
        for entry in os.listdir(self.layout.underprocess):
            folder = self.layout.underprocess / entry
            if entry == self.instance.id or not folder.is_dir() or folder.is_symlink():
                continue
            fd = try_lock(folder / LOCK_NAME)
            if fd is None and (folder / LOCK_NAME).exists():
                continue  # alive
            try:
                self._recover_folder(folder, entry, report, active_name(fd))
            finally:
                if fd is not None:
                    os.close(fd)
        if sweep_temps or report.dead_instances:
            report.temps_removed += self._remove_stale_temps()
        return report

    def _recover_folder(self, folder: Path, entry: str, report: Recovery, active: str | None) -> None:
        instance_id = entry
        if entry.startswith(NEW_PREFIX):  # a half-built folder, named .new-<id>.<try>
            instance_id = entry.removeprefix(NEW_PREFIX).rsplit(".", 1)[0]
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return  # removed meanwhile by another instance's recovery or its owner's clean exit
        for name in names:
            if is_input_name(name):
                if name == active:
                    self._count_interrupted(folder, name)
                report.returned.append(self._return(folder, name))
        shutil.rmtree(folder, ignore_errors=True)
        fsync_dir(self.layout.underprocess)
        report.dead_instances.append(instance_id)

    def _count_interrupted(self, folder: Path, name: str) -> None:
        """The claim its instance was working on when it died counts as one attempt (it may be the cause)."""
        try:
            ino = os.lstat(folder / name).st_ino
        except FileNotFoundError:
            return
        attempts, first = self._read_counter(folder / counter_name(name), ino)
        self._write_counter(folder, name, ino, attempts + 1, first or self._now())

    def _remove_stale_temps(self) -> int:
        removed = 0
        live_prefix = f"{_TMP_MARK}{self.instance.id}-"
        for name in os.listdir(self.layout.output_dir):
            if not name.startswith(_TMP_MARK) or name.startswith(live_prefix):
                continue
            instance_id = name[len(_TMP_MARK) :].split("-", 3)
            owner = "-".join(instance_id[:3])
            lock = self.layout.underprocess / owner / LOCK_NAME
            fd = try_lock(lock)
            if fd is None and lock.exists():
                continue  # the owning instance is alive
            if fd is not None:
                os.close(fd)
            (self.layout.output_dir / name).unlink(missing_ok=True)
            removed += 1
        return removed


def fail_record(exc: BaseException, claim: Claim | Exhausted, *, now: float, **extra: Any) -> dict[str, Any]:
    """The content of ``failed/<name>.error.json`` for an input that exhausted its attempts."""
    record: dict[str, Any] = {
        "error_type": type(exc).__name__,
        "message": str(exc),
        "attempts": claim.attempt if isinstance(claim, Claim) else claim.attempts,
        "first_attempt": claim.first_attempt if isinstance(claim, Claim) else None,
        "last_attempt": now,
    }
    record.update({k: v for k, v in extra.items() if v is not None})
    if isinstance(exc, OSError) and exc.errno is not None:
        record["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
    return record
