"""Helpers for the packaging tests: tools, root, the persistent cache, tree digests, versions."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Survives between runs on one machine (root only): a rebuild costs about a minute, a fresh
# Debian root half a minute more.
CACHE = Path(os.environ.get("FOLDERMON_TEST_CACHE", "/var/cache/foldermon-test"))
# What packaging/build-deb reads; any change to these means a different package.
DEB_INPUTS = ("pyproject.toml", "README.md", "agent", "systemd", "packaging")


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
