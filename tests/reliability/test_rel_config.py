"""Hostile configuration against the real command line: check-config agrees with run, a reload never kills."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from relkit import numbered, records, start_agent, wait_for_event

from agentctl import census, drop, run_cli, wait_until
from configfuzz import HOSTILE, raw_configs, to_toml

pytestmark = pytest.mark.real

LONG = os.environ.get("FOLDERMON_LONG") == "1"
GOOD = '[watch]\nrescan_interval = 0.5\n[[processors]]\ntype = "line_counter"\n'


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_check_config_refuses_hostile_values_with_sentences(tmp_path: Path, case: str) -> None:
    """check-config exits 78 and lists the problem; never a traceback, never an OK for what run refuses."""
    text = HOSTILE[case]
    path = tmp_path / ("c.json" if text.startswith("{") else "c.toml")
    _write(path, text)
    result = run_cli("check-config", str(path), timeout=60)
    assert result.returncode == 78, result.stdout + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "configuration error" in result.stderr


def test_reload_with_any_hostile_config_keeps_the_agent_and_its_config(tmp_path: Path) -> None:
    """SIGHUP after each hostile file: every reload is rejected (or applied), the agent never dies,
    and after them all it still processes files with the configuration it had."""
    root = tmp_path / "root"
    path = tmp_path / "agent.toml"
    _write(path, GOOD)
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(path), log=log)
    wait_for_event(log, "watching")

    def reload_with(text: str) -> None:
        before = _reload_outcomes(log)
        _write(path, text)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _reload_outcomes(log) > before or proc.poll() is not None, timeout=20)
        assert proc.poll() is None, f"the agent died on reload:\n{log.read_text()[-3000:]}"

    for text in HOSTILE.values():
        reload_with(text)
        assert _last_reload(log) == "reload rejected; the running configuration stays"

    @settings(
        max_examples=200 if LONG else 25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(raw=raw_configs())
    def any_reload(raw: dict[str, Any]) -> None:
        reload_with(to_toml(raw) if len(raw) % 2 else json.dumps(raw))

    any_reload()
    reload_with(GOOD)
    assert _last_reload(log) == "reloaded"
    drop(root, "after.txt", "still here\n")
    wait_until(lambda: census(root)["processed"] == ["after.txt"], what="a file processed after the reloads")
    assert (root / "output" / "after_processed.txt").read_bytes() == numbered(b"still here\n")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _reload_outcomes(log: Path) -> int:
    return sum(1 for r in records(log) if r.get("event", "").startswith(("reload rejected", "reloaded")))


def _last_reload(log: Path) -> str:
    return [
        r["event"] for r in records(log) if r.get("event", "").startswith(("reload rejected", "reloaded"))
    ][-1]


@settings(
    max_examples=60 if LONG else 8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_configs())
def test_what_check_config_accepts_run_can_use(tmp_path: Path, raw: dict[str, Any]) -> None:
    """For random files: check-config's verdict is run's verdict, and an accepted file runs a drain."""
    path = tmp_path / "fuzz.toml"
    _write(path, to_toml(raw))
    root = tmp_path / "root"
    drop(root, "in.txt", "a,b\n")
    checked = run_cli("check-config", str(path), timeout=60)
    # The command line wins over the file: the roots, outputs and process count stay in tmp_path.
    out = str(tmp_path / "out")
    ran = run_cli(
        "run",
        "--watch",
        str(root),
        "--output-dir",
        out,
        "--workers",
        "1",
        "--once",
        "--config",
        str(path),
        timeout=60,
    )
    assert "Traceback" not in checked.stderr + ran.stderr + ran.stdout
    if checked.returncode == 78:
        assert ran.returncode == 78, ran.stderr[-2000:]
    else:
        assert checked.returncode == 0
        assert ran.returncode in (0, 1), ran.stderr[-2000:]  # 1: the file went to failed/
        assert census(root)["unprocessed"] == []


def test_reload_with_a_fifo_in_place_of_the_config_is_rejected_not_waited_on(tmp_path: Path) -> None:
    """The config file replaced by a FIFO nobody writes to, then SIGHUP: the reload is rejected at
    once, files keep flowing, and SIGTERM still stops the agent with exit 0."""
    root = tmp_path / "root"
    path = tmp_path / "agent.toml"
    _write(path, GOOD)
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(path), log=log)
    wait_for_event(log, "watching")
    path.unlink()
    os.mkfifo(path)
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _reload_outcomes(log) > 0, timeout=10)
    assert _last_reload(log) == "reload rejected; the running configuration stays"
    drop(root, "after.txt", "flows\n")
    wait_until(lambda: census(root)["processed"] == ["after.txt"], timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
