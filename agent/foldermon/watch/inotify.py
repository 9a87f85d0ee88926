"""inotify backend: one inotify fd, one watch per root's ``unprocessed/``, scans as a safety net."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import inotify_simple

from foldermon.errors import WatchUnavailableError
from foldermon.watch._base import (
    UNPROCESSED,
    EntryKind,
    FileEvent,
    NameRules,
    Scan,
    is_gone,
    lstat_info,
    open_for_writing,
    scan_dir,
)

_F = inotify_simple.flags
# IN_CREATE is for FIFOs, sockets, devices and symlinks made in place: they get no close event.
WATCH_MASK = int(_F.CLOSE_WRITE | _F.MOVED_TO | _F.CREATE | _F.DELETE_SELF | _F.MOVE_SELF | _F.ONLYDIR)
_FINAL = int(_F.CLOSE_WRITE | _F.MOVED_TO)
_MOVED_TO = int(_F.MOVED_TO)
_WATCH_GONE = int(_F.DELETE_SELF | _F.MOVE_SELF | _F.IGNORED | _F.UNMOUNT)
_OVERFLOW = int(_F.Q_OVERFLOW)
_ISDIR = int(_F.ISDIR)
_MOVE_SELF = int(_F.MOVE_SELF)
PROC_SYS = Path("/proc/sys")


class RawEvent(Protocol):
    """An inotify event as ``inotify_simple`` reads it."""

    @property
    def wd(self) -> int: ...
    @property
    def mask(self) -> int: ...
    @property
    def name(self) -> str: ...


class _INotifyFd(Protocol):
    def add_watch(self, path: Path, mask: int) -> int: ...
    def rm_watch(self, wd: int) -> None: ...
    def read(self, timeout: int | None = None) -> list[RawEvent]: ...
    def close(self) -> None: ...


def sysctl_value(name: str) -> str:
    """The current value of a sysctl such as ``fs.inotify.max_user_watches``, or ``unknown``."""
    try:
        return (PROC_SYS / name.replace(".", "/")).read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


def _fd_limit_reached() -> tuple[bool, int]:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        return exc.errno == errno.EMFILE, soft
    return used + 1 >= soft, soft


def _emfile(_: Path | None) -> str:
    at_limit, soft = _fd_limit_reached()
    if at_limit:
        return f"open file limit reached: raise LimitNOFILE= / ulimit -n (now {soft})"
    now = sysctl_value("fs.inotify.max_user_instances")
    return f"inotify instance limit reached: raise fs.inotify.max_user_instances (now {now})"


def _enospc(_: Path | None) -> str:
    now = sysctl_value("fs.inotify.max_user_watches")
    return f"inotify watch limit reached: raise fs.inotify.max_user_watches (now {now})"


def _enfile(_: Path | None) -> str:
    now = sysctl_value("fs.file-max")
    return f"system-wide open file limit reached: raise fs.file-max (now {now})"


_SENTENCES: dict[int, Callable[[Path | None], str]] = {
    errno.EMFILE: _emfile,
    errno.ENOSPC: _enospc,
    errno.ENFILE: _enfile,
    errno.ENOSYS: lambda _: "this kernel has no inotify support (CONFIG_INOTIFY_USER is off)",
    errno.ENOMEM: lambda _: "the kernel ran out of memory for inotify watches",
    errno.EACCES: lambda path: f"no permission to read {path}: inotify cannot watch it",
}


def describe_error(exc: OSError, path: Path | None = None) -> str:
    """Turn an errno from inotify_init1 / inotify_add_watch into a sentence saying what to do."""
    sentence = _SENTENCES.get(exc.errno or 0)
    if sentence is not None:
        return sentence(path)
    where = f" on {path}" if path is not None else ""
    return f"inotify failed{where}: {exc.strerror or exc}"


@dataclass(slots=True)
class _Pending:
    """A file a scan found still young: returned once unchanged for ``settle`` (or on its close)."""

    signature: tuple[int, int, int]
    since: float


class InotifyBackend:
    """Serves roots on local filesystems from one inotify fd.

    A name is returned on IN_CLOSE_WRITE / IN_MOVED_TO (a non-regular entry already on
    IN_CREATE). Full scans run at start, on IN_Q_OVERFLOW and every ``rescan_interval``;
    files they find whose mtime is younger than ``settle`` wait until stable that long.
    A removed or renamed ``unprocessed/`` is re-watched once it is back, then scanned.
    """

    def __init__(
        self,
        rules: NameRules,
        *,
        settle: float,
        poll_interval: float,
        rescan_interval: float,
        scan: Scan = scan_dir,
        wall: Callable[[], float] = time.time,
        factory: Callable[[], _INotifyFd] = inotify_simple.INotify,
    ) -> None:
        try:
            self._fd: _INotifyFd = factory()
        except OSError as exc:
            raise WatchUnavailableError(describe_error(exc)) from exc
        self._rules = rules
        self._settle = settle
        self._poll_interval = poll_interval
        self._rescan_interval = rescan_interval
        self._scan = scan
        self._wall = wall
        self._roots: list[Path] = []
        self._root_of: dict[int, Path] = {}
        self._wd_of: dict[Path, int] = {}
        self._identity: dict[Path, tuple[int, int]] = {}
        self._missing: set[Path] = set()
        self._next_retry = -math.inf
        self._to_scan: dict[Path, None] = {}
        self._next_full_scan = -math.inf
        self._pending: dict[tuple[Path, str], _Pending] = {}
        self._pending_due = math.inf
        self._lost: list[tuple[Path, str]] = []
        self._closed = False

    @property
    def roots(self) -> tuple[Path, ...]:
        """The roots this backend watches (missing ones included)."""
        return tuple(self._roots)

    def add_root(self, root: Path) -> None:
        """Watch ``root/unprocessed``; raises WatchUnavailableError when inotify refuses it."""
        error = self._watch(root)
        if error is not None:
            raise WatchUnavailableError(describe_error(error, root / UNPROCESSED)) from error
        self._roots.append(root)

    def take_lost(self) -> list[tuple[Path, str]]:
        """Roots whose watch could not be re-added (with why); they are no longer served here."""
        lost, self._lost = self._lost, []
        return lost

    def rescan(self, root: Path | None = None) -> None:
        """Scan ``root`` (or every root) at the next ``collect``, re-adding a lost watch first."""
        for each in self._roots if root is None else [root]:
            if each in self._wd_of or each in self._missing:
                self._to_scan[each] = None
        self._next_retry = -math.inf

    def next_due(self) -> float:
        """Clock time at which ``collect`` has work even if no event arrives."""
        if self._to_scan:
            return -math.inf
        retry = self._next_retry if self._missing else math.inf
        return min(self._next_full_scan, retry, self._pending_due)

    def wait(self, timeout: float, now: Callable[[], float]) -> list[FileEvent]:
        """Block on the inotify fd up to ``timeout`` seconds and handle what arrives."""
        raw = self._fd.read(timeout=max(0, math.ceil(timeout * 1000)))
        return self.handle_events(raw, now()) if raw else []

    def collect(self, now: float) -> list[FileEvent]:
        """Handle queued events and do due work (scans, re-adds, settle checks) without blocking."""
        events = self.handle_events(self._fd.read(timeout=0), now)
        if now >= self._next_full_scan:
            self._next_full_scan = now + self._rescan_interval
            self._verify_watches()
            self._to_scan.update(dict.fromkeys(self._wd_of))
        if self._missing and now >= self._next_retry:
            self._next_retry = now + self._poll_interval
            for root in sorted(self._missing):
                self._readd(root)
        events.extend(self._run_scans(now))
        events.extend(self._recheck_pending(now))
        return events

    def handle_events(self, raw: Iterable[RawEvent], now: float) -> list[FileEvent]:
        """Turn a batch of inotify events into ready names; an overflow scans every root."""
        final: dict[tuple[Path, str], int] = {}  # the close and move events seen per name
        for event in raw:
            if event.mask & _OVERFLOW:
                self._to_scan.update(dict.fromkeys(self._wd_of))
                continue
            root = self._root_of.get(event.wd)
            if root is None:
                continue
            if event.mask & _WATCH_GONE:
                self._forget(root, event.wd, moved=bool(event.mask & _MOVE_SELF))
            elif event.name and not event.mask & _ISDIR:
                key = (root, event.name)
                final[key] = final.get(key, 0) | (event.mask & _FINAL)
        ready: dict[FileEvent, None] = {}  # one batch reports a name once (x and x.done both map to x)
        for (root, name), mask in final.items():
            # A file may still be open for writing after its event: renamed in before its producer
            # closed it, or closed through one of several descriptors. The kernel says so, and
            # the last close returns it.
            still_open = bool(mask) and open_for_writing(root / UNPROCESSED / name)
            target = self._ready_name(root, name, closed=bool(mask) and not still_open)
            if target is not None:
                self._pending.pop((root, target), None)
                ready[FileEvent(root, target)] = None
        return [*ready, *self._run_scans(now)]

    def close(self) -> None:
        """Close the inotify fd (its watches go with it)."""
        if not self._closed:
            self._closed = True
            self._fd.close()

    def _ready_name(self, root: Path, name: str, *, closed: bool) -> str | None:
        rules = self._rules
        folder = root / UNPROCESSED
        target = rules.done_target(name)
        if target is not None:
            return self._done_target(folder, target)
        if rules.is_done_name(name) or rules.excluded(name):
            return None
        if closed and not rules.done_suffix:
            return name
        info = lstat_info(folder / name)
        if info is None or info.kind is EntryKind.DIR:
            return None
        if info.kind is EntryKind.OTHER:
            return name
        # A regular file just created is still being written: its close event returns it.
        ready = closed and lstat_info(folder / (name + rules.done_suffix)) is not None
        return name if ready else None

    def _done_target(self, folder: Path, target: str) -> str | None:
        """An event on ``x.done`` makes ``x`` ready, if ``x`` is there and may be returned."""
        if self._rules.excluded(target):
            return None
        info = lstat_info(folder / target)
        return target if info is not None and info.kind is not EntryKind.DIR else None

    def _run_scans(self, now: float) -> list[FileEvent]:
        events: list[FileEvent] = []
        while self._to_scan:
            root = next(iter(self._to_scan))
            del self._to_scan[root]
            events.extend(FileEvent(root, name) for name in self._scan_root(root, now))
        return events

    def _scan_root(self, root: Path, now: float) -> list[str]:
        listing = self._rules.split(self._scan(root / UNPROCESSED))
        names = [entry.name for entry in listing.ready]
        wall = self._wall()
        for entry in listing.settling:
            key = (root, entry.name)
            # A scan cannot see a close event: an old file may still be open for writing.
            old = wall - entry.mtime_ns / 1e9 >= self._settle
            if old and not open_for_writing(root / UNPROCESSED / entry.name):
                self._pending.pop(key, None)
                names.append(entry.name)
                continue
            pending = self._pending.get(key)
            if pending is None or pending.signature != entry.signature:
                self._pending[key] = _Pending(entry.signature, now)
                self._pending_due = min(self._pending_due, now + self._settle)
        return names

    def _recheck_pending(self, now: float) -> list[FileEvent]:
        if now < self._pending_due:
            return []
        events: list[FileEvent] = []
        due = math.inf
        for key, pending in list(self._pending.items()):
            root, name = key
            info = lstat_info(root / UNPROCESSED / name)
            if info is None or info.kind is not EntryKind.FILE:
                del self._pending[key]
            elif info.signature != pending.signature:
                self._pending[key] = _Pending(info.signature, now)
                due = min(due, now + self._settle)
            elif now - pending.since >= self._settle and not open_for_writing(root / UNPROCESSED / name):
                del self._pending[key]
                events.append(FileEvent(root, name))
            elif now - pending.since >= self._settle:
                self._pending[key] = _Pending(info.signature, now)  # still open: its close returns it
                due = min(due, now + self._settle)
            else:
                due = min(due, pending.since + self._settle)
        self._pending_due = due
        return events

    def _watch(self, root: Path) -> OSError | None:
        """Add the watch for ``root``; a missing folder is remembered and retried, not an error."""
        path = root / UNPROCESSED
        try:
            wd = self._fd.add_watch(path, WATCH_MASK)
            st = path.stat()
        except OSError as exc:
            if not is_gone(exc):
                return exc
            self._missing.add(root)
            return None
        self._missing.discard(root)
        self._root_of[wd] = root
        self._wd_of[root] = wd
        self._identity[root] = (st.st_dev, st.st_ino)
        self._to_scan[root] = None
        return None

    def _readd(self, root: Path) -> None:
        error = self._watch(root)
        if error is not None:
            self._missing.discard(root)
            self._roots.remove(root)
            self._lost.append((root, describe_error(error, root / UNPROCESSED)))

    def _forget(self, root: Path, wd: int, *, moved: bool) -> None:
        self._root_of.pop(wd, None)
        if self._wd_of.get(root) == wd:
            del self._wd_of[root]
            self._identity.pop(root, None)
            self._missing.add(root)
            self._next_retry = -math.inf
        if moved:
            # The watch follows the renamed folder; it no longer watches the path we serve.
            self._rm_watch(wd)

    def _rm_watch(self, wd: int) -> None:
        with contextlib.suppress(OSError):  # already gone with its folder
            self._fd.rm_watch(wd)

    def _verify_watches(self) -> None:
        """Re-watch roots whose ``unprocessed/`` was replaced without an event reaching us."""
        for root, wd in list(self._wd_of.items()):
            try:
                st = (root / UNPROCESSED).stat()
                current: tuple[int, int] | None = (st.st_dev, st.st_ino)
            except OSError:
                current = None
            if current != self._identity.get(root):
                # Two roots reaching one folder share a wd, so it may be gone already.
                self._root_of.pop(wd, None)
                del self._wd_of[root]
                self._rm_watch(wd)
                self._missing.add(root)
                self._next_retry = -math.inf
