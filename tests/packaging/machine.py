"""A Debian root (bookworm or trixie) made with mmdebstrap and booted with systemd-nspawn, for end-to-end tests.

The root is built once and kept under the test cache; each boot runs it with
``--volatile=overlay`` (read-only tree, writes to a tmpfs) so it is never modified.
``--register=no --keep-unit`` let nspawn run without systemd-machined or a host systemd
(CI machines have neither), and commands reach the container by entering the namespaces
of its PID 1 with nsenter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from agentctl import wait_until

# What a Debian server has; the package's own dependencies are all among them (procps is
# "important", so on every standard install), which lets apt install the .deb offline.
# libpam-systemd lets user managers start, for the user unit.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "python3", "adduser", "procps")
# Bump to rebuild cached roots when the way they are made changes.
_ROOT_FORMAT = "1"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def debian_root(cache: Path, suite: str) -> Path:
    """A minbase tree of ``suite`` with PACKAGES, built by mmdebstrap on first use and then reused."""
    key = hashlib.sha256(" ".join((_ROOT_FORMAT, suite, *PACKAGES)).encode()).hexdigest()[:12]
    root = cache / f"{suite}-{key}"
    if (root / "usr" / "lib" / "systemd" / "systemd").exists():
        return root
    partial = cache / f".{root.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    result = subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            suite,
            str(partial),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"mmdebstrap failed:\n{result.stderr[-4000:]}")
    for old in cache.glob(f"{suite}-*"):  # roots of earlier package lists are not used again
        shutil.rmtree(old, ignore_errors=True)
    partial.rename(root)
    return root


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``predicate`` every 0.2 s until it returns something truthy; fail naming ``what``."""
    return wait_until(predicate, timeout, 0.2, what)


class Container:
    """One booted container; ``run`` executes a command inside it."""

    def __init__(self, root: Path, *, name: str, binds: Sequence[tuple[Path, str]], log: Path) -> None:
        self.log = log
        command = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            f"--directory={root}",
            f"--machine={name}",
            "--console=passive",
            *(f"--bind-ro={host}:{inside}" for host, inside in binds),
            "--boot",
        ]
        with log.open("wb") as out:
            self._nspawn = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.pid1 = int(str(wait_for(self._find_init, 30, "the container's init")))

    def _find_init(self) -> int | None:
        if self._nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited early:\n{self.log.read_text()[-4000:]}")
        for task in Path(f"/proc/{self._nspawn.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                comm = Path(f"/proc/{child}/comm")
                if comm.exists() and comm.read_text().strip() == "systemd":
                    return int(child)
        return None

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces, its root, a clean environment)."""
        result = subprocess.run(
            ["nsenter", f"--target={self.pid1}", "--all", "--root", "--wd", "--", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=_ENV,
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def records(self, unit: str) -> list[dict[str, object]]:
        """The JSON log records ``unit`` wrote to the journal, oldest first."""
        out = self.run("journalctl", "--unit", unit, "--output", "cat", "--no-pager", check=False).stdout
        found = []
        for line in out.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def wait_booted(self, timeout: float = 90) -> str:
        """Wait until systemd in the container finished booting; return its state."""

        def state() -> str | None:
            result = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
            text = result.stdout.strip()
            return text if text in ("running", "degraded") else None

        return str(wait_for(state, timeout, "the container to boot"))

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        """Create or replace a file inside the container."""
        self.run("install", "-D", "-m", mode, "/dev/stdin", path, stdin=text)

    def close(self, timeout: float = 30) -> None:
        """Power the container off, killing nspawn if it does not stop in time."""
        if self._nspawn.poll() is None:
            self.run("systemctl", "poweroff", "--no-block", check=False, timeout=10)
            try:
                self._nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self._nspawn.pid, signal.SIGKILL)
                self._nspawn.wait(10)
