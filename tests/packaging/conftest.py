"""Fixtures of the packaging tests: the .deb, built once per tree and cached between runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pkgsupport import DEB_INPUTS, REPO, cache_dir, require_tools, tree_hash


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from this tree by packaging/build-deb, reused while the tree is unchanged."""
    if os.geteuid() != 0:  # as root, build-deb installs what it needs itself
        require_tools("dpkg-buildpackage", "dh_virtualenv", "dpkg-deb")
    out = cache_dir(tmp_path_factory, "deb") / tree_hash(REPO, DEB_INPUTS)
    built = sorted(out.glob("foldermon-agent_*.deb")) if out.is_dir() else []
    if not built:
        staging = out.parent.with_name(f"{out.parent.name}.{out.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [str(REPO / "packaging" / "build-deb"), "--out", str(staging)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"build-deb failed:\n{result.stdout}\n{result.stderr}"
        for old in out.parent.iterdir():  # one cached package is enough
            shutil.rmtree(old, ignore_errors=True)
        staging.rename(out)
        built = sorted(out.glob("foldermon-agent_*.deb"))
    assert len(built) == 1, f"expected one package in {out}, found {built}"
    return built[0]
