"""A real Prometheus server on loopback for the dashboard tests, and a small client for its HTTP API."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "run tests/run, which installs the Debian packages the suite needs"


def require_tool(name: str) -> str:
    """The tool's path; a missing tool fails the test (these tests are ``real``: CI must run them)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrometheusError(AssertionError):
    """Prometheus answered a query with an error (a PromQL parse or evaluation error)."""


class Prometheus:
    """``prometheus`` scraping one target every second, its data in a temp dir, its API on loopback."""

    def __init__(self, workdir: Path, target: str, job: str, rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
        }
        # JSON is YAML, and needs no YAML library here.
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = require_tool("prometheus")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not become ready:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str | list[str]) -> Any:
        """``data`` of a successful API answer; PrometheusError with Prometheus' message otherwise."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self.api("query", query=expr, time=f"{at:.3f}")
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result

    def range(self, expr: str, start: float, end: float, step_s: int) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step_s}s")
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, selector: str | None, start: float, end: float) -> list[str]:
        params: dict[str, str | list[str]] = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        if selector:
            params["match[]"] = [selector]
        values: list[str] = self.api(f"label/{label}/values", **params)
        return values


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """Every finite sample value in a vector, matrix or scalar result."""
    samples: list[Any] = []
    for series in result:
        if "values" in series:
            samples.extend(series["values"])
        elif "value" in series:
            samples.append(series["value"])
        elif "result" in series:  # a scalar: {"resultType": "scalar", "result": [t, "v"]}
            samples.append(series["result"])
    numbers = (float(v) for _t, v in samples)
    return [n for n in numbers if math.isfinite(n)]
