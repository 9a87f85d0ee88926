"""Poll backend: settle, repeat and done-file rules driven by a fake clock and fake listings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from foldermon.watch import (
    EntryInfo,
    EntryKind,
    FileEvent,
    NameRules,
    PollBackend,
    open_watcher,
    scan_dir,
)

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


ROOT = Path("/srv/root")
DEFAULT_EXCLUDE = (".*", "*.tmp", "*.part", "*.swp")


class FakeFolder:
    """A listing the test edits, served to the backend as its scan function."""

    def __init__(self) -> None:
        self.entries: dict[str, EntryInfo] = {}
        self.scans = 0

    def put(self, name: str, size: int = 1, mtime_ns: int = 1, inode: int = 7) -> None:
        self.entries[name] = EntryInfo(name, EntryKind.FILE, size, mtime_ns, inode)

    def put_kind(self, name: str, kind: EntryKind) -> None:
        self.entries[name] = EntryInfo(name, kind, inode=9)

    def __call__(self, path: Path) -> list[EntryInfo]:
        assert path == ROOT / "unprocessed"
        self.scans += 1
        return list(self.entries.values())


def backend(
    folder: FakeFolder,
    *,
    settle: float = 0.5,
    poll_interval: float = 0.1,
    rescan_interval: float = 30.0,
    done_suffix: str = "",
) -> PollBackend:
    return PollBackend(
        [ROOT],
        NameRules(DEFAULT_EXCLUDE, done_suffix),
        poll_interval=poll_interval,
        settle=settle,
        rescan_interval=rescan_interval,
        scan=folder,
    )


def names(events: list[FileEvent]) -> list[str]:
    return [event.name for event in events]


def test_file_is_returned_once_unchanged_for_settle() -> None:
    """A regular file is held back until its signature has been stable for ``settle``."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put("a")
    assert names(poller.collect(0.0)) == []
    assert names(poller.collect(0.4)) == []
    assert names(poller.collect(0.5)) == ["a"]


def test_growing_file_restarts_settle() -> None:
    """A change of size or mtime restarts the settle period."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put("a", size=1)
    poller.collect(0.0)
    folder.put("a", size=2, mtime_ns=2)
    assert names(poller.collect(0.4)) == []
    assert names(poller.collect(0.8)) == []
    assert names(poller.collect(0.9)) == ["a"]


def test_returned_file_is_not_returned_again_while_unchanged() -> None:
    """Once returned, an unchanged file stays quiet until the rescan interval."""
    folder = FakeFolder()
    poller = backend(folder, rescan_interval=30.0)
    folder.put("a")
    poller.collect(0.0)
    assert names(poller.collect(0.5)) == ["a"]
    assert names(poller.collect(1.0)) == []
    assert names(poller.collect(29.0)) == []


def test_file_still_there_after_rescan_interval_is_returned_again() -> None:
    """The safety net re-reports a file the consumer may have dropped."""
    folder = FakeFolder()
    poller = backend(folder, rescan_interval=30.0)
    folder.put("a")
    poller.collect(0.0)
    poller.collect(0.5)
    assert names(poller.collect(30.5)) == ["a"]


def test_replaced_file_with_equal_size_and_mtime_is_returned_again() -> None:
    """A new inode under a returned name is a new input and settles afresh."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put("a", inode=1)
    poller.collect(0.0)
    assert names(poller.collect(0.5)) == ["a"]
    folder.put("a", inode=2)
    assert names(poller.collect(0.6)) == []
    assert names(poller.collect(1.1)) == ["a"]


def test_file_that_left_and_came_back_settles_again() -> None:
    """A name that vanished is forgotten, so its return is treated as a new file."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put("a")
    poller.collect(0.0)
    poller.collect(0.5)
    del folder.entries["a"]
    poller.collect(0.6)
    folder.put("a")
    assert names(poller.collect(0.7)) == []
    assert names(poller.collect(1.2)) == ["a"]


def test_scan_runs_only_every_poll_interval() -> None:
    """Calls between scans do not touch the folder."""
    folder = FakeFolder()
    poller = backend(folder, poll_interval=1.0)
    poller.collect(0.0)
    poller.collect(0.5)
    poller.collect(0.99)
    assert folder.scans == 1
    poller.collect(1.0)
    assert folder.scans == 2
    assert poller.next_due() == 2.0


@pytest.mark.parametrize("name", [".hidden", "a.tmp", "b.part", "c.swp"])
def test_excluded_names_are_never_returned(name: str) -> None:
    """Names matching an exclude glob never come out, however long they sit."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put(name)
    assert [names(poller.collect(t)) for t in (0.0, 1.0, 40.0)] == [[], [], []]


def test_directories_are_never_returned() -> None:
    """A directory in unprocessed/ is left to the consumer's own report."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put_kind("sub", EntryKind.DIR)
    assert [names(poller.collect(t)) for t in (0.0, 1.0, 40.0)] == [[], [], []]


def test_non_regular_entries_are_returned_at_first_sight() -> None:
    """Symlinks, FIFOs and the like need no settling: they are never opened."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put_kind("link", EntryKind.OTHER)
    assert names(poller.collect(0.0)) == ["link"]
    assert names(poller.collect(1.0)) == []


def test_done_mode_returns_file_only_once_its_done_file_exists() -> None:
    """With a done suffix, ``x`` waits for ``x.done`` and the done file is never returned."""
    folder = FakeFolder()
    poller = backend(folder, done_suffix=".done")
    folder.put("x")
    assert names(poller.collect(0.0)) == []
    assert names(poller.collect(5.0)) == []
    folder.put("x.done", inode=8)
    assert names(poller.collect(5.1)) == ["x"]
    assert names(poller.collect(6.0)) == []


def test_done_file_without_its_input_returns_nothing() -> None:
    """A lone ``x.done`` yields neither itself nor a phantom ``x``."""
    folder = FakeFolder()
    poller = backend(folder, done_suffix=".done")
    folder.put("x.done")
    assert [names(poller.collect(t)) for t in (0.0, 1.0)] == [[], []]


def test_rescan_rereports_unchanged_files_at_once() -> None:
    """``rescan`` scans at once, before the interval, and forgets what was returned."""
    folder = FakeFolder()
    poller = backend(folder, poll_interval=10.0)
    folder.put("a")
    poller.collect(0.0)
    assert names(poller.collect(10.0)) == ["a"]
    poller.rescan(ROOT)
    assert names(poller.collect(10.1)) == ["a"]


def test_events_name_the_root_as_given() -> None:
    """The event's root is the watch root itself, not its unprocessed/ folder."""
    folder = FakeFolder()
    poller = backend(folder)
    folder.put_kind("fifo", EntryKind.OTHER)
    assert poller.collect(0.0) == [FileEvent(ROOT, "fifo")]


def test_scan_dir_lists_a_vanished_folder_as_empty(tmp_path: Path) -> None:
    """A removed unprocessed/ reads as empty instead of raising."""
    assert scan_dir(tmp_path / "missing") == []


def test_scan_dir_reports_kinds_without_following_symlinks(tmp_path: Path) -> None:
    """A symlink to a directory is OTHER, a FIFO is OTHER, a subfolder is DIR, a file is FILE."""
    (tmp_path / "file").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "sub")
    os.mkfifo(tmp_path / "fifo")
    kinds = {entry.name: entry.kind for entry in scan_dir(tmp_path)}
    assert kinds == {
        "file": EntryKind.FILE,
        "sub": EntryKind.DIR,
        "link": EntryKind.OTHER,
        "fifo": EntryKind.OTHER,
    }


def test_scan_dir_reports_size_and_mtime_of_files(tmp_path: Path) -> None:
    """Regular files carry the size and mtime the settle rule compares."""
    path = tmp_path / "file"
    path.write_bytes(b"abcd")
    os.utime(path, ns=(1, 123_456_789))
    (entry,) = scan_dir(tmp_path)
    assert (entry.size, entry.mtime_ns, entry.inode) == (4, 123_456_789, path.stat().st_ino)


class FakeTime:
    """A clock whose sleep advances it, so the watcher's waiting costs no real time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_poll_only_watcher_waits_until_the_file_settled() -> None:
    """``poll`` sleeps scan by scan and returns as soon as the file has settled."""
    folder = FakeFolder()
    fake = FakeTime()
    folder.put("a")
    config = WatchConfig(mode="poll", poll_interval=0.25, settle=0.5)
    watcher = open_watcher(config, [ROOT], clock=fake.clock, sleep=fake.sleep, scan=folder)
    assert watcher.poll(10.0) == [FileEvent(ROOT, "a")]
    assert fake.now == pytest.approx(100.5)
    assert max(fake.sleeps) <= 0.25


def test_poll_only_watcher_returns_empty_at_its_deadline() -> None:
    """With nothing to report, ``poll`` returns an empty list after ``timeout``."""
    folder = FakeFolder()
    fake = FakeTime()
    config = WatchConfig(mode="poll", poll_interval=1.0)
    watcher = open_watcher(config, [ROOT], clock=fake.clock, sleep=fake.sleep, scan=folder)
    assert watcher.poll(2.5) == []
    assert fake.now == pytest.approx(102.5)
    assert folder.scans == 3


def test_poll_with_zero_timeout_never_sleeps() -> None:
    """``poll(0)`` does the due work and returns at once."""
    folder = FakeFolder()
    fake = FakeTime()
    config = WatchConfig(mode="poll", poll_interval=1.0)
    watcher = open_watcher(config, [ROOT], clock=fake.clock, sleep=fake.sleep, scan=folder)
    assert watcher.poll(0.0) == []
    assert fake.sleeps == []
    assert watcher.modes[0].mode == "poll"
    assert watcher.modes[0].reason == "watch.mode = poll"


def test_a_settled_file_still_open_for_writing_waits_for_its_close(tmp_path: Path) -> None:
    """Unchanged for ``settle`` is not enough while a process has the file open for writing."""
    (tmp_path / "unprocessed").mkdir()
    path = tmp_path / "unprocessed" / "slow.csv"
    path.write_bytes(b"first\n")
    poller = PollBackend(
        [tmp_path], NameRules(DEFAULT_EXCLUDE), poll_interval=0.0, settle=0.5, rescan_interval=30.0
    )
    with path.open("ab"):
        assert poller.collect(0.0) == []
        assert poller.collect(1.0) == []
        assert poller.collect(2.0) == []
    assert poller.collect(2.4) == []  # it waits settle again from its last check
    assert names(poller.collect(2.6)) == ["slow.csv"]
