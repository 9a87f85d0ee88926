"""Filesystem trouble: read-only root, folders removed while running, no inotify, FUSE mounts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import inotify_simple
import pytest
from relkit import (
    agent_argv,
    events,
    mounted,
    popen,
    queue_dirs,
    require_root,
    require_tools,
    start_agent,
    wait_for_event,
)

from agentctl import census, drop, run_cli, stop, wait_until, write_config

pytestmark = pytest.mark.real


@pytest.mark.parametrize("prepared", [True, False], ids=["with-queue-folders", "empty"])
def test_read_only_root_fails_with_a_sentence_and_no_traceback(tmp_path: Path, prepared: bool) -> None:
    """A watch root on a read-only filesystem: exit code 1 and one clear sentence on stderr, no traceback."""
    root = tmp_path / "ro"
    with mounted(root, options="size=1m"):
        if prepared:
            queue_dirs(root)
            (root / "output").mkdir()
            (root / "unprocessed" / "waiting.txt").write_bytes(b"stays\n")
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        result = run_cli("run", "--watch", str(root), "--once")
        watch = run_cli("run", "--watch", str(root), timeout=30)
    for res in (result, watch):
        assert res.returncode == 1, res.stdout[-1000:] + res.stderr[-1000:]
        assert "Traceback" not in res.stdout + res.stderr
        message = res.stderr.strip().splitlines()
        assert len(message) == 1, message
        assert message[0].startswith("foldermon-agent: "), message
        assert str(root) in message[0]
        assert "read-only" in message[0].lower() or "not writable" in message[0]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A running agent (auto mode, quick rescans) on a fresh root; yields (root, log)."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", "[watch]\nrescan_interval = 1.0\n[retry]\nbackoff = 0.2\n")
    log = tmp_path / "agent.log"
    (root / "unprocessed").mkdir(parents=True)
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_for_event(log, "watching")
    yield root, log
    assert stop(proc) == 0


def test_output_dir_removed_while_running_is_recreated(agent: tuple[Path, Path]) -> None:
    """After output/ is deleted under the running agent, the next file is processed into a recreated output/."""
    root, _ = agent
    drop(root, "a.txt", b"a\n")
    wait_until(lambda: census(root)["processed"] == ["a.txt"])
    shutil.rmtree(root / "output")
    drop(root, "b.txt", b"b\n")
    wait_until(lambda: "b.txt" in census(root)["processed"] + census(root)["failed"], timeout=30)
    assert census(root)["failed"] == []
    assert (root / "output" / "b_processed.txt").read_bytes() == b"b\n"


def test_unprocessed_deleted_and_recreated_is_watched_again(agent: tuple[Path, Path]) -> None:
    """unprocessed/ removed and made again while the agent runs: files dropped into the new one are processed."""
    root, _ = agent
    drop(root, "a.txt", b"a\n")
    wait_until(lambda: census(root)["processed"] == ["a.txt"])
    shutil.rmtree(root / "unprocessed")
    (root / "unprocessed").mkdir()
    drop(root, "c.txt", b"c\n")
    wait_until(lambda: census(root)["processed"] == ["a.txt", "c.txt"], timeout=30)
    assert (root / "output" / "c_processed.txt").read_bytes() == b"c\n"


def test_inotify_instance_limit_reached_falls_back_to_polling(tmp_path: Path) -> None:
    """With no inotify instance left, auto mode polls, says why, and still processes files."""
    require_tools("unshare")
    # The limit is lowered in a user namespace of the agent's own (a child of the machine's),
    # so no other process on the machine loses inotify meanwhile; the kernel counts it the same.
    script = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"'
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    log = tmp_path / "agent.log"
    argv = ["unshare", "--user", "--map-root-user", "sh", "-c", script, "sh"]
    proc = popen([*argv, *agent_argv("run", "--watch", str(root))], log=log)
    try:
        watching = wait_for_event(log, "watching")
        drop(root, "x.txt", b"polled\n")
        wait_until(lambda: census(root)["processed"] == ["x.txt"], timeout=30)
    finally:
        code = stop(proc)
    assert code == 0
    assert watching["mode"] == "poll"
    assert "inotify instance limit reached" in watching["reason"]
    assert (root / "output" / "x_processed.txt").read_bytes() == b"polled\n"


@contextlib.contextmanager
def bindfs(source: Path, mount_point: Path) -> Iterator[Path]:
    require_root()
    require_tools("bindfs", "fusermount3")
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bindfs", str(source), str(mount_point)], check=True, capture_output=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mount_point)], check=False, capture_output=True)


def test_fuse_mount_is_polled_and_sees_writes_made_under_it(tmp_path: Path) -> None:
    """Root on a bindfs mount: auto mode detects FUSE and polls; files written via the underlying folder are processed."""
    under = tmp_path / "under"
    (under / "unprocessed").mkdir(parents=True)
    with bindfs(under, tmp_path / "fuse") as root:
        # The premise: inotify on the FUSE side sees nothing of writes made underneath it.
        with inotify_simple.INotify() as probe:
            probe.add_watch(root / "unprocessed", inotify_simple.flags.CREATE | inotify_simple.flags.MOVED_TO)
            (under / "unprocessed" / ".probe").write_bytes(b"")
            assert probe.read(timeout=500) == []
        (under / "unprocessed" / ".probe").unlink()
        log = tmp_path / "agent.log"
        proc = start_agent("run", "--watch", str(root), log=log)
        try:
            watching = wait_for_event(log, "watching")
            drop(under, "below.txt", b"written underneath\n")
            wait_until(lambda: census(under)["processed"] == ["below.txt"], timeout=30)
        finally:
            code = stop(proc)
    assert code == 0
    assert watching["mode"] == "poll"
    assert "fuse" in watching["reason"]
    assert (under / "output" / "below_processed.txt").read_bytes() == b"written underneath\n"
    assert events([log], "file processed")[0]["file"] == "below.txt"


def test_run_once_settles_the_fenced_claims_of_a_dead_agent_on_a_shared_root(tmp_path: Path) -> None:
    """A FUSE root (a lease: its claims are fenced, then settled after twice the lease): an agent
    SIGKILLed holding files, then `run --once` takes them up within its run (not leaving them
    fenced and exiting 0), and `status` counts fenced claims as being processed meanwhile."""
    under = tmp_path / "under"
    (under / "unprocessed").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml", '[agent]\nlease = 1.0\n[[processors]]\ntype = "sleepy"\nseconds = 5\n'
    )
    with bindfs(under, tmp_path / "fuse") as root:
        for i in range(3):
            drop(under, f"f{i}.txt", f"file {i}\n")
        proc = start_agent("run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log")
        wait_until(lambda: len(census(under)["underprocess"]) == 3, timeout=30)
        proc.kill()
        proc.wait(10)
        fast = write_config(tmp_path / "fast.toml", "[agent]\nlease = 1.5\n")
        started = time.monotonic()
        once = start_agent(
            "run", "--watch", str(root), "--once", "--config", str(fast), log=tmp_path / "b.log"
        )
        wait_until(lambda: any(n.startswith(".fenced-") for n in os.listdir(under / "underprocess")))
        status = json.loads(run_cli("status", "--watch", str(root), "--json").stdout)["roots"][0]
        assert status["underprocess"] == 3  # fenced, not yet settled: still claimed
        assert once.wait(60) == 0, (tmp_path / "b.log").read_text()[-2000:]
        assert time.monotonic() - started >= 3.0  # the fence was waited for
        assert census(under)["processed"] == ["f0.txt", "f1.txt", "f2.txt"]
        assert sorted(os.listdir(under / "output")) == [
            "f0_processed.txt",
            "f1_processed.txt",
            "f2_processed.txt",
        ]
