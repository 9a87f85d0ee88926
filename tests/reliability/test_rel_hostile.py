"""Hostile input: each ends processed byte-exact or in failed/ with a reason, the agent keeps running."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    agent_argv,
    events,
    mounted,
    output_name,
    passthrough,
    popen,
    require_root,
    require_tools,
    start_agent,
    wait_for_event,
)

from agentctl import PLUGINS, REPO, agent_env, census, drop, run_cli, stop, wait_until, write_config

pytestmark = pytest.mark.real

HUGE = b"x" * 50_000_000 + b"\n"
PLAIN = {
    "binary.bin": bytes(range(256)) * 64 + b"\x00\x00tail\n",
    "latin1.txt": "café crème\nÀ bientôt\n".encode("latin-1"),
    "empty.txt": b"",
    "crlf.txt": b"one\r\ntwo\r\n",
    "noeol.txt": b"the last line has no newline",
    "huge.txt": HUGE,
    "new\nline.txt": b"a name with a newline\n",
    "-rf": b"looks like an option\n",
    "ünïcödé.txt": b"non-ascii name\n",
    "n" * 226 + ".txt": b"a 230-byte name: its temp output cannot carry the name\n",
}
TOO_LONG = "L" * 246 + ".txt"  # 250 bytes: "<name>.error.json" would pass 255
# Dot names are the agent's bookkeeping (exclude ".*"): never taken, never touched.
DOTTED = {"..data": b"two dots lead the name\n", "...": b"three dots\n", "..x..y": b"dots inside\n"}
BAD_NAME = b"bad\xff\xfe.txt"  # not valid UTF-8
SLOW_PARTS = [f"part {i}\n".encode() for i in range(8)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One agent in watch mode fed the whole corpus; yields what the tests inspect."""
    require_root()
    tmp = tmp_path_factory.mktemp("corpus")
    root = tmp / "root"
    with mounted(tmp / "outside", options="size=4m,strictatime") as outside:
        secret = outside / "secret.txt"
        secret.write_bytes(b"never to be read\n")
        os.utime(secret, (1_000_000_000, 1_000_000_000))
        config = write_config(
            tmp / "c.toml",
            '[watch]\nrescan_interval = 2.0\n[retry]\nmax_attempts = 2\nbackoff = 0.05\n[[processors]]\ntype = "raise_on"\nmarker = "RAISE-ME"\n',
        )
        log = tmp / "agent.log"
        (root / "unprocessed").mkdir(parents=True)
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
        wait_for_event(log, "watching")
        os.symlink(secret, root / "unprocessed" / "link.txt")
        os.symlink(outside / "missing", root / "unprocessed" / "dangling.txt")
        os.mkfifo(root / "unprocessed" / "pipe")
        (root / "unprocessed" / "subdir").mkdir()
        (root / "unprocessed" / "subdir" / "inner.txt").write_bytes(b"inside a directory\n")
        for name, data in {**PLAIN, **DOTTED}.items():
            drop(root, name, data)
        (root / ".staging" / "f").write_bytes(b"invalid utf-8 name\n")
        os.rename(root / ".staging" / "f", os.fsencode(root / "unprocessed") + b"/" + BAD_NAME)
        drop(root, "raise.txt", b"fine\nRAISE-ME here\nfine again\n")
        drop(root, TOO_LONG, b"kept under a shorter name\n")
        drop(root, "dup.txt", b"first of the name\n")
        wait_until(lambda: "dup.txt" in census(root)["processed"], timeout=60)
        drop(root, "dup.txt", b"second of the name\n")
        with (root / "unprocessed" / "slow.txt").open("wb") as slow:
            for part in SLOW_PARTS:
                slow.write(part)
                slow.flush()
                time.sleep(0.2)
        drop(root, "after.txt", b"dropped after all the rest\n")
        expected = len(PLAIN) + 5  # bad name, dup twice, slow, after
        wait_until(lambda: len(census(root)["processed"]) == expected, timeout=120)
        wait_until(lambda: len(census(root)["failed"]) == 5, timeout=60)
        # Several full rescans pass, each of which sees the directory again.
        wait_until(lambda: events([log], "directory in unprocessed/ left in place"), timeout=10)
        time.sleep(4.5)
        code = stop(proc)
        yield {
            "root": root,
            "log": log,
            "code": code,
            "secret": secret,
            "secret_stat": os.stat(secret),
            "outside": outside,
        }


def _record(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "failed" / f".{name}.error.json").read_text())
    return data


def test_agent_survives_the_corpus_and_exits_zero(corpus: dict[str, Any]) -> None:
    """After the whole corpus the agent still runs and stops cleanly; nothing is waiting or claimed."""
    assert corpus["code"] == 0
    found = census(corpus["root"])
    assert found["unprocessed"] == ["subdir"]
    assert found["underprocess"] == []


@pytest.mark.parametrize("name", list(PLAIN))
def test_plain_inputs_come_out_byte_exact(corpus: dict[str, Any], name: str) -> None:
    """Binary with NULs, Latin-1, empty, CRLF, no final newline, 50 MB line, odd names: byte-exact outputs."""
    root = corpus["root"]
    assert (root / "processed" / name).read_bytes() == PLAIN[name]
    assert (root / "output" / output_name(name)).read_bytes() == passthrough(PLAIN[name])


def test_dot_names_are_never_taken(corpus: dict[str, Any]) -> None:
    """Names like '..data' and '...' are bookkeeping by the exclude rule: left in unprocessed/, unchanged."""
    root = corpus["root"]
    for name, data in DOTTED.items():
        assert (root / "unprocessed" / name).read_bytes() == data
        assert not (root / "processed" / name).exists()


def test_name_that_is_not_utf8_is_processed(corpus: dict[str, Any]) -> None:
    """A name with invalid UTF-8 bytes is processed like any other."""
    root = os.fsencode(corpus["root"])
    assert os.path.exists(root + b"/processed/" + BAD_NAME)
    with open(root + b"/output/bad\xff\xfe_processed.txt", "rb") as out:
        assert out.read() == b"invalid utf-8 name\n"


def test_symlink_out_of_the_root_is_quarantined_and_its_target_never_read(corpus: dict[str, Any]) -> None:
    """The link goes to failed/ with a reason; on a strictatime mount the target's atime is unchanged."""
    root, secret = corpus["root"], corpus["secret"]
    assert os.path.islink(root / "failed" / "link.txt")
    assert "symbolic link" in _record(root, "link.txt")["message"]
    assert corpus["secret_stat"].st_atime == 1_000_000_000
    assert secret.read_bytes() == b"never to be read\n"
    # The check can fail: on this mount a read does move atime.
    control = corpus["outside"] / "control"
    control.write_bytes(b"x")
    os.utime(control, (1, 1))
    control.read_bytes()
    assert os.stat(control).st_atime != 1


def test_dangling_symlink_is_quarantined(corpus: dict[str, Any]) -> None:
    """A dangling symlink goes to failed/ (as a link) with a reason."""
    root = corpus["root"]
    assert os.path.islink(root / "failed" / "dangling.txt")
    assert _record(root, "dangling.txt")["error_type"] == "InputRejected"


def test_fifo_is_quarantined_without_blocking_the_agent(corpus: dict[str, Any]) -> None:
    """The FIFO goes to failed/ unopened and files dropped after it are processed."""
    root = corpus["root"]
    assert stat.S_ISFIFO(os.lstat(root / "failed" / "pipe").st_mode)
    assert "FIFO" in _record(root, "pipe")["message"]
    assert (root / "output" / "after_processed.txt").read_bytes() == b"dropped after all the rest\n"


def test_directory_is_left_in_place_and_reported(corpus: dict[str, Any]) -> None:
    """A directory in unprocessed/ stays there with its content and is reported once."""
    root = corpus["root"]
    assert (root / "unprocessed" / "subdir" / "inner.txt").read_bytes() == b"inside a directory\n"
    assert len(events([corpus["log"]], "directory in unprocessed/ left in place")) == 1


def test_same_name_dropped_twice_keeps_both(corpus: dict[str, Any]) -> None:
    """The second file of a used name gets a suffix, input and output; the first is untouched."""
    root = corpus["root"]
    assert (root / "processed" / "dup.txt").read_bytes() == b"first of the name\n"
    assert (root / "processed" / "dup.1.txt").read_bytes() == b"second of the name\n"
    assert (root / "output" / "dup_processed.txt").read_bytes() == b"first of the name\n"
    assert (root / "output" / "dup_processed.1.txt").read_bytes() == b"second of the name\n"


def test_file_written_slowly_in_place_is_taken_complete(corpus: dict[str, Any]) -> None:
    """A file written in place over 1.6 s is taken only once closed: its output has every part."""
    root = corpus["root"]
    assert (root / "output" / "slow_processed.txt").read_bytes() == b"".join(SLOW_PARTS)


def test_processor_raising_on_one_line_quarantines_the_file_with_its_reason(corpus: dict[str, Any]) -> None:
    """A processor that raises on one line: retried line by line, then failed/ naming the processor, line and cause."""
    record = _record(corpus["root"], "raise.txt")
    assert record["error_type"] == "ProcessorError"
    assert record["attempts"] == 2
    assert record["line"] == 2  # the batched first attempt cannot tell; the retry runs line by line
    assert (record["processor_id"], record["processor_type"]) == ("raise_on_0", "raise_on")
    assert "RAISE-ME" in record["cause"]
    assert not (corpus["root"] / "output" / "raise_processed.txt").exists()


def test_name_too_long_for_its_own_records_is_quarantined_under_a_shorter_one(corpus: dict[str, Any]) -> None:
    """A 250-byte name: failed/ holds the bytes under a shortened name; the record names the original and the fix."""
    root = corpus["root"]
    (stored,) = [n for n in census(root)["failed"] if n.startswith("LLLL")]
    assert (root / "failed" / stored).read_bytes() == b"kept under a shorter name\n"
    record = _record(root, stored)
    assert (record["file"], record["error_type"]) == (TOO_LONG, "InputRejected")
    assert "name too long (250 bytes)" in record["message"]
    assert [r["reason"] for r in events([corpus["log"]], "input rejected") if r["file"] == TOO_LONG] == [
        record["message"]
    ]


# -- separate runs ----------------------------------------------------------------------------------


def test_line_over_a_lower_max_line_bytes_fails_the_file(tmp_path: Path) -> None:
    """The 50 MB single line with max_line_bytes = 1 MiB goes to failed/ at once with that reason."""
    root = tmp_path / "root"
    drop(root, "huge.txt", HUGE)
    config = write_config(tmp_path / "l.toml", "[pipeline]\nmax_line_bytes = 1048576\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    assert census(root)["failed"] == ["huge.txt"]
    record = _record(root, "huge.txt")
    assert (record["error_type"], record["attempts"]) == ("LineTooLongError", 1)
    assert (root / "failed" / "huge.txt").read_bytes() == HUGE


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="foldermon-rel-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_file_the_agent_user_cannot_read_fails_with_a_permission_reason(world_readable_dir: Path) -> None:
    """Agent as nobody; an input owned by root with mode 000 goes to failed/ saying permission denied."""
    require_root()
    require_tools("setpriv")
    base = world_readable_dir
    src = base / "src"
    shutil.copytree(REPO / "agent" / "foldermon", src / "foldermon")
    shutil.copytree(PLUGINS, src / "plugins")
    root = base / "root"
    (root / "unprocessed").mkdir(parents=True)
    (root / "unprocessed" / "locked.txt").write_bytes(b"root only\n")
    (root / "unprocessed" / "locked.txt").chmod(0)
    (root / "unprocessed" / "open.txt").write_bytes(b"anyone\n")
    for path in (root, root / "unprocessed", root / "unprocessed" / "open.txt"):
        shutil.chown(path, "nobody", "nogroup")
    config = write_config(base / "c.toml", "[retry]\nmax_attempts = 2\nbackoff = 0.05\n")
    config.chmod(0o644)
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    argv += agent_argv("run", "--watch", str(root), "--once", "--config", str(config))
    env = {"PYTHONPATH": f"{src}:{src / 'plugins'}", "HOME": str(base)}
    result = subprocess.run(
        argv, env=agent_env(env), capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert census(root)["processed"] == ["open.txt"]
    assert census(root)["failed"] == ["locked.txt"]
    record = _record(root, "locked.txt")
    assert record.get("errno") == "EACCES", record
    assert "Permission denied" in record["message"], record
    locked = os.stat(root / "failed" / "locked.txt")
    assert (locked.st_uid, stat.S_IMODE(locked.st_mode)) == (0, 0)


def _fill(folder: Path) -> Path:
    """Fill the filesystem holding ``folder`` to the last byte."""
    filler = folder / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_full_output_filesystem_is_retried_without_using_attempts_and_recovers(tmp_path: Path) -> None:
    """Output dir on a full 1 MiB tmpfs: retries that do not count, then the file is processed once space is freed."""
    require_root()
    root = tmp_path / "root"
    data = b"".join(b"line %d of a file that needs room\n" % i for i in range(6000))
    with mounted(tmp_path / "outfs", options="size=1m") as outfs:
        filler = _fill(outfs)
        config = write_config(tmp_path / "f.toml", "[retry]\nmax_attempts = 2\nbackoff = 0.1\n")
        log = tmp_path / "agent.log"
        (root / "unprocessed").mkdir(parents=True)
        proc = start_agent(
            "run", "--watch", str(root), "--output-dir", str(outfs), "--config", str(config), log=log
        )
        drop(root, "big.txt", data)
        wait_until(lambda: len(events([log], "attempt failed; will retry")) >= 4, timeout=30)
        assert census(root)["failed"] == []
        filler.unlink()
        wait_until(lambda: census(root)["processed"] == ["big.txt"], timeout=30)
        assert stop(proc) == 0
        retries = events([log], "attempt failed; will retry")
        assert all("No space left" in r["error"] and r["attempt"] == 1 for r in retries), retries[:3]
        assert (outfs / "big_processed.txt").read_bytes() == data
        assert sorted(os.listdir(outfs)) == ["big_processed.txt"]


def test_processor_that_kills_the_agent_is_quarantined_after_max_attempts_restarts(tmp_path: Path) -> None:
    """A supervisor restarts the agent each time a poison file kills it; after max_attempts it is in failed/."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "k.toml",
        '[retry]\nmax_attempts = 3\nbackoff = 0.05\n[[processors]]\ntype = "kill_on"\nmarker = "POISON"\n',
    )
    drop(root, "poison.txt", b"ok\nPOISON\n")
    drop(root, "good.txt", b"good\n")
    log = tmp_path / "agent.log"
    deaths = 0
    argv = agent_argv("run", "--watch", str(root), "--config", str(config))
    for _ in range(10):  # a supervisor, as systemd's Restart= would be
        proc = popen(argv, log=log)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            break
        deaths += 1
    assert census(root)["failed"] == ["poison.txt"]
    drop(root, "later.txt", b"later\n")
    wait_until(lambda: "later.txt" in census(root)["processed"], timeout=30)
    assert stop(proc) == 0
    assert deaths == 3
    assert _record(root, "poison.txt")["error_type"] == "AttemptsExhausted"
    assert census(root)["processed"] == ["good.txt", "later.txt"]
