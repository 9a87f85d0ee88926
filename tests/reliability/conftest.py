"""Reliability suite: a test that fails half-way must not leave agents running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from relkit import reap_started


@pytest.fixture(autouse=True)
def _reap_agents() -> Iterator[None]:
    yield
    reap_started()


@pytest.fixture(autouse=True, scope="session")
def _reap_agents_at_the_end() -> Iterator[None]:
    """Also catches agents of a module fixture that failed before any test's teardown ran."""
    yield
    reap_started()
