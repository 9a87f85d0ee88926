"""Watcher behaviour on real folders, the same for the inotify and the poll backend."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from foldermon.config import WatchConfig
from foldermon.errors import ConfigError
from foldermon.watch import FileEvent, Watcher, open_watcher

SETTLE = 0.3
BACKENDS = {
    "inotify": WatchConfig(mode="inotify", poll_interval=0.05, settle=SETTLE),
    "poll": WatchConfig(mode="poll", poll_interval=0.02, settle=SETTLE),
}


@dataclass(frozen=True, slots=True)
class Root:
    """A watch root with its unprocessed/ folder and a staging folder outside it."""

    path: Path

    @property
    def unprocessed(self) -> Path:
        return self.path / "unprocessed"

    def drop(self, name: str, data: bytes = b"line\n") -> None:
        """Write a file elsewhere, then rename it in (the way producers should)."""
        staging = self.path / "staging"
        staging.mkdir(exist_ok=True)
        (staging / name).write_bytes(data)
        (staging / name).rename(self.unprocessed / name)


@pytest.fixture
def root(tmp_path: Path) -> Root:
    made = Root(tmp_path / "root")
    made.unprocessed.mkdir(parents=True)
    return made


@pytest.fixture(params=sorted(BACKENDS))
def watch(request: pytest.FixtureRequest) -> Iterator[Callable[..., Watcher]]:
    opened: list[Watcher] = []

    def opener(root: Root, *, started: bool = True, **changes: Any) -> Watcher:
        config = BACKENDS[request.param]._replace(**changes)
        watcher = open_watcher(config, [root.path])
        opened.append(watcher)
        assert watcher.modes[0].mode == request.param
        if started:
            # Get the start scan done, so what the test makes next must be seen by watching.
            assert watcher.poll(0) == []
        return watcher

    yield opener
    for watcher in opened:
        watcher.close()


def wait_for(watcher: Watcher, wanted: set[str], timeout: float = 5.0) -> list[str]:
    """Poll until every wanted name came out (or the timeout); return all names seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not wanted <= set(seen) and time.monotonic() < deadline:
        seen.extend(event.name for event in watcher.poll(0.1))
    return seen


def drain(watcher: Watcher, seconds: float) -> list[str]:
    """Every name returned within ``seconds``."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.extend(event.name for event in watcher.poll(deadline - time.monotonic()))
    return seen


@contextlib.contextmanager
def must_finish_within(seconds: float) -> Iterator[None]:
    """Interrupt a blocked system call (such as opening a FIFO) with an error."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"still blocked after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_file_renamed_in_is_returned(root: Root, watch: Callable[..., Watcher]) -> None:
    """A file written elsewhere and renamed into unprocessed/ comes out with its root."""
    watcher = watch(root)
    root.drop("data.txt")
    assert "data.txt" in wait_for(watcher, {"data.txt"})


def test_event_carries_the_root_as_given(root: Root, watch: Callable[..., Watcher]) -> None:
    """The event's root is the path passed to open_watcher, so the consumer can look it up."""
    watcher = watch(root)
    root.drop("a")
    deadline = time.monotonic() + 5
    events: list[FileEvent] = []
    while not events and time.monotonic() < deadline:
        events = watcher.poll(0.1)
    assert events == [FileEvent(root.path, "a")]


def test_file_present_at_start_is_returned(root: Root, watch: Callable[..., Watcher]) -> None:
    """The start scan finds files that arrived while nothing was watching."""
    root.drop("early")
    os.utime(root.unprocessed / "early", (1, 1))
    watcher = watch(root, started=False)
    assert "early" in wait_for(watcher, {"early"})


def test_file_written_in_place_is_not_returned_before_it_is_complete(
    root: Root, watch: Callable[..., Watcher]
) -> None:
    """A file still being written is held back until closed (inotify) or settled (poll)."""
    watcher = watch(root)
    with (root.unprocessed / "slow").open("wb") as handle:
        handle.write(b"part one\n")
        handle.flush()
        assert "slow" not in drain(watcher, SETTLE / 2)
        handle.write(b"part two\n")
        handle.flush()
        assert "slow" not in drain(watcher, SETTLE / 2)
    assert "slow" in wait_for(watcher, {"slow"})


def test_a_file_closed_through_one_of_two_descriptors_waits_for_the_last(
    root: Root, watch: Callable[..., Watcher]
) -> None:
    """A producer writing through two descriptors closes one of them: the file is not returned
    while the other is still open for writing; the last close returns it."""
    watcher = watch(root)
    path = root.unprocessed / "twofd"
    first = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    second = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(first, b"one\n")
        os.close(first)
        for _ in range(3):
            assert "twofd" not in drain(watcher, SETTLE / 2)
            os.write(second, b"more\n")
    finally:
        os.close(second)
    assert "twofd" in wait_for(watcher, {"twofd"})


def test_excluded_names_are_never_returned(root: Root, watch: Callable[..., Watcher]) -> None:
    """Dotfiles, .tmp, .part and .swp names never come out; a normal file after them does."""
    watcher = watch(root)
    for name in (".hidden", "a.tmp", "b.part", "c.swp"):
        root.drop(name)
    root.drop("sentinel")
    assert wait_for(watcher, {"sentinel"}) == ["sentinel"]


def test_custom_exclude_glob_is_honoured(root: Root, watch: Callable[..., Watcher]) -> None:
    """The exclude list comes from the config, not a built-in list."""
    watcher = watch(root, exclude=("*.csv.gz",))
    root.drop("skip.csv.gz")
    root.drop(".dotted-but-allowed")
    assert wait_for(watcher, {".dotted-but-allowed"}) == [".dotted-but-allowed"]


def test_done_mode_returns_file_only_after_its_done_file(root: Root, watch: Callable[..., Watcher]) -> None:
    """With done_suffix, ``x`` comes out once ``x.done`` exists and ``x.done`` itself never does."""
    watcher = watch(root, done_suffix=".done")
    root.drop("x")
    assert "x" not in drain(watcher, SETTLE * 2)
    root.drop("x.done", b"")
    seen = wait_for(watcher, {"x"})
    assert "x" in seen
    assert "x.done" not in seen + drain(watcher, SETTLE * 2)


def test_fifo_is_returned_without_being_opened(root: Root, watch: Callable[..., Watcher]) -> None:
    """A FIFO comes out promptly; opening it for reading would block with no writer."""
    watcher = watch(root)
    os.mkfifo(root.unprocessed / "pipe")
    started = time.monotonic()
    with must_finish_within(5.0):
        seen = wait_for(watcher, {"pipe"})
    assert "pipe" in seen
    assert time.monotonic() - started < 2.0


def test_symlink_is_returned_without_being_followed(
    root: Root, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    """A symlink (here to a FIFO, which would block if followed and opened) comes out as is."""
    os.mkfifo(tmp_path / "elsewhere")
    watcher = watch(root)
    (root.unprocessed / "link").symlink_to(tmp_path / "elsewhere")
    with must_finish_within(5.0):
        seen = wait_for(watcher, {"link"})
    assert "link" in seen


def test_directory_is_not_returned(root: Root, watch: Callable[..., Watcher]) -> None:
    """A subfolder, created or moved in, never comes out."""
    watcher = watch(root)
    (root.unprocessed / "made").mkdir()
    (root.path / "moved").mkdir()
    (root.path / "moved").rename(root.unprocessed / "moved")
    root.drop("sentinel")
    assert wait_for(watcher, {"sentinel"}) == ["sentinel"]


def test_name_with_newline_and_invalid_utf8_round_trips(root: Root, watch: Callable[..., Watcher]) -> None:
    """Any byte name comes out in os.fsdecode form and encodes back to the same bytes."""
    raw = b"line\nbreak-\xff\xfe-caf\xc3\xa9.txt"
    watcher = watch(root)
    root.drop(os.fsdecode(raw))
    seen = wait_for(watcher, {os.fsdecode(raw)})
    assert [os.fsencode(name) for name in seen] == [raw]


def test_recreated_unprocessed_folder_is_watched_again(root: Root, watch: Callable[..., Watcher]) -> None:
    """After unprocessed/ is removed and made again, new files in it still come out."""
    watcher = watch(root)
    assert drain(watcher, 0.1) == []
    root.unprocessed.rmdir()
    assert drain(watcher, 0.2) == []
    root.unprocessed.mkdir()
    assert drain(watcher, 0.2) == []
    root.drop("after")
    assert "after" in wait_for(watcher, {"after"})


def test_rescan_returns_unchanged_files_again(root: Root, watch: Callable[..., Watcher]) -> None:
    """``rescan`` makes the next polls report files that were already reported."""
    root.drop("kept")
    os.utime(root.unprocessed / "kept", (1, 1))
    watcher = watch(root, started=False)
    assert "kept" in wait_for(watcher, {"kept"})
    assert "kept" not in drain(watcher, SETTLE)
    watcher.rescan(root.path)
    assert "kept" in wait_for(watcher, {"kept"})


def test_close_is_idempotent(root: Root, watch: Callable[..., Watcher]) -> None:
    """Closing twice does not raise (shutdown paths may both close)."""
    watcher = watch(root)
    watcher.close()
    watcher.close()


def test_auto_mode_polls_a_network_filesystem_root(root: Root) -> None:
    """In auto mode a root on NFS is polled, and the reason says why."""
    watcher = open_watcher(WatchConfig(mode="auto"), [root.path], fstype=lambda _: "nfs4")
    try:
        (mode,) = watcher.modes
        assert (mode.root, mode.mode) == (root.path, "poll")
        assert mode.reason == "nfs4 filesystem: inotify does not see writes from other hosts"
    finally:
        watcher.close()


def test_auto_mode_polls_a_fuse_root(root: Root) -> None:
    """In auto mode a root on a FUSE filesystem is polled too."""
    watcher = open_watcher(WatchConfig(mode="auto"), [root.path], fstype=lambda _: "fuse.sshfs")
    try:
        assert watcher.modes[0].mode == "poll"
        assert "fuse.sshfs" in watcher.modes[0].reason
    finally:
        watcher.close()


@pytest.mark.real
def test_auto_mode_uses_inotify_on_tmpfs() -> None:
    """A root on tmpfs (a local filesystem) is watched with inotify in auto mode."""
    with contextlib.ExitStack() as stack:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
        (base / "unprocessed").mkdir()
        watcher = open_watcher(WatchConfig(mode="auto"), [base])
        stack.callback(watcher.close)
        assert watcher.modes[0].mode == "inotify"
        assert watcher.modes[0].reason == "inotify available (tmpfs filesystem)"


def test_explicit_inotify_on_network_filesystem_is_honoured_with_a_warning(root: Root) -> None:
    """watch.mode = inotify is obeyed even on NFS; the reason records the risk."""
    watcher = open_watcher(WatchConfig(mode="inotify"), [root.path], fstype=lambda _: "nfs")
    try:
        assert watcher.modes[0].mode == "inotify"
        assert "does not see writes from other hosts" in watcher.modes[0].reason
    finally:
        watcher.close()


def test_mixed_roots_are_served_by_one_watcher(tmp_path: Path) -> None:
    """One root polled and one on inotify: files in both come out of the same watcher promptly."""
    local, remote = Root(tmp_path / "local"), Root(tmp_path / "remote")
    for each in (local, remote):
        each.unprocessed.mkdir(parents=True)
    config = WatchConfig(mode="auto", poll_interval=0.05, settle=0.1)

    def fstype(path: Path) -> str:
        return "cifs" if path.is_relative_to(remote.path) else "ext4"

    watcher = open_watcher(config, [local.path, remote.path], fstype=fstype)
    try:
        assert [(m.root, m.mode) for m in watcher.modes] == [
            (local.path, "inotify"),
            (remote.path, "poll"),
        ]
        remote.drop("r")
        started = time.monotonic()
        # One long poll: the inotify wait must not starve the poll scan of the other root.
        assert watcher.poll(10.0) == [FileEvent(remote.path, "r")]
        assert time.monotonic() - started < 2.0
        local.drop("l")
        assert watcher.poll(10.0) == [FileEvent(local.path, "l")]
    finally:
        watcher.close()


def test_same_root_given_twice_is_watched_once(root: Root) -> None:
    """Duplicate roots collapse to one mode entry (and one watch)."""
    watcher = open_watcher(WatchConfig(mode="poll"), [root.path, root.path])
    try:
        assert len(watcher.modes) == 1
    finally:
        watcher.close()


def test_unknown_mode_is_a_config_error(root: Root) -> None:
    """A mode outside auto/inotify/poll is rejected with the key named."""
    with pytest.raises(ConfigError, match=r"watch\.mode"):
        open_watcher(WatchConfig(mode="fanotify"), [root.path])
