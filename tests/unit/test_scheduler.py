"""Scheduling: the order names are claimed in, priorities, batches, held roots and the size rules."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from foldermon.configcheck import parse_duration, parse_min_free
from foldermon.queue.layout import Layout
from foldermon.scheduler import DiskFree, Pending, low_disk, pause, read_pause, resume


def _take_all(
    pending: Pending, allowed: set[int] | None = None, files: int = 3
) -> list[tuple[int, list[str]]]:
    batches = []
    while batch := pending.take(
        lambda i: allowed is None or i in allowed, lambda i, n: 1, files=files, total_bytes=10**9
    ):
        batches.append(batch)
    return batches


def test_arrival_order_is_the_order_names_came_in(tmp_path: Path) -> None:
    """The default order: first come, first claimed."""
    pending = Pending()
    for name in ("c", "a", "b"):
        pending.add(0, name, tmp_path)
    assert _take_all(pending) == [(0, ["c", "a", "b"])]


def test_name_order_sorts_names(tmp_path: Path) -> None:
    """order = "name": by name, whatever the arrival."""
    pending = Pending("name")
    for name in ("c", "a", "b"):
        pending.add(0, name, tmp_path)
    assert _take_all(pending) == [(0, ["a", "b", "c"])]


def test_oldest_order_follows_the_time_files_entered_the_folder(tmp_path: Path) -> None:
    """order = "oldest": by the time each file was renamed in (its ctime), not by name or arrival."""
    for name in ("new", "old", "mid"):
        (tmp_path / name).write_text(name)
    for name in ("old", "mid", "new"):  # touching the inode sets its ctime now
        os.chmod(tmp_path / name, 0o600)
        time.sleep(0.01)
    pending = Pending("oldest")
    for name in ("new", "mid", "old"):
        pending.add(0, name, tmp_path)
    assert _take_all(pending) == [(0, ["old", "mid", "new"])]


def test_priority_globs_come_first_whatever_the_order(tmp_path: Path) -> None:
    """Names matching an earlier priority glob are claimed before the others, then in order."""
    pending = Pending("name", ("urgent-*", "*.csv"))
    for name in ("a.txt", "b.csv", "urgent-z.txt", "a.csv", "urgent-a.csv"):
        pending.add(0, name, tmp_path)
    assert _take_all(pending, files=10) == [(0, ["urgent-a.csv", "urgent-z.txt", "a.csv", "b.csv", "a.txt"])]


def test_a_name_is_queued_once_and_a_batch_keeps_to_one_root(tmp_path: Path) -> None:
    """A name offered twice waits once; a batch never mixes roots; a held root waits."""
    pending = Pending()
    assert pending.add(0, "x", tmp_path)
    assert not pending.add(0, "x", tmp_path)
    pending.add(1, "y", tmp_path)
    pending.add(0, "z", tmp_path)
    assert _take_all(pending, allowed={1}) == [(1, ["y"])]
    assert pending.ready(lambda i: i == 0)
    assert not pending.ready(lambda i: i == 1)
    assert _take_all(pending) == [(0, ["x", "z"])]


def test_a_reload_to_another_order_reorders_what_waits(tmp_path: Path) -> None:
    """Changing [watch] order by reload applies to the names already waiting."""
    pending = Pending()
    for name in ("c", "a", "b"):
        pending.add(0, name, tmp_path)
    pending.reorder("name", ())
    assert _take_all(pending) == [(0, ["a", "b", "c"])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        (30, 30.0),
        ("2.5h", 9000.0),
        ("", None),
        ("7w", None),
        (True, None),
        ("\uff11\uff10s", None),  # full-width digits
    ],
)
def test_durations(text: object, expected: float | None) -> None:
    """Retention ages are seconds or a number with s, m, h or d."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500MB", (500_000_000, 0.0)),
        ("2GiB", (2 << 30, 0.0)),
        ("1024", (1024, 0.0)),
        ("5%", (0, 0.05)),
        ("0%", None),
        ("100%", None),
        ("5 parsecs", None),
        ("\uff11\uff10%", None),  # full-width digits
        ("\u0665MB", None),  # an Arabic-Indic five
        ("1_0%", None),
        ("nan%", None),
    ],
)
def test_min_free_sizes(text: str, expected: tuple[int, float] | None) -> None:
    """min_free is bytes with an optional unit, or a share of the filesystem below 100%."""
    assert parse_min_free(text) == expected


def test_low_disk_says_which_folder_and_why(tmp_path: Path) -> None:
    """Below min_free for either folder the reason names it; above it nothing is said."""
    free = [DiskFree("queue", tmp_path, 10**9, 10**10), DiskFree("output", tmp_path / "out", 10**6, 10**10)]
    reason = low_disk(free, "500MB")
    assert reason is not None
    assert "output folder" in reason
    assert low_disk(free, "0.005%") is None
    assert low_disk(free, "") is None


def test_a_name_that_does_not_fit_ends_the_batch_and_stays_first(tmp_path: Path) -> None:
    """The guard's room: a batch stops before the name that would overflow it; a root whose
    first name does not fit gives way to another root; the name left is taken first later."""
    pending = Pending()
    for name, root in (("a", 0), ("b", 0), ("big", 0), ("c", 0), ("x", 1)):
        pending.add(root, name, tmp_path)
    sizes = {"a": 10, "b": 10, "big": 100, "c": 10, "x": 10}
    room = {0: 30, 1: 30}
    held: set[int] = set()
    asked: list[tuple[int, str, int, bool]] = []

    def fits(index: int, name: str, grown: int, first: bool) -> bool:
        asked.append((index, name, grown, first))
        if grown <= room[index]:
            return True
        if first:
            held.add(index)
        return False

    def take() -> tuple[int, list[str]] | None:
        return pending.take(
            lambda i: i not in held, lambda i, n: sizes[n], files=10, total_bytes=10**9, fits=fits
        )

    assert take() == (0, ["a", "b"])
    assert asked[-1] == (0, "big", 120, False)
    assert take() == (1, ["x"])  # root 0 held when its first name did not fit
    assert held == {0}
    held.clear()
    room[0] = 200
    assert take() == (0, ["big", "c"])


def test_low_disk_counts_the_next_output_against_the_output_folder(tmp_path: Path) -> None:
    """The output the next file will write must fit above min_free in the output folder only."""
    free = [DiskFree("queue", tmp_path, 10**9, 10**10), DiskFree("output", tmp_path / "out", 10**9, 10**10)]
    assert low_disk(free, "500MB", output=4 * 10**8) is None
    reason = low_disk(free, "500MB", output=6 * 10**8)
    assert reason is not None
    assert "output folder" in reason
    assert "600.0 MB" in reason
    assert low_disk([DiskFree("queue", tmp_path, 10**6, 10**10)], "500KB", output=10**12) is None


def test_pause_is_a_durable_marker_that_says_who_and_since_when(tmp_path: Path) -> None:
    """pause writes the marker once; a second pause says it was paused; resume removes it."""
    layout = Layout.for_root(tmp_path)
    assert pause(layout, "maintenance", now=1_700_000_000.0)
    assert not pause(layout, "again")
    marker = read_pause(layout)
    assert marker is not None
    assert (marker["reason"], marker["since"]) == ("maintenance", 1_700_000_000.0)
    assert "@" in marker["by"]
    assert resume(layout)
    assert read_pause(layout) is None
    assert not resume(layout)
