"""Fixtures of the packaging tests: the .deb of each release, built once per tree and cached."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pkgsupport import DEB_INPUTS, RELEASES, REPO, cache_dir, require_root, require_tools, tree_hash


@pytest.fixture(scope="session")
def build_deb(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str | None], Path]:
    """Builds (or finds in the cache) the package of this tree for a release, optionally as
    another version; reused while the tree is unchanged."""
    require_root()  # build-deb makes and enters the release's build root
    require_tools("mmdebstrap", "systemd-nspawn")
    cache = cache_dir(tmp_path_factory, "deb")
    tree = tree_hash(REPO, DEB_INPUTS)

    def build(release: str, version: str | None = None) -> Path:
        out = cache / f"{tree}-{release}-{version or 'tree'}"
        built = sorted(out.glob("foldermon-agent_*.deb")) if out.is_dir() else []
        if not built:
            staging = cache / f".{out.name}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            argv = [str(REPO / "packaging" / "build-deb"), "--release", release, "--out", str(staging)]
            result = subprocess.run(
                [*argv, *(["--version", version] if version else [])],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"build-deb failed:\n{result.stdout}\n{result.stderr}"
            for old in cache.iterdir():  # packages of other trees are not used again
                if not old.name.startswith((tree, ".")):
                    shutil.rmtree(old, ignore_errors=True)
            staging.rename(out)
            built = sorted(out.glob("foldermon-agent_*.deb"))
        assert len(built) == 1, f"expected one package in {out}, found {built}"
        return built[0]

    return build


@pytest.fixture(scope="session", params=sorted(RELEASES))
def release(request: pytest.FixtureRequest) -> str:
    """Each supported Debian release in turn."""
    return str(request.param)


@pytest.fixture(scope="session")
def deb(build_deb: Callable[[str, str | None], Path], release: str) -> Path:
    """The package built from this tree for the release."""
    return build_deb(release, None)
