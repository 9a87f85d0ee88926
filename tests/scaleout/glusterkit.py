"""A real GlusterFS volume on this machine, mounted by several simulated "hosts" whose network can be cut.

One ``glusterd -N`` keeps all its state under the cluster's workdir (its own ``glusterd.vol`` sets
``working-directory``, ``run-directory`` and the CLI socket) and serves one single-brick volume. Each
host mounts it with its own ``glusterfs`` client, run in a network namespace of its own with
``nsenter --net`` only, so the FUSE mount lands in the root mount namespace where tests see it. A veth
pair joins the namespace to the root one: 10.213.<n>.2 (host) <-> 10.213.<n>.1 (root side). The volfile
names the brick by this machine's hostname, which inside the namespace would resolve to the namespace's
own loopback, so each client is given ``--xlator-option=<volume>-client-0.remote-host=10.213.<n>.1``:
no /etc/hosts is touched and no mount namespace is needed.

``Host.cut`` loses packets in the network, as a partition does: both ends' permanent neighbour entries
point to a MAC nobody has, so the peer drops every frame, the sender sees no local error, and TCP only
notices by its timeouts (``server.tcp-user-timeout``, keepalives and ``network.ping-timeout``, 5 s here).

Every resource is listed in /run/glusterkit/resources.jsonl before or as it is made; the next cluster
undoes what a crashed (SIGKILLed) run left. One cluster runs at a time (flock on /run/glusterkit/lock):
glusterd's port 24007 is machine-wide.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REGISTRY = Path("/run/glusterkit")
TOOLS = ("glusterd", "glusterfs", "gluster", "ip", "nsenter", "unshare", "umount")
FAKE_MAC = "02:00:00:00:de:ad"
# Timeouts of 5 s to notice a lost host; every cache off so that each host sees the others' changes.
VOLUME_OPTIONS = """
    server.tcp-user-timeout 5  server.keepalive-time 2  server.keepalive-interval 1  server.keepalive-count 3
    client.tcp-user-timeout 5  client.keepalive-time 2  client.keepalive-interval 1  client.keepalive-count 3
    network.ping-timeout 5  performance.stat-prefetch off  performance.quick-read off
    performance.open-behind off  performance.write-behind off  performance.read-ahead off
    performance.io-cache off  performance.readdir-ahead off  performance.nl-cache off
    performance.md-cache-timeout 0
""".split()  # noqa: SIM905
# Called directly: mount.glusterfs mangles fopen-keep-cache.
FUSE_OPTIONS = [
    "--attribute-timeout=0",
    "--entry-timeout=0",
    "--negative-timeout=0",
    "--fopen-keep-cache=false",
]
GLUSTERD_VOL = """volume management
    type mgmt/glusterd
    option working-directory {workdir}/glusterd
    option run-directory {workdir}/run
    option glusterd-sockfile {workdir}/run/glusterd.socket
    option transport-type socket
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
end-volume
"""


def require_gluster() -> None:
    """Skip the test unless this machine can run a real volume: root, /dev/fuse and the tools."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("GlusterFS tests need root (glusterd, FUSE mounts, network namespaces)")
    if not Path("/dev/fuse").exists():
        pytest.skip("GlusterFS tests need /dev/fuse")
    if missing := [t for t in TOOLS if shutil.which(t) is None]:
        pytest.skip(f"no {' '.join(missing)}: apt-get install glusterfs-server glusterfs-client iproute2")


def run(*argv: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def wait_for(
    what: str, ready: Callable[[], object], timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll ``ready()`` until true; raise if ``proc`` exits first or time runs out. Returns the seconds taken."""
    start = time.monotonic()
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what}: not ready after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/pid/stat: with the pid it names one process. None once gone (or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _stop(pid: int, start: str | None, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL, the process ``pid`` that started at ``start``: never a reused pid."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        with contextlib.suppress(ProcessLookupError):
            if start is not None and _start_time(pid) == start:
                os.kill(pid, sig)
        while start is not None and _start_time(pid) == start and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def _mounts_under(path: Path) -> list[str]:
    targets = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return [t for t in targets if t == str(path) or t.startswith(f"{path}/")]


def _unmount(path: Path) -> None:
    for target in reversed(_mounts_under(path)):
        run("umount", "-l", target, check=False)


def _delete_network(netns: str = "", link: str = "") -> None:
    if link and Path(f"/sys/class/net/{link}").exists():
        run("ip", "link", "del", link, check=False)
    if netns and Path(f"/run/netns/{netns}").exists():
        run("ip", "netns", "del", netns, check=False)


def _remove_state(workdir: Path) -> None:
    """Delete a cluster's state in ``workdir`` (never its logs), unmounting what is under it first."""
    _unmount(workdir)
    for sub in ("glusterd", "run", "brick", *(p.name for p in workdir.glob("mnt-*"))):
        shutil.rmtree(workdir / sub, ignore_errors=True)


def _record(kind: str, **fields: Any) -> None:
    with (REGISTRY / "resources.jsonl").open("a") as out:
        out.write(json.dumps({"kind": kind, **fields}) + "\n")


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, output appended to ``log``, ``env`` added; its pid is recorded."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
    _record("pid", pid=proc.pid, start=_start_time(proc.pid))
    return proc


def reap_stale() -> None:
    """Undo what a crashed run listed: its processes, mounts, namespaces, veths and state folders."""
    registry = REGISTRY / "resources.jsonl"
    entries = [json.loads(line) for line in registry.read_text().splitlines()] if registry.exists() else []
    for entry in entries:
        if entry["kind"] == "pid":
            _stop(entry["pid"], entry["start"], grace=2)
        elif entry["kind"] == "workdir":  # bricks daemonize: their pid files are in the workdir
            for pidfile in Path(entry["path"], "run/vols").glob("*/*.pid"):
                with contextlib.suppress(ValueError, OSError):
                    pid = int(pidfile.read_text())
                    if entry["path"].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        files = _brick_files(pid)
                        _stop(pid, _start_time(pid), grace=2)
                        for path in files:
                            path.unlink(missing_ok=True)
                        _forget_log_dirs(pidfile.parent.name)
    for entry in entries:
        if entry["kind"] == "netns":
            _delete_network(netns=entry["name"])
        elif entry["kind"] == "link":
            _delete_network(link=entry["name"])
        elif entry["kind"] == "workdir":
            _remove_state(Path(entry["path"]))
    registry.unlink(missing_ok=True)


class Host:
    """One simulated machine: its own client mount and network namespace, its hostname for what it runs."""

    def __init__(self, workdir: Path, index: int) -> None:
        self.name = f"host{'abcdefghijklmnopqrstuvwxyz'[index]}"
        self.mount = workdir / f"mnt-{self.name}"
        self.netns = f"glusterkit-{self.name}"
        self.outer, self.inner = f"gkit{index}r", f"gkit{index}n"  # veth ends: root side, host side
        self.server_ip, self.ip = f"10.213.{index + 1}.1", f"10.213.{index + 1}.2"
        self.client: subprocess.Popen[bytes] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self._macs = ("", "")

    def _neighbours(self, outer_mac: str, inner_mac: str) -> None:
        """Permanent neighbour entries (no ARP, so a cut is silent) on the root side and the host side."""
        run("ip", "neigh", "replace", self.ip, "lladdr", inner_mac, "dev", self.outer, "nud", "permanent")
        run("ip", "-n", self.netns, "neigh", "replace", self.server_ip, "lladdr", outer_mac, "dev", self.inner,
            "nud", "permanent")  # fmt: skip

    def start(self, volume: str, logs: Path) -> float:
        """Make the namespace and veth, mount the volume from inside; returns seconds until the mount is usable."""
        _record("netns", name=self.netns)
        _record("link", name=self.outer)
        _delete_network(self.netns, self.outer)
        ns = ("ip", "-n", self.netns)
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", self.netns)
        run("ip", "addr", "add", f"{self.server_ip}/30", "dev", self.outer)
        run("ip", "link", "set", self.outer, "up")
        run(*ns, "addr", "add", f"{self.ip}/30", "dev", self.inner)
        run(*ns, "link", "set", self.inner, "up")
        run(*ns, "link", "set", "lo", "up")
        outer, inner = (
            json.loads(run(*cmd, "-j", "link", "show", "dev", dev).stdout)[0]["address"]
            for cmd, dev in ((("ip",), self.outer), (ns, self.inner))
        )
        self._macs = (outer, inner)
        self.restore()
        self.mount.mkdir(exist_ok=True)
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "glusterfs", "-N", *FUSE_OPTIONS,
                f"--volfile-server={self.server_ip}", f"--volfile-id={volume}",
                f"--xlator-option={volume}-client-0.remote-host={self.server_ip}",
                f"--log-file={logs / f'client-{self.name}.log'}", str(self.mount)]  # fmt: skip
        self.client = spawn(argv, logs / f"client-{self.name}.out")
        return wait_for(f"mount {self.mount}", lambda: _mounts_under(self.mount) and os.listdir(self.mount) is not None,
                        30, self.client)  # fmt: skip

    def cut(self) -> None:
        """Lose every packet between this host and the server, silently, until ``restore``."""
        self._neighbours(FAKE_MAC, FAKE_MAC)

    def restore(self) -> None:
        self._neighbours(*self._macs)

    def popen(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Run ``argv`` as a process of this host: in a UTS namespace whose hostname is ``self.name``, in a new
        session, stdout and stderr appended to ``log``, ``env`` added to this process's environment. Its mount
        and network namespaces are the root ones: it sees every host's mount (and is never cut itself)."""
        script = 'hostname "$1" && shift && exec "$@"'
        proc = spawn(["unshare", "--uts", "sh", "-c", script, "sh", self.name, *argv], log, env)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Kill what runs on this host, unmount, stop the client, delete the namespace and veth."""
        for proc in self.procs:  # each leads its own session: its group is what it started
            with contextlib.suppress(ProcessLookupError):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        _unmount(self.mount)
        if self.client is not None:
            _stop(self.client.pid, _start_time(self.client.pid), grace=5)
            self.client.wait(10)
        _delete_network(self.netns, self.outer)


class Cluster:
    """glusterd, one volume on ``workdir/brick`` and one client mount per host; a context manager."""

    def __init__(self, workdir: Path, hosts: int = 3) -> None:
        self.workdir = workdir.resolve()
        self.volume = f"gk-{uuid.uuid4().hex[:10]}"
        self.brick = self.workdir / "brick"
        self.logs = self.workdir / "log"
        self.hosts = [Host(self.workdir, i) for i in range(hosts)]
        self.glusterd: subprocess.Popen[bytes] | None = None
        self.setup_seconds = 0.0  # from the lock on (another cluster's run is waited for first)
        self.lock_wait_seconds = 0.0
        self._lock: IO[str] | None = None

    def gluster(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the gluster CLI against this cluster's glusterd."""
        sock, log = self.workdir / "run/glusterd.socket", self.logs / "cli.log"
        return run("gluster", "--mode=script", f"--glusterd-sock={sock}", f"--log-file={log}", *args,
                   timeout=timeout, check=check)  # fmt: skip

    def set_options(self, *pairs: str) -> None:
        """``volume set`` of key, value, key, value..."""
        self.gluster("volume", "set", self.volume, *pairs)

    def brick_pid(self) -> int | None:
        for pidfile in (self.workdir / "run/vols" / self.volume).glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                return int(pidfile.read_text())
        return None

    def __enter__(self) -> Cluster:
        REGISTRY.mkdir(parents=True, exist_ok=True)
        self._lock = (REGISTRY / "lock").open("w")
        self.lock_wait_seconds = wait_for("the end of another glusterkit cluster", self._try_lock, 600)
        start = time.monotonic()
        try:
            reap_stale()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.setup_seconds = time.monotonic() - start
        return self

    def _try_lock(self) -> bool:
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
        except BlockingIOError:
            return False
        return True

    def _start(self) -> None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 24007)) == 0:
                raise RuntimeError("something (a glusterd not started here?) already listens on port 24007")
        _record("workdir", path=str(self.workdir))
        _remove_state(self.workdir)
        shutil.rmtree(self.logs, ignore_errors=True)  # a new cluster's logs start empty
        for sub in ("glusterd", "run", "log", "brick"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        vol = self.workdir / "glusterd.vol"
        vol.write_text(GLUSTERD_VOL.format(workdir=self.workdir))
        self.glusterd = spawn(["glusterd", "-N", "-f", str(vol), "-l", str(self.logs / "glusterd.log")],
                              self.logs / "glusterd.out")  # fmt: skip
        wait_for(
            "glusterd", lambda: self.gluster("volume", "info", check=False).returncode == 0, 60, self.glusterd
        )
        # The brick is named by this machine's hostname: glusterd refuses 127.0.0.1 and localhost.
        self.gluster("volume", "create", self.volume, f"{socket.gethostname()}:{self.brick}", "force")
        self.set_options(*VOLUME_OPTIONS)
        self.gluster("volume", "start", self.volume)
        if pid := self.brick_pid():
            _record("pid", pid=pid, start=_start_time(pid))
        for host in self.hosts:
            host.start(self.volume, self.logs)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            for host in self.hosts:
                with contextlib.suppress(Exception):
                    host.stop()
            brick = self.brick_pid()
            brick_start = _start_time(brick) if brick else None
            brick_files = _brick_files(brick) if brick else []
            if self.glusterd is not None and self.glusterd.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.gluster("volume", "stop", self.volume, "force", timeout=30, check=False)
            if brick:
                _stop(brick, brick_start)
            for path in brick_files:  # the log is kept with the others, the socket removed
                with contextlib.suppress(OSError):
                    if path.suffix == ".log":
                        shutil.move(path, self.logs / "brick.log")
                    else:
                        path.unlink()
            if self.glusterd is not None:
                _stop(self.glusterd.pid, _start_time(self.glusterd.pid))
                self.glusterd.wait(10)
            _forget_log_dirs(self.volume)
            _remove_state(self.workdir)
            (REGISTRY / "resources.jsonl").unlink(missing_ok=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def _brick_files(pid: int) -> list[Path]:
    """The brick's socket and log: glusterd puts them in /var/run/gluster and /var/log/glusterfs/bricks."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []
    return [Path(args[args.index(flag) + 1]) for flag in ("-S", "-l") if flag in args]


def _forget_log_dirs(volume: str) -> None:
    """glusterd makes an empty folder per volume in /var/log/glusterfs/{gfproxy,snaps}."""
    for sub in ("gfproxy", "snaps"):
        with contextlib.suppress(OSError):
            (Path("/var/log/glusterfs") / sub / volume).rmdir()
