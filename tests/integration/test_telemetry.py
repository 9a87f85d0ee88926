"""The real agent exporting to a real OTLP receiver over gRPC and HTTP, and to a Prometheus scrape."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentctl import census, drop, log_records, run_cli, start, stop, wait_until, write_config
from foldermon.telemetry import ENABLE_HINT, PROCESSOR_BUCKETS, SECONDS_BUCKETS
from otlp_receiver import OtlpReceiver

PIPELINE = """
[retry]
backoff = 0.01
max_attempts = 2
[[processors]]
type = "line_counter"
id = "count"
format = "Line {count}: {line}"
[[processors]]
type = "uppercase"
id = "up"
[[processors]]
type = "filter"
id = "important"
pattern = "IMPORTANT"
"""
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200"}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def _run_once(tmp_path: Path, env: dict[str, str], *extra: str, config: str = PIPELINE) -> Path:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "a.toml", config)
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(cfg), *extra, env={**FAST, **env})
    assert result.returncode == (1 if census(root)["failed"] else 0), result.stdout + result.stderr
    return root


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_file_and_processor_spans_arrive_with_contract_attributes(
    tmp_path: Path, receiver: OtlpReceiver, protocol: str
) -> None:
    """One process_file span per file with the contract's attributes, one processor child per processor."""
    root = tmp_path / "root"
    drop(root, "a.txt", "important 1\nnope\nIMPORTANT 2\n")
    _run_once(tmp_path, receiver.endpoint_env("http" if protocol != "grpc" else "grpc"))
    spans = receiver.wait_for(lambda rx: len(rx.spans()) >= 4 and rx.spans())
    files = [s for s in spans if s["name"] == "foldermon.process_file"]
    assert len(files) == 1
    file_span = files[0]
    attrs = file_span["attributes"]
    assert attrs["file.name"] == "a.txt"
    assert attrs["file.size"] == len("important 1\nnope\nIMPORTANT 2\n")
    assert attrs["foldermon.watch.root"] == str(root)
    assert attrs["foldermon.attempt"] == 1
    assert attrs["foldermon.outcome"] == "processed"
    assert (attrs["foldermon.lines.in"], attrs["foldermon.lines.out"]) == (3, 2)
    children = {
        s["attributes"]["foldermon.processor.id"]: s for s in spans if s["name"] == "foldermon.processor"
    }
    assert set(children) == {"count", "up", "important"}
    assert all(c["parent_span_id"] == file_span["span_id"] for c in children.values())
    assert children["important"]["attributes"]["foldermon.lines.out"] == 2
    assert file_span["resource"]["service.name"] == "foldermon-agent"
    assert file_span["resource"]["service.instance.id"]
    assert file_span["protocol"] == ("grpc" if protocol == "grpc" else "http")


def test_processor_line_counters_equal_lines_read_and_written(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """foldermon.processor.lines.in/out per processor equal the lines actually seen, summed over files."""
    root = tmp_path / "root"
    drop(root, "a.txt", "important\nx\ny\n")
    drop(root, "b.txt", "IMPORTANT\nimportant too\n")
    _run_once(tmp_path, receiver.endpoint_env("grpc"))
    expected = {"count": (5, 5), "up": (5, 5), "important": (5, 3)}
    for pid, (lines_in, lines_out) in expected.items():
        attrs = {"foldermon.processor.id": pid}
        point = receiver.wait_for(lambda rx, a=attrs: rx.latest_metric("foldermon.processor.lines.in", **a))
        assert point["value"] == lines_in
        assert receiver.latest_metric("foldermon.processor.lines.out", **attrs)["value"] == lines_out  # type: ignore[index]
    files = receiver.latest_metric("foldermon.files", **{"foldermon.outcome": "processed"})
    assert files is not None
    assert files["value"] == 2


def test_histograms_use_second_buckets(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Duration histograms carry seconds buckets (1 ms to 10 min; from 1 µs for processors, which may
    take microseconds on a file), not the SDK's millisecond ones."""
    drop(tmp_path / "root", "a.txt", "x\n")
    _run_once(tmp_path, receiver.endpoint_env("grpc"))
    for name, buckets in (
        ("foldermon.file.duration", SECONDS_BUCKETS),
        ("foldermon.processor.duration", PROCESSOR_BUCKETS),
        ("foldermon.file.pickup_latency", SECONDS_BUCKETS),
    ):
        point = receiver.wait_for(lambda rx, n=name: rx.latest_metric(n))
        assert point["unit"] == "s"
        assert point["explicit_bounds"] == list(buckets)
        assert point["count"] >= 1
    processor = receiver.latest_metric("foldermon.processor.duration")
    assert processor is not None
    assert sum(processor["bucket_counts"][:9]) >= 1, "a one-line file's processor time lies under 1 ms"


def test_lines_read_show_the_progress_of_a_long_file(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """foldermon.lines.read grows while a long file is still being processed (no file finished
    yet: the backlog alert tells that from a wedged agent), and ends at the file's line count."""
    root = tmp_path / "root"
    lines = 60_000  # a few batches of input, each slept on
    drop(root, "long.txt", "".join(f"a line of the long file number {i}\n" for i in range(lines)))
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "sleepy"\nseconds = 1.2\n')
    log = tmp_path / "agent.log"
    agent = start(
        "run",
        "--watch",
        str(root),
        "--config",
        str(config),
        log=log,
        env={**FAST, **receiver.endpoint_env("grpc")},
    )
    try:
        progress = receiver.wait_for(
            lambda rx: (p := rx.latest_metric("foldermon.lines.read")) is not None and p["value"] > 0 and p,
            timeout=30,
        )
        assert progress["value"] < lines
        assert census(root)["underprocess"] == ["long.txt"], "the file is still being processed"
        assert progress["attributes"]["foldermon.watch.root"] == str(root)
        wait_until(lambda: census(root)["processed"] == ["long.txt"], timeout=60)
        done = receiver.wait_for(
            lambda rx: (
                (p := rx.latest_metric("foldermon.lines.read")) is not None and p["value"] == lines and p
            ),
            timeout=10,
        )
        assert done["value"] == lines
    finally:
        assert stop(agent) == 0


def test_queue_depth_gauge_reports_each_state(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """foldermon.queue.depth is exported per state, and failed counts the quarantined file;
    an excluded name and a folder left in unprocessed/ are not waiting files."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "x\n")
    drop(root, "upload.part", "not yet\n")
    (root / "unprocessed" / "folder").mkdir()
    (root / "unprocessed").joinpath("link").symlink_to("/etc/hostname")
    _run_once(tmp_path, receiver.endpoint_env("grpc"))
    point = receiver.wait_for(
        lambda rx: rx.latest_metric("foldermon.queue.depth", **{"foldermon.queue.state": "failed"})
    )
    assert point["value"] == 1
    waiting = receiver.latest_metric("foldermon.queue.depth", **{"foldermon.queue.state": "unprocessed"})
    assert waiting is not None
    assert waiting["value"] == 0
    states = {
        p["attributes"]["foldermon.queue.state"]
        for p in receiver.metrics()
        if p["name"] == "foldermon.queue.depth"
    }
    assert states == {"unprocessed", "underprocess", "failed"}
    mode = receiver.wait_for(lambda rx: rx.latest_metric("foldermon.watch.mode"))
    assert mode["attributes"]["foldermon.watch.mode"] == "once"


def test_trace_lines_gives_line_spans_with_one_event_per_processor(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """--trace: each line span is a child of its file span and has one event per processor step."""
    root = tmp_path / "root"
    drop(root, "a.txt", "important\nplain\n")
    _run_once(tmp_path, receiver.endpoint_env("grpc"), "--trace")
    spans = receiver.wait_for(
        lambda rx: len([s for s in rx.spans() if s["name"] == "foldermon.line"]) == 2 and rx.spans()
    )
    file_span = next(s for s in spans if s["name"] == "foldermon.process_file")
    lines = sorted(
        (s for s in spans if s["name"] == "foldermon.line"),
        key=lambda s: s["attributes"]["foldermon.line.number"],
    )
    assert [s["parent_span_id"] for s in lines] == [file_span["span_id"]] * 2
    assert {s["trace_id"] for s in lines} == {file_span["trace_id"]}
    # Line spans are made straight into the span processor: the same resource, scope and shape.
    assert all((s["resource"], s["scope"]) == (file_span["resource"], file_span["scope"]) for s in lines)
    assert all(file_span["start_ns"] <= s["start_ns"] <= s["end_ns"] <= file_span["end_ns"] for s in lines)
    assert len({s["span_id"] for s in [file_span, *lines]}) == 3
    assert {e["attributes"]["foldermon.processor.type"] for e in lines[0]["events"]} == {
        "line_counter",
        "uppercase",
        "filter",
    }
    steps = [
        [
            (e["attributes"]["foldermon.processor.id"], e["attributes"]["foldermon.line.result"])
            for e in s["events"]
        ]
        for s in lines
    ]
    assert steps[0] == [("count", "changed"), ("up", "changed"), ("important", "passed")]
    assert steps[1] == [("count", "changed"), ("up", "changed"), ("important", "dropped")]


def test_line_spans_are_capped_per_file(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """max_line_spans_per_file bounds the line spans of a file; the output is still complete."""
    root = tmp_path / "root"
    drop(root, "a.txt", "".join(f"IMPORTANT {i}\n" for i in range(500)))
    config = PIPELINE + "[telemetry]\ntrace_lines = true\nmax_line_spans_per_file = 7\n"
    _run_once(tmp_path, receiver.endpoint_env("grpc"), config=config)
    receiver.wait_for(lambda rx: any(s["name"] == "foldermon.process_file" for s in rx.spans()))
    receiver.wait_for(lambda rx: len([s for s in rx.spans() if s["name"] == "foldermon.line"]) >= 7)
    assert len([s for s in receiver.spans() if s["name"] == "foldermon.line"]) == 7
    assert len((root / "output" / "a_processed.txt").read_text().splitlines()) == 500


def test_failed_file_span_has_error_status_and_its_trace_id_is_in_the_record(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A failing file: span status ERROR with the exception and error.type, outcome failed, trace id
    in its record; the batch-mode failure is run again line by line at once, so the record names the line."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "ok\nok\nBAD\nok\n")
    config = '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\nid = "picky"\n'
    _run_once(tmp_path, receiver.endpoint_env("grpc"), config=config)
    span = receiver.wait_for(
        lambda rx: next((s for s in rx.spans() if s["attributes"].get("foldermon.outcome") == "failed"), None)
    )
    assert span["status_code"] == 2
    assert span["attributes"]["error.type"] == "ProcessorError"
    assert any(e["name"] == "exception" for e in span["events"])
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["trace_id"] == span["trace_id"]
    assert record["line"] == 3
    runs = [s for s in receiver.spans() if s["name"] == "foldermon.process_file"]
    assert [s["attributes"]["foldermon.outcome"] for s in runs] == ["retry", "failed"]


def test_log_records_inside_a_span_carry_its_trace_id(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """JSON logs on stdout and OTLP log records of a file carry the file span's trace and span ids."""
    root = tmp_path / "root"
    drop(root, "a.txt", "x\n")
    cfg = write_config(tmp_path / "a.toml", "")
    env = {**FAST, **receiver.endpoint_env("grpc"), "OTEL_LOGS_EXPORTER": "otlp"}
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(cfg), env=env)
    assert result.returncode == 0
    span = receiver.wait_for(
        lambda rx: next((s for s in rx.spans() if s["name"] == "foldermon.process_file"), None)
    )
    stdout_records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    processed = next(r for r in stdout_records if r["event"] == "file processed")
    assert (processed["trace_id"], processed["span_id"]) == (span["trace_id"], span["span_id"])
    otlp = receiver.wait_for(lambda rx: next((r for r in rx.logs() if r["body"] == "file processed"), None))
    assert (otlp["trace_id"], otlp["span_id"]) == (span["trace_id"], span["span_id"])
    assert otlp["severity_text"] == "INFO"


def test_no_collector_configured_runs_quietly_with_one_hint(tmp_path: Path) -> None:
    """Without any endpoint the agent exports nothing, says once how to enable it, and warns about nothing."""
    root = tmp_path / "root"
    drop(root, "a.txt", "x\n")
    result = run_cli("run", "--watch", str(root), "--once")
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["event"] for r in records].count(ENABLE_HINT) == 1
    assert all(r.get("instance") for r in records), "every record names its instance"
    # The agent made the root's folders (said at warning level); nothing else is worth a warning.
    warned = [r for r in records if r["level"] in ("warning", "error") and r["event"] != "folder created"]
    assert warned == []
    assert result.stderr == ""


def test_collector_that_disappears_does_not_stop_processing(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """The collector goes away mid-run: files keep flowing, failures are logged once, the agent exits 0."""
    root = tmp_path / "root"
    log = tmp_path / "agent.log"
    env = {**FAST, **receiver.endpoint_env("grpc"), "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    proc = start("run", "--watch", str(root), "--config", "/dev/null", log=log, env=env)
    drop(root, "before.txt", "x\n")
    receiver.wait_for(lambda rx: any(s["name"] == "foldermon.process_file" for s in rx.spans()), timeout=15)
    receiver.stop()
    for i in range(20):
        drop(root, f"after{i}.txt", "x\n")
    wait_until(lambda: len(list((root / "processed").iterdir())) == 21)
    wait_until(
        lambda: any(r["event"].startswith("telemetry export failing") for r in log_records(log)), timeout=20
    )
    assert stop(proc, timeout=30) == 0
    failing = [r for r in log_records(log) if r["event"].startswith("telemetry export failing")]
    # At most once a minute per signal, and at the stop once more for what came since.
    during = [r for r in failing if not r["detail"].endswith("since the last report")]
    at_stop = [r for r in failing if r["detail"].endswith("since the last report")]
    assert len({r["signal"] for r in during}) == len(during)
    assert len({r["signal"] for r in at_stop}) == len(at_stop)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_endpoint_serves_translated_names(tmp_path: Path) -> None:
    """OTEL_METRICS_EXPORTER=prometheus serves foldermon_* metrics on loopback with the standard names."""
    root = tmp_path / "root"
    port = _free_port()
    cfg = write_config(tmp_path / "a.toml", PIPELINE)
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)}
    proc = start("run", "--watch", str(root), "--config", str(cfg), log=tmp_path / "agent.log", env=env)
    try:
        drop(root, "a.txt", "IMPORTANT\nno\n")
        wait_until((root / "processed" / "a.txt").exists)

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    return str(resp.read().decode())
            except OSError:
                return ""

        def scrape_after_first_file() -> str:
            text = scrape()
            return text if "foldermon_files_total" in text else ""

        text = wait_until(scrape_after_first_file)
    finally:
        assert stop(proc) == 0
    assert 'foldermon_processor_lines_in_total{foldermon_processor_id="important"' in text
    assert "foldermon_processor_lines_out_total" in text
    assert "foldermon_file_duration_seconds_bucket" in text
    assert 'foldermon_queue_depth{foldermon_queue_state="unprocessed"' in text
    files = [line for line in text.splitlines() if line.startswith("foldermon_files_total{")]
    assert any('foldermon_outcome="processed"' in line for line in files)
