"""drain_timeout is a hard bound, and a file that hangs the pipeline is quarantined, not the agent hung."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from relkit import events, popen, start_agent

from agentctl import census, command, drop, wait_until, write_config

pytestmark = pytest.mark.real

# A backtracking regex: on this line the search takes longer than the age of the universe.
EVIL_LINE = "a" * 40 + "b\n"
REGEX = '[[processors]]\ntype = "filter"\nregex = true\npattern = "(a+)+$"\n'


def _config(tmp: Path, text: str) -> Path:
    return write_config(tmp / "c.toml", "[watch]\nrescan_interval = 0.5\n" + text)


def _stop_within(proc: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """SIGTERM the process and return its exit code and how long it took."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(seconds)
    return code, time.monotonic() - started


def test_sigterm_interrupts_a_processor_stuck_in_one_call_and_releases_the_batch(tmp_path: Path) -> None:
    """A backtracking regex on one line: SIGTERM still ends the agent within drain_timeout, exit 0,
    and the stuck file and the file claimed after it go back to unprocessed/ uncounted."""
    root = tmp_path / "root"
    config = _config(tmp_path, "[agent]\ndrain_timeout = 2\n" + REGEX)
    drop(root, "a-evil.txt", "fine\n" + EVIL_LINE)
    drop(root, "b-good.txt", "good\n")
    log = tmp_path / "agent.log"
    # --once claims in name order: the stuck file first, the good one in the same batch after it.
    proc = start_agent("run", "--watch", str(root), "--once", "--config", str(config), log=log)
    wait_until(lambda: census(root)["underprocess"] == ["a-evil.txt", "b-good.txt"], what="both claimed")
    time.sleep(0.5)  # the regex is running now
    code, took = _stop_within(proc, 15)
    assert code == 0
    assert took < 2 + 3, f"stopped after {took:.1f} s with drain_timeout = 2"
    found = census(root)
    assert found["unprocessed"] == ["a-evil.txt", "b-good.txt"]
    assert found["underprocess"] == found["processed"] == found["failed"] == []
    assert not (
        root / "unprocessed" / ".a-evil.txt.attempts"
    ).exists()  # the interrupted attempt is not counted
    assert events([log], "file released for another run")


def test_slow_processor_on_a_small_file_keeps_to_the_drain(tmp_path: Path) -> None:
    """A file of one batch whose processor sleeps 30 s: the drain of 1 s is kept, not overrun."""
    root = tmp_path / "root"
    config = _config(tmp_path, '[agent]\ndrain_timeout = 1\n[[processors]]\ntype = "sleepy"\nseconds = 30\n')
    drop(root, "small.txt", "one line\n")
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_until(lambda: census(root)["underprocess"] == ["small.txt"], what="the file claimed")
    code, took = _stop_within(proc, 15)
    assert (code, census(root)["unprocessed"]) == (0, ["small.txt"])
    assert took < 1 + 2.5, f"stopped after {took:.1f} s with drain_timeout = 1"


def test_file_that_hangs_the_pipeline_is_quarantined_after_max_file_seconds(tmp_path: Path) -> None:
    """max_file_seconds fails each attempt of the stuck file; after max_attempts it is in failed/
    with a record naming the limit and the processor, and the files after it are processed."""
    root = tmp_path / "root"
    config = _config(
        tmp_path, "[pipeline]\nmax_file_seconds = 1\n[retry]\nmax_attempts = 2\nbackoff = 0.1\n" + REGEX
    )
    drop(root, "a-evil.txt", EVIL_LINE)
    drop(root, "b-good.txt", "good\n")
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_until(lambda: census(root)["failed"] == ["a-evil.txt"], timeout=20, what="quarantined")
    wait_until(lambda: census(root)["processed"] == ["b-good.txt"], what="the good file processed")
    code, _ = _stop_within(proc, 15)
    assert code == 0
    record = json.loads((root / "failed" / ".a-evil.txt.error.json").read_text())
    assert record["error_type"] == "ProcessingTimeLimitError"
    assert record["attempts"] == 2
    assert record["processor_id"] == "filter_0"
    assert "max_file_seconds (1 s)" in record["message"]


def test_a_processor_that_ignores_interrupts_cannot_outlive_the_drain(tmp_path: Path) -> None:
    """A plugin that swallows every exception: the process still ends (exit 1) shortly after the
    drain, and the next start returns the file with the attempt counted."""
    root = tmp_path / "root"
    config = _config(tmp_path, '[agent]\ndrain_timeout = 1\n[[processors]]\ntype = "stubborn"\n')
    drop(root, "stuck.txt", "STUCK\n")
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_until(lambda: census(root)["underprocess"] == ["stuck.txt"], what="the file claimed")
    code, took = _stop_within(proc, 40)
    assert code == 1
    assert took < 1 + 10 + 3, f"ended after {took:.1f} s with drain_timeout = 1"
    # With one attempt allowed, the next start quarantines it at claim, so the attempt was counted.
    again = _config(tmp_path, '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "stubborn"\n')
    result = start_agent(
        "run", "--watch", str(root), "--once", "--config", str(again), log=tmp_path / "again.log"
    )
    assert result.wait(30) == 1  # the file went to failed/
    record = json.loads((root / "failed" / ".stuck.txt.error.json").read_text())
    assert (record["error_type"], record["attempts"]) == ("AttemptsExhausted", 1)


def test_a_processor_that_ignores_interrupts_cannot_outlive_max_file_seconds(tmp_path: Path) -> None:
    """The same plugin under max_file_seconds, no signal sent: the process ends (exit 1) 10 s after
    the limit, and the next start, with one attempt allowed, quarantines the file."""
    root = tmp_path / "root"
    limited = '[pipeline]\nmax_file_seconds = 1\n[[processors]]\ntype = "stubborn"\n'
    drop(root, "stuck.txt", "STUCK\n")
    started = time.monotonic()
    proc = start_agent(
        "run", "--watch", str(root), "--config", str(_config(tmp_path, limited)), log=tmp_path / "a.log"
    )
    assert proc.wait(40) == 1
    assert time.monotonic() - started < 1 + 10 + 5
    again = _config(tmp_path, "[retry]\nmax_attempts = 1\n" + limited)
    result = start_agent(
        "run", "--watch", str(root), "--once", "--config", str(again), log=tmp_path / "again.log"
    )
    assert result.wait(30) == 1
    record = json.loads((root / "failed" / ".stuck.txt.error.json").read_text())
    assert (record["error_type"], record["attempts"]) == ("AttemptsExhausted", 1)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        found += [int(p) for p in text.split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_hung_worker_never_outlives_its_killed_supervisor(tmp_path: Path) -> None:
    """run --workers 2 with one worker stuck in a regex: SIGKILL the supervisor, and both workers
    are gone within drain_timeout and a little more."""
    root = tmp_path / "root"
    config = _config(tmp_path, "[agent]\ndrain_timeout = 1\n" + REGEX)
    drop(root, "evil.txt", EVIL_LINE)
    log = tmp_path / "agent.log"
    proc = popen(command("run", "--watch", str(root), "--workers", "2", "--config", str(config)), log=log)
    workers = wait_until(lambda: len(_children(proc.pid)) == 2 and _children(proc.pid), what="two workers")
    wait_until(lambda: census(root)["underprocess"] == ["evil.txt"], what="the file claimed")
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    started = time.monotonic()
    wait_until(lambda: not any(_alive(w) for w in workers), timeout=15, what="workers gone")
    assert time.monotonic() - started < 1 + 3
