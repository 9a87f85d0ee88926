"""Runs the real agent as a subprocess on temp folders, for the integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "tests" / "plugins"
STATES = ("unprocessed", "underprocess", "processed", "failed")


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the agent: the source tree and the test plugins importable, no OTLP export."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "agent"), str(PLUGINS)])
    env["HOME"] = env.get("HOME", "/root")
    env["FOLDERMON_CONFIG"] = env.get("FOLDERMON_CONFIG", os.devnull)
    env.update(extra or {})
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "foldermon", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion and capture its output."""
    return subprocess.run(
        command(*args),
        env=agent_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the agent in the background, its output going to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(command(*args), env=agent_env(env), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def drop(root: Path, name: str, data: bytes | str) -> Path:
    """Write a file elsewhere, then rename it into ``unprocessed/`` as producers should."""
    raw = data.encode() if isinstance(data, str) else data
    staging = root / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    (root / "unprocessed").mkdir(parents=True, exist_ok=True)
    tmp = staging / "f"
    tmp.write_bytes(raw)
    dst = root / "unprocessed" / name
    os.rename(tmp, dst)
    return dst


def inputs(folder: Path) -> list[str]:
    """Non-dot names in a folder, recursively one level for underprocess/<instance>/."""
    if not folder.is_dir():
        return []
    names: list[str] = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("."):
            continue
        path = folder / entry
        if folder.name == "underprocess" and path.is_dir():
            names.extend(n for n in sorted(os.listdir(path)) if not n.startswith("."))
        else:
            names.append(entry)
    return names


def census(root: Path) -> dict[str, list[str]]:
    """Inputs per state (error records in failed/ are dotfiles, never inputs)."""
    return {state: inputs(root / state) for state in STATES}


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.02, what: str | None = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def log_records(log: Path) -> list[dict[str, Any]]:
    """The JSON log lines the agent wrote."""
    records = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records
