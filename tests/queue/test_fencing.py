"""Taking over a cut-off instance's claims with a lease: fence first, settle 2 * lease later."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from foldermon.queue.claims import Claim, LeaseLostError
from foldermon.queue.instance import FENCED_PREFIX, Instance, try_lock
from foldermon.queue.layout import LOCK_NAME, Layout
from foldermon.queue.lifecycle import Queue

CUT = "hosta-1-aaaaaa"
PEER = "hostb-2-bbbbbb"
LEASE = 5.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout.for_root(tmp_path / "root")
    layout.create()
    return layout


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pair(layout: Layout, clock: Clock) -> Iterator[tuple[Queue, Queue]]:
    """The instance that gets cut off, and a peer on the same root, both with a lease."""
    queues = [Queue(layout, Instance(layout, i), lease=LEASE, clock=clock) for i in (CUT, PEER)]
    yield queues[0], queues[1]
    for q in queues:
        q.instance.close()


def _claim(queue: Queue, name: str, data: bytes = b"line\n") -> Claim:
    (queue.layout.unprocessed / name).write_bytes(data)
    claim = queue.claim(name)
    assert isinstance(claim, Claim)
    return claim


def _cut_off(queue: Queue) -> None:
    """What a host whose connection to the server timed out sees: nothing. Its lock is freed."""
    fd = queue.instance._lock_fd
    assert fd is not None
    fcntl.flock(fd, fcntl.LOCK_UN)


def _write_output(queue: Queue, claim: Claim, data: bytes) -> Path:
    target = queue.output_target(claim)
    fd = queue.open_temp(target)
    os.write(fd, data)
    os.close(fd)
    return target.publish(fence=lambda: queue.confirm_lease(claim))


def _fenced(layout: Layout) -> list[str]:
    return [n for n in os.listdir(layout.underprocess) if n.startswith(FENCED_PREFIX)]


def test_a_free_lock_is_fenced_first_and_settled_only_after_twice_the_lease(
    pair: tuple[Queue, Queue], clock: Clock
) -> None:
    cut, peer = pair
    claim = _claim(cut, "a.txt")
    _cut_off(cut)
    first = peer.recover()
    assert first.returned == []
    assert first.dead_instances == []
    assert [n.rsplit(".", 1)[0] for n in _fenced(cut.layout)] == [FENCED_PREFIX + CUT]
    # From now on the cut-off instance can neither publish nor finish what it claimed.
    with pytest.raises(LeaseLostError):
        cut.confirm_lease(claim)
    assert cut.lost(claim)
    clock.now += 2 * LEASE - 0.1
    assert peer.recover().returned == []
    clock.now += 0.1
    settled = peer.recover()
    assert settled.returned == ["a.txt"]
    assert settled.dead_instances == [CUT]
    assert os.listdir(cut.layout.unprocessed) == ["a.txt"]
    assert _fenced(cut.layout) == []


def test_an_output_published_before_the_fence_is_finished_by_the_recovery_not_made_again(
    pair: tuple[Queue, Queue], clock: Clock
) -> None:
    cut, peer = pair
    claim = _claim(cut, "b.txt")
    published = _write_output(cut, claim, b"B\n")
    _cut_off(cut)
    peer.recover()
    clock.now += 2 * LEASE
    settled = peer.recover()
    assert settled.finished == ["b.txt"]
    assert settled.returned == []
    assert os.listdir(cut.layout.processed) == ["b.txt"]
    assert published.read_bytes() == b"B\n"
    # The cut-off instance, back, is told rather than reporting a second finish.
    with pytest.raises(LeaseLostError):
        cut.finish(claim, cut.output_target(claim))


def test_no_output_is_published_after_the_fence(pair: tuple[Queue, Queue], clock: Clock) -> None:
    cut, peer = pair
    claim = _claim(cut, "c.txt")
    target = cut.output_target(claim)
    fd = cut.open_temp(target)
    os.write(fd, b"C\n")
    os.close(fd)
    _cut_off(cut)
    peer.recover()
    with pytest.raises(LeaseLostError):
        target.publish(fence=lambda: cut.confirm_lease(claim))
    assert [n for n in os.listdir(cut.layout.output_dir) if not n.startswith(".")] == []


def test_a_check_slower_than_the_lease_is_made_again(layout: Layout) -> None:
    """A check that hung (the server unreachable for a while) vouches for nothing: it is repeated."""
    ticks = iter([0.0, LEASE + 1, LEASE + 2, LEASE + 2.5])
    queue = Queue(layout, Instance(layout, CUT), lease=LEASE, clock=lambda: next(ticks))
    try:
        claim = _claim(queue, "d.txt")
        queue.confirm_lease(claim)
        with pytest.raises(StopIteration):  # exactly two checks used the four ticks
            next(ticks)
    finally:
        queue.instance.close()


def test_after_a_takeover_a_new_claim_folder_serves_new_claims_and_keeps_its_temps(
    pair: tuple[Queue, Queue], clock: Clock
) -> None:
    """The cut-off instance starts again under its id; the recovery of its old folder removes
    only the old claims' temp outputs, not those of its new ones."""
    cut, peer = pair
    old = _claim(cut, "e.txt")
    old_target = cut.output_target(old)
    os.close(cut.open_temp(old_target))
    _cut_off(cut)
    peer.recover()
    cut.reopen()
    with pytest.raises(LeaseLostError):  # claimed into the folder that was taken over
        cut.confirm_lease(old)
    new = _claim(cut, "f.txt")
    new_target = cut.output_target(new)
    os.close(cut.open_temp(new_target))
    clock.now += 2 * LEASE
    settled = peer.recover()
    assert settled.returned == ["e.txt"]
    assert not old_target.tmp.exists()
    assert new_target.tmp.exists()
    cut.confirm_lease(new)
    assert _write_output(cut, new, b"F\n").read_bytes() == b"F\n"


def test_without_a_lease_a_free_lock_is_recovered_at_once(layout: Layout) -> None:
    """One host (a local filesystem): the kernel frees the lock only when its holder is gone."""
    cut = Queue(layout, Instance(layout, CUT))
    peer = Queue(layout, Instance(layout, PEER))
    try:
        _claim(cut, "g.txt")
        _cut_off(cut)
        assert peer.recover().returned == ["g.txt"]
        assert _fenced(layout) == []
    finally:
        cut.instance.close()
        peer.instance.close()


@pytest.mark.parametrize("folder", ["processed", "failed", "unprocessed"])
def test_a_move_stopped_between_link_and_unlink_leaves_a_second_name_that_is_dropped(
    layout: Layout, folder: str
) -> None:
    """Without RENAME_NOREPLACE a move is link then unlink: an instance that dies between the two
    leaves the input both where it went and in its claim folder. Recovery drops the second name."""
    cut = Queue(layout, Instance(layout, CUT))
    peer = Queue(layout, Instance(layout, PEER))
    peer.atomic_moves = False  # as on GlusterFS or NFS (this test's filesystem has it)
    try:
        claim = _claim(cut, "h.txt")
        (layout.root / folder / "h.txt").write_bytes(b"another file of that name\n")
        os.link(claim.path, layout.root / folder / "h.1.txt")
        _cut_off(cut)
        report = peer.recover()
        assert report.leftovers == ["h.txt"]
        assert report.returned == []
        assert report.finished == []
        assert sorted(os.listdir(layout.root / folder)) == ["h.1.txt", "h.txt"]
        assert os.lstat(layout.root / folder / "h.1.txt").st_nlink == 1
    finally:
        cut.instance.close()
        peer.instance.close()


def test_an_input_a_producer_hard_linked_in_is_returned_as_usual(layout: Layout, tmp_path: Path) -> None:
    cut = Queue(layout, Instance(layout, CUT))
    peer = Queue(layout, Instance(layout, PEER))
    try:
        outside = tmp_path / "kept-by-producer.txt"
        outside.write_bytes(b"line\n")
        os.link(outside, layout.unprocessed / "i.txt")
        assert isinstance(cut.claim("i.txt"), Claim)
        _cut_off(cut)
        report = peer.recover()
        assert report.leftovers == []
        assert report.returned == ["i.txt"]
    finally:
        cut.instance.close()
        peer.instance.close()


def test_a_lost_lock_is_noticed_and_a_dropped_free_one_taken_again(layout: Layout) -> None:
    """The server of a network filesystem drops a cut-off client's locks without telling it: the
    check notices when another instance holds the lock, and takes a free one back."""
    cut = Queue(layout, Instance(layout, CUT), lease=LEASE)
    try:
        claim = _claim(cut, "j.txt")
        _cut_off(cut)
        assert cut.instance.is_current()  # free: taken again
        assert try_lock(cut.instance.dir / LOCK_NAME) is None  # so nobody else gets it
        _cut_off(cut)
        other = try_lock(cut.instance.dir / LOCK_NAME)
        assert other is not None
        try:
            assert not cut.instance.is_current()
            with pytest.raises(LeaseLostError):
                cut.confirm_lease(claim)
        finally:
            os.close(other)
    finally:
        cut.instance.close()


def test_a_child_forked_by_plugin_code_does_not_keep_the_instance_lock(layout: Layout) -> None:
    """A forked child (a processor's multiprocessing pool) that outlives a killed agent must not
    hold its claim folder's lock: recovery judges the instance by that lock alone."""
    instance = Instance(layout, CUT)
    (wait_r, wait_w), (ready_r, ready_w) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # the child says it runs, then lives on until the test ends
        os.write(ready_w, b".")
        os.read(wait_r, 1)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"."
        os.close(instance._lock_fd or -1)  # the agent dies: its own descriptor is gone
        fd = try_lock(instance.dir / LOCK_NAME)
        assert fd is not None, "the forked child still holds the lock"
        os.close(fd)
    finally:
        os.write(wait_w, b".")
        os.waitpid(pid, 0)
        for end in (wait_r, wait_w, ready_r, ready_w):
            os.close(end)


def test_where_moves_are_single_renames_a_second_name_is_a_producers_link_and_kept(layout: Layout) -> None:
    """With RENAME_NOREPLACE no move leaves two names: a claimed input that is also in processed/
    is a file the producer hard-linked in again, and recovery returns it to be processed."""
    cut = Queue(layout, Instance(layout, CUT))
    peer = Queue(layout, Instance(layout, PEER))
    assert peer.atomic_moves
    try:
        claim = _claim(cut, "h.txt")
        os.link(claim.path, layout.processed / "h.txt")
        _cut_off(cut)
        report = peer.recover()
        assert (report.leftovers, report.returned) == ([], ["h.txt"])
    finally:
        cut.instance.close()
        peer.instance.close()
