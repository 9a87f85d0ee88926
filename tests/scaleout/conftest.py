"""Scale-out suite: agents as separate hosts on one real GlusterFS volume (see glusterkit)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The reliability suite's helpers (producers, log proofs) serve here too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reliability"))

from glusterkit import Cluster, require_gluster
from relkit import reap_started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One volume and three hosts for the module's tests; each test uses its own root on it."""
    require_gluster()
    with Cluster(tmp_path_factory.mktemp("gluster")) as made:
        yield made


@pytest.fixture(autouse=True)
def _reap_agents() -> Iterator[None]:
    yield
    reap_started()
