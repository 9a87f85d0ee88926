"""Run the agent under strace and read the trace back as a list of system calls with their paths."""

from __future__ import annotations

import codecs
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agentctl import agent_env, command

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD = re.compile(r"(-?\d+|AT_FDCWD)<((?:[^>\\]|\\.)*)>")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")
# Calls whose string arguments are data, not paths; readlink's second string is the link's text.
_DATA = frozenset(
    {"read", "write", "pread64", "pwrite64", "readv", "writev", "sendto", "recvfrom", "sendmsg", "recvmsg"}
)
_FIRST_ONLY = frozenset({"readlink", "readlinkat"})


def _unescape(text: str) -> str:
    raw: bytes = codecs.escape_decode(text.encode("latin-1", "backslashreplace"))[0]
    return os.fsdecode(raw)


@dataclass(frozen=True, slots=True)
class Call:
    """One finished system call as strace printed it."""

    index: int
    pid: int
    name: str
    args: str
    result: str
    strings: tuple[str, ...]  # path arguments, made absolute against the dirfd before each
    fds: tuple[str, ...]  # paths of the file descriptors passed (``-y``), AT_FDCWD included

    @property
    def ok(self) -> bool:
        return not self.result.startswith("-1")

    @property
    def injected(self) -> bool:
        return "(INJECTED)" in self.result

    @property
    def returned_path(self) -> str | None:
        found = _FD.match(self.result)
        return _unescape(found.group(2)) if found else None

    @property
    def touched(self) -> tuple[str, ...]:
        """The files the call acts on: its path arguments, else its file descriptors, and what it opened."""
        found = self.strings or self.fds
        returned = self.returned_path
        return (*found, returned) if returned else found


def _absolute(args: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """String arguments resolved against the decorated dirfd just before them, and every fd path."""
    fds: list[str] = []
    strings: list[str] = []
    base: str | None = None
    pos = 0
    while True:
        fd = _FD.search(args, pos)
        string = _STRING.search(args, pos)
        if fd is None and string is None:
            break
        if fd is not None and (string is None or fd.start() < string.start()):
            base = _unescape(fd.group(2))
            fds.append(base)
            pos = fd.end()
            continue
        assert string is not None
        text = _unescape(string.group(1))
        strings.append(text if text.startswith("/") or base is None else os.path.join(base, text))
        base = None
        pos = string.end()
    return tuple(strings), tuple(fds)


def parse(text: str) -> list[Call]:
    """Parse ``strace -f -y -s 4096`` output, joining calls that other threads interrupted."""
    calls: list[Call] = []
    unfinished: dict[int, str] = {}
    for raw in text.splitlines():
        line = raw
        resumed = _RESUMED.match(raw)
        if resumed:
            pid = int(resumed.group(1))
            line = f"{pid} {unfinished.pop(pid, resumed.group(2) + '(')}{resumed.group(3)}"
        elif raw.endswith("<unfinished ...>"):
            head = raw[: -len("<unfinished ...>")].rstrip()
            pid_text, _, call = head.partition(" ")
            unfinished[int(pid_text)] = call.strip()
            continue
        found = _LINE.match(line)
        if not found:
            continue
        args = found.group(3)
        strings, fds = _absolute(args)
        if found.group(2) in _DATA:
            strings = ()
        elif found.group(2) in _FIRST_ONLY:
            strings = strings[:1]
        calls.append(
            Call(len(calls), int(found.group(1)), found.group(2), args, found.group(4), strings, fds)
        )
    return calls


def run_traced(
    args: list[str],
    trace: Path,
    *,
    syscalls: str,
    inject: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the agent CLI under strace, writing the trace to ``trace``."""
    argv = ["strace", "-f", "-y", "-qq", "-s", "4096", "-o", str(trace), "-e", f"trace={syscalls}"]
    if inject:
        argv += ["-e", f"inject={inject}"]
    # No bytecode writes: the trace shows only what the agent itself does.
    full_env = {"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run(
        argv + command(*args),
        env=agent_env(full_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def main_pid(calls: list[Call]) -> int:
    """The agent's main thread: the first process in the trace."""
    return calls[0].pid
