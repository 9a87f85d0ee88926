"""Faults around the queue: names that cannot be claimed, roots replaced under a running agent,
queue folders split over mounts, finishes that fail after publication, the failed-queue gauge
and signals that arrive in the first instants of a start; each run with the real agent."""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from relkit import (
    agent_argv,
    events,
    leftovers,
    mounted,
    output_name,
    passthrough,
    popen,
    queue_dirs,
    records,
    require_root,
    require_tools,
    start_agent,
    terminate_all,
    wait_for_event,
)

from agentctl import PLUGINS, REPO, census, drop, run_cli, wait_until, write_config
from notifysock import NotifySocket

pytestmark = pytest.mark.real

UNCLAIMABLE = "cannot claim file; left in place and tried again at each scan"
FINISH_RETRY = "output published but the input could not be finished; will retry"
CLAIM_FOLDER_GONE = "claim folder was gone"


# -- helpers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unprivileged:
    """A folder every user can reach, holding a copy of the agent, and how to run it as nobody."""

    base: Path
    uid: int
    gid: int

    @property
    def env(self) -> dict[str, str]:
        src = self.base / "src"
        return {"PYTHONPATH": f"{src}:{src / 'plugins'}", "HOME": str(self.base)}

    def argv(self, *args: str) -> list[str]:
        switch = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        return [*switch, *agent_argv(*args)]

    def own(self, *paths: Path) -> None:
        for path in paths:
            os.chown(path, self.uid, self.gid)

    def drop(self, root: Path, name: str, data: bytes) -> None:
        """Write a file owned by the user elsewhere, then rename it into ``unprocessed/``."""
        staging = self.base / "staging"
        staging.mkdir(exist_ok=True)
        (staging / name).write_bytes(data)
        self.own(staging / name)
        os.rename(staging / name, root / "unprocessed" / name)

    def config(self, text: str) -> Path:
        path = write_config(self.base / "agent.toml", text)
        path.chmod(0o644)
        return path


@pytest.fixture
def unprivileged() -> Iterator[Unprivileged]:
    """The agent as user nobody, from a copy of its source in a folder nobody can read (tmp_path is root's)."""
    require_root()
    require_tools("setpriv")
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="foldermon-faults-", dir="/tmp"))
    base.chmod(0o755)
    shutil.copytree(REPO / "agent" / "foldermon", base / "src" / "foldermon")
    shutil.copytree(PLUGINS, base / "src" / "plugins")
    yield Unprivileged(base, nobody.pw_uid, nobody.pw_gid)
    shutil.rmtree(base, ignore_errors=True)


def owned_root(user: Unprivileged) -> Path:
    """A watch root whose queue and output folders all belong to the unprivileged user."""
    root = user.base / "root"
    queue_dirs(root)
    (root / "output").mkdir()
    user.own(root, *(root / d for d in ("unprocessed", "underprocess", "processed", "failed", "output")))
    return root


def free_ports(count: int = 1) -> int:
    """A TCP port on 127.0.0.1 that is free, and the ``count - 1`` after it too."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return int(first)
    raise AssertionError("no free run of TCP ports")


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return str(answer.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def queue_depth(text: str | None, root: Path, state: str) -> float | None:
    """The value of ``foldermon_queue_depth`` for one root and state in a Prometheus page."""
    for line in (text or "").splitlines():
        if not line.startswith("foldermon_queue_depth{"):
            continue
        labels, _, value = line.rpartition(" ")
        if f'foldermon_queue_state="{state}"' in labels and f'foldermon_watch_root="{root}"' in labels:
            return float(value)
    return None


def handler_installed(pid: int, signum: int) -> bool:
    """Whether the process catches ``signum`` (its SigCgt mask in /proc); False once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    match = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return bool(match and int(match.group(1), 16) >> (signum - 1) & 1)


# A signal that reaches the interpreter before it runs the agent's first line kills any Python
# program: the tests send theirs from the instant the agent catches it (about 15 ms after Popen),
# or at this limit whatever the agent does. The previous code only caught signals once it had
# imported everything, loaded its config and opened telemetry (160-200 ms after Popen).
EARLIEST_HANDLER_LIMIT = 0.08


def signal_early(proc: subprocess.Popen[bytes], signum: int, started: float, at: float = 0.0) -> float:
    """Send ``signum`` ``at`` seconds after ``started``, but not before the agent catches it
    (nor later than EARLIEST_HANDLER_LIMIT for that wait); returns when it was sent."""
    wait_until(
        lambda: handler_installed(proc.pid, signum) or time.monotonic() - started >= EARLIEST_HANDLER_LIMIT,
        timeout=5,
        interval=0.0005,
    )
    delay = started + at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    proc.send_signal(signum)
    return time.monotonic() - started


# -- A. claims are per name -------------------------------------------------------------------------


def test_file_that_cannot_be_claimed_never_holds_back_the_rest_of_its_batch(
    unprivileged: Unprivileged,
) -> None:
    """Agent as nobody on a sticky drop folder: a root-owned file first in a claim batch stays, reported once, and all 20 others are processed."""
    user = unprivileged
    root = owned_root(user)
    unprocessed = root / "unprocessed"
    os.chown(unprocessed, 0, 0)
    unprocessed.chmod(0o1777)  # a shared drop folder: only a file's owner may move it out
    config = user.config('[watch]\nmode = "inotify"\nrescan_interval = 0.5\n')
    log = user.base / "agent.log"
    proc = popen(user.argv("run", "--watch", str(root), "--config", str(config)), log=log, env=user.env)
    wait_for_event(log, "watching")
    staging = user.base / "staging"
    staging.mkdir()
    good = {f"good{i:02d}.txt": b"good file %d\n" % i for i in range(20)}
    # Stopped while the files arrive, the agent reads all their events at once, in this order:
    # the root-owned file heads the first claim batch of 16.
    proc.send_signal(signal.SIGSTOP)
    try:
        (staging / "root-owned.txt").write_bytes(b"belongs to root\n")
        os.rename(staging / "root-owned.txt", unprocessed / "root-owned.txt")
        for name, data in good.items():
            user.drop(root, name, data)
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_until(
        lambda: census(root)["processed"] == sorted(good), timeout=30, what="the 20 good files processed"
    )
    time.sleep(3.0)  # several rescans (every 0.5 s) each offer the root-owned file again
    assert terminate_all([proc]) == [0]
    found = census(root)
    assert found["unprocessed"] == ["root-owned.txt"]
    assert found["underprocess"] == []
    assert found["failed"] == []
    held = os.stat(unprocessed / "root-owned.txt")
    assert (held.st_uid, (unprocessed / "root-owned.txt").read_bytes()) == (0, b"belongs to root\n")
    for name, data in good.items():
        assert (root / "output" / output_name(name)).read_bytes() == passthrough(data)
    reports = events([log], UNCLAIMABLE)
    assert [r["file"] for r in reports] == ["root-owned.txt"], reports
    assert "not permitted" in reports[0]["error"] or "denied" in reports[0]["error"], reports[0]
    assert events([log], "claim failed") == []
    assert leftovers(root) == []


def test_file_dropped_under_a_name_waiting_for_its_retry_is_processed_after_it(tmp_path: Path) -> None:
    """A good x.txt arriving while a failing x.txt waits claimed for its retry is claimed once the first leaves, not clobbering it."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml",
        '[retry]\nmax_attempts = 3\nbackoff = 2\n[[processors]]\ntype = "raise_on"\n',
    )
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_for_event(log, "watching")
    bad, fine = b"one\nBAD line\n", b"a good file of the same name\n"
    drop(root, "x.txt", bad)
    wait_for_event(log, "attempt failed; will retry", timeout=15)
    assert census(root)["underprocess"] == ["x.txt"]
    drop(root, "x.txt", fine)
    wait_until(lambda: census(root)["processed"], timeout=25, what="the second x.txt processed")
    assert terminate_all([proc]) == [0]
    found = census(root)
    assert found["failed"] == ["x.txt"], found
    assert (root / "failed" / "x.txt").read_bytes() == bad
    (processed_as,) = found["processed"]
    assert processed_as in ("x.txt", "x.1.txt"), found
    assert (root / "processed" / processed_as).read_bytes() == fine
    outputs = [n for n in os.listdir(root / "output") if not n.startswith(".")]
    assert len(outputs) == 1, outputs
    assert (root / "output" / outputs[0]).read_bytes() == fine
    assert found["unprocessed"] == []
    assert found["underprocess"] == []
    # The good file was claimed only after the failing one left for failed/.
    failed_at = next(i for i, r in enumerate(records(log)) if r.get("event") == "file failed")
    done_at = next(i for i, r in enumerate(records(log)) if r.get("event") == "file processed")
    assert failed_at < done_at
    assert events([log], "claim failed") == []


# -- B. watch roots replaced under a running agent ----------------------------------------------------


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_root_removed_and_made_again_is_served_again(tmp_path: Path, mode: str) -> None:
    """After rm -rf of the watch root and a new unprocessed/, a file dropped there is processed and the log says the claim folder was gone."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(tmp_path / "c.toml", f'[watch]\nmode = "{mode}"\nrescan_interval = 1\n')
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_for_event(log, "watching")
    drop(root, "first.txt", b"before the removal\n")
    wait_until(lambda: census(root)["processed"] == ["first.txt"], timeout=15)
    # The agent may make a folder in the root while it goes (rm -rf then says "not empty"): again.
    wait_until(lambda: _removed(root), timeout=10, what="the root removed")
    (root / "unprocessed").mkdir(parents=True)
    drop(root, "second.txt", b"after the removal\n")
    out = root / "output" / "second_processed.txt"
    wait_until(out.exists, timeout=10, what="the output of the file dropped into the new root")
    wait_until(lambda: census(root)["processed"] == ["second.txt"], timeout=10)
    assert terminate_all([proc]) == [0]
    assert out.read_bytes() == b"after the removal\n"
    gone = [r for r in records(log) if CLAIM_FOLDER_GONE in r.get("event", "")]
    assert gone, "no claim-folder-gone record"
    assert all(r["level"] == "warning" for r in gone), gone
    assert census(root)["unprocessed"] == []
    assert census(root)["underprocess"] == []


def _removed(root: Path) -> bool:
    try:
        shutil.rmtree(root)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_root_symlink_switched_to_another_tree_is_served_in_the_new_tree(tmp_path: Path, mode: str) -> None:
    """ROOT -> v1 switched atomically to v2 (a deploy): a file dropped into ROOT/unprocessed/ is processed into v2/output/."""
    v1, v2, root = tmp_path / "v1", tmp_path / "v2", tmp_path / "ROOT"
    (v1 / "unprocessed").mkdir(parents=True)
    root.symlink_to(v1)
    config = write_config(tmp_path / "c.toml", f'[watch]\nmode = "{mode}"\nrescan_interval = 1\n')
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_for_event(log, "watching")
    drop(root, "first.txt", b"into v1\n")
    wait_until(lambda: census(v1)["processed"] == ["first.txt"], timeout=15)
    # Switched once the group commit is done too: a switch before it leaves that commit's proof
    # of publication (a temp name of the output) in the old tree, which no agent serves any more.
    wait_until(lambda: os.listdir(v1 / "output") == ["first_processed.txt"], timeout=15)
    (v2 / "unprocessed").mkdir(parents=True)
    (tmp_path / "ROOT.new").symlink_to(v2)
    os.replace(tmp_path / "ROOT.new", root)
    drop(root, "second.txt", b"into v2\n")
    wait_until((v2 / "output" / "second_processed.txt").exists, timeout=10, what="the output in v2/output/")
    wait_until(lambda: census(v2)["processed"] == ["second.txt"], timeout=10)
    assert terminate_all([proc]) == [0]
    assert (v2 / "output" / "second_processed.txt").read_bytes() == b"into v2\n"
    assert sorted(os.listdir(v1 / "output")) == ["first_processed.txt"]
    assert census(v1)["processed"] == ["first.txt"]
    assert census(v1)["unprocessed"] == []
    assert census(v2)["unprocessed"] == []
    assert census(v2)["underprocess"] == []


# -- C. queue folders on different mounts ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
def test_queue_folder_on_another_mount_is_refused_at_start(tmp_path: Path, kind: str) -> None:
    """ROOT/processed on a tmpfs or a bind mount of the same filesystem: exit 1 with a sentence, the input untouched."""
    root = tmp_path / "root"
    queue_dirs(root)
    (root / "unprocessed" / "waiting.txt").write_bytes(b"must stay\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if kind == "tmpfs":
        mount = mounted(root / "processed", options="size=1m")
    else:
        mount = mounted(root / "processed", fstype="none", source=str(elsewhere), options="bind")
    with mount:
        if kind == "bind":  # the premise: one filesystem, only the mount differs
            assert os.stat(root / "processed").st_dev == os.stat(root / "unprocessed").st_dev
        result = run_cli("run", "--watch", str(root), "--once", timeout=60)
        found = census(root)
        outputs = os.listdir(root / "output") if (root / "output").exists() else []
        in_processed = os.listdir(root / "processed")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, message
    assert message[0].startswith("foldermon-agent: "), message
    assert "different filesystems or mounts" in message[0], message
    assert found["unprocessed"] == ["waiting.txt"], found
    assert (root / "unprocessed" / "waiting.txt").read_bytes() == b"must stay\n"
    assert found["underprocess"] == []
    assert in_processed == []
    assert outputs == []
    assert os.listdir(root / "underprocess") == []


# -- D. a finish that fails after publication ------------------------------------------------------------


def test_finish_failing_after_the_output_is_published_is_retried_uncounted_until_it_works(
    unprivileged: Unprivileged,
) -> None:
    """processed/ not writable for the agent: the published input is retried without using attempts, never quarantined, and finished once writable."""
    user = unprivileged
    root = owned_root(user)
    config = user.config("[retry]\nmax_attempts = 1\nbackoff = 0.3\n")
    log = user.base / "agent.log"
    proc = popen(user.argv("run", "--watch", str(root), "--config", str(config)), log=log, env=user.env)
    wait_for_event(log, "watching")
    (root / "processed").chmod(0o555)
    data = b"".join(b"line %d of the input\n" % i for i in range(100))
    user.drop(root, "x.txt", data)
    out = root / "output" / "x_processed.txt"
    wait_until(out.exists, timeout=15, what="the published output")
    wait_until(lambda: len(events([log], FINISH_RETRY)) >= 4, timeout=15, what="several finish retries")
    assert os.listdir(root / "failed") == []
    assert census(root)["underprocess"] == ["x.txt"]
    assert events([log], "file failed") == []
    assert events([log], "attempt failed; will retry") == []
    (root / "processed").chmod(0o755)
    wait_until(lambda: census(root)["processed"] == ["x.txt"], timeout=5, what="the input finished")
    wait_until(lambda: os.listdir(root / "output") == ["x_processed.txt"], timeout=5, what="one output file")
    assert terminate_all([proc]) == [0]
    assert out.read_bytes() == data
    assert (root / "processed" / "x.txt").read_bytes() == data
    assert os.listdir(root / "failed") == []
    assert census(root)["underprocess"] == []
    assert leftovers(root) == []
    assert all("Permission denied" in r["error"] for r in events([log], FINISH_RETRY))
    assert [r["file"] for r in events([log], "file processed")] == ["x.txt"]


# -- E. the failed-queue gauge ---------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_gauge_counts_the_folder_and_drops_after_retry_all(tmp_path: Path, workers: int) -> None:
    """foldermon_queue_depth{state="failed"} on worker 0's port is the number of files in failed/, and falls to 0 after `retry --all`."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(
        tmp_path / "c.toml",
        '[retry]\nmax_attempts = 1\nbackoff = 0.1\n[[processors]]\ntype = "raise_on"\n',
    )
    port = free_ports(workers)
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    log = tmp_path / "agent.log"
    args = ["run", "--watch", str(root), "--config", str(config), "--workers", str(workers)]
    proc = start_agent(*args, log=log, env=env)
    wait_until(lambda: len(events([log], "watching")) == workers, timeout=30)
    wait_until(lambda: queue_depth(scrape(port), root, "failed") == 0, timeout=15, what="the gauge at 0")
    names = [f"bad{i}.txt" for i in range(3)]
    for name in names:
        drop(root, name, b"BAD input %s\n" % name.encode())
    wait_until(lambda: set(names) <= set(census(root)["failed"]), timeout=20, what="3 files in failed/")
    wait_until(
        lambda: queue_depth(scrape(port), root, "failed") == 3, timeout=10, what="the failed gauge at 3"
    )
    if workers > 1:  # worker 1 serves port + 1; the folder gauges come from worker 0 only
        page = wait_until(lambda: scrape(port + 1), timeout=10, what="worker 1's endpoint")
        assert "foldermon_files_total" in page
        assert queue_depth(page, root, "failed") is None
    # The cause is fixed: the processor goes, applied by a reload while the agent runs.
    write_config(config, "[retry]\nmax_attempts = 1\nbackoff = 0.1\n")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(events([log], "reloaded")) == workers, timeout=10, what="every worker reloaded")
    retried = run_cli("retry", "--watch", str(root), "--all", timeout=60)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    wait_until(lambda: census(root)["processed"] == names, timeout=20, what="the retried files processed")
    wait_until(
        lambda: queue_depth(scrape(port), root, "failed") == 0, timeout=10, what="the failed gauge at 0"
    )
    assert terminate_all([proc]) == [0]
    assert census(root)["failed"] == []
    for name in names:
        assert (root / "output" / output_name(name)).read_bytes() == b"BAD input %s\n" % name.encode()


# -- F. signals right after start --------------------------------------------------------------------------


def test_sighup_in_the_first_instants_of_a_start_is_a_reload_not_a_death(tmp_path: Path) -> None:
    """SIGHUP ~15 ms after Popen, then at random instants of the first 0.3 s, over 10 starts: the agent lives on, processes, exits 0."""
    rng = random.Random(20261201)
    for run in range(10):
        root = tmp_path / f"root{run}"
        (root / "unprocessed").mkdir(parents=True)
        log = tmp_path / f"agent{run}.log"
        started = time.monotonic()
        proc = start_agent("run", "--watch", str(root), log=log)
        at = 0.0 if run == 0 else rng.uniform(0.0, 0.3)
        sent = signal_early(proc, signal.SIGHUP, started, at)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.0)  # still running a second later
        drop(root, "after.txt", b"dropped after the SIGHUP\n")
        wait_until(lambda: census(root)["processed"] == ["after.txt"], timeout=15)  # noqa: B023
        code = terminate_all([proc])[0]
        assert code == 0, (
            f"run {run}: SIGHUP at {sent * 1000:.0f} ms, exit {code}:\n{log.read_text()[-2000:]}"
        )
        assert (root / "output" / "after_processed.txt").read_bytes() == b"dropped after the SIGHUP\n"
        assert events([log], "reloaded"), f"run {run}: the early SIGHUP was not applied as a reload"


def test_sigterm_in_the_first_instants_of_a_start_exits_zero(tmp_path: Path) -> None:
    """SIGTERM ~15 ms after Popen, 10 times: each start ends with exit code 0, not death by the signal."""
    for run in range(10):
        root = tmp_path / f"root{run}"
        (root / "unprocessed").mkdir(parents=True)
        log = tmp_path / f"agent{run}.log"
        started = time.monotonic()
        proc = start_agent("run", "--watch", str(root), log=log)
        sent = signal_early(proc, signal.SIGTERM, started)
        code = proc.wait(30)
        assert code == 0, (
            f"run {run}: SIGTERM at {sent * 1000:.0f} ms, exit {code}:\n{log.read_text()[-2000:]}"
        )
        claims = root / "underprocess"
        assert not claims.exists() or os.listdir(claims) == [], os.listdir(claims)


def test_root_that_cannot_be_made_again_is_reported_and_served_once_it_can(tmp_path: Path) -> None:
    """A root replaced by a plain file: the agent says it cannot serve it (log, STATUS, the watch
    mode gauge), keeps running, and serves the root again once the file is gone."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    port = free_ports()
    config = write_config(tmp_path / "c.toml", "[watch]\nrescan_interval = 0.5\n")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
           "NOTIFY_SOCKET": str(notify.path)}  # fmt: skip
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log, env=env)
    wait_for_event(log, "watching")
    shutil.rmtree(root)
    root.write_text("not a folder\n")
    wait_for_event(log, "watch root unusable; will try again at each rescan", timeout=15)
    unavailable = re.compile(r'foldermon_watch_mode\{[^}]*foldermon_watch_mode="unavailable"[^}]*\} 1')
    wait_until(lambda: unavailable.search(scrape(port) or ""), timeout=15, what="the unavailable watch mode")
    status = f"cannot serve {root}"
    wait_until(lambda: any(status in m for _, m in notify.drain()), timeout=5, what="STATUS naming the root")
    notify.close()
    assert proc.poll() is None
    root.unlink()
    (root / "unprocessed").mkdir(parents=True)
    drop(root, "back.txt", b"served again\n")
    wait_until(lambda: census(root)["processed"] == ["back.txt"], timeout=15, what="the root served again")
    assert terminate_all([proc]) == [0]
    assert len(events([log], "watch root unusable; will try again at each rescan")) == 1


def test_retry_of_the_longest_accepted_name_keeps_its_record(tmp_path: Path) -> None:
    """A 235-byte name (the longest the agent takes) quarantined, then retried: no traceback, the
    input back in unprocessed/, its record kept in failed/.history/ under a shorter name."""
    root = tmp_path / "root"
    name = "b" * 231 + ".txt"
    drop(root, name, b"a line longer than ten bytes\n")
    config = write_config(tmp_path / "c.toml", "[pipeline]\nmax_line_bytes = 10\n[retry]\nmax_attempts = 1\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    assert census(root)["failed"] == [name]
    result = run_cli("retry", "--watch", str(root), name)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert census(root)["unprocessed"] == [name]
    assert [n for n in os.listdir(root / "failed") if n != ".history"] == []
    (kept,) = os.listdir(root / "failed" / ".history")
    assert len(kept.encode()) <= 255


def test_retry_racing_a_running_agent_keeps_every_record(tmp_path: Path) -> None:
    """retry of a file that fails again at once, five times, with the retry process slowed down
    (strace delays its renames): every earlier record reaches failed/.history/, none is replaced,
    and the file in failed/ always has its own record."""
    require_tools("strace")
    root = tmp_path / "root"
    queue_dirs(root)
    config = write_config(tmp_path / "c.toml", "[pipeline]\nmax_line_bytes = 40\n[retry]\nmax_attempts = 1\n")
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    wait_for_event(log, "watching")
    drop(root, "x", b"x" * 100 + b"\n")
    slow = ["strace", "-f", "-qq", "-o", os.devnull, "-e", "trace=renameat2,linkat",
            "-e", "inject=renameat2,linkat:delay_enter=300000"]  # fmt: skip
    for _ in range(5):
        wait_until(lambda: census(root)["failed"] == ["x"], timeout=20)
        result = subprocess.run(
            [*slow, *agent_argv("retry", "--watch", str(root), "x")],
            env={**os.environ, "PYTHONPATH": str(REPO / "agent"), "FOLDERMON_CONFIG": os.devnull},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    wait_until(lambda: census(root)["failed"] == ["x"], timeout=20)
    assert terminate_all([proc]) == [0]
    assert len(os.listdir(root / "failed" / ".history")) == 5
    listing = run_cli("failed", "--watch", str(root))
    assert "no error record" not in listing.stdout


def test_run_once_tries_a_file_it_cannot_claim_once_and_exits(unprivileged: Unprivileged) -> None:
    """run --once as nobody on a sticky drop folder with a root-owned file: the other files are
    processed, the root-owned one is reported once and left, and the run ends with 1: not every
    file was processed, and waiting would not change that."""
    user = unprivileged
    root = owned_root(user)
    unprocessed = root / "unprocessed"
    os.chown(unprocessed, 0, 0)
    unprocessed.chmod(0o1777)
    (unprocessed / "root-owned.txt").write_bytes(b"belongs to root\n")
    for i in range(3):
        user.drop(root, f"good{i}.txt", b"good\n")
    log = user.base / "once.log"
    proc = popen(user.argv("run", "--watch", str(root), "--once"), log=log, env=user.env)
    assert proc.wait(30) == 1
    assert census(root)["processed"] == ["good0.txt", "good1.txt", "good2.txt"]
    assert census(root)["unprocessed"] == ["root-owned.txt"]
    assert [r["file"] for r in events([log], UNCLAIMABLE)] == ["root-owned.txt"]
