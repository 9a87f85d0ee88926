"""`run --workers N`: one supervisor, N agent processes sharing the roots."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

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
from foldermon.telemetry import ENABLE_HINT
from notifysock import NotifySocket


def start_workers(
    tmp_path: Path,
    root: Path,
    workers: int,
    config: Path | str = "/dev/null",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``run --workers N`` in the background, its output going to ``a.log``."""
    args = ("run", "--watch", str(root), "--workers", str(workers), "--config", str(config))
    return start(*args, log=tmp_path / "a.log", env=env)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def notify_address(pid: int) -> str:
    """The sd_notify address the supervisor gave a worker (an abstract socket)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return "\0" + env[b"NOTIFY_SOCKET"].decode().removeprefix("@")


def processed_by(log: Path) -> dict[str, list[str]]:
    """Instance ids per input name, from the workers' "file processed" log records."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for record in log_records(log):
        if record.get("event") == "file processed":
            found[record["file"]].append(record["instance"])
    return found


def test_workers_drain_a_backlog_each_file_once(tmp_path: Path) -> None:
    """Three workers drain 600 files: each processed once, byte-exact, by more than one process."""
    root = tmp_path / "root"
    names = [f"f{i:04}.txt" for i in range(600)]
    for name in names:
        drop(root, name, f"{name} one\n{name} two\n")
    config = write_config(tmp_path / "u.toml", '[[processors]]\ntype = "uppercase"\n')
    result = run_cli("run", "--watch", str(root), "--once", "--workers", "3", "--config", str(config))
    assert result.returncode == 0, result.stderr
    (tmp_path / "run.log").write_text(result.stdout)
    assert sorted(census(root)["processed"]) == names
    for name in names:
        stem = name.removesuffix(".txt")
        assert (root / "output" / f"{stem}_processed.txt").read_text() == f"{name} ONE\n{name} TWO\n".upper()
    by = processed_by(tmp_path / "run.log")
    assert sorted(by) == names
    assert all(len(instances) == 1 for instances in by.values())
    records = log_records(tmp_path / "run.log")
    assert len({r["pid"] for r in records if r.get("event") == "worker started"}) == 3
    assert all(r.get("instance") for r in records), "every line names its instance, the supervisor's too"
    assert [r.get("event") for r in records].count(ENABLE_HINT) == 1  # said once, not per worker
    assert len({i for instances in by.values() for i in instances}) >= 2


def test_a_killed_worker_is_started_again_and_a_poison_file_quarantined(tmp_path: Path) -> None:
    """A file that SIGKILLs its worker every time: the worker is restarted each time, the file
    goes to failed/ after max_attempts, the other files are processed, the agent keeps running."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "k.toml",
        '[retry]\nmax_attempts = 3\nbackoff = 0.05\n[[processors]]\ntype = "kill_on"\nmarker = "POISON"\n',
    )
    log = tmp_path / "a.log"
    proc = start_workers(tmp_path, root, 2, config)
    try:
        drop(root, "poison.txt", "fine\nPOISON\n")
        for i in range(20):
            drop(root, f"ok{i:02}.txt", f"line {i}\n")
        wait_until((root / "failed" / ".poison.txt.error.json").exists, timeout=60)
        wait_until(lambda: len(census(root)["processed"]) == 20, timeout=30)
        assert proc.poll() is None
        record = json.loads((root / "failed" / ".poison.txt.error.json").read_text())
        assert record["attempts"] == 3
        killed = [r for r in log_records(log) if r.get("event") == "worker killed; starting it again"]
        assert len(killed) == 3
        assert {r["signal"] for r in killed} == {"SIGKILL"}
        wait_until(lambda: len(children(proc.pid)) == 2, what="the last killed worker to be started again")
    finally:
        assert stop(proc) == 0
    assert census(root)["underprocess"] == []


def test_a_worker_started_again_on_a_broken_config_file_waits_and_the_others_go_on(tmp_path: Path) -> None:
    """The config file has an edit not yet reloaded, and broken, when a worker dies: its successor
    cannot start (exit 78) and tries again later; the agent and the other worker keep serving,
    and a reload after the fix starts it at once."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "uppercase"\n')
    proc = start_workers(tmp_path, root, 2, config)
    try:
        serving = lambda: [r for r in log_records(tmp_path / "a.log") if r.get("event") == "serving root"]  # noqa: E731
        wait_until(lambda: len(serving()) == 2, what="two workers serving")
        config.write_text("[[processors]\n")  # a typo, not reloaded
        os.kill(children(proc.pid)[0], signal.SIGKILL)
        wait_until(
            lambda: any(
                "configuration file broken" in r.get("event", "") for r in log_records(tmp_path / "a.log")
            ),
            what="the successor refused",
        )
        drop(root, "a.txt", "a\n")
        wait_until(lambda: census(root)["processed"] == ["a.txt"], what="the other worker serving")
        assert proc.poll() is None
        config.write_text('[[processors]]\ntype = "uppercase"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: len(children(proc.pid)) == 2, timeout=8, what="the worker started again after the fix"
        )
    finally:
        assert stop(proc) == 0


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the supervisor: every worker is told to stop (parent-death signal) and exits."""
    root = tmp_path / "root"
    proc = start_workers(tmp_path, root, 3)
    try:
        workers = wait_until(lambda: len(children(proc.pid)) == 3 and children(proc.pid), timeout=30)
        wait_until(lambda: len(list((root / "underprocess").glob("*/.lock"))) == 3, timeout=30)
    finally:
        proc.kill()
        proc.wait()
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=30, what="workers to exit")
    # They stopped cleanly: each removed its claim folder.
    assert [p for p in (root / "underprocess").iterdir() if not p.name.startswith(".")] == []


def test_sd_notify_ready_status_reload_and_stop(tmp_path: Path, notify: NotifySocket) -> None:
    """systemd sees one agent: READY=1 once every worker is ready, a STATUS naming the workers,
    pings, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 and exit 0 on SIGTERM."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", '[[processors]]\ntype = "uppercase"\n')
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    log = tmp_path / "a.log"
    proc = start_workers(tmp_path, root, 2, config, env)
    try:
        wait_until(lambda: notify.has("READY=1"), timeout=30)
        ready = next(m for _, m in notify.drain() if "READY=1" in m.split("\n"))
        assert "STATUS=2 of 2 workers running" in ready
        # Both workers have sent READY by then: each logged its first scan.
        assert len([r for r in log_records(log) if r.get("event") == "watching"]) == 2
        drop(root, "a.txt", "x\n")
        wait_until((root / "processed" / "a.txt").exists)
        wait_until(lambda: len(notify.pings()) >= 3, timeout=10)
        # Only the supervisor talks to this socket: worker messages never reach it.
        assert all(pid == proc.pid for pid in notify.senders)
        notify.messages.clear()
        config.write_text('[[processors]]\ntype = "lowercase"\n')
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: notify.has("READY=1"), timeout=30)
        fields = [f for _, m in notify.drain() for f in m.split("\n")]
        assert fields.index("RELOADING=1") < fields.index("READY=1")
        wait_until(lambda: len([r for r in log_records(log) if r.get("event") == "reloaded"]) == 2)
    finally:
        assert stop(proc) == 0
    assert notify.has("STOPPING=1")


def test_pings_stop_while_one_worker_hangs(tmp_path: Path, notify: NotifySocket) -> None:
    """One worker stuck in a processor stops the supervisor's pings, though the other is healthy."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "h.toml", '[[processors]]\ntype = "hang"\nmarker = "HANG"\n')
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000"}
    proc = start_workers(tmp_path, root, 2, config, env)
    workers: list[int] = []
    try:
        wait_until(lambda: notify.has("READY=1"), timeout=30)
        workers = children(proc.pid)
        wait_until(lambda: len(notify.pings()) >= 2, timeout=10)
        drop(root, "stuck.txt", "HANG\n")
        wait_until(lambda: any((root / "underprocess").glob("*/stuck.txt")))
        # The hung worker's last ping ages past the limit (1 s) within 1 s; one ping may be on its way.
        time.sleep(1.6)
        before = len(notify.pings())
        drop(root, "fine.txt", "ok\n")
        wait_until((root / "processed" / "fine.txt").exists)  # the other worker works on
        # Another process pinging in the workers' names is not listened to.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as impostor:
            for _ in range(20):
                for address in map(notify_address, workers):
                    impostor.sendto(b"WATCHDOG=1", address)
                time.sleep(0.1)
        assert len(notify.pings()) == before
    finally:
        for pid in [proc.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_workers_setting_is_validated(tmp_path: Path) -> None:
    config = write_config(tmp_path / "w.toml", "[agent]\nworkers = 0\n")
    result = run_cli("check-config", str(config))
    assert result.returncode == 78
    assert "[agent] workers: must be between 1 and 64, got 0" in result.stderr


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return int(port)
    raise AssertionError("no two consecutive free ports")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_each_worker_serves_prometheus_on_its_own_port(tmp_path: Path) -> None:
    """Worker i listens on the configured port + i; only worker 0 reports the folder gauges."""
    root = tmp_path / "root"
    port = free_port_pair()
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    proc = start_workers(tmp_path, root, 2, env=env)
    try:
        for i in range(10):
            drop(root, f"f{i}.txt", "x\n")
        wait_until(lambda: len(census(root)["processed"]) == 10)

        def both() -> list[str] | None:
            try:
                return [scrape(port), scrape(port + 1)]
            except OSError:
                return None

        pages = wait_until(both, what="both workers' metrics endpoints")
        assert all("foldermon_files_total" in page for page in pages)
        assert ["foldermon_queue_depth" in page for page in pages] == [True, False]
    finally:
        assert stop(proc) == 0


def test_a_reload_does_not_change_the_number_of_workers(tmp_path: Path) -> None:
    """workers is read at start: a reload that changes it says so and keeps the running count."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", "[agent]\nworkers = 1\n")
    log = tmp_path / "a.log"
    proc = start("run", "--watch", str(root), "--config", str(config), log=log)
    try:
        wait_until(lambda: any(r.get("event") == "watching" for r in log_records(log)))
        config.write_text("[agent]\nworkers = 2\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(r.get("event") == "reloaded" for r in log_records(log)))
        said = [r for r in log_records(log) if r.get("event") == "these changes take effect after a restart"]
        assert said[0]["settings"] == ["agent.workers"]
        assert children(proc.pid) == []
    finally:
        assert stop(proc) == 0


def test_ctrl_c_to_the_group_while_workers_start_stops_them_cleanly(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: sent at once and at a few delays
    after the workers are started (their interpreters still starting), every worker records it
    and drains; the run ends with 0 and no traceback."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    log = tmp_path / "group.log"
    for delay in (0.0, 0.01, 0.03, 0.06, 0.0):
        with log.open("w+b") as out:
            proc = subprocess.Popen(
                command("run", "--watch", str(root), "--workers", "2"),
                env=agent_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_until(lambda: log.read_bytes().count(b'"worker started"') >= 2, timeout=20, interval=0.001)
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(30) == 0, log.read_text()[-2000:]
        text = log.read_text()
        assert "Traceback" not in text
        assert "worker killed" not in text
