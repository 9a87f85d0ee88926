"""Helpers shared by the reliability suite: tools, producers, log proofs, mounts and strace traces."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentctl import STATES, agent_env, command

LONG = os.environ.get("FOLDERMON_LONG") == "1"

# Which Debian package brings each tool tests/run must install.
TOOL_PACKAGES = {
    "strace": "strace",
    "bindfs": "bindfs",
    "fusermount3": "fuse3",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "mount": "mount",
    "umount": "mount",
}

COUNTER_CONFIG = '[[processors]]\ntype = "line_counter"\n'


def require_tools(*names: str) -> None:
    """Fail (never skip: CI requires these tests) when a tool the test needs is missing."""
    for name in names:
        if shutil.which(name) is None:
            package = TOOL_PACKAGES.get(name, name)
            pytest.fail(f"{name} is not installed: apt-get install {package} (tests/run installs it)")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test mounts filesystems or switches users: run it as root (CI does)")


# -- expected outputs -------------------------------------------------------------------------


def numbered(data: bytes) -> bytes:
    """What ``line_counter`` with its default format makes of ``data``: every byte kept."""
    if not data:
        return b""
    lines = (data[:-1] if data.endswith(b"\n") else data).split(b"\n")
    return b"".join(b"[%d] %s\n" % (i, line) for i, line in enumerate(lines, 1))


def passthrough(data: bytes) -> bytes:
    """What a pipeline that changes no line makes of ``data``: the same bytes, newline-terminated."""
    return data if not data or data.endswith(b"\n") else data + b"\n"


def output_name(name: str, n: int = 0) -> str:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    else:
        suffix = "." + suffix
    out = f"{stem}_processed{suffix}"
    if n == 0:
        return out
    stem, dot, suffix = out.rpartition(".")
    return f"{stem}.{n}.{suffix}" if dot and stem else f"{out}.{n}"


def text_payload(rng: random.Random, name: str, *, big_share: float = 0.05) -> bytes:
    """Lines that name their file; a few files are megabytes so kills land mid-file."""
    lines = rng.randint(2_000, 60_000) if rng.random() < big_share else rng.randint(0, 40)
    return b"".join(b"%s line %d %s\n" % (name.encode(), i, b"x" * rng.randint(0, 60)) for i in range(lines))


# -- agents -------------------------------------------------------------------------------------


# Every process a test starts, so that one failing half-way leaves no agent running (see conftest).
_STARTED: list[subprocess.Popen[bytes]] = []


def popen(
    argv: list[str], *, log: Path, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start any command with the agent's environment, its output appended to ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=agent_env(env), stdout=out, stderr=subprocess.STDOUT, **kwargs)
    _STARTED.append(proc)
    return proc


def start_agent(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return popen(command(*args), log=log, env=env)


def reap_started() -> None:
    """SIGKILL whatever a test started and left running (its whole process group for a namespace)."""
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
            kill(proc)


def agent_argv(*args: str) -> list[str]:
    return command(*args)


def kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def terminate_all(procs: Iterable[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every process still running, then wait; returns the exit codes."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(60))
        except subprocess.TimeoutExpired:
            kill(proc)
            codes.append(-9)
    return codes


def records(log: Path) -> list[dict[str, Any]]:
    """The JSON log records in ``log``; a line cut short by SIGKILL is skipped, nothing else is."""
    found = []
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    for i, line in enumerate(lines):
        if not line.startswith("{"):
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1:
                raise
    return found


def troubles(logs: Iterable[Path]) -> list[dict[str, Any]]:
    """Warning and error records, but for ``folder created``: a new root's folders are made at start."""
    return [
        r
        for log in logs
        for r in records(log)
        if r.get("level") in ("warning", "error") and r.get("event") != "folder created"
    ]


def events(logs: Iterable[Path], event: str) -> list[dict[str, Any]]:
    return [r for log in logs for r in records(log) if r.get("event") == event]


def processed_counts(logs: Iterable[Path]) -> Counter[str]:
    """How many times each input was reported processed, across every log."""
    return Counter(r["file"] for r in events(logs, "file processed"))


def instance_ids(log: Path) -> set[str]:
    return {r["instance"] for r in records(log) if "instance" in r}


def wait_for_event(log: Path, event: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in records(log):
            if record.get("event") == event:
                return record
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} record in {log} after {timeout}s:\n{log.read_text()[-3000:]}")


# -- the queue after a run ---------------------------------------------------------------------


def leftovers(root: Path, output: Path | None = None) -> list[str]:
    """Bookkeeping left behind: dotfiles in the queue and output folders, claim folders."""
    found = [f"underprocess/{n}" for n in os.listdir(root / "underprocess")]
    for state in ("unprocessed", "processed", "failed"):
        names = os.listdir(root / state)
        # An error record beside its input in failed/ is not a leftover, nor is the history of
        # records that retry keeps; a record without its input is.
        records = {f".{n}.error.json" for n in names} | {".history"} if state == "failed" else set()
        found += [f"{state}/{n}" for n in names if n.startswith(".") and n not in records]
    out = output or root / "output"
    found += [f"output/{n}" for n in os.listdir(out) if n.startswith(".")]
    return found


def assert_all_processed_once(
    root: Path, produced: dict[str, bytes], expect: Callable[[bytes], bytes]
) -> None:
    """Every input in processed/ exactly once under its own name, each output byte-exact, nothing else."""
    from agentctl import census

    found = census(root)
    assert found["unprocessed"] == [], f"left waiting: {found['unprocessed'][:10]}"
    assert found["underprocess"] == [], f"left claimed: {found['underprocess'][:10]}"
    assert found["failed"] == [], f"quarantined: {found['failed'][:10]}"
    missing = sorted(set(produced) - set(found["processed"]))
    extra = sorted(set(found["processed"]) - set(produced))
    assert not missing, f"{len(missing)} inputs lost, e.g. {missing[:5]}"
    assert not extra, f"inputs in processed/ under other names (processed twice?): {extra[:5]}"
    for name, data in produced.items():
        assert (root / "processed" / name).read_bytes() == data, f"input {name} changed"
    outputs = sorted(n for n in os.listdir(root / "output") if not n.startswith("."))
    assert outputs == sorted(output_name(n) for n in produced), "outputs are not one per input"
    for name, data in produced.items():
        got = (root / "output" / output_name(name)).read_bytes()
        assert got == expect(data), f"output of {name} is not byte-exact ({len(got)} bytes)"
    assert leftovers(root) == [], f"bookkeeping left behind: {leftovers(root)}"


# -- producers --------------------------------------------------------------------------------


class Producer:
    """Drops files into ``unprocessed/`` from a thread at a steady rate, as a producer would."""

    def __init__(
        self,
        root: Path,
        *,
        per_second: float,
        payload: Callable[[random.Random, str], bytes] = text_payload,
        prefix: str = "f",
        seed: int = 1,
        limit: int | None = None,
    ) -> None:
        self.root = root
        self.interval = 1.0 / per_second
        self.payload = payload
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.limit = limit
        self.produced: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._staging = root / f".staging-{prefix}"
        self._staging.mkdir(parents=True, exist_ok=True)
        (root / "unprocessed").mkdir(parents=True, exist_ok=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error

    def drop_one(self) -> str:
        name = f"{self.prefix}{len(self.produced):06d}.txt"
        data = self.payload(self.rng, name)
        tmp = self._staging / name
        tmp.write_bytes(data)
        os.rename(tmp, self.root / "unprocessed" / name)
        self.produced[name] = data
        return name

    def _run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self._stop.is_set():
                if self.limit is not None and len(self.produced) >= self.limit:
                    return
                self.drop_one()
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in stop()
            self.error = exc


def queue_dirs(root: Path) -> None:
    for state in STATES:
        (root / state).mkdir(parents=True, exist_ok=True)


# -- mounts -----------------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(
    target: Path, *, fstype: str = "tmpfs", source: str = "tmpfs", options: str = ""
) -> Iterator[Path]:
    """Mount a filesystem at ``target`` for the duration of the block (lazily unmounted after)."""
    require_root()
    require_tools("mount", "umount")
    target.mkdir(parents=True, exist_ok=True)
    argv = ["mount", "-t", fstype, *(["-o", options] if options else []), source, str(target)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


# -- /proc sampling -----------------------------------------------------------------------------


def proc_sample(pid: int) -> dict[str, int]:
    """Open fds, threads and resident memory (kB) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"].strip()),
        "rss_kb": int(fields["VmRSS"].split()[0]),
    }


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out
