"""Suite-wide rules: with FOLDERMON_REQUIRE_REAL=1 (CI), a skipped test marked ``real`` fails the run."""

from __future__ import annotations

import os

import pytest

_skipped_real: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "real" in report.keywords:
        _skipped_real.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("FOLDERMON_REQUIRE_REAL") == "1" and _skipped_real:
        print("\nTests needing a real component were skipped; CI requires them:")
        for nodeid in _skipped_real:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
