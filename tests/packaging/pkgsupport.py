"""Helpers for the packaging tests: tools, root, the persistent cache, tree digests, versions."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Survives between runs on one machine (root only): a rebuild costs about a minute, a fresh
# Debian root half a minute more.
CACHE = Path(os.environ.get("FOLDERMON_TEST_CACHE", "/var/cache/foldermon-test"))
# What packaging/build-deb reads; any change to these means a different package.
DEB_INPUTS = ("pyproject.toml", "README.md", "agent", "systemd", "packaging")
# The supported Debian releases: the tag in the package's version and its Python.
RELEASES = {"bookworm": ("deb12", "3.11"), "trixie": ("deb13", "3.13")}
# The older version the upgrade tests install first (and downgrade back to).
OLD_VERSION = "0.0.9"
# Where build-deb keeps each release's build root (its own default, shared with a hand build).
BUILD_CACHE = Path(os.environ.get("FOLDERMON_BUILD_CACHE", "/var/cache/foldermon-build"))


def require_tools(*tools: str) -> None:
    """Skip (a failure in CI, where ``real`` tests must run) unless every tool is on PATH."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install the Debian packages providing them)")


def require_root() -> None:
    """Skip unless running as root (building roots, booting containers and apt need it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")


def cache_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A directory kept between runs when the cache is writable, else a fresh temp dir."""
    try:
        path = CACHE / name
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        return tmp_path_factory.mktemp(name)
    return path


def tree_hash(root: Path, entries: tuple[str, ...]) -> str:
    """A digest of the names and contents of the given files and folders (bytecode ignored)."""
    digest = hashlib.sha256()
    for entry in entries:
        base = root / entry
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(f"{path.stat().st_mode & 0o111:o}".encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def package_version() -> str:
    """The version from agent/foldermon/__init__.py."""
    text = (REPO / "agent" / "foldermon" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "no __version__ in agent/foldermon/__init__.py"
    return match.group(1)


def in_build_root(
    release: str, argv: Sequence[str], *, binds: Sequence[Path] = (), user: str = "root"
) -> subprocess.CompletedProcess[str]:
    """Run a command in a throw-away overlay of the build root build-deb made for ``release``
    (that release's lintian and Python), with ``binds`` mounted read-only at the same paths."""
    roots = sorted(BUILD_CACHE.glob(f"root-{release}-*"))
    assert roots, f"no {release} build root in {BUILD_CACHE}: build-deb makes it"
    command = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--volatile=overlay",
        f"--directory={roots[-1]}",
        f"--user={user}",
        "--setenv=HOME=/tmp",
        *(f"--bind-ro={b}" for b in binds),
        "--",
        *argv,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
