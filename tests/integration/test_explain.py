"""`explain`: any line's path through the pipeline, by replay, checked against real outputs."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentctl import agent_env, census, command, drop, run_cli, write_config
from otlp_receiver import OtlpReceiver

P1 = (
    '[[processors]]\ntype = "line_counter"\nformat = "Line {count}: {line}"\n'
    '[[processors]]\ntype = "uppercase"\n'
    '[[processors]]\ntype = "filter"\npattern = "IMPORTANT"\n'
    '[[processors]]\ntype = "line_splitter"\ndelimiter = ";"\n'
)


def _explain(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_cli("explain", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _numbered_input(path: Path, n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    lines = [
        f"row {i}" + (" IMPORTANT" if rng.random() < 0.4 else "") + (";part" if rng.random() < 0.2 else "")
        for i in range(1, n + 1)
    ]
    path.write_text("\n".join(lines) + "\n")
    return lines


def test_every_asked_line_lands_on_the_output_lines_process_writes(tmp_path: Path) -> None:
    """For lines spread over a file, explain's output line numbers hold exactly the lines the last
    step gave out, in the file `process` writes with the same config."""
    config = write_config(tmp_path / "p.toml", P1)
    src = tmp_path / "data.txt"
    lines = _numbered_input(src, 5000)
    out = tmp_path / "out.txt"
    assert run_cli("process", str(src), "--output", str(out), "--config", str(config)).returncode == 0
    written = out.read_text().splitlines()
    asked = [1, 2, 3, 777, 2500, 2501, 4999, 5000]
    doc = _explain(str(src), "--line", "1-3,777,2500-2501,4999,5000", "--config", str(config))
    assert doc["file"] == str(src)
    assert [e["number"] for e in doc["lines"]] == asked
    for entry in doc["lines"]:
        assert entry["text"] == lines[entry["number"] - 1]
        steps = entry["steps"]
        assert [s["processor_type"] for s in steps][:2] == ["line_counter", "uppercase"]
        assert steps[0]["result"] == "changed"
        assert steps[0]["out"] == [f"Line {entry['number']}: {entry['text']}"]
        final = steps[-1]["out"] if steps[-1]["result"] != "dropped" else []
        if "IMPORTANT" in entry["text"]:
            assert steps[2]["result"] == "passed"
            assert steps[3]["result"] == ("changed" if ";" in entry["text"] else "passed")
        else:
            assert (steps[-1]["processor_type"], steps[-1]["result"]) == ("filter", "dropped")
        assert [written[k - 1] for k in entry["output_lines"]] == final
    assert doc["lines_read"] == 5000
    assert doc["notes"] == []


def test_text_output_names_each_processor_and_the_output_lines(tmp_path: Path) -> None:
    config = write_config(tmp_path / "p.toml", P1)
    src = tmp_path / "data.txt"
    src.write_text("plain\nIMPORTANT a;b\n")
    result = run_cli("explain", str(src), "--line", "1,2", "--config", str(config))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "line 1: 'plain'" in text
    assert "filter_2 (filter): dropped" in text
    assert "not in the output" in text
    assert "line_splitter_3 (line_splitter): changed -> 'LINE 2: IMPORTANT A', 'B'" in text
    assert "output lines 1-2" in text


def test_reading_stops_after_the_last_asked_line_in_constant_memory(tmp_path: Path) -> None:
    """A line near the start of a 300 MB file is explained after reading one batch; one near the
    end without holding the file: the peak memory of the replay stays far below the file."""
    big = tmp_path / "big.txt"
    block = b"".join(b"%08d some payload to make the line longer\n" % i for i in range(100_000))
    with big.open("wb") as f:
        for _ in range(70):
            f.write(block)
    total = 70 * 100_000
    early = _explain(str(big), "--line", "5")
    assert early["lines_read"] == 5
    probe = "import resource,subprocess,sys; subprocess.run(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    done = subprocess.run(
        [sys.executable, "-c", probe, *command("explain", str(big), "--line", str(total), "--json")],
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    doc = json.loads("\n".join(done.stdout.strip().splitlines()[:-1]))
    assert doc["lines_read"] == total
    assert doc["lines"][0]["output_lines"] == [total]
    assert peak_kib < 120 * 1024, f"peak {peak_kib} KiB for a {big.stat().st_size >> 20} MiB file"


def test_a_line_held_by_a_stateful_processor_is_said_to_be_held(tmp_path: Path) -> None:
    config = write_config(tmp_path / "j.toml", '[[processors]]\ntype = "line_joiner"\n')
    src = tmp_path / "j.txt"
    src.write_text("a\nb\nc\n")
    doc = _explain(str(src), "--line", "1,2", "--config", str(config))
    first, second = doc["lines"]
    assert first["steps"][0]["result"] == "dropped"
    assert first["output_lines"] == []
    assert second["output_lines"] == [1]
    assert second["steps"][0]["out"] == ["a | b"]
    assert doc["may_emit_later"] == ["line_joiner_0"]
    assert any("line_joiner" in n and "may emit more" in n for n in doc["notes"])
    text = run_cli("explain", str(src), "--line", "1", "--config", str(config)).stdout
    assert "may hold the line" in text
    assert "not in the output" not in text


def test_lines_past_the_end_are_named(tmp_path: Path) -> None:
    src = tmp_path / "short.txt"
    src.write_text("one\ntwo\n")
    doc = _explain(str(src), "--line", "2-4")
    assert [e["number"] for e in doc["lines"]] == [2]
    assert doc["notes"] == ["the file has 2 lines: 3-4 not in it"]


@pytest.mark.parametrize("spec", ["0", "3-1", "x", "1,,2", "5-", "-3", "1-99999"])
def test_a_bad_line_list_is_refused_with_a_sentence(tmp_path: Path, spec: str) -> None:
    src = tmp_path / "f.txt"
    src.write_text("x\n")
    result = run_cli("explain", str(src), "--line", spec)
    assert result.returncode == 1
    assert "--line" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_file_is_an_error_naming_where_it_looked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    result = run_cli("explain", "gone.txt", "--watch", str(root), "--line", "1")
    assert result.returncode == 1
    assert "no such file: gone.txt" in result.stderr
    assert f"{root}/{{processed,failed}}/" in result.stderr


def test_a_compressed_input_is_explained_as_the_agent_reads_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "p.toml", P1)
    plain = tmp_path / "d.txt"
    _numbered_input(plain, 300)
    packed = tmp_path / "d.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a = _explain(str(plain), "--line", "7,150,300", "--config", str(config))
    b = _explain(str(packed), "--line", "7,150,300", "--config", str(config))
    assert a["lines"] == b["lines"]


def test_a_quarantined_file_is_explained_with_its_record_and_its_trace_linked(tmp_path: Path) -> None:
    """A file in failed/ by name: the record's failing attempt is said, the replay fails on the same
    line, and with OTLP on the replay's trace is exported, linked to the attempts' spans."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "r.toml", '[retry]\nmax_attempts = 2\nbackoff = 0.01\n[[processors]]\ntype = "raise_on"\n'
    )
    drop(root, "bad.txt", "fine\nalso fine\nBAD here\nnever reached\n")
    with OtlpReceiver() as rx:
        env = rx.endpoint_env("grpc")
        ran = run_cli("run", "--watch", str(root), "--once", "--config", str(config), env=env)
        assert ran.returncode == 1
        assert census(root)["failed"] == ["bad.txt"]
        record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
        assert record["line"] == 3

        result = run_cli(
            "explain", "bad.txt", "--watch", str(root), "--line", "2-4", "--config", str(config), env=env
        )
        assert result.returncode == 0, result.stderr
        assert "quarantined this file after 2 attempt(s)" in result.stdout
        assert f"the failing attempt (2) is trace {record['attempt_traces'][-1]['trace_id']}" in result.stdout
        assert "raise_on_0 (raise_on): failed: ValueError" in result.stdout
        replay_trace = result.stdout.strip().splitlines()[-1].split()[-1]

        spans = rx.wait_for(lambda r: [s for s in r.spans() if s["trace_id"] == replay_trace] or None)
        rx.wait_for(lambda r: len([s for s in r.spans() if s["trace_id"] == replay_trace]) >= 3)
    spans = [s for s in rx.spans() if s["trace_id"] == replay_trace]
    root_span = next(s for s in spans if s["name"] == "foldermon.explain")
    assert set(root_span["links"]) == {(t["trace_id"], t["span_id"]) for t in record["attempt_traces"]}
    lines = sorted(
        (s for s in spans if s["name"] == "foldermon.line"),
        key=lambda s: s["attributes"]["foldermon.line.number"],
    )
    assert [s["attributes"]["foldermon.line.number"] for s in lines] == [2, 3]
    assert lines[1]["events"][-1]["attributes"]["foldermon.line.result"] == "failed"
    assert lines[1]["status_code"] == 2  # ERROR
    assert all(s["parent_span_id"] == root_span["span_id"] for s in lines)

    doc = _explain("bad.txt", "--watch", str(root), "--line", "2-4", "--config", str(config))
    assert doc["record"]["line"] == 3
    assert [s["result"] for s in doc["lines"][1]["steps"]] == ["failed"]
    assert "not reached, the file failing before: 4" in doc["notes"]
