"""The real agent talking sd_notify to a datagram socket, as systemd would see it."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

from agentctl import drop, start, stop, wait_until, write_config
from notifysock import NotifySocket


def _env(notify: NotifySocket, watchdog_usec: int = 1_000_000) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}


def test_ready_status_pings_and_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    """READY=1 with a STATUS after start, pings at half the watchdog timeout, STOPPING=1 on SIGTERM."""
    root = tmp_path / "root"
    drop(root, "a.txt", "x\n")
    proc = start(
        "run", "--watch", str(root), "--config", "/dev/null", log=tmp_path / "a.log", env=_env(notify)
    )
    try:
        wait_until(lambda: notify.has("READY=1"))
        ready = next(m for _, m in notify.drain() if "READY=1" in m.split("\n"))
        assert any(line.startswith("STATUS=") and "root(s)" in line for line in ready.split("\n"))
        wait_until(lambda: any("processed 1" in m for _, m in notify.drain()), timeout=10)
        time.sleep(2.2)
        pings = notify.pings()
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) >= 3
        assert all(0.3 < g < 0.9 for g in gaps[1:]), gaps
    finally:
        assert stop(proc) == 0
    assert notify.has("STOPPING=1")


def test_pings_stop_while_a_processor_hangs(tmp_path: Path, notify: NotifySocket) -> None:
    """A processor stuck forever stops the watchdog pings, so systemd would restart the agent."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "h.toml", '[[processors]]\ntype = "hang"\nmarker = "HANG"\n')
    proc = start(
        "run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log", env=_env(notify)
    )
    try:
        wait_until(lambda: notify.has("READY=1"))
        wait_until(lambda: len(notify.pings()) >= 2)
        drop(root, "stuck.txt", "HANG\n")
        wait_until(lambda: any((root / "underprocess").glob("*/stuck.txt")))
        time.sleep(0.6)  # a ping already on its way may still arrive
        before = len(notify.pings())
        time.sleep(2.0)
        assert len(notify.pings()) == before
    finally:
        proc.kill()
        proc.wait()


def test_sighup_sends_reloading_then_ready_for_good_and_bad_configs(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """SIGHUP: RELOADING=1 then READY=1, both for a valid new config and for a rejected one."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", '[[processors]]\ntype = "uppercase"\n')
    proc = start(
        "run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log", env=_env(notify)
    )
    try:
        wait_until(lambda: notify.has("READY=1"))
        for text, expected in (
            ('[[processors]]\ntype = "lowercase"\n', "reloaded"),
            ("[[processors]]\ntype = 7\n", "rejected"),
        ):
            notify.messages.clear()
            config.write_text(text)
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda e=expected: any(e in m for _, m in notify.drain()))
            fields = [f for _, m in notify.drain() for f in m.split("\n")]
            reloading = fields.index("RELOADING=1")
            assert "READY=1" in fields[reloading:]
            assert any(f.startswith("MONOTONIC_USEC=") for f in fields)
    finally:
        assert stop(proc) == 0


def test_without_notify_socket_nothing_is_sent(tmp_path: Path) -> None:
    """Without NOTIFY_SOCKET the agent runs normally and opens no notify socket."""
    root = tmp_path / "root"
    drop(root, "a.txt", "x\n")
    env = {"WATCHDOG_USEC": "1000000"}
    proc = start("run", "--watch", str(root), "--config", "/dev/null", log=tmp_path / "a.log", env=env)
    try:
        wait_until((root / "processed" / "a.txt").exists)
        fds = os.listdir(f"/proc/{proc.pid}/fd")
        kinds = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds]
        assert not [k for k in kinds if k.startswith("socket:")]
    finally:
        assert stop(proc) == 0
