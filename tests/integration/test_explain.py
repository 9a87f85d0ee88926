"""`explain`: any line's path through the pipeline, by replay, checked against real outputs."""

from __future__ import annotations

import gzip
import json
import os
import random
import select
import socket
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
    assert first["output_lines"] == [1]  # emitted with line 2
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


@pytest.mark.parametrize(
    "spec", ["0", "3-1", "x", "1,,2", "5-", "-3", "1-99999", "\u00b2", "1-\u2460", "\u0663", "9" * 5000]
)
def test_a_bad_line_list_is_a_usage_error_with_a_sentence(tmp_path: Path, spec: str) -> None:
    """A malformed --line (Unicode digits too: "²", "①", "٣") exits 2 like other usage errors."""
    src = tmp_path / "f.txt"
    src.write_text("x\ny\nz\n")
    result = run_cli("explain", str(src), "--line", spec)
    assert result.returncode == 2
    assert "argument --line" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_line_limit_counts_overlapping_ranges_once(tmp_path: Path) -> None:
    """1-9999 asked twice is 9,999 lines, within the limit; 10,001 distinct lines are not."""
    src = tmp_path / "f.txt"
    src.write_text("".join(f"{i}\n" for i in range(1, 20001)))
    doc = _explain(str(src), "--line", "1-9999,1-9999,5000-6000")
    assert [e["number"] for e in doc["lines"]] == list(range(1, 10000))
    refused = run_cli("explain", str(src), "--line", "1-6000,5000-10001")
    assert refused.returncode == 2
    assert "this asks for 10001" in refused.stderr


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
    assert "not reached, the file failing at or before: 4" in doc["notes"]


def test_json_escapes_bytes_that_are_not_utf8_as_status_does(tmp_path: Path) -> None:
    """A line with bytes that are not UTF-8 gives valid JSON: those bytes as \\udcXX escapes
    (which decode back to the same bytes), other text as UTF-8."""
    src = tmp_path / "in.txt"
    raw = b"\xff\xfe bad \xe9t\xe9 caf\xc3\xa9"
    src.write_bytes(b"ok\n" + raw + b"\nend\n")
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "uppercase"\n')
    result = subprocess.run(
        command("explain", str(src), "--line", "2", "--config", str(config), "--json"),
        env=agent_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"\\udcff" in result.stdout
    assert "café".encode() in result.stdout
    entry = json.loads(result.stdout)["lines"][0]
    assert entry["text"].encode("utf-8", "surrogateescape") == raw
    assert (
        entry["steps"][0]["out"][0].encode("utf-8", "surrogateescape")
        == b"\xff\xfe BAD \xe9T\xe9 CAF\xc3\x89"
    )


def test_a_failed_step_has_every_documented_key(tmp_path: Path) -> None:
    """The failing step says what came into it, as every other step does, and the error."""
    config = write_config(
        tmp_path / "c.toml", '[[processors]]\ntype = "uppercase"\n[[processors]]\ntype = "raise_on"\n'
    )
    src = tmp_path / "in.txt"
    src.write_text("a\nBAD line\n")
    doc = _explain(str(src), "--line", "1-2", "--config", str(config))
    for entry in doc["lines"]:
        for step in entry["steps"]:
            assert {"processor_id", "processor_type", "result", "in", "out"} <= set(step), step
    first, failed = doc["lines"][1]["steps"]
    assert failed["result"] == "failed"
    assert failed["in"] == first["out"] == ["BAD LINE"]
    assert failed["out"] == []
    assert failed["error"].startswith("ValueError: ")


def test_a_hung_processor_is_stopped_by_max_file_seconds(tmp_path: Path) -> None:
    """The replay honours [pipeline] max_file_seconds as the agent does, and says it stopped there."""
    config = write_config(
        tmp_path / "c.toml", '[pipeline]\nmax_file_seconds = 1\n[[processors]]\ntype = "hang"\n'
    )
    src = tmp_path / "h.txt"
    src.write_text("a\nHANG\nb\n")
    doc = _explain(str(src), "--line", "1-3", "--config", str(config))
    assert [e["number"] for e in doc["lines"]] == [1, 2]
    (stopped,) = doc["lines"][1]["steps"]
    assert (stopped["processor_id"], stopped["result"], stopped["in"]) == ("hang_0", "failed", ["HANG"])
    assert "max_file_seconds (1 s)" in stopped["error"]
    assert doc["notes"][0].startswith("the replay was stopped by [pipeline] max_file_seconds (1 s)")
    assert "hang_0 (hang) was still running on line 2" in doc["notes"][0]
    assert doc["notes"][1] == "not reached, the file failing at or before: 3"


def test_the_error_record_is_printed_before_the_replay(tmp_path: Path) -> None:
    """For a quarantined file the record comes out at once, even while the replay is still running."""
    root = tmp_path / "root"
    agent_config = write_config(
        tmp_path / "a.toml",
        '[retry]\nmax_attempts = 1\n[pipeline]\nmax_file_seconds = 0.5\n[[processors]]\ntype = "hang"\n',
    )
    drop(root, "h.txt", "a\nHANG\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(agent_config)).returncode == 1
    forever = write_config(tmp_path / "f.toml", '[[processors]]\ntype = "hang"\n')
    with subprocess.Popen(
        command("explain", "h.txt", "--watch", str(root), "--line", "2", "--config", str(forever)),
        env=agent_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            first = proc.stdout.readline().decode() if ready else ""
            assert proc.poll() is None  # still replaying
        finally:
            proc.kill()
    assert first.startswith("the agent quarantined this file after 1 attempt(s): ProcessingTimeLimitError")


def test_a_line_joined_into_an_earlier_output_line_names_it(tmp_path: Path) -> None:
    """line_joiner holds line 1 and emits it with line 2: both are in output line 1."""
    config = write_config(tmp_path / "j.toml", '[[processors]]\ntype = "line_joiner"\n')
    src = tmp_path / "j.txt"
    src.write_text("x\ny\nz\nw\n")
    doc = _explain(str(src), "--line", "1,3-4", "--config", str(config))
    assert [e["output_lines"] for e in doc["lines"]] == [[1], [2], [2]]
    text = run_cli("explain", str(src), "--line", "1-3", "--config", str(config)).stdout
    assert "line_joiner_0 (line_joiner): nothing out now; held, and emitted with a later line" in text
    assert text.count("output line 1") == 2


def test_a_held_line_is_not_given_an_unrelated_output_line(tmp_path: Path) -> None:
    """A line a tag_router's route dropped stays out of the output lines of the lines after it."""
    config = write_config(
        tmp_path / "t.toml",
        '[[processors]]\ntype = "tag_router"\nroutes = { d = { type = "filter", pattern = "KEEP" } }\n',
    )
    src = tmp_path / "t.txt"
    src.write_text("d,drop me\ni,info\n")
    first, second = _explain(str(src), "--line", "1-2", "--config", str(config))["lines"]
    assert first["output_lines"] == []
    assert second["output_lines"] == [1]


def test_a_folder_that_is_not_a_watch_root_is_said_to_be_one(tmp_path: Path) -> None:
    (tmp_path / "notroot").mkdir()
    result = run_cli("explain", "x.txt", "--watch", str(tmp_path / "notroot"), "--line", "1")
    assert result.returncode == 1
    assert f"{tmp_path / 'notroot'} is not a watch root" in result.stderr


def test_a_fifo_in_failed_is_named_as_one(tmp_path: Path) -> None:
    """A quarantined FIFO is there, but has no lines: said so, not "no such file"."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    (root / "failed").mkdir()
    os.mkfifo(root / "failed" / "pipe")
    result = run_cli("explain", "pipe", "--watch", str(root), "--line", "1", timeout=30)
    assert result.returncode == 1
    assert f"{root}/failed/pipe is a FIFO (named pipe), not a regular file" in result.stderr


def test_telemetry_logs_go_to_stderr_as_json_and_stdout_is_the_report(tmp_path: Path) -> None:
    """With telemetry on, what the telemetry logs (here: a Prometheus port already taken) goes to
    stderr as JSON lines, as for `process`; stdout holds only the report."""
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(taken.getsockname()[1]),
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        result = run_cli("explain", str(src), "--line", "1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["lines"][0]["text"] == "x"
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(r["event"].startswith("prometheus endpoint could not listen") for r in records)


def test_a_quarantined_truncated_input_is_explained_by_the_agents_sentence(tmp_path: Path) -> None:
    """For an input the agent refused (a truncated gzip), explain says what the agent said (where it
    was cut), not only the library's exception under it; for a processor's failure, its exception."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    (root / "unprocessed" / "t.gz").write_bytes(gzip.compress(b"hello\nworld\n" * 100)[:20])
    assert run_cli("run", "--watch", str(root), "--once").returncode == 1
    result = run_cli("explain", "t.gz", "--watch", str(root), "--line", "1")
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        "the agent quarantined this file after 1 attempt(s): InputRejectedError: truncated gzip"
    )
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'
    )
    drop(root, "bad.txt", "BAD\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 1
    result = run_cli("explain", "bad.txt", "--watch", str(root), "--line", "1", "--config", str(config))
    assert (
        "ProcessorError in raise_on_0 (raise_on) on line 1: ValueError: cannot handle line 'BAD'"
        in result.stdout
    )


def test_explain_of_ten_thousand_lines_exports_a_span_for_each(tmp_path: Path) -> None:
    """The most lines explain takes at once (10,000) each get their line span: none is dropped."""
    src = tmp_path / "big.txt"
    src.write_text("".join(f"l{i}\n" for i in range(12_000)))
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "uppercase"\n')
    with OtlpReceiver() as rx:
        env = {**rx.endpoint_env("grpc"), "OTEL_BSP_SCHEDULE_DELAY": "50"}
        doc = _explain(str(src), "--line", "1-10000", "--config", str(config), env=env)
        lines = rx.wait_for(
            lambda r: (
                [s for s in r.spans() if s["name"] == "foldermon.line" and s["trace_id"] == doc["trace_id"]]
                if len(r.spans()) > 10_000
                else None
            )
        )
    assert len(lines) == 10_000
    assert sorted(s["attributes"]["foldermon.line.number"] for s in lines) == list(range(1, 10_001))


def test_explain_stopped_by_the_time_limit_names_it_as_the_agent_does(tmp_path: Path) -> None:
    """The replay stopped by max_file_seconds: the report says so (exit 0, as for a failing line) and
    its spans carry the error.type the agent gives it, ProcessingTimeLimitError."""
    src = tmp_path / "h.txt"
    src.write_text("one\nHANG\n")
    config = write_config(
        tmp_path / "h.toml", '[pipeline]\nmax_file_seconds = 1\n[[processors]]\ntype = "hang"\n'
    )
    with OtlpReceiver() as rx:
        env = {**rx.endpoint_env("grpc"), "OTEL_BSP_SCHEDULE_DELAY": "50"}
        doc = _explain(str(src), "--line", "1-2", "--config", str(config), env=env)
        spans = rx.wait_for(lambda r: [s for s in r.spans() if s["trace_id"] == doc["trace_id"]] or None)
    assert any("max_file_seconds" in note for note in doc["notes"])
    (root,) = [s for s in spans if s["name"] == "foldermon.explain"]
    assert root["attributes"]["error.type"] == "ProcessingTimeLimitError"
    (line,) = [
        s for s in spans if s["name"] == "foldermon.line" and s["attributes"]["foldermon.line.number"] == 2
    ]
    assert line["attributes"]["error.type"] == "ProcessingTimeLimitError"
