"""Security: nothing outside the roots is touched, names cannot escape, modes are tight, no stray listeners."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from relkit import agent_argv, mounted, popen, require_root, require_tools, terminate_all, wait_for_event
from stracetrace import Call, parse, run_traced

from agentctl import PLUGINS, REPO, census, drop, write_config

pytestmark = pytest.mark.real

MUTATING = frozenset(
    {
        "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink",
        "unlinkat", "mkdir", "mkdirat", "rmdir", "chmod", "fchmodat", "chown", "fchownat", "lchown",
        "truncate", "utimensat", "mknod", "mknodat", "creat",
    }
)  # fmt: skip
WRITE_OPEN = re.compile(r"\bO_(WRONLY|RDWR|CREAT|TRUNC)\b")
SYSTEM = ("/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/etc/", "/proc/", "/sys/", "/dev/")
# Python's start-up probes for its standard library above its prefix (stat only).
LANDMARK = re.compile(r".*/lib/python3\d*\.zip")


def _within(path: str, *dirs: Path | str) -> bool:
    return any(path == str(d) or path.startswith(f"{str(d).rstrip('/')}/") for d in dirs)


def _paths(call: Call) -> list[str]:
    # Not files: the agent's own pipes, sockets and anonymous inodes.
    return [p for p in call.touched if p.startswith("/")]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One traced drain with hostile names and links planted in and around the queue."""
    require_root()
    require_tools("strace")
    tmp = tmp_path_factory.mktemp("sec")
    root, out, cwd = tmp / "root", tmp / "out", tmp / "cwd"
    cwd.mkdir()
    with mounted(tmp / "outside", options="size=1m,strictatime") as outside:
        for name in ("secret", "counter-target", "output-target", "record-target"):
            (outside / name).write_bytes(b"outside the roots\n")
            os.utime(outside / name, (1_000_000_000, 1_000_000_000))
        drop(root, "good.txt", b"good\n")
        drop(root, "victim.txt", b"victim\n")
        drop(root, "..data", b"dot name\n")
        drop(root, "bad.txt", b"BAD\n")
        os.symlink(outside / "secret", root / "unprocessed" / "link.txt")
        os.symlink("../../outside/secret", root / "unprocessed" / "relative-link.txt")
        # Planted where the agent keeps bookkeeping or writes results: none may be followed.
        os.symlink(outside / "counter-target", root / "unprocessed" / ".victim.txt.attempts")
        out.mkdir()
        os.symlink(outside / "output-target", out / "victim_processed.txt")
        (root / "failed").mkdir()
        os.symlink(outside / "record-target", root / "failed" / ".bad.txt.error.json")
        config = write_config(
            tmp / "c.toml",
            '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n',
        )
        result = run_traced(
            ["run", "--watch", str(root), "--output-dir", str(out), "--once", "--config", str(config)],
            tmp / "trace.txt",
            syscalls="%file,%desc",
            cwd=cwd,
        )
        atimes = {p.name: p.stat().st_atime for p in outside.iterdir()}
        contents = {p.name: p.read_bytes() for p in outside.iterdir()}
        yield {
            "tmp": tmp,
            "root": root,
            "out": out,
            "cwd": cwd,
            "config": config,
            "outside": outside,
            "result": result,
            "calls": parse((tmp / "trace.txt").read_text()),
            "atimes": atimes,
            "contents": contents,
        }


def test_traced_run_succeeded(traced: dict[str, Any]) -> None:
    """The traced run exits 1 (files failed) with the good files processed and the links quarantined."""
    result = traced["result"]
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    found = census(traced["root"])
    # The victim's output name is taken by a planted link: input and output take suffix 1.
    assert found["processed"] == ["good.txt", "victim.1.txt"]
    assert found["failed"] == ["bad.1.txt", "link.txt", "relative-link.txt"]


def test_nothing_outside_the_roots_and_the_interpreter_is_touched(traced: dict[str, Any]) -> None:
    """Every path in every file syscall is under the root, the output dir, the config or Python's own files."""
    allowed = (
        traced["root"],
        traced["out"],
        traced["cwd"],
        traced["config"],
        REPO / "agent",
        PLUGINS,
        sys.prefix,
        sys.base_prefix,
        *SYSTEM,
    )
    touched = {p for c in traced["calls"] for p in _paths(c)}
    strays = sorted(p for p in touched if not _within(p, *allowed) and not LANDMARK.fullmatch(p))
    assert strays == []


def test_nothing_is_written_moved_or_removed_outside_the_roots(traced: dict[str, Any]) -> None:
    """Every creating, writing, moving or removing call names a path under the watch root or the output dir."""
    bad = []
    for call in traced["calls"]:
        mutating = call.name in MUTATING or (
            call.name in ("open", "openat", "openat2") and WRITE_OPEN.search(call.args)
        )
        if mutating and not all(_within(p, traced["root"], traced["out"], "/dev/null") for p in _paths(call)):
            bad.append(f"{call.name}({call.args})")
    assert bad == []


def test_files_outside_the_roots_are_never_read_or_changed(traced: dict[str, Any]) -> None:
    """Link targets and targets of planted links keep their atime (strictatime mount) and content."""
    assert traced["atimes"] == dict.fromkeys(traced["atimes"], 1_000_000_000)
    assert set(traced["contents"].values()) == {b"outside the roots\n"}
    assert not any(_within(p, traced["outside"]) for c in traced["calls"] for p in _paths(c))


def test_planted_links_are_neither_followed_nor_replaced(traced: dict[str, Any]) -> None:
    """An output name and an error record name planted as links stay as they are; the agent
    takes the next free names instead (it never replaces a name)."""
    out, root = traced["out"], traced["root"]
    assert os.readlink(out / "victim_processed.txt") == str(traced["outside"] / "output-target")
    assert (out / "victim_processed.1.txt").read_bytes() == b"victim\n"
    assert os.readlink(root / "failed" / ".bad.txt.error.json") == str(traced["outside"] / "record-target")
    record = json.loads((root / "failed" / ".bad.1.txt.error.json").read_text())
    assert (record["file"], record["failed_name"]) == ("bad.txt", "bad.1.txt")


def test_dot_names_stay_untouched(traced: dict[str, Any]) -> None:
    """'..data' is a dotfile name: never taken, so it cannot be turned into a path out of the folder."""
    assert (traced["root"] / "unprocessed" / "..data").read_bytes() == b"dot name\n"
    assert not any(p.endswith("/..data") for c in traced["calls"] if c.name in MUTATING for p in _paths(c))


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o640), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_and_error_records_are_created_0640_under_the_umask(
    tmp_path: Path, umask: int, expected: int
) -> None:
    """Outputs and error records are 0640 masked by the umask; the agent never widens a mode."""
    root = tmp_path / "root"
    drop(root, "good.txt", b"good\n")
    drop(root, "bad.txt", b"BAD\n")
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    argv = ["sh", "-c", f'umask {umask:03o} && exec "$@"', "sh"]
    argv += agent_argv("run", "--watch", str(root), "--once", "--config", str(config))
    proc = popen(argv, log=tmp_path / "agent.log")
    assert proc.wait(60) == 1
    assert stat.S_IMODE(os.stat(root / "output" / "good_processed.txt").st_mode) == expected
    assert stat.S_IMODE(os.stat(root / "failed" / ".bad.txt.error.json").st_mode) == expected


def _sockets(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _inet(pid: int) -> list[tuple[str, str, str, str]]:
    """(table, local address, state, inode) of every TCP/UDP socket in the process's network namespace."""
    rows = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            rows.append((table, fields[1], fields[3], fields[9]))
    return rows


def test_no_network_socket_without_telemetry_configured(tmp_path: Path) -> None:
    """With no OTEL_* settings the running agent has no TCP or UDP socket at all."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    log = tmp_path / "agent.log"
    proc = popen(agent_argv("run", "--watch", str(root)), log=log)
    try:
        wait_for_event(log, "watching")
        drop(root, "a.txt", b"a\n")
        wait_for_event(log, "file processed")
        mine = _sockets(proc.pid)
        inet = [row for row in _inet(proc.pid) if row[3] in mine]
    finally:
        assert terminate_all([proc]) == [0]
    assert inet == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_prometheus_endpoint_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    """OTEL_METRICS_EXPORTER=prometheus without a host: the one listener is 127.0.0.1, and it serves metrics."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    port = _free_port()
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    log = tmp_path / "agent.log"
    proc = popen(agent_argv("run", "--watch", str(root)), log=log, env=env)
    try:
        wait_for_event(log, "watching")
        mine = _sockets(proc.pid)
        listening = [row for row in _inet(proc.pid) if row[3] in mine and row[2] == "0A"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            body = reply.read().decode()
    finally:
        assert terminate_all([proc]) == [0]
    assert listening == [("tcp", f"0100007F:{port:04X}", "0A", listening[0][3])], listening
    assert "foldermon" in body
