"""The systemd units: what DESIGN.md promises, `systemd-analyze verify` silence, sandbox score."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pkgsupport import REPO, require_tools

from foldermon.config import AgentConfig

UNITS = REPO / "systemd"
SYSTEM_UNITS = ("foldermon-agent.service", "foldermon-agent@.service")
MAX_EXPOSURE = 2.0
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def settings(path: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file (comments dropped), values in order per key."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def seconds(value: str) -> float:
    """A systemd time span in plain seconds or with one unit suffix (s, min)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root dir for ``--root``: the host's systemd units, ours, and the commands ours run.

    verify checks that ExecStart=/ExecReload= binaries exist; the package installs
    /usr/bin/foldermon-agent, so an executable stand-in takes its place here (the booted
    end-to-end test verifies the installed units against the real one).
    """
    require_tools("systemd-analyze")
    root = tmp_path_factory.mktemp("unit-root")
    for top in ("bin", "sbin", "lib"):
        (root / "usr" / top).mkdir(parents=True)
        (root / top).symlink_to(f"usr/{top}")
    system = root / "usr" / "lib" / "systemd" / "system"
    # Both names are one directory on merged-/usr systems, two on older ones.
    sources = {Path(d).resolve() for d in ("/lib/systemd/system", "/usr/lib/systemd/system")}
    for source in sorted(s for s in sources if s.is_dir()):
        shutil.copytree(source, system, symlinks=True, dirs_exist_ok=True)
    for unit in SYSTEM_UNITS:
        shutil.copy(UNITS / unit, system / unit)
    stand_in = root / "usr" / "bin" / "foldermon-agent"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    kill = shutil.which("kill")
    assert kill, "kill(1) not found"
    shutil.copy(kill, root / "usr" / "bin" / "kill")
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze verify on units inside ``root``."""
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        capture_output=True,
        text=True,
        check=False,
    )


# -- what the units say ----------------------------------------------------------------------


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_system_unit_is_a_notify_service_with_watchdog(unit: str) -> None:
    """Type=notify with NotifyAccess=main, a watchdog, restart on failure and reload by SIGHUP."""
    found = settings(UNITS / unit)
    assert found["Type"] == ["notify"]
    assert found["NotifyAccess"] == ["main"]
    assert seconds(found["WatchdogSec"][0]) > 0
    assert found["Restart"] == ["on-failure"]
    assert found["RestartForceExitStatus"] == ["0"]  # `run` never ends by itself on success
    assert found["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_stop_timeout_leaves_room_for_the_drain(unit: str) -> None:
    """TimeoutStopSec exceeds the default drain deadline by at least 10 s for the telemetry flush."""
    found = settings(UNITS / unit)
    assert seconds(found["TimeoutStopSec"][0]) >= AgentConfig().drain_timeout + 10


@pytest.mark.parametrize("unit", SYSTEM_UNITS)
def test_system_unit_runs_as_foldermon_with_its_directories(unit: str) -> None:
    """A dedicated user, the state and configuration directories, and the optional environment file."""
    found = settings(UNITS / unit)
    assert (found["User"], found["Group"]) == (["foldermon"], ["foldermon"])
    assert found["StateDirectory"] == ["foldermon"]
    assert found["ConfigurationDirectory"] == ["foldermon"]
    assert "-/etc/default/foldermon-agent" in found["EnvironmentFile"]
    assert found["ReadWritePaths"] == ["/var/lib/foldermon"]


def test_plain_unit_reads_agent_toml() -> None:
    """foldermon-agent.service runs the agent on /etc/foldermon/agent.toml."""
    found = settings(UNITS / "foldermon-agent.service")
    assert found["ExecStart"] == ["/usr/bin/foldermon-agent run --config /etc/foldermon/agent.toml"]


def test_template_unit_reads_the_instance_config() -> None:
    """foldermon-agent@NAME.service runs the agent on /etc/foldermon/NAME.toml."""
    found = settings(UNITS / "foldermon-agent@.service")
    assert found["ExecStart"] == ["/usr/bin/foldermon-agent run --config /etc/foldermon/%i.toml"]


def test_user_unit_is_a_notify_service_without_system_paths() -> None:
    """The user unit notifies and watchdogs like the system one, but runs without User= or /etc paths."""
    found = settings(UNITS / "user" / "foldermon-agent.service")
    assert (found["Type"], found["NotifyAccess"], found["Restart"]) == (["notify"], ["main"], ["on-failure"])
    assert "User" not in found
    assert not [v for values in found.values() for v in values if "/etc/foldermon" in v]


# -- systemd-analyze -------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("unit", ["foldermon-agent.service", "foldermon-agent@example.service"])
def test_system_unit_verifies_silently(unit_root: Path, unit: str) -> None:
    """systemd-analyze verify prints nothing for the unit (and for an instance of the template)."""
    result = verify(unit_root, unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.real
def test_verify_reports_a_broken_unit(unit_root: Path) -> None:
    """The same check speaks up for a bad setting, so its silence above means something."""
    system = unit_root / "usr" / "lib" / "systemd" / "system"
    text = (UNITS / "foldermon-agent.service").read_text().replace("Type=notify", "Type=notifyy")
    (system / "foldermon-broken.service").write_text(text)
    result = verify(unit_root, "foldermon-broken.service")
    assert "notifyy" in result.stdout + result.stderr


@pytest.mark.real
def test_user_unit_verifies_silently(tmp_path: Path) -> None:
    """systemd-analyze --user verify prints nothing for the user unit."""
    require_tools("systemd-analyze")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(UNITS / "user" / "foldermon-agent.service")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.real
@pytest.mark.parametrize("unit", ["foldermon-agent.service", "foldermon-agent@example.service"])
def test_sandbox_exposure_is_at_most_2(unit_root: Path, unit: str) -> None:
    """systemd-analyze security --offline rates each system unit 2.0 or better ("OK")."""
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={unit_root}",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            "--no-pager",
            unit,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    match = _EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stderr
