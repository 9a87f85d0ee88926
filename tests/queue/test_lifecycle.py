"""The folder-queue lifecycle on a real file system: claim, output, finish, fail, release, recover."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import inotify_simple
import pytest

from foldermon.queue.claims import (
    Claim,
    ClaimFolderGoneError,
    Directory,
    Exhausted,
    Held,
    Rejected,
    Unclaimable,
)
from foldermon.queue.counter import TraceRef, counter_name
from foldermon.queue.ids import new_instance_id
from foldermon.queue.instance import Instance, LockInfo, read_lock
from foldermon.queue.layout import LOCK_NAME, Layout, claimed_count, record_name
from foldermon.queue.lifecycle import Queue
from foldermon.queue.output import published_name, publishing_name
from foldermon.queue.recovery import Recovery

# Instance ids have the shape new_instance_id() gives (host-pid-random): temp outputs are
# matched to their owner by it.
ME = "host-1-aaaaaa"
OTHER = "host-2-bbbbbb"
CLOCK = 1_700_000_000.0

OpenInstance = Callable[[str], Instance]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """Return a watch root with every queue folder created."""
    layout = Layout.for_root(tmp_path / "root")
    layout.create()
    return layout


@pytest.fixture
def open_instance(layout: Layout) -> Iterator[OpenInstance]:
    """Open instances by id; those still holding their lock are closed at the end of the test."""
    opened: list[Instance] = []

    def open_(instance_id: str) -> Instance:
        instance = Instance(layout, instance_id)
        opened.append(instance)
        return instance

    yield open_
    for instance in opened:
        instance.close()


@pytest.fixture
def queue(layout: Layout, open_instance: OpenInstance) -> Queue:
    """Return a queue for instance ME with three attempts and a fixed clock."""
    return make_queue(layout, open_instance(ME))


def make_queue(layout: Layout, instance: Instance, max_attempts: int = 3) -> Queue:
    """Return a queue over ``instance`` whose wall clock always reads CLOCK."""
    return Queue(layout, instance, max_attempts=max_attempts, wall_clock=lambda: CLOCK)


def drop(layout: Layout, name: str, data: bytes = b"line\n") -> Path:
    """Put an input into unprocessed/ as a producer would."""
    path = layout.unprocessed / name
    path.write_bytes(data)
    return path


def die(instance: Instance) -> None:
    """Drop the instance's lock without any cleanup, as the kernel does when its process dies."""
    fd = instance._lock_fd
    assert fd is not None
    os.close(fd)
    instance._lock_fd = None


def claimed(queue: Queue, name: str) -> Claim:
    """Claim ``name`` and insist that the result is a Claim."""
    result = queue.claim(name)
    assert isinstance(result, Claim), result
    return result


def started(queue: Queue, name: str) -> Claim:
    """Claim ``name`` and start an attempt on it, as the agent does before running the pipeline."""
    claim = claimed(queue, name)
    queue.instance.mark_active(name)
    return claim


def read_json(path: Path) -> Any:
    """Return the parsed JSON content of ``path``."""
    return json.loads(path.read_bytes())


def dead_instance_folder(layout: Layout, instance_id: str, *inputs: str) -> Path:
    """Make the claim folder of an instance that died: its lock file exists and nobody holds it."""
    folder = layout.underprocess / instance_id
    folder.mkdir()
    (folder / LOCK_NAME).write_bytes(b"")
    for name in inputs:
        (folder / name).write_bytes(name.encode())
    return folder


@pytest.fixture
def live_other(layout: Layout) -> Iterator[Path]:
    """Make the claim folder of instance OTHER, alive: the test holds its lock with flock."""
    folder = layout.underprocess / OTHER
    folder.mkdir()
    (folder / LOCK_NAME).write_bytes(b"")
    (folder / "held.txt").write_bytes(b"held")
    fd = os.open(folder / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield folder
    os.close(fd)


# -- instance --------------------------------------------------------------------------------


def test_new_instance_id_has_exactly_two_dashes() -> None:
    """Instance ids are host-pid-random, the shape temp outputs are matched by."""
    assert new_instance_id().count("-") == 2


def test_instance_folder_holds_its_lock_file(layout: Layout, open_instance: OpenInstance) -> None:
    """An open instance has underprocess/<id>/.lock and nothing else."""
    instance = open_instance(ME)
    assert instance.dir == layout.underprocess / ME
    assert os.listdir(instance.dir) == [LOCK_NAME]


def test_instance_lock_is_held_while_open(layout: Layout, open_instance: OpenInstance) -> None:
    """Another open file description cannot take an open instance's lock."""
    instance = open_instance(ME)
    fd = os.open(instance.dir / LOCK_NAME, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_instance_start_survives_a_recovery_probing_its_half_built_folder(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance's recovery locks the new lock file first: the start builds a new folder."""
    real_flock = fcntl.flock
    probes: list[tuple[int, Path]] = []

    def probed_first(fd: int, operation: int) -> None:
        if not probes:  # another recovery finds the lock still free and takes it, as for a dead one
            staging = Path(os.readlink(f"/proc/self/fd/{fd}")).parent
            probe = os.open(staging / LOCK_NAME, os.O_RDWR)
            real_flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            probes.append((probe, staging))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", probed_first)
    instance = Instance(layout, ME)
    monkeypatch.undo()
    probe, staging = probes[0]
    shutil.rmtree(staging)  # the probing recovery removes what it took for a dead folder
    os.close(probe)
    assert os.listdir(layout.underprocess) == [ME]
    assert os.listdir(instance.dir) == [LOCK_NAME]
    fd = os.open(instance.dir / LOCK_NAME, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            real_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    instance.close()


def test_instance_close_removes_an_empty_claim_folder(layout: Layout) -> None:
    """Closing an instance that holds no input removes its folder."""
    Instance(layout, ME).close()
    assert os.listdir(layout.underprocess) == []


def test_instance_close_keeps_a_folder_with_a_claimed_input(layout: Layout) -> None:
    """Closing an instance that still holds an input keeps the folder for recovery."""
    instance = Instance(layout, ME)
    claimed(make_queue(layout, instance), drop(layout, "data.txt").name)
    instance.close()
    assert (layout.underprocess / ME / "data.txt").exists()


# -- claim -----------------------------------------------------------------------------------


def test_claim_moves_the_input_into_the_instance_folder(layout: Layout, queue: Queue) -> None:
    """A claimed input leaves unprocessed/ and sits in underprocess/<id>/ with its content."""
    drop(layout, "data.txt", b"hello\n")
    claim = claimed(queue, "data.txt")
    assert claim.path == layout.underprocess / ME / "data.txt"
    assert claim.path.read_bytes() == b"hello\n"
    assert not (layout.unprocessed / "data.txt").exists()


def test_first_claim_is_attempt_one_and_writes_no_counter(layout: Layout, queue: Queue) -> None:
    """The happy path writes no counter: an attempt is recorded only when it fails or its instance dies."""
    drop(layout, "data.txt")
    claim = claimed(queue, "data.txt")
    assert claim.attempt == 1
    assert not (layout.underprocess / ME / counter_name("data.txt")).exists()


def test_recovery_counts_the_interrupted_attempt_on_disk(layout: Layout, queue: Queue) -> None:
    """The claim a dead instance was working on comes back with its counter raised by one, tied to the inode."""
    dead = layout.underprocess / "deadhost-9-aaaaaa"
    dead.mkdir()
    (dead / ".lock").write_text("deadhost pid 9\ndata.txt")
    (dead / "data.txt").write_text("x\n")
    (dead / "waiting.txt").write_text("y\n")
    st = (dead / "data.txt").stat()
    assert sorted(queue.recover().returned) == ["data.txt", "waiting.txt"]
    counter = read_json(layout.unprocessed / counter_name("data.txt"))
    assert counter == {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "attempts": 1,
        "first_attempt": CLOCK,
        "traces": [],
    }
    # Claimed in the same batch but never started: no attempt against it.
    assert not (layout.unprocessed / counter_name("waiting.txt")).exists()


def test_an_attempt_the_instance_died_in_is_dated_from_when_the_first_attempt_began(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """The lock names the active input and when its first attempt began: recovery counts the
    attempt with that time, not the time of the recovery."""
    drop(layout, "poison.txt")
    instance = open_instance("host-1-cccccc")
    queue = make_queue(layout, instance)
    claim = claimed(queue, "poison.txt")
    instance.mark_active(claim.name, 1234.5)
    assert read_lock(instance._lock_fd).active == "poison.txt"
    die(instance)
    make_queue(layout, open_instance("host-2-cccccc")).recover()
    counter = read_json(layout.unprocessed / counter_name("poison.txt"))
    assert (counter["attempts"], counter["first_attempt"]) == (1, 1234.5)


def test_mark_active_names_the_input_after_the_lock_files_header(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """The lock file keeps its header (host and pid, the output folder) and names the input being
    worked on after it, replacing the last; read_lock reads both back."""
    instance = open_instance(ME)
    header = (instance.dir / LOCK_NAME).read_bytes()
    instance.mark_active("a much longer name\nwith a newline.txt")
    instance.mark_active("b.txt")
    assert (instance.dir / LOCK_NAME).read_bytes() == header + b"b.txt"
    assert header.count(b"\n") == 2
    fd = os.open(instance.dir / LOCK_NAME, os.O_RDONLY)
    try:
        assert read_lock(fd) == LockInfo("b.txt", Path("output"))  # inside the root: relative
    finally:
        os.close(fd)


def test_read_lock_reads_a_lock_file_of_an_earlier_version(tmp_path: Path) -> None:
    """A one-line header (earlier versions) still gives the active input, and no output folder."""
    lock = tmp_path / ".lock"
    lock.write_bytes(b"host pid 9\nx.txt")
    fd = os.open(lock, os.O_RDONLY)
    try:
        assert read_lock(fd) == LockInfo("x.txt", None)
    finally:
        os.close(fd)


def test_claim_batch_takes_each_file_and_reports_the_rest(layout: Layout, queue: Queue) -> None:
    """Files are claimed in order; a directory is reported, a FIFO rejected, a vanished name left out."""
    for name in ("a.txt", "b.txt"):
        drop(layout, name)
    (layout.unprocessed / "sub").mkdir()
    os.mkfifo(layout.unprocessed / "pipe")
    results = queue.claim_batch(["a.txt", "gone.txt", "sub", "pipe", "b.txt"])
    assert [type(r).__name__ for r in results] == ["Directory", "Rejected", "Claim", "Claim"]
    assert [r.name for r in results] == ["sub", "pipe", "a.txt", "b.txt"]
    assert sorted(os.listdir(layout.underprocess / ME)) == [LOCK_NAME, "a.txt", "b.txt"]
    assert sorted(os.listdir(layout.unprocessed)) == ["sub"]


def test_claim_of_a_vanished_name_returns_none(queue: Queue) -> None:
    """Claiming a name that is gone (another instance won) gives None, not an error."""
    assert queue.claim("gone.txt") is None


def test_claim_rejects_a_symlink_into_failed_with_a_record(layout: Layout, queue: Queue) -> None:
    """A symlink is moved to failed/ as a link with an error record; its target is untouched."""
    target = layout.root / "secret"
    target.write_bytes(b"secret")
    (layout.unprocessed / "link.txt").symlink_to(target)
    result = queue.claim("link.txt")
    assert isinstance(result, Rejected)
    assert (layout.failed / "link.txt").is_symlink()
    assert read_json(layout.failed / record_name("link.txt"))["error_type"] == "InputRejected"
    assert target.read_bytes() == b"secret"


def test_claim_rejects_a_fifo_without_opening_it(layout: Layout, queue: Queue) -> None:
    """A FIFO goes to failed/ with an error record; opening it would block, so the test would hang."""

    def timeout(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("claim blocked on the FIFO")

    os.mkfifo(layout.unprocessed / "pipe")
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    try:
        result = queue.claim("pipe")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert isinstance(result, Rejected)
    assert "FIFO" in result.reason
    assert stat.S_ISFIFO(os.lstat(layout.failed / "pipe").st_mode)
    assert (layout.failed / record_name("pipe")).exists()


def test_claim_rejects_a_name_too_long_for_its_output_under_a_shorter_name(
    layout: Layout, queue: Queue
) -> None:
    """240 bytes: the output name would pass 255 bytes; failed/ keeps it shortened, the record the full name."""
    name = "n" * 236 + ".txt"
    drop(layout, name, b"kept\n")
    result = queue.claim(name)
    assert isinstance(result, Rejected)
    assert "name too long (240 bytes)" in result.reason
    assert "at most 235 bytes" in result.reason  # "." + 235 + len(".error.json") + room for ".N" = 255
    (stored,) = [n for n in os.listdir(layout.failed) if not n.startswith(".")]
    assert len(stored.encode()) < 200
    assert (layout.failed / stored).read_bytes() == b"kept\n"
    record = read_json(layout.failed / record_name(stored))
    assert (record["file"], record["failed_name"], record["error_type"]) == (name, stored, "InputRejected")


def test_a_long_name_that_fits_gets_a_short_temp_output(layout: Layout, queue: Queue) -> None:
    """230 bytes fits every derived name; the temp output is named by the input's identity, short."""
    name = "n" * 226 + ".txt"
    drop(layout, name)
    target = queue.output_target(claimed(queue, name))
    assert target.name == "n" * 226 + "_processed.txt"
    assert target.tmp.name.startswith(f".foldermon-{ME}-")
    assert len(target.tmp.name.encode()) < 100
    target.tmp.write_bytes(b"fits\n")  # a real create: the name is accepted by the filesystem
    assert target.publish().name == target.name


def test_the_longest_name_accepted_has_its_attempts_counted(layout: Layout, queue: Queue) -> None:
    """235 bytes, the longest name accepted: its attempt counter (and that file's temp name,
    which would pass 255 bytes if named after it) is written, and read back."""
    name = "n" * 231 + ".txt"
    drop(layout, name)
    claim = claimed(queue, name)
    queue.attempt_failed(claim)
    again = queue.again(claim)
    assert again.attempt == 2
    assert [n for n in os.listdir(queue.instance.dir) if n.endswith(".tmp")] == []


def test_claim_of_a_name_already_held_waits(layout: Layout, queue: Queue) -> None:
    """A new file under the name of one this instance holds (waiting for a retry) is not claimed yet."""
    drop(layout, "data.txt", b"first")
    first = claimed(queue, "data.txt")
    drop(layout, "data.txt", b"second")
    assert queue.claim("data.txt") == Held("data.txt")
    assert (layout.unprocessed / "data.txt").read_bytes() == b"second"
    assert first.path.read_bytes() == b"first"
    queue.release(first)
    assert (layout.unprocessed / "data.1.txt").read_bytes() == b"first"


def test_a_name_that_cannot_be_claimed_never_holds_back_the_others(layout: Layout, queue: Queue) -> None:
    """Each name of a batch has its own outcome: one refused rename leaves the rest claimed."""
    for name in ("a.txt", "b.txt", "c.txt"):
        drop(layout, name)
    (queue.instance.dir / "b.txt").mkdir()  # renaming a file onto a folder fails (EISDIR)
    results = queue.claim_batch(["a.txt", "b.txt", "c.txt"])
    assert [type(r).__name__ for r in results] == ["Unclaimable", "Claim", "Claim"]
    assert isinstance(results[0], Unclaimable)
    assert results[0].name == "b.txt"
    assert (layout.unprocessed / "b.txt").is_file()


def test_claim_says_when_its_claim_folder_is_gone_and_reopen_makes_it_again(
    layout: Layout, queue: Queue
) -> None:
    """A root removed and made again: the claim is not mistaken for a lost race."""
    shutil.rmtree(layout.root)
    layout.unprocessed.mkdir(parents=True)
    drop(layout, "data.txt")
    with pytest.raises(ClaimFolderGoneError):
        queue.claim("data.txt")
    queue.reopen()
    assert queue.instance.is_current()
    assert isinstance(queue.claim("data.txt"), Claim)


def test_claim_leaves_a_directory_in_place(layout: Layout, queue: Queue) -> None:
    """A directory in unprocessed/ is reported as Directory and not moved."""
    (layout.unprocessed / "sub").mkdir()
    assert queue.claim("sub") == Directory("sub")
    assert (layout.unprocessed / "sub").is_dir()


def test_claim_after_max_attempts_crashes_returns_exhausted(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """An input whose process died on every one of max_attempts claims is Exhausted on the next."""
    drop(layout, "poison.txt")
    for attempt in (1, 2, 3):
        instance = open_instance(f"host-{attempt}-cccccc")
        queue = make_queue(layout, instance)
        queue.recover()
        assert started(queue, "poison.txt").attempt == attempt
        die(instance)
    queue = make_queue(layout, open_instance("host-9-dddddd"))
    queue.recover()
    result = queue.claim("poison.txt")
    assert isinstance(result, Exhausted)
    assert (result.name, result.count.attempts, result.count.first) == ("poison.txt", 3, CLOCK)


@pytest.mark.parametrize("stop", ["crash", "release"])
def test_a_failed_attempt_waiting_for_its_retry_is_counted_once_with_its_trace(
    layout: Layout, open_instance: OpenInstance, stop: str
) -> None:
    """Attempt 1 fails and its retry is scheduled (attempt_failed); the instance then dies or gives
    the file back: the next claim is attempt 2 and knows attempt 1's trace."""
    drop(layout, "bad.txt")
    instance = open_instance("host-1-cccccc")
    queue = make_queue(layout, instance)
    claim = started(queue, "bad.txt")
    trace = TraceRef(1, "a" * 32, "b" * 16, sampled=True)
    queue.attempt_failed(replace(claim, traces=(trace,)))
    if stop == "crash":
        die(instance)
    else:
        queue.release(claim)
    queue = make_queue(layout, open_instance("host-2-cccccc"))
    queue.recover()
    again = started(queue, "bad.txt")
    assert (again.attempt, again.traces) == (2, (trace,))


def test_exhausted_input_can_be_failed(layout: Layout, open_instance: OpenInstance) -> None:
    """An Exhausted input is quarantined in failed/ by fail() and its counter is dropped."""
    drop(layout, "poison.txt")
    first = open_instance("host-1-cccccc")
    started(make_queue(layout, first, max_attempts=1), "poison.txt")
    die(first)
    queue = make_queue(layout, open_instance("host-2-cccccc"), max_attempts=1)
    queue.recover()
    exhausted = queue.claim("poison.txt")
    assert isinstance(exhausted, Exhausted)
    assert queue.fail(exhausted, {"error_type": "Exhausted"}) == "poison.txt"
    assert (layout.failed / "poison.txt").exists()
    assert os.listdir(queue.instance.dir) == [LOCK_NAME]


def test_counter_of_a_different_inode_is_ignored(layout: Layout, queue: Queue) -> None:
    """A counter left by an earlier file of the same name does not count against a new one."""
    ino = drop(layout, "data.txt").stat().st_ino
    stale = {"ino": ino + 1, "attempts": 5, "first_attempt": 1.0}
    (layout.unprocessed / counter_name("data.txt")).write_text(json.dumps(stale))
    claim = claimed(queue, "data.txt")
    assert (claim.attempt, claim.first_attempt) == (1, CLOCK)


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_counter_of_another_file_with_the_same_inode_number_is_ignored(
    layout: Layout, queue: Queue, change: str
) -> None:
    """A file deleted by hand and a new one of that name that took its inode number: the counter
    left beside the old one names its size and modification time, and they differ."""
    st = drop(layout, "data.txt", b"new content\n").stat()
    stale = {
        "ino": st.st_ino,
        "size": st.st_size + (change == "size"),
        "mtime_ns": st.st_mtime_ns - (change == "mtime") * 10**9,
        "attempts": 2,
        "first_attempt": 1.0,
    }
    (layout.unprocessed / counter_name("data.txt")).write_text(json.dumps(stale))
    claim = claimed(queue, "data.txt")
    assert (claim.attempt, claim.first_attempt) == (1, CLOCK)


def test_a_counter_of_an_older_version_is_matched_by_inode(layout: Layout, queue: Queue) -> None:
    """Counters written before they named size and modification time still count."""
    ino = drop(layout, "data.txt").stat().st_ino
    (layout.unprocessed / counter_name("data.txt")).write_text(
        json.dumps({"ino": ino, "attempts": 2, "first_attempt": 1.0})
    )
    assert claimed(queue, "data.txt").attempt == 3


def test_again_records_the_failed_attempt_and_starts_the_next(layout: Layout, queue: Queue) -> None:
    """again() writes the attempts made so far durably and returns the next attempt."""
    drop(layout, "data.txt")
    retry = queue.again(claimed(queue, "data.txt"))
    counter = read_json(layout.underprocess / ME / counter_name("data.txt"))
    assert retry.attempt == 2
    assert (counter["attempts"], counter["first_attempt"]) == (1, CLOCK)


# -- release ---------------------------------------------------------------------------------


def test_release_moves_the_input_back_to_unprocessed(layout: Layout, queue: Queue) -> None:
    """release() returns the input to unprocessed/ with its content."""
    drop(layout, "data.txt", b"keep\n")
    queue.release(claimed(queue, "data.txt"))
    assert (layout.unprocessed / "data.txt").read_bytes() == b"keep\n"
    assert os.listdir(queue.instance.dir) == [LOCK_NAME]


def test_release_of_a_first_attempt_leaves_no_counter(layout: Layout, queue: Queue) -> None:
    """Releasing attempt 1 drops the counter, so the next claim is attempt 1 again."""
    drop(layout, "data.txt")
    queue.release(claimed(queue, "data.txt"))
    assert not (layout.unprocessed / counter_name("data.txt")).exists()
    assert claimed(queue, "data.txt").attempt == 1


def test_release_restores_the_previous_count(layout: Layout, open_instance: OpenInstance) -> None:
    """Releasing attempt 2 leaves a counter of 1 beside the returned input."""
    drop(layout, "data.txt")
    first = open_instance("host-1-cccccc")
    started(make_queue(layout, first), "data.txt")
    die(first)
    queue = make_queue(layout, open_instance(ME))
    queue.recover()
    claim = claimed(queue, "data.txt")
    assert claim.attempt == 2
    queue.release(claim)
    assert read_json(layout.unprocessed / counter_name("data.txt"))["attempts"] == 1
    assert claimed(queue, "data.txt").attempt == 2


# -- output ----------------------------------------------------------------------------------


def test_output_target_uses_the_template_name(layout: Layout, queue: Queue) -> None:
    """With processed/ free of the name, the output is {stem}_processed{suffix} with n 0."""
    drop(layout, "data.txt")
    target = queue.output_target(claimed(queue, "data.txt"))
    assert (target.folder / target.name, target.n) == (layout.output_dir / "data_processed.txt", 0)


def test_output_target_temp_is_a_dotfile_beside_the_output(layout: Layout, queue: Queue) -> None:
    """The temp output lives in the output folder under a dot name that carries the instance id."""
    drop(layout, "data.txt")
    tmp = queue.output_target(claimed(queue, "data.txt")).tmp
    assert tmp.parent == layout.output_dir
    assert tmp.name.startswith(".")
    assert ME in tmp.name


def test_output_target_picks_suffix_n_when_processed_holds_the_name(layout: Layout, queue: Queue) -> None:
    """A new input under a used name gets the first n whose processed/ name is free."""
    (layout.processed / "data.txt").write_bytes(b"old")
    (layout.processed / "data.1.txt").write_bytes(b"older")
    drop(layout, "data.txt")
    target = queue.output_target(claimed(queue, "data.txt"))
    assert target.n == 2
    target.tmp.write_bytes(b"out")
    assert target.publish() == layout.output_dir / "data_processed.2.txt"


@pytest.mark.parametrize(
    ("template", "name", "expected"),
    [
        ("{stem}_processed{suffix}", "data.txt", "data_processed.txt"),
        ("{stem}_processed{suffix}", "README", "README_processed"),
        ("{stem}_processed{suffix}", "a.tar.gz", "a.tar_processed.gz"),
        ("{name}.out", "data.txt", "data.txt.out"),
    ],
)
def test_output_filename_follows_the_template(
    layout: Layout, open_instance: OpenInstance, template: str, name: str, expected: str
) -> None:
    """The output name is the template filled from the input's stem, last suffix and name."""
    queue = Queue(layout, open_instance(ME), output_name=template)
    assert queue.output_filename(name) == expected


# -- finish ----------------------------------------------------------------------------------


def test_finish_moves_the_input_to_processed_and_drops_its_counter(layout: Layout, queue: Queue) -> None:
    """finish() puts the input in processed/ and leaves the claim folder with only its lock."""
    drop(layout, "data.txt")
    claim = claimed(queue, "data.txt")
    assert queue.finish(claim, queue.output_target(claim)) == "data.txt"
    assert (layout.processed / "data.txt").exists()
    assert os.listdir(queue.instance.dir) == [LOCK_NAME]


def test_finish_suffixes_a_name_taken_in_processed_meanwhile(layout: Layout, queue: Queue) -> None:
    """When processed/ gains the name after the output is published, the input gets suffix 1."""
    drop(layout, "data.txt", b"mine")
    claim = claimed(queue, "data.txt")
    target = queue.output_target(claim)
    target.tmp.write_bytes(b"my output")
    output = target.publish()
    (layout.processed / "data.txt").write_bytes(b"theirs")
    assert queue.finish(claim, target) == "data.1.txt"
    assert (layout.processed / "data.txt").read_bytes() == b"theirs"
    assert (layout.processed / "data.1.txt").read_bytes() == b"mine"
    assert output.read_bytes() == b"my output"


def test_finish_removes_the_temp_name_once_durable(layout: Layout, queue: Queue) -> None:
    """After finish() the output keeps only its final name; with sync=False only after sync()."""
    drop(layout, "data.txt")
    claim = claimed(queue, "data.txt")
    target = queue.output_target(claim)
    target.tmp.write_bytes(b"out")
    output = target.publish()
    queue.finish(claim, target, sync=False)
    assert target.committed()
    queue.sync()
    assert not target.tmp.exists()
    assert output.stat().st_nlink == 1


def test_publish_never_replaces_an_output(layout: Layout, queue: Queue) -> None:
    """A name taken meanwhile (another instance, another root, the template) keeps its content."""
    drop(layout, "data.txt")
    target = queue.output_target(claimed(queue, "data.txt"))
    (layout.output_dir / "data_processed.txt").write_bytes(b"someone else's")
    (layout.output_dir / "data_processed.1.txt").write_bytes(b"another")
    target.tmp.write_bytes(b"mine")
    assert target.publish() == layout.output_dir / "data_processed.2.txt"
    assert (layout.output_dir / "data_processed.txt").read_bytes() == b"someone else's"
    assert (layout.output_dir / "data_processed.1.txt").read_bytes() == b"another"
    assert target.committed()


def test_output_target_skips_names_taken_by_outputs(layout: Layout, queue: Queue) -> None:
    """An output already there under n 0 (processed/ pruned, say) makes the input and output use n 1."""
    (layout.output_dir / "data_processed.txt").write_bytes(b"older output")
    drop(layout, "data.txt")
    assert queue.output_target(claimed(queue, "data.txt")).n == 1


# -- fail ------------------------------------------------------------------------------------


def test_fail_moves_the_input_to_failed_with_its_record(layout: Layout, queue: Queue) -> None:
    """fail() puts the input in failed/ beside its dotfile record."""
    drop(layout, "data.txt")
    claim = claimed(queue, "data.txt")
    assert queue.fail(claim, {"error_type": "ValueError", "message": "bad"}) == "data.txt"
    record = read_json(layout.failed / record_name("data.txt"))
    assert (layout.failed / "data.txt").exists()
    assert record["error_type"] == "ValueError"
    assert (record["file"], record["failed_name"], record["failed_at"]) == ("data.txt", "data.txt", CLOCK)
    assert record["failed_at_iso"] == "2023-11-14T22:13:20.000+00:00"


def test_fail_drops_the_counter(layout: Layout, queue: Queue) -> None:
    """After fail() the claim folder holds only its lock."""
    drop(layout, "data.txt")
    queue.fail(claimed(queue, "data.txt"), {"error_type": "ValueError"})
    assert os.listdir(queue.instance.dir) == [LOCK_NAME]


def test_fail_writes_the_record_before_moving_the_input(layout: Layout, queue: Queue) -> None:
    """inotify sees the record arrive in failed/ before the input, so no input is there without one."""
    drop(layout, "data.txt")
    claim = claimed(queue, "data.txt")
    with inotify_simple.INotify() as watcher:
        mask = inotify_simple.flags.MOVED_TO | inotify_simple.flags.CREATE
        watcher.add_watch(layout.failed, mask)
        queue.fail(claim, {"error_type": "ValueError"})
        arrivals = [event.name for event in watcher.read(timeout=0)]
    assert arrivals == [record_name("data.txt"), "data.txt"]


def test_fail_suffixes_a_name_taken_in_failed(layout: Layout, queue: Queue) -> None:
    """A clash in failed/ gives the input and its record suffix 1; the earlier pair is untouched."""
    (layout.failed / "data.txt").write_bytes(b"earlier")
    (layout.failed / record_name("data.txt")).write_bytes(b"{}")
    drop(layout, "data.txt", b"mine")
    assert queue.fail(claimed(queue, "data.txt"), {"error_type": "ValueError"}) == "data.1.txt"
    assert (layout.failed / "data.txt").read_bytes() == b"earlier"
    assert (layout.failed / record_name("data.txt")).read_bytes() == b"{}"
    assert (layout.failed / "data.1.txt").read_bytes() == b"mine"
    assert read_json(layout.failed / record_name("data.1.txt"))["failed_name"] == "data.1.txt"


def test_a_record_never_replaces_an_input_named_like_a_record(layout: Layout, queue: Queue) -> None:
    """An input called x.error.json and the record of an input x live side by side."""
    drop(layout, "x.error.json", b"an input")
    assert queue.fail(claimed(queue, "x.error.json"), {"error_type": "ValueError"}) == "x.error.json"
    drop(layout, "x", b"another input")
    assert queue.fail(claimed(queue, "x"), {"error_type": "KeyError"}) == "x"
    assert (layout.failed / "x.error.json").read_bytes() == b"an input"
    assert (layout.failed / "x").read_bytes() == b"another input"
    assert read_json(layout.failed / record_name("x"))["error_type"] == "KeyError"
    assert read_json(layout.failed / record_name("x.error.json"))["error_type"] == "ValueError"


def test_fail_never_replaces_a_record_left_without_its_input(layout: Layout, queue: Queue) -> None:
    """A record whose input is not beside it (a quarantine cut short, an input moved out by hand)
    is kept as it is; the input takes suffix 1."""
    (layout.failed / record_name("data.txt")).write_bytes(b'{"error_type": "Earlier"}')
    drop(layout, "data.txt")
    assert queue.fail(claimed(queue, "data.txt"), {"error_type": "ValueError"}) == "data.1.txt"
    assert read_json(layout.failed / record_name("data.txt")) == {"error_type": "Earlier"}
    assert read_json(layout.failed / record_name("data.1.txt"))["error_type"] == "ValueError"


# -- recover ---------------------------------------------------------------------------------


def test_recover_returns_the_inputs_of_a_dead_instance(layout: Layout, queue: Queue) -> None:
    """Inputs in the folder of an instance whose lock is free go back to unprocessed/."""
    dead_instance_folder(layout, OTHER, "a.txt", "b.txt")
    report = queue.recover()
    assert sorted(report.returned) == ["a.txt", "b.txt"]
    assert report.dead_instances == [OTHER]
    assert (layout.unprocessed / "a.txt").read_bytes() == b"a.txt"


def test_recover_removes_the_folder_of_a_dead_instance(layout: Layout, queue: Queue) -> None:
    """After recovery only the live instance's folder is left in underprocess/."""
    dead_instance_folder(layout, OTHER, "a.txt")
    queue.recover()
    assert os.listdir(layout.underprocess) == [ME]


def test_recover_leaves_alone_what_is_not_a_claim_folder(layout: Layout, queue: Queue) -> None:
    """Folders in underprocess/ not named as an instance, or holding a root's folders (another
    root put there by mistake), are neither taken over nor counted as claims."""
    for folder in ("unprocessed", "processed", "output", "notes-1-abc"):
        dead_instance_folder(layout, folder, "a.txt")
    inner = layout.underprocess / "vm-1-abcdef"  # a root put there, named as an instance
    (inner / "unprocessed").mkdir(parents=True)
    (inner / "unprocessed" / "late.txt").write_text("late\n")
    report = queue.recover()
    assert report.returned == []
    assert report.dead_instances == []
    assert sorted(os.listdir(layout.underprocess)) == sorted(
        [ME, "unprocessed", "processed", "output", "notes-1-abc", "vm-1-abcdef"]
    )
    assert (inner / "unprocessed" / "late.txt").exists()
    assert all((layout.underprocess / f / "a.txt").exists() for f in ("unprocessed", "processed", "output"))
    assert claimed_count(layout) == 0


def test_recover_returns_the_counter_with_the_input(layout: Layout, open_instance: OpenInstance) -> None:
    """A dead instance's attempt counter follows its input, so the next claim is attempt 2."""
    drop(layout, "data.txt")
    first = open_instance(OTHER)
    started(make_queue(layout, first), "data.txt")
    die(first)
    queue = make_queue(layout, open_instance(ME))
    queue.recover()
    assert read_json(layout.unprocessed / counter_name("data.txt"))["attempts"] == 1
    assert claimed(queue, "data.txt").attempt == 2


def test_recover_suffixes_an_input_whose_name_is_back_in_unprocessed(layout: Layout, queue: Queue) -> None:
    """A returned input never clobbers a new file of the same name in unprocessed/."""
    dead_instance_folder(layout, OTHER, "a.txt")
    drop(layout, "a.txt", b"new")
    assert queue.recover().returned == ["a.1.txt"]
    assert (layout.unprocessed / "a.txt").read_bytes() == b"new"
    assert (layout.unprocessed / "a.1.txt").read_bytes() == b"a.txt"


def test_recover_removes_temp_outputs_of_a_dead_instance(layout: Layout, queue: Queue) -> None:
    """A temp output whose owner is dead is removed and counted."""
    dead_instance_folder(layout, OTHER, "a.txt")
    (layout.output_dir / f".foldermon-{OTHER}-a_processed.txt.tmp").write_bytes(b"partial")
    assert queue.recover().temps_removed == 1
    assert os.listdir(layout.output_dir) == []


def test_recover_removes_temp_outputs_whose_owner_folder_is_gone(layout: Layout, queue: Queue) -> None:
    """A temp output of this root whose instance has no claim folder left is removed."""
    (layout.output_dir / f".foldermon-{OTHER}-{queue.root_tag}-{'0' * 32}.tmp").write_bytes(b"partial")
    assert queue.recover().temps_removed == 1


def test_recover_leaves_temp_outputs_of_another_root_sharing_the_output_folder(
    tmp_path: Path, layout: Layout, queue: Queue
) -> None:
    """An instance of another root writing to the same output folder has no claim folder here:
    its temp outputs are judged by its own root, never removed from this one."""
    other = Layout.for_root(tmp_path / "other", layout.output_dir)
    other.create()
    other_instance = Instance(other, OTHER)
    try:
        other_queue = make_queue(other, other_instance)
        drop(other, "a.txt")
        target = other_queue.output_target(claimed(other_queue, "a.txt"))
        target.tmp.write_bytes(b"in progress")
        assert queue.recover(sweep_temps=True).temps_removed == 0
        assert target.tmp.read_bytes() == b"in progress"
    finally:
        other_instance.close()


def test_recover_finishes_an_input_whose_output_was_published(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """An instance that died between publishing an output and finishing its input: the input goes
    to processed/ and the output is neither made again nor replaced."""
    drop(layout, "data.txt", b"line\n")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    claim = claimed(dying, "data.txt")
    target = dying.output_target(claim)
    target.tmp.write_bytes(b"output\n")
    output = target.publish()
    die(first)
    queue = make_queue(layout, open_instance(ME))
    report = queue.recover()
    assert (report.finished, report.returned) == (["data.txt"], [])
    assert (layout.processed / "data.txt").read_bytes() == b"line\n"
    assert sorted(os.listdir(layout.output_dir)) == [output.name]
    assert output.read_bytes() == b"output\n"


def test_an_input_recovery_finishes_is_counted_processed(layout: Layout, open_instance: OpenInstance) -> None:
    """The dead instance published the output and died before it finished (and counted) the
    input: the instance whose recovery finishes it counts it in foldermon.files, once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from foldermon import log as logmod
    from foldermon.roots import Root, recover
    from foldermon.telemetry import Instruments

    drop(layout, "data.txt", b"line\n")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    target = dying.output_target(claimed(dying, "data.txt"))
    target.tmp.write_bytes(b"output\n")
    target.publish()
    die(first)
    reader = InMemoryMetricReader()
    instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("test"))
    queue = make_queue(layout, open_instance(ME))
    recover(Root(layout, queue), logmod.get(), instruments, sweep_temps=True)
    instruments.tally.flush()
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        (dict(point.attributes or {}).get("foldermon.outcome"), point.value)  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "foldermon.files"
        for point in metric.data.data_points
    ]
    assert points == [("processed", 1)]


def test_recover_finishes_an_input_whose_published_output_a_consumer_took_away(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """The output was published and a consumer took it (read and deleted it) before the dead
    instance's recovery: the proof of publication outlives the output, so the input is finished,
    not processed again."""
    drop(layout, "data.txt", b"line\n")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    target = dying.output_target(claimed(dying, "data.txt"))
    target.tmp.write_bytes(b"output\n")
    target.publish().unlink()
    die(first)
    report = make_queue(layout, open_instance(ME)).recover()
    assert (report.finished, report.returned) == (["data.txt"], [])
    assert os.listdir(layout.output_dir) == []  # the proof went with the dead instance's temps


def _published_and_died(layout: Layout) -> Path:
    """Instance OTHER claims data.txt, publishes its output and dies before finishing it."""
    layout.create()
    drop(layout, "data.txt", b"line\n")
    first = Instance(layout, OTHER)
    dying = make_queue(layout, first)
    target = dying.output_target(claimed(dying, "data.txt"))
    target.tmp.write_bytes(b"output\n")
    output = target.publish()
    die(first)
    return output


def _recovered_by_a_survivor(layout: Layout) -> Recovery:
    """What the recovery of instance ME, started on ``layout``, reports."""
    layout.create()
    survivor = Instance(layout, ME)
    try:
        return make_queue(layout, survivor).recover()
    finally:
        survivor.close()


def test_recover_finds_an_output_folder_beside_the_root_where_another_host_mounts_it(tmp_path: Path) -> None:
    """Hosts mount a shared volume at their own paths, each with its own output folder beside the
    root: the lock names the dead instance's folder relative to the root, so a host that sees the
    volume elsewhere still finds its published output and finishes the input (no second output)."""
    output = _published_and_died(Layout.for_root(tmp_path / "vol" / "root", tmp_path / "vol" / "outA"))
    (tmp_path / "vol").rename(tmp_path / "elsewhere")  # host b: the same volume, another path
    vol = tmp_path / "elsewhere"
    report = _recovered_by_a_survivor(Layout.for_root(vol / "root", vol / "outB"))
    assert (report.finished, report.returned) == (["data.txt"], [])
    assert (vol / "outA" / output.name).read_bytes() == b"output\n"
    assert os.listdir(vol / "outB") == []


@pytest.mark.parametrize("where", ["other-fs-gone", "other-fs-another-folder", "beside-gone"])
def test_recover_leaves_the_claims_of_an_instance_whose_output_folder_is_not_here(
    tmp_path: Path, where: str
) -> None:
    """A dead instance whose output folder is not here (another host's own disk, the same path
    holding another folder there, a folder beside the root this mount of it does not lead to):
    whether it published cannot be told, so its claims stay in underprocess/ rather than get a
    second output."""
    elsewhere = Path(tempfile.mkdtemp(dir="/dev/shm"))  # another mount than tmp_path's
    output = tmp_path / "out" if where == "beside-gone" else elsewhere / "out"
    try:
        _published_and_died(Layout.for_root(tmp_path / "root", output))
        shutil.rmtree(output)
        if where == "other-fs-another-folder":
            output.mkdir()  # the same path, another folder (another disk, or made anew)
        mine = Layout.for_root(tmp_path / "root")
        report = _recovered_by_a_survivor(mine)
    finally:
        shutil.rmtree(elsewhere)
    assert (report.finished, report.returned) == ([], [])
    named = output if where != "beside-gone" else Path("../out")
    assert report.unreachable == [f"{OTHER}: {named}"]
    assert sorted(os.listdir(mine.underprocess / OTHER)) == sorted([LOCK_NAME, "data.txt"])


def test_recover_returns_an_input_whose_output_was_not_published(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """A finished temp output without its final name is removed and the input processed again."""
    drop(layout, "data.txt")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    target = dying.output_target(claimed(dying, "data.txt"))
    target.tmp.write_bytes(b"complete but not published\n")
    die(first)
    report = make_queue(layout, open_instance(ME)).recover()
    assert (report.finished, report.returned, report.temps_removed) == ([], ["data.txt"], 1)
    assert os.listdir(layout.output_dir) == []


def test_recover_removes_a_staging_folder_without_a_lock(layout: Layout, queue: Queue) -> None:
    """A half-created instance folder (.new-<id>.<try>, no lock yet) is cleaned up."""
    (layout.underprocess / f".new-{OTHER}.0").mkdir()
    assert queue.recover().dead_instances == [OTHER]
    assert os.listdir(layout.underprocess) == [ME]


def test_recover_leaves_a_live_instance_untouched(layout: Layout, queue: Queue, live_other: Path) -> None:
    """The folder, lock and inputs of an instance whose lock is held are not touched."""
    report = queue.recover()
    assert (report.returned, report.dead_instances) == ([], [])
    assert sorted(os.listdir(live_other)) == [LOCK_NAME, "held.txt"]
    assert not (layout.unprocessed / "held.txt").exists()


@pytest.mark.usefixtures("live_other")
def test_recover_leaves_temp_outputs_of_a_live_instance(layout: Layout, queue: Queue) -> None:
    """A temp output whose owner holds its lock is kept."""
    temp = layout.output_dir / f".foldermon-{OTHER}-a_processed.txt.tmp"
    temp.write_bytes(b"in progress")
    assert queue.recover().temps_removed == 0
    assert temp.read_bytes() == b"in progress"


def test_recover_leaves_its_own_claims_and_temps(layout: Layout, queue: Queue) -> None:
    """The recovering instance never returns its own inputs or removes its own temps."""
    drop(layout, "data.txt")
    target = queue.output_target(claimed(queue, "data.txt"))
    target.tmp.write_bytes(b"in progress")
    report = queue.recover()
    assert (report.returned, report.temps_removed) == ([], 0)
    assert (queue.instance.dir / "data.txt").exists()
    assert target.tmp.exists()


@pytest.mark.parametrize("stop_after", ["pub", "done", "rename"])
def test_a_publish_stopped_at_each_step_is_judged_by_what_happened(
    layout: Layout, open_instance: OpenInstance, stop_after: str
) -> None:
    """An instance dies at each step of a publish (the publishing link, the proof, the rename),
    and a consumer takes away whatever output there is before the recovery: an output that was
    renamed into place is never made again; one that was not is made once, by the next attempt."""
    drop(layout, "data.txt", b"line\n")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    target = dying.output_target(claimed(dying, "data.txt"))
    target.tmp.write_bytes(b"output\n")
    pub, done = publishing_name(target.tmp), published_name(target.tmp)
    os.link(target.tmp, pub)
    if stop_after in ("done", "rename"):
        os.link(target.tmp, done)
    if stop_after == "rename":
        os.rename(pub, layout.output_dir / "data_processed.txt")
        (layout.output_dir / "data_processed.txt").unlink()  # the consumer took it
    die(first)
    report = make_queue(layout, open_instance(ME)).recover()
    published = stop_after == "rename"
    assert (report.finished, report.returned) == ((["data.txt"], []) if published else ([], ["data.txt"]))
    assert os.listdir(layout.output_dir) == []


def test_recover_drops_the_record_of_a_quarantine_cut_short_by_a_crash(
    layout: Layout, open_instance: OpenInstance
) -> None:
    """An instance died after taking a record's name in failed/ and before moving its input in:
    the recovery returns the input and removes that record (it has no input), so the next
    quarantine takes the input's own name; a record left by another instance stays."""
    drop(layout, "bad.txt", b"BAD\n")
    first = open_instance(OTHER)
    dying = make_queue(layout, first)
    started(dying, "bad.txt")
    mine = {"file": "bad.txt", "failed_name": "bad.txt", "instance": OTHER}
    (layout.failed / ".bad.txt.error.json").write_text(json.dumps(mine))
    theirs = {"file": "bad.txt", "failed_name": "bad.1.txt", "instance": "someone-else-1"}
    (layout.failed / ".bad.1.txt.error.json").write_text(json.dumps(theirs))
    die(first)
    report = make_queue(layout, open_instance(ME)).recover()
    assert report.returned == ["bad.txt"]
    assert sorted(os.listdir(layout.failed)) == [".bad.1.txt.error.json"]
