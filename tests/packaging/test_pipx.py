"""pipx gives a user the same command, from the source tree or from the built wheel."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pkgsupport import REPO, package_version, require_tools

pytestmark = pytest.mark.real

PYTHON = "/usr/bin/python3"


def pipx_install(target: str, home: Path) -> Path:
    """Install ``target`` with pipx into a private PIPX_HOME; return the installed command."""
    require_tools("pipx")
    env = {
        **os.environ,
        "PIPX_HOME": str(home / "pipx"),
        "PIPX_BIN_DIR": str(home / "bin"),
        "PIPX_MAN_DIR": str(home / "man"),
    }
    result = subprocess.run(
        ["pipx", "install", "--python", PYTHON, "--pip-args=--no-compile", target],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=home,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home / "bin" / "foldermon-agent"


def works(command: Path, tmp_path: Path) -> None:
    """The command reports the version and runs a file through the pipeline."""
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"foldermon-agent {package_version()}"
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FOLDERMON_CONFIG": os.devnull}
    result = subprocess.run(
        [str(command), "process", str(source)], capture_output=True, text=True, check=False, env=env
    )
    assert (result.returncode, result.stdout) == (0, "one\ntwo\n"), result.stderr


def test_pipx_install_from_source_tree(tmp_path: Path) -> None:
    """`pipx install .` in a clone gives a working foldermon-agent."""
    works(pipx_install(str(REPO), tmp_path), tmp_path)


def test_pipx_install_from_wheel(tmp_path: Path) -> None:
    """`pipx install dist/*.whl` gives a working foldermon-agent."""
    dist = tmp_path / "dist"
    subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("foldermon_agent-*.whl")
    works(pipx_install(str(wheel), tmp_path), tmp_path)
