"""inotify backend: event handling, overflow, re-watching a recreated folder, kernel limits."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import inotify_simple
import pytest

from foldermon.errors import WatchUnavailableError
from foldermon.watch import (
    CombinedWatcher,
    FileEvent,
    InotifyBackend,
    NameRules,
    PollBackend,
    Watcher,
    WatchMode,
    describe_error,
    open_watcher,
)
from foldermon.watch.inotify import RawEvent

try:
    from foldermon.config import WatchConfig
except ImportError:  # until the full config module imports, a stand-in with the same fields

    @dataclass(frozen=True, slots=True)
    class WatchConfig:  # type: ignore[no-redef]
        dirs: tuple[Path, ...] = ()
        mode: str = "auto"
        poll_interval: float = 1.0
        settle: float = 0.5
        rescan_interval: float = 30.0
        exclude: tuple[str, ...] = (".*", "*.tmp", "*.part", "*.swp")
        done_suffix: str = ""


F = inotify_simple.flags
Event = inotify_simple.Event
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify")
# Settle far beyond any test: a file a scan finds young can then only come out through an event.
NO_SCAN_RETURNS = 3600.0


@dataclass
class FakeFd:
    """An inotify fd that delivers only the events a test queues; add_watch can be made to fail."""

    queued: list[RawEvent] = field(default_factory=list)
    added: list[Path] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    fail_from: int | None = None
    closed: bool = False

    def add_watch(self, path: Path, mask: int) -> int:
        if self.fail_from is not None and len(self.added) >= self.fail_from:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not path.is_dir():
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        self.added.append(path)
        return len(self.added)

    def rm_watch(self, wd: int) -> None:
        self.removed.append(wd)

    def read(self, timeout: int | None = None) -> list[RawEvent]:
        events, self.queued = self.queued, []
        return events

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "unprocessed").mkdir()
    return tmp_path


def fake_backend(
    root: Path, fd: FakeFd, *, settle: float = 0.5, wall: float | None = None, done: str = ""
) -> InotifyBackend:
    backend = InotifyBackend(
        NameRules((".*", "*.tmp"), done),
        settle=settle,
        poll_interval=0.1,
        rescan_interval=30.0,
        wall=time.time if wall is None else (lambda: wall),
        factory=lambda: fd,
    )
    backend.add_root(root)
    return backend


def make_file(path: Path, data: bytes = b"x\n", *, old: bool = True) -> Path:
    path.write_bytes(data)
    if old:
        os.utime(path, (1, 1))
    return path


def names(events: list[FileEvent]) -> list[str]:
    return [event.name for event in events]


def wait_for(watcher: Watcher, wanted: set[str], timeout: float = 5.0) -> list[str]:
    """Poll until every wanted name came out (or the timeout); return all names seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen) and time.monotonic() < deadline:
        seen.extend(event.name for event in watcher.poll(0.1))
    return seen


@contextlib.contextmanager
def sysctl(name: str, value: int) -> Iterator[None]:
    """Set an inotify sysctl for the duration of the block, then restore it."""
    path = INOTIFY_SYSCTL / name
    previous = path.read_text()
    path.write_text(f"{value}\n")
    try:
        yield
    finally:
        path.write_text(previous)


@contextlib.contextmanager
def inotify_instances_exhausted() -> Iterator[None]:
    """Hit fs.inotify.max_user_instances: lower it to 0, or take every instance if we cannot."""
    path = INOTIFY_SYSCTL / "max_user_instances"
    previous = path.read_text()
    try:
        path.write_text("0\n")
    except OSError:
        hogs = _take_every_inotify_instance()
    else:
        hogs = []
    try:
        yield
    finally:
        if not hogs:
            path.write_text(previous)
        for hog in hogs:
            hog.close()


def _take_every_inotify_instance() -> list[inotify_simple.INotify]:
    hogs: list[inotify_simple.INotify] = []
    while True:
        try:
            hogs.append(inotify_simple.INotify())
        except OSError as exc:
            if exc.errno != errno.EMFILE:
                raise
            return hogs


def test_overflow_event_rescans_and_finds_files_whose_events_were_lost(root: Path) -> None:
    """IN_Q_OVERFLOW makes the handler scan, returning files no event announced."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    assert backend.collect(0.0) == []
    make_file(root / "unprocessed" / "missed")
    assert backend.collect(1.0) == []
    overflow = Event(wd=-1, mask=F.Q_OVERFLOW, cookie=0, name="")
    assert backend.handle_events([overflow], 2.0) == [FileEvent(root, "missed")]


@pytest.mark.real
def test_real_queue_overflow_loses_no_file(root: Path) -> None:
    """With a tiny kernel event queue, a burst of renames still yields every file."""
    config = WatchConfig(mode="inotify", rescan_interval=NO_SCAN_RETURNS, settle=0.1)
    with sysctl("max_queued_events", 4):
        watcher = open_watcher(config, [root])
    try:
        assert watcher.poll(0) == []
        staging = root / "staging"
        staging.mkdir()
        wanted = {f"f{i:03}" for i in range(64)}
        for name in sorted(wanted):
            make_file(staging / name).rename(root / "unprocessed" / name)
        assert wanted <= set(wait_for(watcher, wanted))
    finally:
        watcher.close()


def test_close_write_returns_file_at_once(root: Path) -> None:
    """IN_CLOSE_WRITE makes a name ready with no settle wait."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    make_file(root / "unprocessed" / "a", old=False)
    closed = Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="a")
    assert backend.handle_events([closed], 0.1) == [FileEvent(root, "a")]


def test_create_of_regular_file_is_not_returned(root: Path) -> None:
    """IN_CREATE alone means a writer may still be busy: the file waits for its close."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    make_file(root / "unprocessed" / "a", old=False)
    created = Event(wd=1, mask=F.CREATE, cookie=0, name="a")
    assert backend.handle_events([created], 0.1) == []


def test_create_of_fifo_is_returned(root: Path) -> None:
    """A FIFO never gets a close event, so its IN_CREATE returns it."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    os.mkfifo(root / "unprocessed" / "p")
    created = Event(wd=1, mask=F.CREATE, cookie=0, name="p")
    assert backend.handle_events([created], 0.1) == [FileEvent(root, "p")]


def test_events_for_vanished_files_do_not_raise(root: Path) -> None:
    """An event for a name already gone yields nothing rather than an error."""
    fd = FakeFd()
    backend = fake_backend(root, fd, done=".done")
    backend.collect(0.0)
    events = [
        Event(wd=1, mask=F.CREATE, cookie=0, name="gone"),
        Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="gone2"),
        Event(wd=1, mask=F.MOVED_TO, cookie=0, name="gone3.done"),
    ]
    assert backend.handle_events(events, 0.1) == []


def test_done_file_event_returns_its_input(root: Path) -> None:
    """An event on ``x.done`` returns ``x`` when ``x`` exists, never the done file."""
    fd = FakeFd()
    backend = fake_backend(root, fd, done=".done")
    backend.collect(0.0)
    make_file(root / "unprocessed" / "x", old=False)
    make_file(root / "unprocessed" / "x.done", b"", old=False)
    events = [
        Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="x.done"),
        Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="x"),
    ]
    assert backend.handle_events(events, 0.1) == [FileEvent(root, "x")]


def test_scan_holds_back_a_young_file_until_it_settled(root: Path) -> None:
    """A file a scan finds with a fresh mtime is returned only after ``settle`` unchanged."""
    path = make_file(root / "unprocessed" / "young", old=False)
    fd = FakeFd()
    backend = fake_backend(root, fd, wall=path.stat().st_mtime + 0.1)
    assert backend.collect(0.0) == []
    assert backend.collect(0.4) == []
    assert backend.collect(0.5) == [FileEvent(root, "young")]
    assert backend.collect(2.0) == []


def test_scan_found_file_that_keeps_growing_is_held_back(root: Path) -> None:
    """Each change of a scan-found file restarts its settle period."""
    path = make_file(root / "unprocessed" / "growing", old=False)
    fd = FakeFd()
    backend = fake_backend(root, fd, wall=path.stat().st_mtime + 0.1)
    backend.collect(0.0)
    with path.open("ab") as handle:
        handle.write(b"more\n")
    assert backend.collect(0.5) == []
    assert backend.collect(0.9) == []
    assert backend.collect(1.0) == [FileEvent(root, "growing")]


def test_close_event_returns_a_scan_found_file_before_settle(root: Path) -> None:
    """The close of a file a scan found young returns it at once, and only once."""
    path = make_file(root / "unprocessed" / "young", old=False)
    fd = FakeFd()
    backend = fake_backend(root, fd, wall=path.stat().st_mtime)
    backend.collect(0.0)
    fd.queued.append(Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="young"))
    assert backend.collect(0.1) == [FileEvent(root, "young")]
    assert backend.collect(5.0) == []


def test_a_scan_leaves_a_file_still_open_for_writing_however_old(root: Path) -> None:
    """A file a scan finds unchanged for long but still open for writing (a producer pausing
    mid-file, the agent starting meanwhile) is not returned; its close event returns it, and
    without one (events lost) the scan after it was closed does."""
    path = make_file(root / "unprocessed" / "slow")
    other = make_file(root / "unprocessed" / "kept")
    fd = FakeFd()
    backend = fake_backend(root, fd)
    with path.open("ab") as writer:
        assert set(names(backend.collect(0.0))) == {"kept"}
        assert backend.collect(1.0) == []
        writer.write(b"more\n")
    os.utime(path, (1, 1))
    fd.queued.append(Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="slow"))
    assert backend.collect(1.1) == [FileEvent(root, "slow")]
    path.unlink()  # claimed
    with other.open("ab"):
        backend.rescan(root)
        assert backend.collect(2.0) == []
        assert backend.collect(3.0) == []
    assert backend.collect(3.6) == [FileEvent(root, "kept")]  # the next settle check after its close


def test_a_file_renamed_in_while_still_open_for_writing_waits_for_its_close(root: Path) -> None:
    """A producer that renames its file in before it closes it: the move does not return it
    while the kernel says it is open for writing; its close event then does."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    path = root / "unprocessed" / "early"
    with path.open("wb") as writer:
        writer.write(b"part1\n")
        fd.queued.append(Event(wd=1, mask=F.MOVED_TO, cookie=7, name="early"))
        assert backend.collect(0.1) == []
        writer.write(b"part2\n")
    fd.queued.append(Event(wd=1, mask=F.CLOSE_WRITE, cookie=0, name="early"))
    assert backend.collect(0.2) == [FileEvent(root, "early")]
    make_file(root / "unprocessed" / "done")  # closed before it was moved in: returned at once
    fd.queued.append(Event(wd=1, mask=F.MOVED_TO, cookie=8, name="done"))
    assert backend.collect(0.3) == [FileEvent(root, "done")]


def test_periodic_check_rewatches_a_folder_replaced_without_an_event(root: Path) -> None:
    """At each rescan interval a replaced unprocessed/ (other inode) gets a fresh watch."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    (root / "unprocessed").rename(root / "old")
    (root / "unprocessed").mkdir()
    make_file(root / "unprocessed" / "new")
    assert backend.collect(1.0) == []
    assert backend.collect(30.0) == [FileEvent(root, "new")]
    assert fd.removed == [1]
    assert len(fd.added) == 2


def test_lost_watch_moves_the_root_to_polling(root: Path) -> None:
    """If the watch cannot be re-added (limit reached meanwhile), the root is polled instead."""
    fd = FakeFd(fail_from=1)
    backend = fake_backend(root, fd)
    poller = PollBackend([], NameRules(), poll_interval=0.01, settle=0.05, rescan_interval=30.0)
    modes = (WatchMode(root, "inotify", "inotify available"),)
    watcher = CombinedWatcher(modes, backend, poller)
    assert watcher.poll(0) == []
    fd.queued += [
        Event(wd=1, mask=F.DELETE_SELF, cookie=0, name=""),
        Event(wd=1, mask=F.IGNORED, cookie=0, name=""),
    ]
    assert watcher.poll(0) == []
    assert watcher.modes[0].mode == "poll"
    assert "fs.inotify.max_user_watches" in watcher.modes[0].reason
    make_file(root / "unprocessed" / "later")
    assert "later" in wait_for(watcher, {"later"})


def test_recreated_folder_gets_a_new_watch_that_sees_renames(root: Path) -> None:
    """After rmdir + mkdir of unprocessed/, a rename-in is seen by the re-added watch."""
    config = WatchConfig(mode="inotify", poll_interval=0.05, settle=NO_SCAN_RETURNS)
    watcher = open_watcher(config, [root])
    try:
        assert watcher.poll(0.05) == []
        (root / "unprocessed").rmdir()
        assert watcher.poll(0.1) == []
        (root / "unprocessed").mkdir()
        assert watcher.poll(0.2) == []
        make_file(root / "staging", old=False).rename(root / "unprocessed" / "after")
        started = time.monotonic()
        assert watcher.poll(5.0) == [FileEvent(root, "after")]
        assert time.monotonic() - started < 1.0
    finally:
        watcher.close()


def test_folder_moved_into_place_is_scanned_when_rewatched(root: Path) -> None:
    """Files inside a folder renamed in as the new unprocessed/ come out via the re-add scan."""
    config = WatchConfig(mode="inotify", poll_interval=0.05)
    watcher = open_watcher(config, [root])
    try:
        (root / "unprocessed").rmdir()
        assert watcher.poll(0.1) == []
        (root / "prepared").mkdir()
        make_file(root / "prepared" / "inside")
        (root / "prepared").rename(root / "unprocessed")
        assert "inside" in wait_for(watcher, {"inside"})
    finally:
        watcher.close()


def test_renamed_away_folder_is_no_longer_reported(root: Path) -> None:
    """After unprocessed/ is renamed away (IN_MOVE_SELF) only the new folder is watched."""
    config = WatchConfig(mode="inotify", poll_interval=0.05, settle=NO_SCAN_RETURNS)
    watcher = open_watcher(config, [root])
    try:
        assert watcher.poll(0.05) == []
        (root / "unprocessed").rename(root / "aside")
        (root / "unprocessed").mkdir()
        assert watcher.poll(0.2) == []
        make_file(root / "s1", old=False).rename(root / "aside" / "stray")
        make_file(root / "s2", old=False).rename(root / "unprocessed" / "kept")
        assert wait_for(watcher, {"kept"}) == ["kept"]
    finally:
        watcher.close()


@pytest.mark.real
def test_instance_limit_falls_back_to_polling_with_the_sysctl_named(root: Path) -> None:
    """With no inotify instance left, auto mode polls and says which sysctl to raise."""
    with inotify_instances_exhausted():
        watcher = open_watcher(WatchConfig(mode="auto"), [root])
        now = (INOTIFY_SYSCTL / "max_user_instances").read_text().strip()
    try:
        (mode,) = watcher.modes
        assert mode.mode == "poll"
        assert mode.reason == (
            f"inotify instance limit reached: raise fs.inotify.max_user_instances (now {now})"
        )
    finally:
        watcher.close()


@pytest.mark.real
def test_instance_limit_with_explicit_inotify_mode_raises(root: Path) -> None:
    """watch.mode = inotify refuses to fall back and raises the same sentence."""
    with (
        inotify_instances_exhausted(),
        pytest.raises(WatchUnavailableError, match=r"fs\.inotify\.max_user_instances"),
    ):
        open_watcher(WatchConfig(mode="inotify"), [root])


@pytest.mark.real
def test_watch_limit_falls_back_to_polling_with_the_sysctl_named(root: Path) -> None:
    """With the watch limit reached, auto mode polls and names fs.inotify.max_user_watches."""
    with sysctl("max_user_watches", 0):
        watcher = open_watcher(WatchConfig(mode="auto"), [root])
    try:
        assert watcher.modes[0].mode == "poll"
        assert watcher.modes[0].reason == (
            "inotify watch limit reached: raise fs.inotify.max_user_watches (now 0)"
        )
    finally:
        watcher.close()


@pytest.mark.real
def test_watch_limit_with_explicit_inotify_mode_raises(root: Path) -> None:
    """watch.mode = inotify raises WatchUnavailableError when no watch can be added."""
    with (
        sysctl("max_user_watches", 0),
        pytest.raises(WatchUnavailableError, match=r"fs\.inotify\.max_user_watches"),
    ):
        open_watcher(WatchConfig(mode="inotify"), [root])


def test_missing_kernel_support_is_described() -> None:
    """ENOSYS says the kernel lacks inotify."""
    sentence = describe_error(OSError(errno.ENOSYS, "Function not implemented"))
    assert sentence == "this kernel has no inotify support (CONFIG_INOTIFY_USER is off)"


def test_watch_limit_sentence_quotes_the_current_value() -> None:
    """ENOSPC names fs.inotify.max_user_watches with its current value."""
    now = (INOTIFY_SYSCTL / "max_user_watches").read_text().strip()
    sentence = describe_error(OSError(errno.ENOSPC, "No space left on device"))
    assert sentence == f"inotify watch limit reached: raise fs.inotify.max_user_watches (now {now})"


def test_unlisted_errno_names_the_path() -> None:
    """Any other errno is reported with the path and the system's message."""
    sentence = describe_error(OSError(errno.EINVAL, "Invalid argument"), Path("/x/unprocessed"))
    assert sentence == "inotify failed on /x/unprocessed: Invalid argument"


def test_backend_init_failure_is_a_watch_unavailable_error() -> None:
    """An inotify_init1 failure surfaces as WatchUnavailableError carrying the sentence."""

    def no_inotify() -> FakeFd:
        raise OSError(errno.ENOSYS, "Function not implemented")

    with pytest.raises(WatchUnavailableError, match="no inotify support"):
        InotifyBackend(NameRules(), settle=0.5, poll_interval=1.0, rescan_interval=30.0, factory=no_inotify)


def test_renamed_away_folder_releases_its_watch(root: Path) -> None:
    """IN_MOVE_SELF drops the watch that now follows the moved folder, freeing it for the limit."""
    fd = FakeFd()
    backend = fake_backend(root, fd)
    backend.collect(0.0)
    (root / "unprocessed").rename(root / "aside")
    fd.queued.append(Event(wd=1, mask=F.MOVE_SELF, cookie=0, name=""))
    backend.collect(0.1)
    assert fd.removed == [1]
