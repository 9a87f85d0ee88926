"""Short commands load only what they use (the timings are benchmark P0; this checks the cause)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentctl import agent_env

# Runs the CLI in-process, then prints which of the heavy modules it had loaded.
PROBE = """
import json, sys
from foldermon.__main__ import main
sys.argv = ["foldermon-agent", *sys.argv[1:]]
try:
    code = main()
except SystemExit as exc:
    code = exc.code
heavy = ("opentelemetry", "structlog", "rich", "importlib.metadata", "gzip", "zstandard", "grpc",
         "foldermon.service", "foldermon.telemetry", "foldermon.config", "secrets", "dataclasses",
         "inspect")
loaded = sorted({h for h in heavy for m in sys.modules if m == h or m.startswith(h + ".")})
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def _loaded(*args: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=agent_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return list(report["loaded"])


def test_version_loads_neither_the_config_nor_the_agent() -> None:
    assert _loaded("--version") == []


def test_a_one_shot_process_without_telemetry_loads_no_telemetry_log_or_codec(tmp_path: Path) -> None:
    src = tmp_path / "one.txt"
    src.write_text("one line\n")
    assert _loaded("process", str(src), "--output", str(tmp_path / "out.txt")) == ["foldermon.config"]
    assert (tmp_path / "out.txt").read_text() == "one line\n"


@pytest.mark.parametrize(
    ("name", "data", "codec"),
    [("one.txt.gz", b"\x1f\x8b", "gzip"), ("one.txt.zst", b"\x28\xb5\x2f\xfd", "zstandard")],
)
def test_a_codec_is_loaded_for_a_file_that_needs_it(
    tmp_path: Path, name: str, data: bytes, codec: str
) -> None:
    import gzip

    import zstandard

    payload = gzip.compress(b"x\n") if codec == "gzip" else zstandard.ZstdCompressor().compress(b"x\n")
    assert payload.startswith(data)
    src = tmp_path / name
    src.write_bytes(payload)
    assert codec in _loaded("process", str(src), "--output", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_bytes() == b"x\n"


def test_telemetry_is_loaded_when_a_variable_asks_for_it(tmp_path: Path) -> None:
    src = tmp_path / "one.txt"
    src.write_text("one line\n")
    loaded = _loaded(
        "process", str(src), "--output", str(tmp_path / "o.txt"), env={"OTEL_TRACES_EXPORTER": "console"}
    )
    assert "opentelemetry" in loaded
    assert "foldermon.telemetry" in loaded
