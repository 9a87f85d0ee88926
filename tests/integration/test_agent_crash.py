"""Kill -9, poison files, retries, recovery and instances: the queue's guarantees under trouble."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agentctl import (
    agent_env,
    census,
    command,
    drop,
    log_records,
    run_cli,
    start,
    stop,
    wait_until,
    write_config,
)

SLOW = '[[processors]]\ntype = "sleepy"\nseconds = 0.3\n'


def _lines(n: int) -> str:
    return "".join(f"line {i}\n" for i in range(n))


def _claimed(root: Path) -> list[str]:
    return census(root)["underprocess"]


def test_sigkill_mid_file_loses_nothing_and_shows_no_partial_output(tmp_path: Path) -> None:
    """SIGKILL while a file is in flight: the input stays, no final output appears, a restart finishes it."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "slow.toml", SLOW + "[pipeline]\nmax_line_bytes = 100\n")
    payload = _lines(400_000)  # several 1 MiB batches, each slowed down
    drop(root, "big.txt", payload)
    proc = start("run", "--watch", str(root), "--config", str(config), log=tmp_path / "agent.log")
    wait_until(
        lambda: (
            any(n.endswith(".tmp") for n in os.listdir(root / "output"))
            if (root / "output").is_dir()
            else False
        )
    )
    proc.kill()
    proc.wait()
    assert _claimed(root) == ["big.txt"]
    assert not (root / "output" / "big_processed.txt").exists()
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": ["big.txt"],
        "failed": [],
    }
    assert (root / "output" / "big_processed.txt").read_text() == payload
    assert os.listdir(root / "output") == ["big_processed.txt"]


def test_poison_file_that_kills_the_agent_is_quarantined_after_max_attempts(tmp_path: Path) -> None:
    """A file that SIGKILLs the agent every time goes to failed/ after max_attempts restarts."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "p.toml",
        '[retry]\nmax_attempts = 2\n[[processors]]\ntype = "kill_on"\nmarker = "POISON"\n',
    )
    drop(root, "poison.txt", "POISON\n")
    args = ("run", "--watch", str(root), "--once", "--config", str(config))
    codes = [run_cli(*args).returncode for _ in range(2)]
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]
    drop(root, "fine.txt", "ok\n")
    assert run_cli(*args).returncode == 1
    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": ["fine.txt"],
        "failed": ["poison.txt"],
    }
    record = json.loads((root / "failed" / ".poison.txt.error.json").read_text())
    assert record["error_type"] == "AttemptsExhausted"
    assert record["attempts"] == 2


def test_processor_error_is_retried_then_quarantined_with_record(tmp_path: Path) -> None:
    """A raising processor: retried with backoff, then failed/ with type, message, processor id, line, attempts."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "r.toml",
        '[retry]\nmax_attempts = 3\nbackoff = 0.05\n[[processors]]\ntype = "raise_on"\nid = "picky"\n',
    )
    drop(root, "bad.txt", "fine\nBAD line\n")
    drop(root, "good.txt", "fine\n")
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert result.returncode == 1
    assert census(root)["failed"] == ["bad.txt"]
    assert census(root)["processed"] == ["good.txt"]
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["attempts"] == 3
    assert record["line"] == 2  # every retry after the batched first attempt runs line by line
    assert record["processor_id"] == "picky"
    assert record["error_type"] == "ProcessorError"
    assert "ValueError" in record["cause"]
    assert record["first_attempt"] <= record["last_attempt"]
    assert not (root / "output" / "bad_processed.txt").exists()


@pytest.mark.parametrize(
    ("exception", "at_finish"),
    [("SystemExit", False), ("KeyboardInterrupt", False), ("GeneratorExit", True), ("BaseException", True)],
)
def test_a_processor_raising_past_exception_fails_its_file_not_the_agent(
    tmp_path: Path, exception: str, *, at_finish: bool
) -> None:
    """sys.exit() or any BaseException out of a processor (its process() or its finish()) is that
    file's failure: retried, then quarantined; the agent goes on with the other files."""
    root = tmp_path / "root"
    options = f'exception = "{exception}"\nat_finish = {str(at_finish).lower()}\n'
    config = write_config(
        tmp_path / "r.toml",
        '[retry]\nmax_attempts = 2\nbackoff = 0.05\n[[processors]]\ntype = "raise_on"\n' + options,
    )
    drop(root, "bad.txt", "fine\nBAD line\n")
    drop(root, "good.txt", "fine\n")
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert result.returncode == 1, result.stderr  # a file failed; the agent itself did not
    assert census(root)["failed"] == ["bad.txt"]
    assert census(root)["processed"] == ["good.txt"]
    assert census(root)["underprocess"] == []
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["attempts"] == 2
    assert exception in record["cause"]
    if not at_finish:
        assert record["line"] == 2


@pytest.mark.parametrize("what", ["none", "generator", "ints", "bytes", "none-inside"])
def test_a_processor_returning_something_else_than_lines_fails_its_file_with_its_name(
    tmp_path: Path, what: str
) -> None:
    """process() must return a list of str: anything else fails the file like a raise, with the
    processor and the line named in the record, a sentence from `process` and a failed step in
    `explain` (never a traceback, never an output made of it)."""
    config = write_config(
        tmp_path / "c.toml",
        "[retry]\nmax_attempts = 2\nbackoff = 0.05\n"
        f'[[processors]]\nid = "sloppy"\ntype = "returns"\nwhat = "{what}"\n',
    )
    root = tmp_path / "root"
    drop(root, "bad.txt", "fine\nBAD line\n")
    ran = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert ran.returncode == 1, ran.stderr
    assert census(root)["failed"] == ["bad.txt"]
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert (record["processor_id"], record["processor_type"], record["line"]) == ("sloppy", "returns", 2)
    assert "TypeError" in record["cause"]
    data = tmp_path / "data.txt"
    data.write_text("fine\nBAD line\n")
    out = tmp_path / "out.txt"
    shown = run_cli("process", str(data), "--output", str(out), "--config", str(config))
    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
    assert "'sloppy' (returns) failed at line 2: TypeError: process() returned" in shown.stderr
    assert not out.exists()
    explained = run_cli("explain", str(data), "--line", "2", "--json", "--config", str(config))
    assert "Traceback" not in explained.stderr
    steps = json.loads(explained.stdout)["lines"][0]["steps"]
    assert steps[0]["result"] == "failed"


def test_a_tuple_of_lines_is_taken_as_a_list(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "returns"\nwhat = "tuple"\n')
    data = tmp_path / "data.txt"
    data.write_text("fine\nBAD line\n")
    shown = run_cli("process", str(data), "--config", str(config))
    assert (shown.returncode, shown.stdout) == (0, "fine\nBAD line\n")


def test_keyboardinterrupt_from_a_processor_fails_the_file_but_ctrl_c_stops_a_one_shot_verb(
    tmp_path: Path,
) -> None:
    """Under `process`, a KeyboardInterrupt the plugin raises itself is its failure (exit 1, a
    sentence); a real Ctrl-C (SIGINT) still stops the verb with 130 and leaves no output."""
    data = tmp_path / "data.txt"
    data.write_text("fine\nBAD line\n")
    raising = write_config(
        tmp_path / "r.toml", '[[processors]]\ntype = "raise_on"\nexception = "KeyboardInterrupt"\n'
    )
    shown = run_cli("process", str(data), "--config", str(raising))
    assert shown.returncode == 1
    assert "KeyboardInterrupt" in shown.stderr
    explained = run_cli("explain", str(data), "--line", "2", "--json", "--config", str(raising))
    assert json.loads(explained.stdout)["lines"][0]["steps"][0]["result"] == "failed"
    slow = write_config(tmp_path / "s.toml", '[[processors]]\ntype = "sleepy"\nseconds = 60\n')
    out = tmp_path / "out.txt"
    proc = start("process", str(data), "--output", str(out), "--config", str(slow), log=tmp_path / "p.log")
    time.sleep(1.0)  # in the sleepy processor by now (the interpreter starts in well under that)
    assert stop(proc, signal.SIGINT) == 130
    assert not out.exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_what_a_processor_prints_never_mixes_with_records_reports_or_logs(tmp_path: Path) -> None:
    """A plugin printing to stdout: `process` to stdout gives the records alone, `explain --json`
    stays JSON, and `run`'s log stays JSON lines; the prints go to stderr."""
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "chatty"\n')
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\n")
    shown = run_cli("process", str(data), "--config", str(config))
    assert (shown.returncode, shown.stdout) == (0, "one\ntwo\n")
    assert "chatty saw" in shown.stderr
    explained = run_cli("explain", str(data), "--line", "1", "--json", "--config", str(config))
    assert explained.returncode == 0, explained.stderr
    json.loads(explained.stdout)
    root = tmp_path / "root"
    drop(root, "a.txt", "a\n")
    ran = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert ran.returncode == 0
    assert all(line.startswith("{") for line in ran.stdout.splitlines())
    assert "chatty done" in ran.stderr


def test_bytes_a_processor_writes_to_descriptor_1_stay_out_of_records_and_reports(tmp_path: Path) -> None:
    """A plugin writing to descriptor 1 itself (as a C library does): `process` to stdout gives the
    records alone, `explain --json` stays JSON; the bytes go to stderr, and stdout works after."""
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "fdwriter"\n')
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\n")
    shown = run_cli("process", str(data), "--config", str(config))
    assert (shown.returncode, shown.stdout) == (0, "one\ntwo\n"), shown.stderr
    assert "fdwriter saw 2 lines" in shown.stderr
    assert "fdwriter done" in shown.stderr
    explained = run_cli("explain", str(data), "--line", "1", "--json", "--config", str(config))
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["lines"][0]["number"] == 1
    assert "fdwriter" in explained.stderr
    text = run_cli("explain", str(data), "--line", "2", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "fdwriter saw" not in text.stdout
    assert "line 2: 'two'" in text.stdout


def _sh(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The agent run by ``sh -c script`` (``$@`` is the agent's command line), for stdio games."""
    return subprocess.run(
        ["sh", "-c", script, "sh", *command(*args)],
        env=agent_env(env),
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_plugin_bytes_on_descriptor_1_stay_out_of_stdout_in_every_mode(tmp_path: Path) -> None:
    """fd 1 points at stderr while plugin code runs under `process`: in the line-by-line run after a
    failure, with --output, and with stderr closed (then they go nowhere; no sentence reaches stdout)."""
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\nBAD\nfour\n")
    writer = '[[processors]]\ntype = "fdwriter"\n'
    failing = write_config(tmp_path / "f.toml", writer + '[[processors]]\ntype = "raise_on"\n')
    rerun = run_cli("process", str(data), "--config", str(failing))
    assert rerun.returncode == 1
    assert "failed at line 3" in rerun.stderr
    assert "fdwriter" not in rerun.stdout
    assert rerun.stderr.count("fdwriter saw 1 lines") == 3  # the line-by-line run's calls
    plain = write_config(tmp_path / "w.toml", writer)
    out = tmp_path / "out.txt"
    to_file = run_cli("process", str(data), "--output", str(out), "--config", str(plain))
    assert (to_file.returncode, to_file.stdout) == (0, "")
    assert out.read_text() == data.read_text()
    no_stderr = _sh('exec "$@" 2>&-', "process", str(data), "--config", str(plain))
    assert (no_stderr.returncode, no_stderr.stdout) == (0, data.read_bytes())
    failed = _sh('exec "$@" 2>&-', "process", str(data), "--config", str(failing))
    assert failed.returncode == 1
    assert b"foldermon-agent" not in failed.stdout
    assert b"fdwriter" not in failed.stdout
    no_stdout = _sh(
        'exec "$@" >&-', "process", str(data), "--output", str(tmp_path / "o2.txt"), "--config", str(plain)
    )
    assert no_stdout.returncode == 0, no_stdout.stderr
    assert (tmp_path / "o2.txt").read_text() == data.read_text()


def test_process_keeps_to_max_file_seconds(tmp_path: Path) -> None:
    """A processor that hangs is interrupted at max_file_seconds, as in the agent (exit 1, a sentence
    naming it); a failure whose line-by-line run runs out of time keeps the processor's error."""
    data = tmp_path / "data.txt"
    data.write_text("one\nHANG\n")
    hang = write_config(
        tmp_path / "h.toml", '[pipeline]\nmax_file_seconds = 1\n[[processors]]\ntype = "hang"\n'
    )
    started = time.monotonic()
    hung = run_cli("process", str(data), "--config", str(hang))
    assert time.monotonic() - started < 20
    assert hung.returncode == 1
    assert "longer than max_file_seconds (1 s) while processor 'hang_0' (hang) was running" in hung.stderr
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i}\n" for i in range(1, 2001)) + "BAD\n")
    slow = write_config(
        tmp_path / "s.toml",
        '[pipeline]\nmax_file_seconds = 2\n[[processors]]\ntype = "sleepy"\nseconds = 0.01\n'
        '[[processors]]\ntype = "raise_on"\n',
    )
    failed = run_cli("process", str(big), "--config", str(slow))
    assert failed.returncode == 1
    assert "processor 'raise_on_1' (raise_on) failed: ValueError: cannot handle line 'BAD'" in failed.stderr


def test_line_longer_than_limit_fails_file_without_retry(tmp_path: Path) -> None:
    """A line over max_line_bytes fails the file at once, with that reason."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "l.toml", "[pipeline]\nmax_line_bytes = 1000\n")
    drop(root, "long.txt", "x" * 5000 + "\nshort\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    record = json.loads((root / "failed" / ".long.txt.error.json").read_text())
    assert record["error_type"] == "LineTooLongError"
    assert record["attempts"] == 1
    assert record["line"] == 1
    data = tmp_path / "data.txt"
    data.write_text("short\nshort\n" + "x" * 5000 + "\nafter\n")
    explained = run_cli("explain", str(data), "--line", "1-4", "--json", "--config", str(config))
    assert explained.returncode == 0, explained.stderr
    doc = json.loads(explained.stdout)
    assert [entry["number"] for entry in doc["lines"]] == [1, 2]  # those before it are replayed
    assert any("line 3 is longer than max_line_bytes" in note for note in doc["notes"])


def _dead_instance(root: Path, name: str = "deadhost-1-abcdef") -> Path:
    folder = root / "underprocess" / name
    folder.mkdir(parents=True)
    (folder / ".lock").write_text("deadhost pid 1\n")
    return folder


def test_recovery_returns_dead_claims_and_never_replaces_an_output(tmp_path: Path) -> None:
    """A dead instance's claim comes back and is processed; an output already under its name that
    nothing proves to be its own (no published temp output of that instance) is kept, and the
    new output takes the next name."""
    root = tmp_path / "root"
    for d in ("unprocessed", "processed", "failed", "output"):
        (root / d).mkdir(parents=True)
    folder = _dead_instance(root)
    (folder / "data.txt").write_text("hello\n")
    (root / "output" / "data_processed.txt").write_text("an older output\n")
    (root / "output" / ".foldermon-deadhost-1-abcdef-data_processed.txt.tmp").write_text("half")
    result = run_cli("run", "--watch", str(root), "--once")
    assert result.returncode == 0
    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": ["data.1.txt"],
        "failed": [],
    }
    assert sorted(os.listdir(root / "output")) == ["data_processed.1.txt", "data_processed.txt"]
    assert (root / "output" / "data_processed.txt").read_text() == "an older output\n"
    assert (root / "output" / "data_processed.1.txt").read_text() == "hello\n"
    assert not folder.exists()


def test_live_instance_claims_are_never_touched(tmp_path: Path) -> None:
    """A claim folder whose lock is held by a live process is left alone by recovery."""
    root = tmp_path / "root"
    for d in ("unprocessed", "processed", "failed", "output"):
        (root / d).mkdir(parents=True)
    folder = _dead_instance(root, "livehost-2-fedcba")
    (folder / "busy.txt").write_text("in flight\n")
    (root / "output" / ".foldermon-livehost-2-fedcba-busy_processed.txt.tmp").write_text("half")
    with (folder / ".lock").open("r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_cli("run", "--watch", str(root), "--once").returncode == 0
        assert (folder / "busy.txt").read_text() == "in flight\n"
        assert (root / "output" / ".foldermon-livehost-2-fedcba-busy_processed.txt.tmp").exists()


def test_symlink_is_quarantined_and_its_target_never_touched(tmp_path: Path) -> None:
    """A symlink in unprocessed/ goes to failed/ with a reason; the file it points to is unchanged."""
    root = tmp_path / "root"
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read\n")
    os.chmod(outside, 0o600)
    before = os.stat(outside)
    (root / "unprocessed").mkdir(parents=True)
    os.symlink(outside, root / "unprocessed" / "link.txt")
    os.symlink(tmp_path / "missing", root / "unprocessed" / "dangling.txt")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 1
    assert census(root)["failed"] == ["dangling.txt", "link.txt"]
    assert os.path.islink(root / "failed" / "link.txt")
    after = os.stat(outside)
    assert (after.st_atime_ns, after.st_mtime_ns, outside.read_text()) == (
        before.st_atime_ns,
        before.st_mtime_ns,
        "do not read\n",
    )
    assert "symbolic link" in json.loads((root / "failed" / ".link.txt.error.json").read_text())["message"]


def test_fifo_is_quarantined_without_blocking(tmp_path: Path) -> None:
    """A FIFO is never opened (that would block): it goes to failed/ and the run finishes."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    os.mkfifo(root / "unprocessed" / "pipe")
    drop(root, "after.txt", "x\n")
    result = run_cli("run", "--watch", str(root), "--once", timeout=30)
    assert result.returncode == 1
    assert census(root)["failed"] == ["pipe"]
    assert stat.S_ISFIFO(os.lstat(root / "failed" / "pipe").st_mode)
    assert census(root)["processed"] == ["after.txt"]


def test_directory_is_left_in_place_and_reported_once(tmp_path: Path) -> None:
    """A directory in unprocessed/ stays there, is logged once, and other files are processed."""
    root = tmp_path / "root"
    (root / "unprocessed" / "subdir").mkdir(parents=True)
    (root / "unprocessed" / "subdir" / "inner.txt").write_text("x\n")
    drop(root, "a.txt", "x\n")
    log = tmp_path / "agent.log"
    proc = start("run", "--watch", str(root), "--config", "/dev/null", log=log)
    wait_until(lambda: census(root)["processed"] == ["a.txt"])
    drop(root, "b.txt", "x\n")
    wait_until(lambda: "b.txt" in census(root)["processed"])
    assert stop(proc) == 0
    assert (root / "unprocessed" / "subdir" / "inner.txt").exists()
    reports = [r for r in log_records(log) if r.get("event") == "directory in unprocessed/ left in place"]
    assert len(reports) == 1


def test_sigterm_exits_zero_and_releases_an_unfinished_file(tmp_path: Path) -> None:
    """SIGTERM with a short drain deadline releases the in-flight file back to unprocessed/ and exits 0."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "s.toml", SLOW.replace("0.3", "2") + "[agent]\ndrain_timeout = 0.5\n")
    drop(root, "big.txt", _lines(300_000))
    proc = start("run", "--watch", str(root), "--config", str(config), log=tmp_path / "agent.log")
    wait_until(lambda: _claimed(root) == ["big.txt"])
    assert stop(proc) == 0
    assert census(root) == {
        "unprocessed": ["big.txt"],
        "underprocess": [],
        "processed": [],
        "failed": [],
    }
    assert os.listdir(root / "output") == []
    assert os.listdir(root / "underprocess") == []


def test_two_agents_on_one_root_process_each_file_once(tmp_path: Path) -> None:
    """Two agents racing on one root: every file processed exactly once, every output correct."""
    root = tmp_path / "root"
    for i in range(200):
        drop(root, f"f{i:03}.txt", f"file {i}\n")
    args = ("run", "--watch", str(root), "--once")
    procs = [start(*args, log=tmp_path / f"a{i}.log") for i in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    assert census(root)["processed"] == [f"f{i:03}.txt" for i in range(200)]
    outputs = sorted(os.listdir(root / "output"))
    assert outputs == [f"f{i:03}_processed.txt" for i in range(200)]
    assert all((root / "output" / f"f{i:03}_processed.txt").read_text() == f"file {i}\n" for i in range(200))
    done = [
        r for i in range(2) for r in log_records(tmp_path / f"a{i}.log") if r.get("event") == "file processed"
    ]
    assert len(done) == 200


def test_a_processor_error_stands_when_finding_its_line_takes_longer_than_the_time_limit(
    tmp_path: Path,
) -> None:
    """A processor with a cost per call fails on the last of 2,001 lines; line by line (2,001 calls)
    the file cannot run within max_file_seconds: the record keeps the processor's error (not a time
    limit), says the line was not found and why."""
    root = tmp_path / "root"
    drop(root, "m.txt", "".join(f"line {i}\n" for i in range(1, 2001)) + "BAD\n")
    config = write_config(
        tmp_path / "c.toml",
        "[retry]\nmax_attempts = 1\n[pipeline]\nmax_file_seconds = 2\n"
        '[[processors]]\ntype = "sleepy"\nseconds = 0.01\n[[processors]]\ntype = "raise_on"\n',
    )
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    record = json.loads((root / "failed" / ".m.txt.error.json").read_text())
    assert (record["error_type"], record["processor_type"]) == ("ProcessorError", "raise_on")
    assert "ValueError: cannot handle line 'BAD'" in record["cause"]
    assert "line" not in record
    assert "max_file_seconds" in record["note"]


@pytest.mark.parametrize("stderr", ["/dev/full", "a broken pipe"])
def test_a_plugin_printing_to_a_stderr_that_refuses_does_not_fail_its_file(
    tmp_path: Path, stderr: str
) -> None:
    """What a plugin prints goes to stderr; stderr full or a broken pipe loses the print, not the
    file (run --once processes it; process --output writes its output and leaves no temp)."""
    root = tmp_path / "root"
    drop(root, "a.txt", "a\n")
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "chatty"\n')
    redirect = 'exec "$@" 2>/dev/full' if stderr == "/dev/full" else '"$@" 2>&1 >/dev/null | true'
    ran = _sh(redirect, "run", "--watch", str(root), "--once", "--config", str(config))
    assert ran.returncode == 0
    assert census(root)["processed"] == ["a.txt"]
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\n")
    out = tmp_path / "out" / "o.txt"
    out.parent.mkdir()
    into_file = 'exec "$@" 2>/dev/full' if stderr == "/dev/full" else '"$@" 2>&1 | true'
    _sh(into_file, "process", str(data), "--output", str(out), "--config", str(config))
    assert out.read_text() == "one\ntwo\n"
    assert os.listdir(out.parent) == ["o.txt"]


def test_process_output_whose_rename_fails_leaves_no_temp(tmp_path: Path) -> None:
    """The final rename of `process --output` refused (a full folder): exit 1, no temp output left."""
    data = tmp_path / "data.txt"
    data.write_text("one\n" * 1000)
    out = tmp_path / "out" / "o.txt"
    out.parent.mkdir()
    strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "inject=rename:error=ENOSPC"]
    done = subprocess.run(
        [*strace, *command("process", str(data), "--output", str(out))],
        env=agent_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "No space left on device" in done.stderr
    assert os.listdir(out.parent) == []


def test_run_once_leaves_a_file_without_its_done_marker_and_says_so(tmp_path: Path) -> None:
    """With done_suffix, a file whose marker has not come is still being written: --once leaves it
    and exits 75 (try again later), having processed the one that has its marker."""
    root = tmp_path / "root"
    drop(root, "x.txt", "x\n")
    drop(root, "y.txt", "y\n")
    drop(root, "y.txt.done", "")
    config = write_config(tmp_path / "d.toml", '[watch]\ndone_suffix = ".done"\n')
    ran = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert ran.returncode == 75, ran.stderr
    assert census(root)["processed"] == ["y.txt"]
    assert census(root)["unprocessed"] == ["x.txt"]
    drop(root, "x.txt.done", "")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert census(root)["processed"] == ["x.txt", "y.txt"]


def test_output_dev_stdout_writes_where_stdout_leads_never_over_stderr(tmp_path: Path) -> None:
    """`--output /dev/stdout` follows stdout to its file (never to where stderr is while plugin code
    runs), and is refused when stdout is a pipe."""
    data = tmp_path / "data.txt"
    data.write_text("a\nb\n")
    out, err = tmp_path / "out.txt", tmp_path / "err.log"
    err.write_text("earlier log lines\n")
    done = _sh(f'exec "$@" >{out} 2>>{err}', "process", str(data), "--output", "/dev/stdout")
    assert done.returncode == 0
    assert out.read_text() == "a\nb\n"
    assert err.read_text().startswith("earlier log lines\n")
    piped = _sh(f'"$@" 2>>{err} | cat', "process", str(data), "--output", "/dev/stdout")
    assert piped.stdout == b""
    assert "not a file" in err.read_text()
    assert err.read_text().startswith("earlier log lines\n")


def test_a_broken_pipe_on_stderr_does_not_stop_process_or_explain(tmp_path: Path) -> None:
    """stderr a pipe nobody reads (its reader gone), stdout a file: a plugin's prints are lost, the
    records and the report are whole, and the exit code is that of the work."""
    data = tmp_path / "data.txt"
    data.write_text("one\ntwo\n")
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "chatty"\n')
    read, write = os.pipe()
    os.close(read)
    try:
        for args, expected in (
            (("process", str(data), "--config", str(config)), "one\ntwo\n"),
            (("explain", str(data), "--line", "2", "--json", "--config", str(config)), None),
        ):
            with (tmp_path / "stdout").open("w+") as stdout:
                code = subprocess.run(
                    command(*args), env=agent_env(), stdout=stdout, stderr=write, check=False, timeout=60
                ).returncode
                stdout.seek(0)
                said = stdout.read()
            assert code == 0
            if expected is None:
                assert json.loads(said)["lines"][0]["number"] == 2
            else:
                assert said == expected
    finally:
        os.close(write)


def _broken_pipe() -> int:
    """The write end of a pipe whose reader is gone."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_both_pipes_a_broken_stderr_loses_only_what_is_said_there(tmp_path: Path) -> None:
    """stdout a pipe that is read and stderr one that is not: process writes every line to
    stdout (SIGPIPE does not end it at its first word on stderr) and exits 0; run --once with
    its log on a broken pipe processes its files all the same."""
    data = tmp_path / "data.txt"
    data.write_text("".join(f"line {i}\n" for i in range(5000)))
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "chatty"\n')
    root = tmp_path / "root"
    drop(root, "a.txt", "a\n")
    broken = _broken_pipe()
    try:
        done = subprocess.run(
            command("process", str(data), "--config", str(config)),
            env=agent_env(),
            stdout=subprocess.PIPE,
            stderr=broken,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0
        assert done.stdout == data.read_bytes()
        once = subprocess.run(
            command("run", "--watch", str(root), "--once", "--config", str(config)),
            env=agent_env(),
            stdout=broken,
            stderr=broken,
            check=False,
            timeout=60,
        )
        assert once.returncode == 0
        assert census(root)["processed"] == ["a.txt"]
    finally:
        os.close(broken)


def test_both_pipes_a_broken_stdout_ends_a_verb_quietly(tmp_path: Path) -> None:
    """stdout a pipe closed early (`| head`), stderr a pipe too: the verb ends quietly, as
    SIGPIPE would end it, without a sentence about the broken pipe."""
    data = tmp_path / "data.txt"
    data.write_text("".join(f"line {i}\n" for i in range(200_000)))
    for args in (("process", str(data)), ("explain", str(data), "--line", "1-2000")):
        proc = subprocess.Popen(
            command(*args), env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.read(10)
        proc.stdout.close()
        with proc.stderr:
            said = proc.stderr.read()
        assert proc.wait(timeout=60) in (141, -signal.SIGPIPE), said
        assert b"Broken pipe" not in said
        assert b"Traceback" not in said


def test_a_new_file_under_the_name_of_a_removed_waiting_one_is_processed(tmp_path: Path) -> None:
    """A file waiting for its retry is removed by hand and a good one of that name dropped: the
    agent drops the retry and claims the new file, without a restart."""
    root = tmp_path / "root"
    drop(root, "f.txt", "ok\nBAD\n")
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 2\nbackoff = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    log = tmp_path / "agent.log"
    agent = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any("will retry" in r.get("event", "") for r in log_records(log)), timeout=30)
        (claimed,) = (root / "underprocess").glob("*/f.txt")
        claimed.unlink()
        drop(root, "f.txt", "good\n")
        wait_until(lambda: census(root)["processed"] == ["f.txt"], timeout=30, what="the new f.txt processed")
    finally:
        assert stop(agent) == 0
    assert (root / "output" / "f_processed.txt").read_text() == "good\n"
