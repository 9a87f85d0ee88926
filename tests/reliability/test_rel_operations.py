"""Running for months, with real agents on real folders: retention, the disk guard, processing order,
pause and resume, compressed input."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import random
import signal
import time
from pathlib import Path

import pytest
import zstandard
from relkit import (
    COUNTER_CONFIG,
    events,
    leftovers,
    mounted,
    numbered,
    records,
    start_agent,
    terminate_all,
    wait_for_event,
)

from agentctl import census, drop, run_cli, wait_until, write_config

pytestmark = pytest.mark.real


def _status(root: Path, config: Path | None = None) -> dict[str, object]:
    args = ["status", "--watch", str(root), "--json"] + (["--config", str(config)] if config else [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    entry: dict[str, object] = json.loads(result.stdout)["roots"][0]
    return entry


# -- retention ---------------------------------------------------------------------------------


def test_retention_removes_old_files_with_several_instances_on_one_root(tmp_path: Path) -> None:
    """Two agents with 2-second ages: processed inputs, outputs, failed inputs with their records and
    kept records all go once old enough, newer files stay, and neither agent trips on the other."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "c.toml",
        '[retry]\nmax_attempts = 1\n[retention]\nprocessed_max_age = "2s"\noutput_max_age = "2s"\n'
        'failed_max_age = 2\n[[processors]]\ntype = "raise_on"\n',
    )
    for i in range(20):
        drop(root, f"old-{i}.txt", f"line {i}\n")
    drop(root, "bad.txt", "BAD\n")
    history = root / "failed" / ".history"
    history.mkdir(parents=True)
    (history / "gone.20260101T000000Z.error.json").write_text("{}")
    logs = [tmp_path / f"agent{i}.log" for i in range(2)]
    procs = [start_agent("run", "--watch", str(root), "--config", str(config), log=log) for log in logs]
    wait_until(lambda: len(census(root)["processed"]) == 20 and census(root)["failed"] == ["bad.txt"])
    wait_until(lambda: census(root)["processed"] == [], timeout=20, what="old files expired")
    wait_until(lambda: os.listdir(root / "output") == [], timeout=10)
    wait_until(lambda: census(root)["failed"] == [] and os.listdir(history) == [], timeout=10)
    drop(root, "young.txt", "fresh\n")
    wait_until(lambda: census(root)["processed"] == ["young.txt"])
    time.sleep(1.0)  # younger than the age: kept
    assert census(root)["processed"] == ["young.txt"]
    assert os.listdir(root / "output") == ["young_processed.txt"]
    wait_until(lambda: census(root)["processed"] == [], timeout=10, what="the young file expired in turn")
    assert terminate_all(procs) == [0, 0]
    assert leftovers(root) == []
    assert not [
        r for log in logs for r in records(log) if r.get("level") == "error" and "retention" in r["event"]
    ]
    summaries = events(logs, "retention removed old files")
    assert summaries


def test_gc_dry_run_lists_what_gc_then_removes(tmp_path: Path) -> None:
    """gc --dry-run says what would go and removes nothing; gc removes exactly that."""
    root = tmp_path / "root"
    drop(root, "a.txt", "x\n")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    config = write_config(tmp_path / "c.toml", '[retention]\nprocessed_max_age = "1s"\noutput_max_age = 1\n')
    time.sleep(1.2)
    dry = run_cli("gc", "--watch", str(root), "--config", str(config), "--dry-run")
    assert dry.returncode == 0
    assert f"would remove {root / 'processed' / 'a.txt'}" in dry.stdout
    assert (root / "processed" / "a.txt").exists()
    real = run_cli("gc", "--watch", str(root), "--config", str(config))
    assert f"removed {root / 'output' / 'a_processed.txt'}" in real.stdout
    assert census(root)["processed"] == []
    assert os.listdir(root / "output") == []


# -- disk guard --------------------------------------------------------------------------------


def test_a_full_disk_holds_claiming_and_it_resumes_once_space_returns(tmp_path: Path) -> None:
    """A small tmpfs filled below min_free: files wait (nothing fails, no attempt counted), status
    and the log say why; freeing space lets them through."""
    with mounted(tmp_path / "fs", options="size=8m") as fs:
        root = fs / "root"
        config = write_config(tmp_path / "c.toml", '[guard]\nmin_free = "3MB"\n' + COUNTER_CONFIG)
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        wait_for_event(log, "watching")
        ballast = fs / "ballast"
        ballast.write_bytes(b"\0" * (6 << 20))
        wait_for_event(log, "claiming held; files wait in unprocessed/")
        for i in range(5):
            drop(root, f"w{i}.txt", f"wait {i}\n")
        time.sleep(2)
        assert census(root)["unprocessed"] == [f"w{i}.txt" for i in range(5)]
        status = _status(root, config)
        assert status["paused"] is True
        assert "low disk" in str(status["paused_reason"])
        ballast.unlink()
        wait_until(lambda: len(census(root)["processed"]) == 5, timeout=10, what="files after space returned")
        assert terminate_all([proc]) == [0]
        assert census(root)["failed"] == []
        assert not list((root / "unprocessed").glob(".*.attempts"))
        assert events([log], "claiming resumed")
        assert (root / "output" / "w0_processed.txt").read_bytes() == numbered(b"wait 0\n")


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _lowest_free(path: Path, seconds: float, every: float) -> int:
    """The least free space of ``path``'s filesystem seen, looking every ``every`` s for ``seconds``."""
    lowest = _free(path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lowest = min(lowest, _free(path))
        time.sleep(every)
    return lowest


def _big_bz2(root: Path) -> bytes:
    """A bzip2 input of 14 MB of text (bzip2 declares no size) in ``root``; its text."""
    text = b"the same line of text again\n" * 500_000
    (root / "unprocessed").mkdir(parents=True)
    (root / "unprocessed" / "big.txt.bz2").write_bytes(bz2.compress(text))
    return text


def test_a_backlog_never_takes_the_disk_below_min_free(tmp_path: Path) -> None:
    """Thirty inputs whose outputs would take the disk well below min_free: the agent claims only
    what fits above it (weighed before each batch, not once a cycle), so free space never falls
    below min_free; the rest waits in unprocessed/, nothing fails, and the hold is said."""
    body = "".join(f"a line of a large enough input, number {i}\n" for i in range(7000))  # ~300 KB
    with mounted(tmp_path / "fs", options="size=16m") as fs:
        root = fs / "root"
        for i in range(30):
            drop(root, f"in{i:02}.txt", body)
        upper = '[[processors]]\ntype = "uppercase"\n'  # outputs as large as their inputs
        config = write_config(tmp_path / "c.toml", '[guard]\nmin_free = "4MB"\n' + upper)
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        lowest = _lowest_free(fs, 8, 0.005)
        assert terminate_all([proc]) == [0]
        done = census(root)
        assert lowest >= 4_000_000, f"free space fell to {lowest} bytes"
        assert 0 < len(done["processed"]) < 30
        assert len(done["unprocessed"]) == 30 - len(done["processed"])
        assert done["failed"] == []
        assert done["underprocess"] == []
        held = events([log], "claiming held; files wait in unprocessed/")
        assert held
        assert "output needs about" in held[0]["reason"], held


def test_the_guard_reads_the_disk_when_it_claims(tmp_path: Path) -> None:
    """A file dropped right after the disk fell below min_free is not claimed (free space is read
    before each batch, not sampled once a second); three times over, each time released by
    freeing the space."""
    with mounted(tmp_path / "fs", options="size=8m") as fs:
        root = fs / "root"
        config = write_config(tmp_path / "c.toml", '[guard]\nmin_free = "3MB"\n' + COUNTER_CONFIG)
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        wait_for_event(log, "watching")
        ballast = fs / "ballast"
        for turn in range(3):
            ballast.write_bytes(b"\0" * (6 << 20))
            drop(root, f"t{turn}.txt", f"turn {turn}\n")
            time.sleep(1.5)
            assert census(root)["unprocessed"] == [f"t{turn}.txt"], f"claimed below min_free (turn {turn})"
            ballast.unlink()
            wait_until(lambda turn=turn: f"t{turn}.txt" in census(root)["processed"], timeout=10)
        assert terminate_all([proc]) == [0]
        assert census(root)["failed"] == []


def test_a_compressed_input_is_weighed_by_what_it_expands_to(tmp_path: Path) -> None:
    """A small .gz whose text would not fit above min_free waits in unprocessed/ and the hold
    names its output; removed by hand, the hold ends by itself and later files run."""
    with mounted(tmp_path / "fs", options="size=24m") as fs:
        root = fs / "root"
        (root / "unprocessed").mkdir(parents=True)
        (fs / "ballast").write_bytes(b"\0" * 8_000_000)  # it would fit once that is gone
        with gzip.open(root / "unprocessed" / "huge.txt.gz", "wb") as f:
            f.write(b"the same line again and again\n" * 450_000)  # 13.5 MB of text, ~40 KB stored
        config = write_config(tmp_path / "c.toml", '[guard]\nmin_free = "4MB"\n' + COUNTER_CONFIG)
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        record = wait_for_event(log, "claiming held; files wait in unprocessed/")
        assert "output needs about 13.5 MB" in record["reason"], record
        time.sleep(1.5)
        assert census(root)["unprocessed"] == ["huge.txt.gz"]
        (root / "unprocessed" / "huge.txt.gz").unlink()
        wait_for_event(log, "claiming resumed")
        drop(root, "small.txt", "small\n")
        wait_until(lambda: census(root)["processed"] == ["small.txt"], timeout=10)
        assert terminate_all([proc]) == [0]
        assert not [n for n in os.listdir(root / "output") if n.startswith("huge")]


def test_a_file_that_would_not_fit_on_an_empty_disk_does_not_hold_the_root(tmp_path: Path) -> None:
    """What a file is weighed by can exceed the whole output filesystem: a gzip bomb's header, a
    corrupt zstd frame claiming a petabyte, a large input a filter shrinks. None holds the root
    for good: the bomb fails at max_input_bytes, the corrupt file as corrupt, the large input is
    processed, and the small file behind them too."""
    with mounted(tmp_path / "out", options="size=16m") as out:
        root = tmp_path / "root"
        (root / "unprocessed").mkdir(parents=True)
        with gzip.open(root / "unprocessed" / "a-bomb.txt.gz", "wb") as f:
            f.write(b"\0" * 60_000_000)  # declares 60 MB
        frame = zstandard.ZstdCompressor().compress(b"x\n")
        # A frame header claiming 2**50 bytes (8-byte size field), then garbage.
        (root / "unprocessed" / "b-corrupt.txt.zst").write_bytes(
            frame[:4] + bytes([0xC0]) + (1 << 50).to_bytes(8, "little") + b"garbage!" * 3
        )
        drop(root, "c-large.txt", "".join(f"line {i} of a large input\n" for i in range(800_000)))
        drop(root, "d-small.txt", "small\n")
        config = write_config(
            tmp_path / "c.toml",
            f'[output]\ndir = "{out}"\n[guard]\nmin_free = "4MB"\n[pipeline]\nmax_input_bytes = 30000000\n'
            '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "filter"\npattern = "^line 7 "\nregex = true\n',
        )
        once = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=120)
        assert once.returncode == 1, once.stderr  # files went to failed/
        state = census(root)
        assert state["processed"] == ["c-large.txt", "d-small.txt"], state
        assert sorted(n for n in state["failed"] if not n.endswith(".json")) == [
            "a-bomb.txt.gz",
            "b-corrupt.txt.zst",
        ], state
        assert (out / "c-large_processed.txt").read_text() == "line 7 of a large input\n"


def test_an_input_on_the_output_disk_is_not_counted_as_room_it_could_free(tmp_path: Path) -> None:
    """Root and output on one 8 MB disk: a 6 MB input a filter shrinks to one line could never
    have 6 MB of room beside itself, so it is not waited for: it runs (and the file behind it)."""
    with mounted(tmp_path / "fs", options="size=8m") as fs:
        root = fs / "root"
        drop(root, "big.txt", "".join(f"line {i} of a large input\n" for i in range(250_000)))
        drop(root, "small.txt", "line 7 small\n")
        config = write_config(
            tmp_path / "c.toml",
            '[guard]\nmin_free = "1MB"\n[[processors]]\ntype = "filter"\npattern = "^line 7 "\nregex = true\n',
        )
        once = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=60)
        assert once.returncode == 0, once.stderr
        assert census(root)["processed"] == ["big.txt", "small.txt"]
        assert (root / "output" / "big_processed.txt").read_text() == "line 7 of a large input\n"


def test_an_output_the_weighing_cannot_foresee_stops_at_min_free_and_waits(tmp_path: Path) -> None:
    """A bzip2 input (it declares no size) expanding past the room above min_free: its output
    stops at the guard (the disk is read as it is written), the file waits without a counted
    attempt and is not run again until there is room for what it wrote (one attempt, no loop);
    run --once then gives it back and exits 75."""
    with mounted(tmp_path / "out", options="size=16m") as out:
        root = tmp_path / "root"
        _big_bz2(root)
        config = write_config(
            tmp_path / "c.toml",
            f'[output]\ndir = "{out}"\n[guard]\nmin_free = "6MB"\n[retry]\nbackoff = 0.2\n',
        )
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        lowest = _lowest_free(out, 6, 0.005)
        assert terminate_all([proc]) == [0]
        assert lowest >= 6_000_000 - (1 << 20), f"free space fell to {lowest} bytes"
        tries = events([log], "attempt failed; will retry")
        assert len(tries) == 1, tries
        assert "fell below [guard] min_free" in tries[0]["error"]
        assert census(root)["unprocessed"] == ["big.txt.bz2"]
        counter = json.loads((root / "unprocessed" / ".big.txt.bz2.attempts").read_text())
        assert counter["attempts"] == 0  # no attempt counted; the room it waits for is kept
        assert counter["room_needed"] >= 1 << 20
        assert os.listdir(out) == []
        once = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=60)
        assert once.returncode == 75, once.stderr
        assert census(root)["unprocessed"] == ["big.txt.bz2"]


def test_a_pipeline_that_expands_its_input_is_stopped_within_a_slice_of_output(tmp_path: Path) -> None:
    """Short lines made 1,000 bytes long: one batch of input makes megabytes of output, and the
    guard still stops it within about half a MiB below min_free (free space is read every 256
    KiB written, not once a batch)."""
    with mounted(tmp_path / "out", options="size=40m") as out:
        root = tmp_path / "root"
        drop(root, "wide.txt", "".join(f"{i}\n" for i in range(30_000)))  # 30 MB once widened
        config = write_config(
            tmp_path / "c.toml",
            f'[output]\ndir = "{out}"\n[guard]\nmin_free = "20MB"\n'
            '[[processors]]\ntype = "line_counter"\nformat = "{line:>1000}"\n',
        )
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        lowest = _lowest_free(out, 5, 0.001)
        assert terminate_all([proc]) == [0]
        assert lowest >= 20_000_000 - (1 << 20), f"free space fell to {lowest} bytes"
        assert events([log], "attempt failed; will retry")
        assert census(root)["unprocessed"] == ["wide.txt"]


def test_a_file_waiting_for_room_is_not_run_again_by_a_restart(tmp_path: Path) -> None:
    """A file whose attempt the guard stopped keeps, on disk, how much room it waits for: after a
    SIGKILL (three times over) or a SIGTERM, the next agent holds the root for it instead of
    running it again, so no restart counts an attempt or quarantines it; once there is room it
    runs."""
    with mounted(tmp_path / "out", options="size=16m") as out:
        root = tmp_path / "root"
        text = _big_bz2(root)
        config = write_config(
            tmp_path / "c.toml",
            f'[output]\ndir = "{out}"\n[guard]\nmin_free = "6MB"\n[retry]\nmax_attempts = 2\n',
        )
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        wait_for_event(log, "attempt failed; will retry")
        for turn in range(4):
            if turn < 3:
                proc.kill()
                proc.wait()
            else:
                assert terminate_all([proc]) == [0]
            log = tmp_path / f"agent{turn}.log"
            proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
            held = wait_for_event(log, "claiming held; files wait in unprocessed/")
            assert "output needs about" in held["reason"]
            assert not events([log], "attempt failed; will retry")
        assert census(root)["unprocessed"] == ["big.txt.bz2"]
        assert census(root)["failed"] == []
        config.write_text(config.read_text().replace('"6MB"', '"1MB"'))
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: census(root)["processed"] == ["big.txt.bz2"],
            timeout=30,
            what="processed once there is room",
        )
        assert terminate_all([proc]) == [0]
        assert (out / "big_processed.txt").read_bytes() == text


def test_a_held_file_changed_or_excluded_is_weighed_again(tmp_path: Path) -> None:
    """The file that did not fit holds the root only as it was: cut short it is weighed again and
    runs; a later one excluded by a reload no longer holds anything."""
    with mounted(tmp_path / "out", options="size=24m") as out:
        root = tmp_path / "root"
        (out / ".ballast").write_bytes(b"\0" * 8_000_000)  # a 10 MB output would fit without it
        config = write_config(tmp_path / "c.toml", f'[output]\ndir = "{out}"\n[guard]\nmin_free = "8MB"\n')
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        wait_for_event(log, "watching")
        big = "".join(f"line {i} of a file too big for the room\n" for i in range(250_000))  # ~10 MB
        drop(root, "big.txt", big)
        wait_for_event(log, "claiming held; files wait in unprocessed/")
        os.truncate(root / "unprocessed" / "big.txt", 1000)
        drop(root, "small.txt", "small\n")
        wait_until(lambda: sorted(census(root)["processed"]) == ["big.txt", "small.txt"], timeout=15)
        drop(root, "huge.txt", big)
        wait_until(lambda: len(events([log], "claiming held; files wait in unprocessed/")) == 2, timeout=15)
        config.write_text(config.read_text() + '[watch]\nexclude = [".*", "huge*"]\n')
        proc.send_signal(signal.SIGHUP)
        wait_for_event(log, "reloaded")
        drop(root, "after.txt", "after\n")
        wait_until(
            lambda: "after.txt" in census(root)["processed"], timeout=15, what="a file after the reload"
        )
        assert terminate_all([proc]) == [0]
        assert census(root)["unprocessed"] == ["huge.txt"]


def test_run_once_leaves_what_a_full_disk_cannot_take_and_exits_75(tmp_path: Path) -> None:
    """The output disk too full for one output (the guard not holding: it has room for the
    small ones): run --once processes the rest, gives the big file back to unprocessed/ with no
    attempt counted, and ends with 75 instead of waiting for space."""
    with mounted(tmp_path / "out", options="size=1m") as out:
        root = tmp_path / "root"
        config = write_config(
            tmp_path / "c.toml", f'[output]\ndir = "{out}"\n[retry]\nbackoff = 0.2\n' + COUNTER_CONFIG
        )
        drop(root, "big.txt", "".join(f"a long enough line number {i}\n" for i in range(60_000)))
        drop(root, "small.txt", "small\n")
        done = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=60)
        assert done.returncode == 75, done.stderr
        assert census(root)["processed"] == ["small.txt"]
        assert census(root)["unprocessed"] == ["big.txt"]
        assert census(root)["underprocess"] == []
        assert not list((root / "unprocessed").glob(".*.attempts"))
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_run_once_on_a_full_root_exits_75_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The root's own disk full: run --once cannot even take its claim folder. It says so and
    ends with 75 (try again later), the file untouched and no half-built claim folder left."""
    with mounted(tmp_path / "fs", options="size=1m") as fs:
        root = fs / "root"
        drop(root, "a.txt", "a\n")
        assert run_cli("run", "--watch", str(root), "--once").returncode == 0  # folders made
        drop(root, "b.txt", "b\n")
        _fill(fs)
        done = run_cli("run", "--watch", str(root), "--once", timeout=60)
        assert done.returncode == 75, done.stderr
        assert "No space left on device" in done.stderr
        assert census(root)["unprocessed"] == ["b.txt"]
        assert [n for n in os.listdir(root / "underprocess") if n.startswith(".new-")] == []


def test_run_once_stops_waiting_when_the_error_record_cannot_be_written(tmp_path: Path) -> None:
    """A failing file whose attempt count or error record the full disk refuses (which one
    depends on where the last page goes): run --once tries max_attempts times in a row, then
    ends with 75, the file back in unprocessed/ (it used to try forever)."""
    with mounted(tmp_path / "fs", options="size=1m") as fs:
        root = fs / "root"
        config = write_config(
            tmp_path / "c.toml",
            f'[output]\ndir = "{tmp_path / "out"}"\n[retry]\nbackoff = 0.05\nmax_attempts = 2\n'
            '[[processors]]\ntype = "raise_on"\n',
        )
        (root / "unprocessed").mkdir(parents=True)
        assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
        drop(root, "bad.txt", "BAD\n")
        _fill(fs)
        os.truncate(fs / "filler", (fs / "filler").stat().st_size - 4096)  # room for the claim's lock
        done = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=60)
        assert done.returncode == 75, done.stderr
        assert census(root)["unprocessed"] == ["bad.txt"]


def _fill(fs: Path) -> None:
    """Fill a tmpfs to the last byte."""
    with contextlib.suppress(OSError), (fs / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()


def test_run_once_leaves_a_file_still_open_for_writing_and_exits_75(tmp_path: Path) -> None:
    """A producer pausing mid-file with it open: run --once does not take it (the kernel says it
    is open for writing), ends with 75, and takes it whole in the run after it was closed."""
    root = tmp_path / "root"
    drop(root, "done.txt", "done\n")
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    with (root / "unprocessed" / "open.txt").open("w") as producer:
        producer.write("part1\n")
        producer.flush()
        os.utime(root / "unprocessed" / "open.txt", (1, 1))  # old: settle alone would take it
        done = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
        assert done.returncode == 75, done.stderr
        assert census(root)["processed"] == ["done.txt"]
        assert census(root)["unprocessed"] == ["open.txt"]
        producer.write("part2\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert (root / "output" / "open_processed.txt").read_bytes() == numbered(b"part1\npart2\n")


def test_run_once_waits_for_a_file_appended_between_closes_to_settle(tmp_path: Path) -> None:
    """A producer that opens, appends and closes every 0.3 s (as a log appender does): no
    process has the file open when the scan looks, so only `settle` tells it is not done;
    run --once waits for it to settle and takes it whole."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", f"[watch]\nsettle = 1.5\n{COUNTER_CONFIG}")
    slow = root / "unprocessed" / "slow.log"
    drop(root, "slow.log", "part0\n")
    agent = start_agent(
        "run", "--watch", str(root), "--once", "--config", str(config), log=tmp_path / "agent.log"
    )
    for i in range(1, 8):
        time.sleep(0.3)
        with slow.open("a") as producer:
            producer.write(f"part{i}\n")
    assert agent.wait(timeout=60) == 0
    body = "".join(f"part{i}\n" for i in range(8)).encode()
    assert (root / "output" / "slow_processed.log").read_bytes() == numbered(body)
    assert census(root)["unprocessed"] == []


def test_run_once_leaves_a_file_that_keeps_changing_and_exits_75(tmp_path: Path) -> None:
    """A producer appending every 0.3 s, closing between writes, for longer than run --once waits
    for a file to settle (twice settle and a second): the run ends with 75, the file left for a
    later run, instead of waiting as long as the producer writes."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", f"[watch]\nsettle = 1\n{COUNTER_CONFIG}")
    drop(root, "grows.log", "part0\n")
    drop(root, "done.txt", "done\n")
    agent = start_agent(
        "run", "--watch", str(root), "--once", "--config", str(config), log=tmp_path / "a.log"
    )
    started = time.monotonic()
    i = 0
    while agent.poll() is None and time.monotonic() - started < 20:
        i += 1
        with (root / "unprocessed" / "grows.log").open("a") as producer:
            producer.write(f"part{i}\n")
        time.sleep(0.3)
    assert agent.wait(5) == 75
    assert time.monotonic() - started < 10
    assert census(root)["processed"] == ["done.txt"]
    assert census(root)["unprocessed"] == ["grows.log"]


def test_run_once_takes_up_the_claims_of_an_agent_that_dies_during_it(tmp_path: Path) -> None:
    """A serving agent holding a long file is SIGKILLed while run --once drains the rest: the
    run recovers its claim before it ends, processes the file and exits 0."""
    root = tmp_path / "root"
    slow = write_config(tmp_path / "slow.toml", '[[processors]]\ntype = "sleepy"\nseconds = 30\n')
    drop(root, "long.txt", "held by the agent that dies\n")
    agent = start_agent("run", "--watch", str(root), "--config", str(slow), log=tmp_path / "a.log")
    wait_until(lambda: census(root)["underprocess"] == ["long.txt"], timeout=20)
    for i in range(5):
        drop(root, f"f{i}.txt", f"{i}\n")
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "sleepy"\nseconds = 0.2\n')
    once = start_agent("run", "--watch", str(root), "--once", "--config", str(config), log=tmp_path / "b.log")
    wait_until(lambda: census(root)["processed"], timeout=20)
    agent.kill()
    agent.wait(10)
    assert once.wait(60) == 0, (tmp_path / "b.log").read_text()[-2000:]
    assert census(root)["processed"] == ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt", "long.txt"]


# -- order -------------------------------------------------------------------------------------


def _processed_order(log: Path) -> list[str]:
    return [r["file"] for r in records(log) if r.get("event") == "file processed"]


@pytest.mark.parametrize("order", ["name", "oldest"])
def test_a_backlog_of_ten_thousand_is_drained_in_the_asked_order(tmp_path: Path, order: str) -> None:
    """10,000 files renamed in, in shuffled name order: `name` drains them sorted by name, `oldest`
    by the time each entered unprocessed/; priority globs come first either way."""
    root = tmp_path / "root"
    names = [f"f{i:05}.txt" for i in range(10_000)]
    rng = random.Random(3)
    rng.shuffle(names)
    entered: dict[str, int] = {}
    for name in names:
        drop(root, name, "x\n")
        entered[name] = os.lstat(root / "unprocessed" / name).st_ctime_ns
    config = write_config(
        tmp_path / "c.toml", f'[watch]\norder = "{order}"\npriority = ["f09*"]\nsettle = 0\n'
    )
    log = tmp_path / "agent.log"
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config), env={}, timeout=300)
    assert result.returncode == 0
    log.write_text(result.stdout)
    done = _processed_order(log)
    assert sorted(done) == sorted(names)
    urgent = [n for n in done if n.startswith("f09")]
    assert done[: len(urgent)] == urgent, "a priority file came after another"
    rest = done[len(urgent) :]
    if order == "name":
        assert rest == sorted(rest)
    else:
        times = [entered[n] for n in rest]
        assert times == sorted(times)


# -- pause -------------------------------------------------------------------------------------


def test_a_pause_by_one_instance_holds_every_instance_and_resume_lets_them_go(tmp_path: Path) -> None:
    """foldermon-agent pause: both agents stop claiming within a second, status says who and since
    when, the pause survives a restart; resume: the files go within a second."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    logs = [tmp_path / f"a{i}.log" for i in range(2)]
    procs = [start_agent("run", "--watch", str(root), log=log) for log in logs]
    for log in logs:
        wait_for_event(log, "watching")
    paused = run_cli("pause", "--watch", str(root), "--reason", "disk swap")
    assert paused.returncode == 0
    assert "paused" in paused.stdout
    for log in logs:
        wait_for_event(log, "claiming held; files wait in unprocessed/", timeout=5)
    for i in range(6):
        drop(root, f"p{i}.txt", f"{i}\n")
    time.sleep(1.5)
    assert len(census(root)["unprocessed"]) == 6
    status = _status(root)
    assert status["paused"] is True
    assert "disk swap" in str(status["paused_reason"])
    assert "since" in str(status["paused_reason"])
    # A restart keeps the pause: it is in the root, not in a process.
    terminate_all(procs[:1])
    procs[0] = start_agent("run", "--watch", str(root), log=logs[0])
    wait_for_event(logs[0], "watching")
    time.sleep(1.5)
    assert len(census(root)["unprocessed"]) == 6
    started = time.monotonic()
    assert run_cli("resume", "--watch", str(root)).returncode == 0
    wait_until(lambda: len(census(root)["processed"]) == 6, timeout=10)
    assert time.monotonic() - started < 5
    assert terminate_all(procs) == [0, 0]
    assert _status(root)["paused"] is False


def test_a_pause_holds_within_a_file_not_a_claim_batch(tmp_path: Path) -> None:
    """Slow files claimed 16 at a time: after a pause only the file being processed finishes;
    the rest of its claim batch goes back to unprocessed/ and waits; resume lets them go."""
    root = tmp_path / "root"
    for i in range(20):
        drop(root, f"s{i:02}.txt", f"{i}\n")
    config = write_config(tmp_path / "s.toml", '[[processors]]\ntype = "sleepy"\nseconds = 0.3\n')
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log")
    wait_until(lambda: len(census(root)["processed"]) >= 2)
    assert run_cli("pause", "--watch", str(root)).returncode == 0
    time.sleep(1.0)
    done = len(census(root)["processed"])
    time.sleep(2.0)
    assert len(census(root)["processed"]) == done, "files were still processed after the pause"
    assert census(root)["underprocess"] == []
    once = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert once.returncode == 75, "files left waiting in a paused root: try again later"
    assert run_cli("resume", "--watch", str(root)).returncode == 0
    wait_until(lambda: len(census(root)["processed"]) == 20, timeout=30)
    assert terminate_all([proc]) == [0]


# -- compressed input ----------------------------------------------------------------------------

PAYLOAD = b"".join(b"record %d with some text,IMPORTANT\n" % i for i in range(20_000))
COMPRESS = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
}
DECOMPRESS = {
    "gz": gzip.decompress,
    "zst": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_each_compression_round_trips_byte_exact(tmp_path: Path, suffix: str) -> None:
    """A compressed input gives the same output as the same data plain, named without the
    compression suffix; the format is found by its magic bytes, not its name."""
    root = tmp_path / "root"
    drop(root, "plain.csv", PAYLOAD)
    drop(root, f"packed.csv.{suffix}", COMPRESS[suffix](PAYLOAD))
    drop(root, "misnamed.csv", COMPRESS[suffix](PAYLOAD))  # no suffix: still recognised
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    expected = (root / "output" / "plain_processed.csv").read_bytes()
    assert expected == numbered(PAYLOAD)
    assert (root / "output" / "packed_processed.csv").read_bytes() == expected
    assert (root / "output" / "misnamed_processed.csv").read_bytes() == expected


def _skippable(data: bytes) -> bytes:
    """A zstd skippable frame holding ``data`` (as pzstd writes one before its frames)."""
    return (0x184D2A50).to_bytes(4, "little") + len(data).to_bytes(4, "little") + data


def test_padded_and_multi_part_streams_are_read_as_the_tools_read_them(tmp_path: Path) -> None:
    """xz with stream padding (zero bytes in fours, after and between streams), zstd beginning
    with skippable frames (pzstd) and several frames: all read whole, as xz -d and zstd -d do."""
    root = tmp_path / "root"
    half = len(PAYLOAD) // 2
    xz_parts = lzma.compress(PAYLOAD[:half]) + b"\0" * 8 + lzma.compress(PAYLOAD[half:])
    zst = zstandard.ZstdCompressor()
    forms = {
        "padded.xz": lzma.compress(PAYLOAD) + b"\0" * 4,
        "parts.xz": xz_parts + b"\0" * 12,
        "pzstd.zst": _skippable(b"\x10\x00\x00\x00")
        + zst.compress(PAYLOAD[:half])
        + zst.compress(PAYLOAD[half:]),
        "skips.zst": _skippable(b"") + _skippable(b"meta") + zst.compress(PAYLOAD),
    }
    for name, data in forms.items():
        drop(root, name, data)
    drop(root, "skip-then-text.txt", _skippable(b"x") + b"plain text\n")  # no zstd frame follows
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert census(root)["processed"] == sorted([*forms, "skip-then-text.txt"])
    for name in forms:
        stem = name.rsplit(".", 1)[0]
        assert (root / "output" / f"{stem}_processed").read_bytes() == numbered(PAYLOAD), name
    assert (root / "output" / "skip-then-text_processed.txt").read_bytes().endswith(b"plain text\n")


def test_compressed_data_under_another_format_s_suffix_is_named_as_plain(tmp_path: Path) -> None:
    """zstd data named .gz: read as zstd, its output named without the (wrong) suffix, written plain."""
    root = tmp_path / "root"
    drop(root, "data.csv.gz", COMPRESS["zst"](PAYLOAD))
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert (root / "output" / "data_processed.csv").read_bytes() == numbered(PAYLOAD)


def test_plain_text_starting_like_a_magic_is_plain(tmp_path: Path) -> None:
    """Text that begins with a format's first bytes ("BZh", gzip's 1f 8b without its method
    byte) is not taken for compressed data: only a whole header is."""
    root = tmp_path / "root"
    texts = {
        "notes.txt": b"BZh is the start of this line\nsecond\n",
        "bzh9.txt": b"BZh9 text\n",
        "gz.bin": b"\x1f\x8bx\n",
    }
    for name, data in texts.items():
        drop(root, name, data)
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert census(root)["processed"] == sorted(texts)
    assert (root / "output" / "notes_processed.txt").read_bytes() == texts["notes.txt"]


@pytest.mark.parametrize("suffix", ["gz", "zst"])
def test_outputs_can_be_compressed_like_their_input(tmp_path: Path, suffix: str) -> None:
    """[output] compress = "same": a .gz input gives a .gz output, a plain one a plain output."""
    root = tmp_path / "root"
    drop(root, f"data.csv.{suffix}", COMPRESS[suffix](PAYLOAD))
    drop(root, "plain.csv", PAYLOAD)
    config = write_config(tmp_path / "c.toml", '[output]\ncompress = "same"\n' + COUNTER_CONFIG)
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    packed = (root / "output" / f"data_processed.csv.{suffix}").read_bytes()
    assert DECOMPRESS[suffix](packed) == numbered(PAYLOAD)
    assert (root / "output" / "plain_processed.csv").read_bytes() == numbered(PAYLOAD)


def test_corrupt_truncated_and_bomb_inputs_fail_with_their_reason(tmp_path: Path) -> None:
    """Inputs cut short in each format, a corrupt zstd and a bomb past max_input_bytes each go to
    failed/ at once with a reason naming where it broke; a good file beside them is processed."""
    root = tmp_path / "root"
    packed = gzip.compress(PAYLOAD)
    drop(root, "cut.csv.gz", packed[: len(packed) // 2])
    for suffix, compress in COMPRESS.items():
        whole = compress(PAYLOAD)
        drop(root, f"cut.{suffix}.csv.{suffix}", whole[: len(whole) * 2 // 3])
    broken = bytearray(zstandard.ZstdCompressor().compress(PAYLOAD))
    broken[20:40] = b"\xff" * 20
    drop(root, "broken.csv.zst", bytes(broken))
    drop(root, "garbage.csv.xz", lzma.compress(PAYLOAD) + b"\0" * 4 + b"not a stream")
    drop(root, "bomb.txt.gz", gzip.compress(b"\n" * (20 << 20)))
    drop(root, "magic.gz", packed[:2])  # cut to the magic alone: still gzip cut short, not text
    drop(root, "magic.bz2", bz2.compress(PAYLOAD)[:4])
    drop(root, "good.csv.gz", packed)
    config = write_config(tmp_path / "c.toml", "[pipeline]\nmax_input_bytes = 4000000\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    found = census(root)
    assert found["processed"] == ["good.csv.gz"]
    cut = [f"cut.{suffix}.csv.{suffix}" for suffix in COMPRESS]
    failed = ["bomb.txt.gz", "broken.csv.zst", "cut.csv.gz", "garbage.csv.xz", "magic.bz2", "magic.gz", *cut]
    assert found["failed"] == sorted(failed)

    def reason(name: str) -> str:
        record = json.loads((root / "failed" / f".{name}.error.json").read_text())
        assert record["attempts"] == 1
        return str(record["message"])

    assert "truncated gzip data at compressed offset" in reason("cut.csv.gz")
    assert "truncated gzip data" in reason("magic.gz")
    assert "bzip2 data" in reason("magic.bz2")
    for name in cut:
        assert "data at compressed offset" in reason(name), reason(name)
    assert "truncated zstd data at compressed offset" in reason("cut.zst.csv.zst")
    assert "corrupt zstd data at compressed offset" in reason("broken.csv.zst")
    assert "corrupt xz data at compressed offset" in reason("garbage.csv.xz")  # not a silent end
    assert "expands past max_input_bytes (4000000 bytes)" in reason("bomb.txt.gz")
