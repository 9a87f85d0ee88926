"""The running agent picks files up as they arrive, in inotify and in poll mode."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentctl import census, drop, log_records, start, stop, wait_until, write_config

MODES = ("inotify", "poll")


@pytest.fixture(params=MODES)
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A running agent on a fresh root in the given watch mode; yields (root, log)."""
    root = tmp_path / "root"
    extra = getattr(request, "param_extra", "")
    config = write_config(
        tmp_path / "a.toml",
        f'[watch]\nmode = "{request.param}"\npoll_interval = 0.05\nsettle = 0.3\n{extra}',
    )
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)) if log.exists() else False)
    yield root, log
    assert stop(proc) == 0


def test_file_renamed_in_is_processed(agent: tuple[Path, Path]) -> None:
    """A file renamed into unprocessed/ while the agent runs is processed."""
    root, _ = agent
    drop(root, "new.txt", "hello\n")
    wait_until(lambda: census(root)["processed"] == ["new.txt"])
    assert (root / "output" / "new_processed.txt").read_text() == "hello\n"


def test_file_written_in_place_is_not_taken_before_it_is_complete(agent: tuple[Path, Path]) -> None:
    """A file written slowly in place is taken only after it is closed (inotify) or settled (poll)."""
    root, _ = agent
    path = root / "unprocessed" / "slow.txt"
    with path.open("w") as f:
        for i in range(8):
            f.write(f"part {i}\n")
            f.flush()
            time.sleep(0.1)
            assert path.exists(), "taken while still being written"
    wait_until(lambda: census(root)["processed"] == ["slow.txt"])
    expected = "".join(f"part {i}\n" for i in range(8))
    assert (root / "output" / "slow_processed.txt").read_text() == expected


def test_excluded_names_are_left_alone(agent: tuple[Path, Path]) -> None:
    """Names matching the exclude globs (.*, *.tmp, *.part, *.swp) are never taken."""
    root, _ = agent
    for name in (".hidden", "a.tmp", "b.part", "c.swp"):
        drop(root, name, "x\n")
    drop(root, "real.txt", "x\n")
    wait_until(lambda: census(root)["processed"] == ["real.txt"])
    assert sorted(os.listdir(root / "unprocessed")) == [".hidden", "a.tmp", "b.part", "c.swp"]


def test_unprocessed_folder_recreated_is_watched_again(agent: tuple[Path, Path]) -> None:
    """unprocessed/ deleted and recreated while running: new files in it are still processed."""
    root, _ = agent
    (root / "unprocessed").rmdir()
    time.sleep(0.3)
    (root / "unprocessed").mkdir()
    drop(root, "after.txt", "x\n")
    wait_until(lambda: census(root)["processed"] == ["after.txt"], timeout=40)


@pytest.mark.parametrize("mode", MODES)
def test_done_suffix_mode_waits_for_the_marker(tmp_path: Path, mode: str) -> None:
    """With done_suffix, x is taken only once x.done exists; the marker is removed afterwards."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "a.toml",
        f'[watch]\nmode = "{mode}"\npoll_interval = 0.05\nsettle = 0.1\ndone_suffix = ".done"\n',
    )
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        drop(root, "data.csv", "1\n")
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        time.sleep(0.5)
        assert census(root)["unprocessed"] == ["data.csv"]
        drop(root, "data.csv.done", "")
        wait_until(lambda: census(root)["processed"] == ["data.csv"])
        wait_until(lambda: not (root / "unprocessed" / "data.csv.done").exists())
    finally:
        assert stop(proc) == 0


def test_sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one(tmp_path: Path) -> None:
    """SIGHUP applies a valid new pipeline; an invalid one is rejected with a logged reason."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", '[[processors]]\ntype = "uppercase"\n')
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        config.write_text('[[processors]]\ntype = "lowercase"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("event") == "reloaded" for r in log_records(log)))
        drop(root, "one.txt", "MiXeD\n")
        wait_until((root / "output" / "one_processed.txt").exists)
        assert (root / "output" / "one_processed.txt").read_text() == "mixed\n"
        config.write_text('[[processors]]\ntype = "nonsense"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("event", "").startswith("reload rejected") for r in log_records(log)))
        drop(root, "two.txt", "MiXeD\n")
        wait_until((root / "output" / "two_processed.txt").exists)
        assert (root / "output" / "two_processed.txt").read_text() == "mixed\n"
    finally:
        assert stop(proc) == 0


def test_sighup_during_a_hung_file_is_said_at_once(tmp_path: Path) -> None:
    """A reload is applied between files: one asked while a processor hangs is said in the log at
    once (not left silent until the file ends), and applied when the file is done."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "a.toml",
        '[pipeline]\nmax_file_seconds = 3\n[retry]\nmax_attempts = 1\n[[processors]]\ntype = "hang"\n',
    )
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        drop(root, "stuck.txt", "HANG\n")
        wait_until(lambda: census(root)["underprocess"] == ["stuck.txt"])
        for times in (1, 2):  # each is said
            proc.send_signal(signal.SIGHUP)
            wait_until(
                lambda times=times: (
                    len([r for r in log_records(log) if r.get("event", "").startswith("reload requested")])
                    == times
                ),
                timeout=2,
            )
        assert not any(r.get("event") == "reloaded" for r in log_records(log))
        wait_until(lambda: any(r.get("event") == "reloaded" for r in log_records(log)), timeout=15)
        assert census(root)["failed"] == ["stuck.txt"]
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("mode", MODES)
def test_sighup_applies_new_name_rules_and_says_what_waits_for_a_restart(tmp_path: Path, mode: str) -> None:
    """A reload that sets done_suffix and a new exclude glob holds a file until its marker and
    leaves an excluded one alone; a restart-only change is named in the log."""
    root = tmp_path / "root"
    base = f'[watch]\nmode = "{mode}"\npoll_interval = 0.05\nsettle = 0.2\n'
    config = write_config(tmp_path / "a.toml", base)
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        config.write_text(
            base
            + 'exclude = [".*", "*.tmp", "*.skip"]\ndone_suffix = ".done"\n[agent]\nlog_level = "debug"\n'
        )
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("event") == "reloaded" for r in log_records(log)))
        said = [r for r in log_records(log) if r.get("event") == "these changes take effect after a restart"]
        assert said[-1]["settings"] == ["agent.log_level"]
        drop(root, "b.txt", "b\n")
        drop(root, "c.skip", "c\n")
        time.sleep(1.0)  # several settle times: neither may be taken
        assert sorted(os.listdir(root / "unprocessed")) == ["b.txt", "c.skip"]
        drop(root, "b.txt.done", "")
        wait_until(lambda: census(root)["processed"] == ["b.txt"])
        wait_until(lambda: os.listdir(root / "unprocessed") == ["c.skip"])  # the marker goes too
    finally:
        assert stop(proc) == 0


def test_sighup_shortening_retention_applies_at_once(tmp_path: Path) -> None:
    """Ages shortened by a reload are applied by the next pass, not a minute later."""
    root = tmp_path / "root"
    ages = '[retention]\nprocessed_max_age = "{age}"\noutput_max_age = "{age}"\n'
    config = write_config(tmp_path / "a.toml", ages.format(age="10m"))
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        for i in range(3):
            drop(root, f"f{i}.txt", "x\n")
        wait_until(lambda: len(census(root)["processed"]) == 3)
        time.sleep(1.5)  # older than the new age, and a pass with the old ages has run
        config.write_text(ages.format(age="1s"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: census(root)["processed"] == [] and os.listdir(root / "output") == [], timeout=10)
    finally:
        assert stop(proc) == 0


def test_a_long_file_does_not_hold_up_the_files_claimed_before_it(tmp_path: Path) -> None:
    """A small file and a long one claimed in one batch: the small one's output is made durable
    and its input finished while the long one still runs (its span and duration end there, not
    with the long file)."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml", '[watch]\norder = "name"\n[[processors]]\ntype = "sleepy"\nseconds = 0.5\n'
    )
    (root / "unprocessed" / "a-small.txt").write_text("small\n")
    (root / "unprocessed" / "b-long.txt").write_text("a line of the long file\n" * 40_000)  # 4 batches
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        # Finished alone: the long file still runs.
        wait_until(lambda: census(root)["processed"] == ["a-small.txt"], timeout=20)
        wait_until(lambda: census(root)["processed"] == ["a-small.txt", "b-long.txt"], timeout=30)
    finally:
        assert stop(proc) == 0
    done = [r for r in log_records(log) if r.get("event") == "file processed"]
    assert [r["file"] for r in done] == ["a-small.txt", "b-long.txt"]
