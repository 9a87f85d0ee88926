"""What the watch backends share: the events they return, folder listings, readiness rules."""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Protocol

UNPROCESSED = "unprocessed"

# A folder that vanished or was replaced under us reads as empty; the watcher must not raise for it.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ESTALE})


@dataclass(frozen=True, slots=True)
class FileEvent:
    """A name in ``<root>/unprocessed`` that looks ready to be claimed."""

    root: Path
    name: str


@dataclass(frozen=True, slots=True)
class WatchMode:
    """How one root is watched and why."""

    root: Path
    mode: str
    reason: str


class WatchSettings(Protocol):
    """The ``[watch]`` settings the watcher reads (``foldermon.config.WatchConfig`` has them)."""

    @property
    def mode(self) -> str: ...
    @property
    def poll_interval(self) -> float: ...
    @property
    def settle(self) -> float: ...
    @property
    def rescan_interval(self) -> float: ...
    @property
    def exclude(self) -> tuple[str, ...]: ...
    @property
    def done_suffix(self) -> str: ...


class Watcher(Protocol):
    """Reports names in the watched ``unprocessed/`` folders that look ready."""

    modes: tuple[WatchMode, ...]

    def poll(self, timeout: float) -> list[FileEvent]:
        """Block up to ``timeout`` seconds; return ready names (maybe repeated or gone already)."""
        ...

    def rescan(self, root: Path | None = None) -> None:
        """Scan ``root`` (or every root) in full at the next ``poll``."""
        ...

    def close(self) -> None:
        """Release the watcher's file descriptors."""
        ...


class EntryKind(enum.Enum):
    """What a directory entry is, seen without following symlinks."""

    FILE = "file"
    DIR = "dir"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry of a folder listing; size and mtime are only meaningful for regular files."""

    name: str
    kind: EntryKind
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0

    @property
    def signature(self) -> tuple[int, int, int]:
        """Identity plus content marker: the inode spots a replacement of equal size+mtime."""
        return (self.inode, self.size, self.mtime_ns)


Scan = Callable[[Path], Sequence[EntryInfo]]


def is_gone(exc: OSError) -> bool:
    """Whether ``exc`` means the path vanished (which is normal in a queue folder)."""
    return exc.errno in _GONE


def scan_dir(path: Path) -> list[EntryInfo]:
    """List ``path`` without following symlinks or opening entries; a vanished folder is empty."""
    entries: list[EntryInfo] = []
    try:
        with os.scandir(path) as listing:
            for entry in listing:
                info = _entry_info(entry)
                if info is not None:
                    entries.append(info)
    except OSError as exc:
        if not is_gone(exc):
            raise
    return entries


def _entry_info(entry: os.DirEntry[str]) -> EntryInfo | None:
    try:
        # d_type answers these without a stat call on most filesystems.
        if entry.is_dir(follow_symlinks=False):
            return EntryInfo(entry.name, EntryKind.DIR, inode=entry.inode())
        if not entry.is_file(follow_symlinks=False):
            return EntryInfo(entry.name, EntryKind.OTHER, inode=entry.inode())
        st = entry.stat(follow_symlinks=False)
    except OSError as exc:
        if is_gone(exc):
            return None
        raise
    return EntryInfo(entry.name, EntryKind.FILE, st.st_size, st.st_mtime_ns, st.st_ino)


def lstat_info(path: Path) -> EntryInfo | None:
    """The ``EntryInfo`` of one path (never followed), or None when it is gone."""
    try:
        st = path.lstat()
    except OSError as exc:
        if is_gone(exc):
            return None
        raise
    if stat.S_ISDIR(st.st_mode):
        kind = EntryKind.DIR
    elif stat.S_ISREG(st.st_mode):
        kind = EntryKind.FILE
    else:
        kind = EntryKind.OTHER
    return EntryInfo(path.name, kind, st.st_size, st.st_mtime_ns, st.st_ino)


def open_for_writing(path: Path) -> bool:
    """Whether a process has the regular file ``path`` open for writing, as far as the kernel
    says: it refuses a read lease (EAGAIN) while the file has a writer. False when that cannot
    be known: a file of another user (leases need its owner or CAP_LEASE), a filesystem without
    leases. The lease lives for one system call; a writer opening the file meanwhile breaks it,
    which sends SIGIO (the agent ignores it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)  # released by the close below
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    finally:
        os.close(fd)
    return False


@dataclass(frozen=True, slots=True)
class Listing:
    """A scan split by readiness: ``ready`` needs nothing more, ``settling`` must be stable,
    ``unmarked`` waits for its done marker (``done_suffix``)."""

    ready: tuple[EntryInfo, ...]
    settling: tuple[EntryInfo, ...]
    unmarked: tuple[EntryInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class NameRules:
    """Which names may be returned at all: exclude globs and the optional done-file suffix."""

    exclude: tuple[str, ...] = ()
    done_suffix: str = ""

    @classmethod
    def from_settings(cls, settings: WatchSettings) -> NameRules:
        """The rules of a ``[watch]`` section."""
        return cls(tuple(settings.exclude), settings.done_suffix)

    def excluded(self, name: str) -> bool:
        """Whether ``name`` matches an exclude glob (case-sensitive, like the filesystem)."""
        return any(fnmatchcase(name, pattern) for pattern in self.exclude)

    def done_target(self, name: str) -> str | None:
        """For a done-file name ``x<suffix>``, the input name ``x``; None for any other name."""
        suffix = self.done_suffix
        if suffix and name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
        return None

    def is_done_name(self, name: str) -> bool:
        """Whether ``name`` is a done file (never returned itself)."""
        return bool(self.done_suffix) and name.endswith(self.done_suffix)

    def waiting(self, folder: Path) -> list[str]:
        """The names in ``unprocessed/`` that are inputs waiting (claimed once ready): not the
        agent's dotfiles, folders, excluded names or done markers. Unsorted; none when absent."""
        try:
            with os.scandir(folder) as entries:
                return [
                    e.name
                    for e in entries
                    if not e.name.startswith(".")
                    and not self.excluded(e.name)
                    and not self.is_done_name(e.name)
                    and not e.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []

    def split(self, entries: Sequence[EntryInfo]) -> Listing:
        """Drop what is never returned; sort the rest into ready now or waiting to settle."""
        present = {entry.name for entry in entries} if self.done_suffix else set()
        ready: list[EntryInfo] = []
        settling: list[EntryInfo] = []
        unmarked: list[EntryInfo] = []
        for entry in entries:
            if entry.kind is EntryKind.DIR or self.is_done_name(entry.name):
                continue
            if self.excluded(entry.name):
                continue
            if entry.kind is EntryKind.OTHER:
                # Never opened, so never partial: the consumer quarantines it at once.
                ready.append(entry)
            elif not self.done_suffix:
                settling.append(entry)
            elif entry.name + self.done_suffix in present:
                ready.append(entry)
            else:
                unmarked.append(entry)
        return Listing(tuple(ready), tuple(settling), tuple(unmarked))
