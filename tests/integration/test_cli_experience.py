"""Hand use of the CLI: progress and tables on a terminal only, help text, failed/retry, completion."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest

from agentctl import (
    REPO,
    agent_env,
    census,
    drop,
    log_records,
    run_cli,
    start,
    stop,
    wait_until,
    write_config,
)

GOLDEN = REPO / "tests" / "golden"
VERBS = (
    "",
    "run",
    "process",
    "status",
    "failed",
    "retry",
    "pause",
    "resume",
    "gc",
    "explain",
    "check-config",
    "completion",
)


def _pty(*args: str, env: dict[str, str] | None = None, timeout: float = 60, code: int = 0) -> str:
    """Run the CLI under a pseudo-terminal and return everything it showed."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "foldermon", *args],
        env={**agent_env(env), "TERM": "xterm", "COLUMNS": "120", "LINES": "40"},
        dimensions=(40, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=timeout,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code, child.before
    return str(child.before)


def test_process_shows_a_byte_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    """process --output on a tty shows bytes, rate and ETA; in a pipe it prints nothing."""
    src = tmp_path / "in.txt"
    src.write_text("".join(f"line {i}\n" for i in range(300_000)))
    shown = _pty("process", str(src), "--output", str(tmp_path / "out.txt"))
    assert "in.txt" in shown
    assert "MB" in shown
    assert "/s" in shown
    piped = run_cli("process", str(src), "--output", str(tmp_path / "out2.txt"))
    assert piped.returncode == 0
    assert piped.stdout == ""
    assert (tmp_path / "out2.txt").read_bytes() == src.read_bytes()


def test_quiet_and_systemd_turn_the_progress_off(tmp_path: Path) -> None:
    """--quiet, or INVOCATION_ID from systemd, keeps the terminal free of progress bars."""
    src = tmp_path / "in.txt"
    src.write_text("x\n" * 1000)
    quiet = _pty("process", str(src), "--output", str(tmp_path / "o1.txt"), "--quiet")
    assert "MB" not in quiet
    assert "kB" not in quiet
    journald = _pty("process", str(src), "--output", str(tmp_path / "o2.txt"), env={"INVOCATION_ID": "abc"})
    assert "kB" not in journald
    assert "/s" not in journald


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_once_shows_files_done_lines_per_second_and_failures_on_a_terminal(
    tmp_path: Path, workers: str
) -> None:
    """run --once on a tty shows files done of total, lines/s and failures (with workers too)."""
    root = tmp_path / "root"
    for i in range(5):
        drop(root, f"f{i}.txt", "x\n" * 100)
    drop(root, "bad.txt", "BAD\n")
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    shown = _pty("run", "--watch", str(root), "--once", "--config", str(config), "--workers", workers, code=1)
    assert "6/6 files" in shown
    assert "lines/s" in shown
    assert "1 failed" in shown


def test_status_is_a_table_on_a_terminal_and_plain_in_a_pipe(tmp_path: Path) -> None:
    """status draws a table with the newest failures on a tty, and plain lines in a pipe."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    os.symlink("/etc/hostname", root / "unprocessed" / "link")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 1
    shown = _pty("status", "--watch", str(root))
    assert "watch root" in shown
    assert "newest failures" in shown
    assert "symbolic link" in shown
    assert "\x1b[" in shown  # colour on a terminal
    piped = run_cli("status", "--watch", str(root))
    assert "\x1b[" not in piped.stdout
    assert "failed 1" in piped.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_help_matches_the_golden_text(verb: str) -> None:
    """--help of every verb is stable and carries an example (golden files under tests/golden)."""
    args = [verb, "--help"] if verb else ["--help"]
    result = run_cli(*args, env={"COLUMNS": "100"})
    assert result.returncode == 0
    golden = GOLDEN / f"help-{verb or 'main'}.txt"
    if os.environ.get("FOLDERMON_UPDATE_GOLDEN") == "1":
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
    assert "example" in result.stdout or "exit codes" in result.stdout


def test_failed_lists_reasons_and_trace_ids(tmp_path: Path) -> None:
    """failed --json lists each quarantined file with its reason, attempts and trace id."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "BAD\n")
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    listing = json.loads(run_cli("failed", "--watch", str(root), "--json").stdout)["failed"]
    assert [f["name"] for f in listing] == ["bad.txt"]
    assert "ProcessorError" in listing[0]["reason"]
    assert listing[0]["attempts"] == 1
    assert len(listing[0]["trace_id"]) == 32
    text = run_cli("failed", "--watch", str(root)).stdout
    assert "bad.txt" in text
    assert "trace" in text


def test_retry_while_the_agent_runs_processes_the_file_once(tmp_path: Path) -> None:
    """retry moves a failed file back while an agent runs; it is processed once, the record kept in history."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        drop(root, "data.txt", "BAD\n")
        wait_until(lambda: census(root)["failed"] == ["data.txt"])
        config.write_text("")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("event") == "reloaded" for r in log_records(log)))
        result = run_cli("retry", "--watch", str(root), "data.txt")
        assert result.returncode == 0, result.stderr
        wait_until(lambda: census(root)["processed"] == ["data.txt"])
    finally:
        assert stop(proc) == 0
    assert census(root)["failed"] == []
    assert (root / "output" / "data_processed.txt").read_text() == "BAD\n"
    assert len(list((root / "failed" / ".history").iterdir())) == 1
    done = [r for r in log_records(log) if r.get("event") == "file processed" and r.get("file") == "data.txt"]
    assert len(done) == 1


def test_retry_of_an_unknown_name_fails_and_moves_nothing(tmp_path: Path) -> None:
    """retry with a name not in failed/ exits 1 with a hint and leaves failed/ alone."""
    root = tmp_path / "root"
    for folder in ("unprocessed", "failed"):
        (root / folder).mkdir(parents=True)
    (root / "failed" / "kept.txt").write_text("x")
    result = run_cli("retry", "--watch", str(root), "kept.txt", "nope.txt")
    assert result.returncode == 1
    assert "nope.txt" in result.stderr
    assert "foldermon-agent failed" in result.stderr
    assert (root / "failed" / "kept.txt").exists()


def test_retry_takes_the_path_failed_prints(tmp_path: Path) -> None:
    """`failed` prints each file as a path in failed/: retry takes that path as its name (but
    not a path in another folder, which stays an unknown name)."""
    root = tmp_path / "root"
    for folder in ("unprocessed", "failed"):
        (root / folder).mkdir(parents=True)
    (root / "failed" / "x.txt").write_text("x")
    (root / "failed" / "y.txt").write_text("y")
    listed = run_cli("failed", "--watch", str(root)).stdout.splitlines()
    path = next(line.split(": ", 1)[0] for line in listed if "x.txt" in line)
    assert run_cli("retry", "--watch", str(root), str(root / "unprocessed" / "y.txt")).returncode == 1
    result = run_cli("retry", "--watch", str(root), path)
    assert result.returncode == 0, result.stderr
    assert census(root)["unprocessed"] == ["x.txt"]
    assert census(root)["failed"] == ["y.txt"]


def test_retry_by_a_printed_path_moves_that_root_s_file_only(tmp_path: Path) -> None:
    """Two roots with a failed x.txt each: the path `failed` prints for one of them moves that
    one; names with a newline or a backslash are taken as `failed` prints them (escaped, so a
    real newline and a backslash-n print differently)."""
    roots = [tmp_path / "r1", tmp_path / "r2"]
    for root in roots:
        for folder in ("unprocessed", "failed"):
            (root / folder).mkdir(parents=True)
        (root / "failed" / "x.txt").write_text("x")
    (roots[0] / "failed" / "new\nline.txt").write_text("newline")
    (roots[0] / "failed" / "new\\nline.txt").write_text("backslash")
    watch = [a for root in roots for a in ("--watch", str(root))]
    listed = run_cli("failed", *watch).stdout.splitlines()
    printed = [line.split(": ", 1)[0] for line in listed]
    assert len(set(printed)) == 4, printed
    assert run_cli("retry", *watch, str(roots[1] / "failed" / "x.txt")).returncode == 0
    assert census(roots[0])["unprocessed"] == []
    assert census(roots[1])["unprocessed"] == ["x.txt"]
    newline = next(p for p in printed if p.endswith("new\\nline.txt"))
    result = run_cli("retry", *watch, newline)
    assert result.returncode == 0, result.stderr
    assert (roots[0] / "unprocessed" / "new\nline.txt").read_text() == "newline"
    assert (roots[0] / "failed" / "new\\nline.txt").read_text() == "backslash"


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_is_printed_for_each_shell(shell: str) -> None:
    """completion SHELL prints a script that knows the verbs."""
    result = run_cli("completion", shell)
    assert result.returncode == 0
    assert "foldermon-agent" in result.stdout or "foldermon_agent" in result.stdout
    assert "check-config" in result.stdout
