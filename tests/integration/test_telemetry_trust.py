"""Telemetry an operator can trust, against real OTLP receivers: no silent span loss, the failing
line always found, honest processor timings, trace ids that lead somewhere, the contract's names."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentctl import census, drop, log_records, run_cli, start, stop, wait_until, write_config
from otlp_receiver import OtlpReceiver, SpanRecord

FAST = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200"}
COUNTER = '[[processors]]\ntype = "line_counter"\nid = "count"\n'
FAILING = '[[processors]]\ntype = "raise_on"\nid = "picky"\n'


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def _run(
    root: Path, tmp: Path, receiver: OtlpReceiver, config: str, *extra: str, env: dict[str, str] | None = None
) -> None:
    cfg = write_config(tmp / "c.toml", config)
    full = {**FAST, **receiver.endpoint_env("grpc"), **(env or {})}
    result = run_cli(
        "run", "--watch", str(root), "--once", "--config", str(cfg), *extra, env=full, timeout=300
    )
    assert result.returncode == (1 if census(root)["failed"] else 0), (
        result.stdout[-3000:] + result.stderr[-3000:]
    )


def _lines(n: int, bad_at: int | None = None) -> str:
    return "".join("BAD line\n" if i == bad_at else f"line {i}\n" for i in range(1, n + 1))


def _named(spans: list[SpanRecord], name: str) -> list[SpanRecord]:
    return [s for s in spans if s["name"] == name]


def _dropped(receiver: OtlpReceiver) -> dict[str, int]:
    """The last value of foldermon.telemetry.spans.dropped per reason (cumulative counters)."""
    last: dict[str, int] = {}
    for point in receiver.metrics():
        if point["name"] == "foldermon.telemetry.spans.dropped":
            last[point["attributes"]["foldermon.telemetry.reason"]] = int(point.get("value", 0))
    return last


def test_a_slow_collector_under_a_traced_backlog_loses_no_file_span_and_counts_every_line_span(
    tmp_path: Path,
) -> None:
    """Ten 100,000-line files with --trace and a collector taking 50 ms per export: every file and
    processor span arrives; every line span that does not arrive is counted as dropped."""
    root = tmp_path / "root"
    for i in range(10):
        drop(root, f"f{i}.txt", _lines(100_000))
    with OtlpReceiver(delay=0.05) as receiver:
        _run(root, tmp_path, receiver, COUNTER, "--trace")
        spans = receiver.wait_for(
            lambda rx: len(_named(rx.spans(), "foldermon.process_file")) == 10 and rx.spans()
        )
        files = _named(spans, "foldermon.process_file")
        assert len(files) == 10
        assert len(_named(spans, "foldermon.processor")) == 10
        made = sum(f["attributes"]["foldermon.lines.traced"] for f in files)
        arrived = len(_named(spans, "foldermon.line"))
        dropped = sum(receiver.wait_for(lambda rx: _dropped(rx) or None).values())
        assert arrived + dropped == made, (arrived, dropped, made)


def test_trace_finds_the_failing_line_deep_in_a_file(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """A file failing at line 5,000 of 20,000 with --trace: the record names the line and its trace
    has an ERROR line span for it."""
    root = tmp_path / "root"
    drop(root, "deep.txt", _lines(20_000, bad_at=5_000))
    _run(root, tmp_path, receiver, "[retry]\nmax_attempts = 1\n" + FAILING, "--trace")
    record = json.loads((root / "failed" / ".deep.txt.error.json").read_text())
    assert record["line"] == 5_000
    spans = receiver.wait_for(
        lambda rx: [s for s in _named(rx.spans(), "foldermon.line") if s["status_code"] == 2] or None
    )
    failing = [s for s in spans if s["trace_id"] == record["trace_id"]]
    assert [s["attributes"]["foldermon.line.number"] for s in failing] == [5_000]
    assert failing[0]["attributes"]["error.type"] == "ValueError"
    step = failing[0]["events"][0]["attributes"]
    assert (step["foldermon.processor.type"], step["foldermon.line.result"]) == ("raise_on", "failed")


def test_the_file_span_says_how_much_of_the_file_was_traced_and_samples_span_the_file(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """100,000 lines with a cap of 100 line spans: the file span says lines were examined and traced
    and that the trace is truncated; the sampled lines reach the end of the file."""
    root = tmp_path / "root"
    drop(root, "big.txt", _lines(100_000))
    config = "[telemetry]\nmax_line_spans_per_file = 100\nline_sample_ratio = 1.0\n" + COUNTER
    _run(root, tmp_path, receiver, config, "--trace")
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.line")) >= 100 and rx.spans())
    (file_span,) = _named(spans, "foldermon.process_file")
    attrs = file_span["attributes"]
    assert attrs["foldermon.lines.traced"] == 100
    assert 100 <= attrs["foldermon.lines.examined"] <= 1000
    assert attrs["foldermon.trace.truncated"] is True
    numbers = sorted(s["attributes"]["foldermon.line.number"] for s in _named(spans, "foldermon.line"))
    assert numbers[-1] > 90_000, "line spans stop early in the file"
    assert numbers[len(numbers) // 2] > 20_000, "line spans crowd the start of the file"


def test_with_a_ratio_of_one_every_examined_line_is_traced(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """line_sample_ratio = 1.0: every line examined gets its span (no more are examined than the
    cap holds); lines picked after the one a batch fails on are not counted as examined, and the
    failing line run alone to be named is: the file span's two counts agree."""
    root = tmp_path / "root"
    drop(root, "good.txt", _lines(200_000))
    drop(root, "bad.txt", _lines(200_000, bad_at=150_000))
    config = "[retry]\nmax_attempts = 1\n[telemetry]\nline_sample_ratio = 1.0\n" + FAILING
    _run(root, tmp_path, receiver, config, "--trace")
    spans = receiver.wait_for(
        lambda rx: len(_named(rx.spans(), "foldermon.process_file")) >= 3 and rx.spans()
    )
    files = [s["attributes"] for s in _named(spans, "foldermon.process_file")]
    (good,) = [a for a in files if a["file.path"].endswith("/good.txt")]
    assert good["foldermon.lines.traced"] == good["foldermon.lines.examined"] > 500
    failed = [a for a in files if a["file.path"].endswith("/bad.txt")]
    assert failed
    assert [a["foldermon.lines.traced"] for a in failed] == [a["foldermon.lines.examined"] for a in failed]


def test_line_spans_are_spread_over_the_file_when_many_lines_are_dropped(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A filter drops every third line of 100,000 and the ratio is 0.01: dropped lines always get a
    span, so the cap would fill in the first part of the file unless the spread counts them."""
    root = tmp_path / "root"
    drop(
        root, "big.txt", "".join(f"line {i} {'DROP' if i % 3 == 0 else 'keep'}\n" for i in range(1, 100_001))
    )
    config = (
        "[telemetry]\nmax_line_spans_per_file = 100\nline_sample_ratio = 0.01\n"
        '[[processors]]\ntype = "filter"\npattern = "DROP"\ninvert = true\n'
    )
    _run(root, tmp_path, receiver, config, "--trace")
    # The cap fills as far as the lines examined allow (the last ones may not be wanted).
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.line")) >= 95 and rx.spans())
    (file_span,) = _named(spans, "foldermon.process_file")
    assert file_span["attributes"]["foldermon.lines.examined"] >= 900  # about ten times the cap
    numbers = sorted(s["attributes"]["foldermon.line.number"] for s in _named(spans, "foldermon.line"))
    assert 95 <= len(numbers) <= 100
    assert numbers[-1] > 90_000, "line spans stop early in the file"
    assert 30_000 < numbers[len(numbers) // 2] < 70_000, "line spans crowd one part of the file"


def test_dropped_lines_alone_get_spans_paced_over_the_file(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Ratio 0 (only dropped lines get a span), every second line dropped, a cap of 10: the ten
    spans are paced over the whole file, not spent on its first dropped lines."""
    root = tmp_path / "root"
    drop(
        root, "half.txt", "".join(f"line {i} {'DROP' if i % 2 == 0 else 'keep'}\n" for i in range(1, 20_001))
    )
    config = (
        "[telemetry]\nmax_line_spans_per_file = 10\nline_sample_ratio = 0.0\n"
        '[[processors]]\ntype = "filter"\npattern = "DROP"\ninvert = true\n'
    )
    _run(root, tmp_path, receiver, config, "--trace")
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.line")) >= 9 and rx.spans())
    numbers = sorted(s["attributes"]["foldermon.line.number"] for s in _named(spans, "foldermon.line"))
    assert 9 <= len(numbers) <= 10  # as far as the lines examined allow
    assert all(n % 2 == 0 for n in numbers)  # dropped lines only
    assert numbers[1] > 1_000, "the first dropped lines took the cap"
    assert 6_000 < numbers[len(numbers) // 2] < 14_000, "line spans crowd one part of the file"
    assert numbers[-1] > 15_000, "line spans stop early in the file"


def test_processor_spans_last_as_long_as_their_processor_ran(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """Processor spans lie end to end inside the file span, each as long as its processor's own time,
    and their shares of the pipeline add up to one."""
    root = tmp_path / "root"
    drop(root, "a.txt", _lines(50_000))
    config = '[[processors]]\ntype = "sleepy"\nid = "slow"\nseconds = 0.05\n' + COUNTER
    _run(root, tmp_path, receiver, config)
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.processor")) == 2 and rx.spans())
    (file_span,) = _named(spans, "foldermon.process_file")
    slow, count = sorted(_named(spans, "foldermon.processor"), key=lambda s: s["start_ns"])
    assert slow["attributes"]["foldermon.processor.id"] == "slow"
    assert file_span["start_ns"] == slow["start_ns"]
    assert slow["end_ns"] == count["start_ns"]
    assert count["end_ns"] <= file_span["end_ns"]
    assert slow["end_ns"] - slow["start_ns"] >= 0.05e9  # it slept once per batch, at least once
    assert count["end_ns"] - count["start_ns"] < slow["end_ns"] - slow["start_ns"]
    shares = [s["attributes"]["foldermon.processor.share"] for s in (slow, count)]
    assert abs(sum(shares) - 1.0) < 0.01
    assert shares[0] > shares[1]


def test_every_attempt_is_traced_and_linked_whatever_the_sampler(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """With the sampler at always_off, the retries of a failing file are traced anyway, each links to
    the earlier attempts, and the record lists every attempt's trace once: attempt 1's is its
    line-by-line run (kept), not the batch run before it (not kept)."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "ok\nBAD\n")
    config = "[retry]\nmax_attempts = 3\nbackoff = 0.01\n" + FAILING
    _run(root, tmp_path, receiver, config, env={"OTEL_TRACES_SAMPLER": "always_off"})
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    traces = record["attempt_traces"]
    assert [(t["attempt"], t["sampled"]) for t in traces] == [(1, True), (2, True), (3, True)]
    assert record["trace_id"] == traces[-1]["trace_id"]
    assert record["trace_sampled"] is True
    files = receiver.wait_for(
        lambda rx: len(_named(rx.spans(), "foldermon.process_file")) == 3 and rx.spans()
    )
    by_trace = {s["trace_id"]: s for s in _named(files, "foldermon.process_file")}
    assert set(by_trace) == {t["trace_id"] for t in traces}
    last = by_trace[traces[-1]["trace_id"]]
    assert last["links"] == [(t["trace_id"], t["span_id"]) for t in traces[:-1]]


def test_a_failure_whose_trace_was_not_kept_says_so(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """A file failing on its only attempt with tracing sampled out: no trace id that leads nowhere."""
    root = tmp_path / "root"
    drop(root, "long.txt", "x" * 200 + "\n")
    config = "[retry]\nmax_attempts = 1\n[pipeline]\nmax_line_bytes = 100\n"
    _run(root, tmp_path, receiver, config, env={"OTEL_TRACES_SAMPLER": "always_off"})
    record = json.loads((root / "failed" / ".long.txt.error.json").read_text())
    assert (record["trace_id"], record["trace_sampled"]) == (None, False)


def test_failures_carry_error_type_and_paths_follow_the_conventions(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """error.type on the failed span and on the failed outcome of foldermon.files; file.path is where
    the producer put the file, the claim path beside it; log records carry their time."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "BAD\n")
    _run(
        root, tmp_path, receiver, "[retry]\nmax_attempts = 1\n" + FAILING, env={"OTEL_LOGS_EXPORTER": "otlp"}
    )
    spans = receiver.wait_for(lambda rx: _named(rx.spans(), "foldermon.process_file") or None)
    attrs = spans[0]["attributes"]
    assert attrs["file.path"] == str(root.absolute() / "unprocessed" / "bad.txt")
    assert "/underprocess/" in attrs["foldermon.claim.path"]
    failed = receiver.wait_for(
        lambda rx: (
            [
                p
                for p in rx.metrics()
                if p["name"] == "foldermon.files"
                and p["attributes"].get("foldermon.outcome") == "failed"
                and p.get("value")
            ]
            or None
        )
    )
    assert failed[-1]["attributes"]["error.type"] == "ProcessorError"
    assert failed[-1]["attributes"]["foldermon.watch.root.id"]
    logs = receiver.wait_for(lambda rx: rx.logs() or None)
    assert all(r["time_ns"] > 0 for r in logs)


def _files_counted(receiver: OtlpReceiver) -> dict[tuple[str, str], int]:
    """The last value of foldermon.files per (outcome, error.type)."""
    last: dict[tuple[str, str], int] = {}
    for point in receiver.metrics():
        if point["name"] == "foldermon.files":
            a = point["attributes"]
            last[a["foldermon.outcome"], a.get("error.type", "")] = int(point.get("value", 0))
    return last


def test_every_failed_file_is_counted_and_each_error_type_starts_at_zero(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Entries quarantined when claimed (a symlink, a FIFO) count as failed files like any other,
    and the failed series of each error type the agent names exists at 0 from the start, so the
    first failure of each shows in increase()."""
    root = tmp_path / "root"
    drop(root, "good.txt", "fine\n")
    (root / "unprocessed" / "link").symlink_to(root / "unprocessed" / "good.txt")
    os.mkfifo(root / "unprocessed" / "fifo")
    _run(root, tmp_path, receiver, COUNTER)
    counted = receiver.wait_for(lambda rx: _files_counted(rx).get(("failed", "InputRejected")) == 2 and rx)
    files = _files_counted(counted)
    assert files["processed", ""] == 1
    for error_type in ("ProcessorError", "LineTooLongError", "AttemptsExhausted", "ProcessingTimeLimitError"):
        assert files["failed", error_type] == 0


def test_the_counters_at_zero_reach_the_collector_before_the_first_failure(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Files failing at once after a start, long before the first periodic export: the collector
    got the failed series at 0 first (exported at start), so increase() sees the failures."""
    root = tmp_path / "root"
    for i in range(3):
        drop(root, f"bad{i}.txt", "BAD\n")
    config = write_config(tmp_path / "c.toml", "[retry]\nmax_attempts = 1\n" + FAILING)
    env = {**receiver.endpoint_env("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    done = run_cli("run", "--watch", str(root), "--once", "--config", str(config), env=env, timeout=60)
    assert done.returncode == 1, done.stderr
    receiver.wait_for(lambda rx: rx.latest_metric("foldermon.files", **{"error.type": "ProcessorError"}))
    values = [
        int(p.get("value", 0))
        for p in receiver.metrics()
        if p["name"] == "foldermon.files" and p["attributes"].get("error.type") == "ProcessorError"
    ]
    assert (values[0], values[-1]) == (0, 3)


def test_lines_read_starts_at_zero(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """foldermon.lines.read exists at 0 before any line is read, as every counter does, so the
    first lines after a start show in increase() (the backlog alert relies on it)."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    _run(root, tmp_path, receiver, COUNTER)
    read = receiver.wait_for(lambda rx: rx.latest_metric("foldermon.lines.read"))
    assert read.get("value") == 0


def test_the_line_by_line_run_of_an_attempt_is_not_counted_as_a_retry(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A batch that fails runs again at once line by line within the same attempt: with
    max_attempts = 2, foldermon.files counts one retry and one failure, as the record says, and
    the file's pickup latency is recorded once (the line-by-line run is no second pickup)."""
    root = tmp_path / "root"
    drop(root, "bad.txt", _lines(500, bad_at=300))
    _run(root, tmp_path, receiver, "[retry]\nmax_attempts = 2\nbackoff = 0.05\n" + FAILING)
    counted = receiver.wait_for(lambda rx: _files_counted(rx).get(("failed", "ProcessorError")) == 1 and rx)
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["attempts"] == 2
    assert record["line"] == 300
    assert _files_counted(counted)["retry", ""] == 1
    errors = [p for p in counted.metrics() if p["name"] == "foldermon.processor.errors"]
    assert int(errors[-1]["value"]) == 2  # one per attempt, as with --trace
    pickup = counted.latest_metric("foldermon.file.pickup_latency")
    assert pickup is not None
    assert pickup.get("count") == 1


REPEATED = 300_000  # lines of one repeated line: 9 MB that compress to a few KB


def _compressed(kind: str, data: bytes) -> bytes:
    import gzip
    import lzma

    import zstandard

    if kind == "gzip":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("kind", ["gzip", "utf8", "gzip-repeated", "xz-repeated", "zstd-repeated"])
def test_line_spans_span_a_compressed_or_multibyte_file(
    tmp_path: Path, receiver: OtlpReceiver, kind: str
) -> None:
    """Line spans spread over the whole file, whether its text is plain ASCII, multi-byte
    characters, or compressed, even so well that the decompressor reads the stored file whole
    at once (one line repeated: the size the format declares tells how much text is to come)."""
    root = tmp_path / "root"
    codec, _, repeated = kind.partition("-")
    if repeated:
        text = "the same line again and again\n" * REPEATED
    elif kind == "utf8":
        text = "".join(f"行 {i} 漢字のテキスト\n" for i in range(1, 100_001))
    else:
        text = _lines(100_000)
    total = text.count("\n")
    data = text.encode() if kind == "utf8" else _compressed(codec, text.encode())
    drop(root, "big.txt" if kind == "utf8" else f"big.txt.{codec}", data)
    config = "[telemetry]\nmax_line_spans_per_file = 100\nline_sample_ratio = 1.0\n" + COUNTER
    _run(root, tmp_path, receiver, config, "--trace")
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.line")) >= 90 and rx.spans())
    numbers = sorted(s["attributes"]["foldermon.line.number"] for s in _named(spans, "foldermon.line"))
    assert len(numbers) >= 90
    assert numbers[-1] > total * 0.9, "line spans stop early in the file"
    assert numbers[len(numbers) // 2] > total * 0.2, "line spans crowd the start of the file"


def test_failed_processor_and_one_shot_spans_carry_error_type(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """The processor span of the processor that raised, and the file span of a failed `process`,
    say what failed in error.type (and the latter its outcome)."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "BAD\n")
    _run(root, tmp_path, receiver, "[retry]\nmax_attempts = 1\n" + FAILING)
    spans = receiver.wait_for(lambda rx: _named(rx.spans(), "foldermon.processor") or None)
    assert spans[0]["attributes"]["error.type"] == "ValueError"
    src = tmp_path / "in.txt"
    src.write_text("BAD\n")
    config = write_config(tmp_path / "p.toml", FAILING)
    done = run_cli(
        "process", str(src), "--config", str(config), env={**FAST, **receiver.endpoint_env("grpc")}
    )
    assert done.returncode == 1
    one_shot = receiver.wait_for(
        lambda rx: (
            [
                s
                for s in _named(rx.spans(), "foldermon.process_file")
                if s["attributes"]["file.name"] == "in.txt"
            ]
            or None
        )
    )
    assert one_shot[0]["attributes"]["error.type"] == "ProcessorError"
    assert one_shot[0]["attributes"]["foldermon.outcome"] == "failed"


def test_explain_says_when_its_trace_was_not_sampled(tmp_path: Path, receiver: OtlpReceiver) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    env = {**receiver.endpoint_env("grpc"), "OTEL_TRACES_SAMPLER": "always_off"}
    shown = run_cli("explain", str(src), "--line", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "not sampled" in shown.stdout.splitlines()[-1]
    as_json = json.loads(run_cli("explain", str(src), "--line", "1", "--json", env=env).stdout)
    assert as_json["trace_sampled"] is False


def test_batch_settings_the_sdk_takes_work_and_bad_ones_are_said(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """An export batch larger than a span queue is held to the queue; a batch setting that is not
    a positive number is a configuration error in words, not a traceback."""
    root = tmp_path / "root"
    drop(root, "a.txt", "a\n")
    big = {"OTEL_BSP_MAX_QUEUE_SIZE": "16384", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "40000"}
    _run(root, tmp_path, receiver, COUNTER, "--trace", env=big)
    assert census(root)["processed"] == ["a.txt"]
    bad = (
        ("OTEL_BSP_SCHEDULE_DELAY", "0"),
        ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "9999"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "abc"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "lz4"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "abc"),
        ("OTEL_SPAN_EVENT_COUNT_LIMIT", "-1"),
    )
    for name, value in bad:
        for verb in (["run", "--watch", str(root), "--once"], ["process", str(tmp_path / "c.toml")]):
            refused = run_cli(*verb, env={**receiver.endpoint_env("grpc"), name: value})
            assert refused.returncode == 78, (name, verb[0], refused.stderr)
            assert name in refused.stderr
            assert "Traceback" not in refused.stderr


def _traced_backlog_then_stop(
    tmp_path: Path, config: Path, env: dict[str, str], *, files: int, lines: int
) -> tuple[int, float]:
    """`run --trace` on ``tmp_path/root`` (its log in ``a.log``) given ``files`` files of
    ``lines`` lines, stopped by SIGTERM once they are processed: its exit code, and how many
    seconds the stop took."""
    import time

    from agentctl import start, stop, wait_until

    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True, exist_ok=True)
    proc = start(
        "run", "--watch", str(root), "--trace", "--config", str(config), log=tmp_path / "a.log", env=env
    )
    try:
        for i in range(files):
            drop(root, f"f{i}.txt", _lines(lines))
        wait_until(lambda: len(census(root)["processed"]) == files)
    finally:
        started = time.monotonic()
        code = stop(proc)
    return code, time.monotonic() - started


def test_a_stop_with_a_slow_collector_is_bounded_and_counts_what_it_leaves(tmp_path: Path) -> None:
    """SIGTERM while a collector taking 1 s per export still has line spans to take: exit 0 well
    within the drain deadline and its grace, every line span received or counted as dropped."""
    import time

    config = write_config(
        tmp_path / "c.toml",
        "[agent]\ndrain_timeout = 1.0\n[telemetry]\nmax_line_spans_per_file = 5000\n" + COUNTER,
    )
    with OtlpReceiver(delay=1.0) as slow:
        env = {**slow.endpoint_env("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "500"}
        code, took = _traced_backlog_then_stop(tmp_path, config, env, files=4, lines=5000)
        assert code == 0, (tmp_path / "a.log").read_text()[-2000:]
        assert took < 8.0
        time.sleep(2.0)  # an export in flight at the stop may still arrive
        received = len(_named(slow.spans(), "foldermon.line"))
        dropped = sum(_dropped(slow).values())
    assert received + dropped >= 4 * 5000


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_stop_says_the_export_the_collector_did_not_confirm(tmp_path: Path, protocol: str) -> None:
    """A collector taking 4 s per trace export, then a stop: over either protocol the spans it
    had not confirmed are counted dropped ("shutdown") and the export as a failed one, and both
    are logged, with every drop since the last report (reports are a minute apart)."""
    from agentctl import log_records

    config = write_config(tmp_path / "c.toml", "[agent]\ndrain_timeout = 1.0\n" + COUNTER)
    with OtlpReceiver(delay=4.0) as slow:
        env = {**slow.endpoint_env(protocol), "OTEL_BSP_SCHEDULE_DELAY": "50"}
        assert _traced_backlog_then_stop(tmp_path, config, env, files=3, lines=1500)[0] == 0
    records = log_records(tmp_path / "a.log")
    failing = [r for r in records if r.get("event") == "telemetry export failing; processing continues"]
    assert [r["signal"] for r in failing] == ["traces"]
    assert "before the stop" in failing[0]["detail"]
    dropped = [r for r in records if r.get("event") == "spans dropped before export; processing continues"]
    assert dropped
    assert dropped[-1]["reason"] == "shutdown"


def test_a_stop_with_a_hung_collector_ends_in_time_without_a_dump(tmp_path: Path) -> None:
    """A collector that takes connections and never answers any signal: SIGTERM on an idle agent
    ends with exit 0 within the drain deadline and the telemetry's 5 s, not by the watchdog."""
    import time

    from agentctl import start, stop, wait_until

    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(tmp_path / "c.toml", "[agent]\ndrain_timeout = 1.0\n" + COUNTER)
    with OtlpReceiver(hang=True) as hung:
        env = {**hung.endpoint_env("grpc"), "OTEL_METRIC_EXPORT_INTERVAL": "500"}
        proc = start("run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log", env=env)
        try:
            drop(root, "a.txt", _lines(10))
            wait_until(lambda: census(root)["processed"] == ["a.txt"])
            time.sleep(1.0)  # a metric export is now waiting on the collector
        finally:
            started = time.monotonic()
            code = stop(proc)
        took = time.monotonic() - started
    log = (tmp_path / "a.log").read_text()
    assert code == 0, log[-2000:]
    assert took < 8.0
    assert "Current thread" not in log  # no watchdog dump
    assert "telemetry shutdown incomplete" in log


def test_process_with_trace_says_on_its_file_span_how_much_was_traced(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """`process --trace` states on its file span, as `run` does, how many lines were traced of
    how many examined, and that the cap cut the trace short."""
    src = tmp_path / "big.txt"
    src.write_text(_lines(5000))
    config = write_config(tmp_path / "p.toml", "[telemetry]\nmax_line_spans_per_file = 100\n" + COUNTER)
    done = run_cli(
        "process", str(src), "--trace", "--config", str(config), env={**FAST, **receiver.endpoint_env("grpc")}
    )
    assert done.returncode == 0, done.stderr
    spans = receiver.wait_for(lambda rx: _named(rx.spans(), "foldermon.process_file") or None)
    attributes = spans[0]["attributes"]
    assert attributes["foldermon.lines.traced"] == len(_named(receiver.spans(), "foldermon.line")) == 100
    assert attributes["foldermon.lines.examined"] >= 100
    assert attributes["foldermon.trace.truncated"] is True


def test_process_names_a_failing_line_deep_in_the_file(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """`process` of a file failing at line 5,000 of 20,000 names the line, without --trace and with
    it; traced, the line-by-line run has the ERROR line span and links to the batch run before it
    (unless --trace examined that very line in the batch run, by chance: then that run has it)."""
    src = tmp_path / "deep.txt"
    src.write_text(_lines(20_000, bad_at=5_000))
    config = write_config(tmp_path / "p.toml", FAILING)
    plain = run_cli("process", str(src), "--config", str(config))
    assert plain.returncode == 1
    assert "failed at line 5000" in plain.stderr, plain.stderr
    env = {**FAST, **receiver.endpoint_env("grpc")}
    traced = run_cli("process", str(src), "--trace", "--config", str(config), env=env)
    assert traced.returncode == 1
    assert "failed at line 5000" in traced.stderr, traced.stderr
    errors = receiver.wait_for(
        lambda rx: [s for s in _named(rx.spans(), "foldermon.line") if s["status_code"] == 2] or None
    )
    files = sorted(_named(receiver.spans(), "foldermon.process_file"), key=lambda s: s["start_ns"])
    last = files[-1]
    assert [(s["trace_id"], s["attributes"]["foldermon.line.number"]) for s in errors] == [
        (last["trace_id"], 5_000)
    ]
    if len(files) == 2:  # the usual case: the batch run did not examine line 5,000
        batch, exact = files
        assert exact["attributes"]["foldermon.lines.exact"] is True
        assert "foldermon.lines.exact" not in batch["attributes"]
        assert exact["links"] == [(batch["trace_id"], batch["span_id"])]
    else:
        assert len(files) == 1
        assert "foldermon.lines.exact" not in last["attributes"]


def test_the_line_by_line_run_of_attempt_one_links_to_its_batch_run(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Sampled, the batch run of attempt 1 that failed without naming a line is not an orphan trace:
    the line-by-line run links to it and the record lists it (as attempt 1, before that run)."""
    root = tmp_path / "root"
    drop(root, "bad.txt", _lines(3_000, bad_at=2_000))
    _run(root, tmp_path, receiver, "[retry]\nmax_attempts = 1\n" + FAILING)
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["line"] == 2_000
    files = receiver.wait_for(
        lambda rx: len(_named(rx.spans(), "foldermon.process_file")) == 2 and rx.spans()
    )
    batch, exact = sorted(_named(files, "foldermon.process_file"), key=lambda s: s["start_ns"])
    assert exact["attributes"]["foldermon.lines.exact"] is True
    assert exact["links"] == [(batch["trace_id"], batch["span_id"])]
    listed = [(t["attempt"], t["trace_id"]) for t in record["attempt_traces"]]
    assert listed == [(1, batch["trace_id"]), (1, exact["trace_id"])]
    assert record["trace_id"] == exact["trace_id"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_attempt_made_before_a_restart_is_counted_listed_and_linked(
    tmp_path: Path, receiver: OtlpReceiver, sig: int
) -> None:
    """A file fails attempt 1, the agent is stopped (cleanly or by SIGKILL) while the file waits
    for its retry, and the next run uses the attempts left: attempt 1 is counted once, listed in
    the record and linked from the later attempts' spans."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "ok\nBAD\n")
    cfg = write_config(tmp_path / "c.toml", "[retry]\nmax_attempts = 3\nbackoff = 30\n" + FAILING)
    env = {**FAST, **receiver.endpoint_env("grpc")}
    log = tmp_path / "agent.log"
    agent = start("run", "--watch", str(root), "--config", str(cfg), log=log, env=env)
    try:
        wait_until(lambda: any("will retry" in r.get("event", "") for r in log_records(log)), timeout=60)
        first = receiver.wait_for(
            lambda rx: (
                [
                    s
                    for s in _named(rx.spans(), "foldermon.process_file")
                    if s["attributes"].get("foldermon.lines.exact")
                ]
                or None
            )
        )
    finally:
        stop(agent, sig)
    assert [s["attributes"]["foldermon.attempt"] for s in first] == [1]
    ran = run_cli("run", "--watch", str(root), "--once", "--config", str(_fast(cfg)), env=env, timeout=300)
    assert ran.returncode == 1, ran.stderr[-3000:]
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["attempts"] == 3
    listed = [(t["attempt"], t["trace_id"]) for t in record["attempt_traces"]]
    # Attempt 1 twice (its batch run, then its line-by-line run); the retries, after the restart
    # too, run line by line at once (the counter keeps how the last attempt failed).
    assert [a for a, _ in listed] == [1, 1, 2, 3]
    assert listed[1] == (1, first[0]["trace_id"])
    spans = receiver.wait_for(
        lambda rx: len(_named(rx.spans(), "foldermon.process_file")) >= 4 and rx.spans()
    )
    last = next(s for s in _named(spans, "foldermon.process_file") if s["trace_id"] == record["trace_id"])
    assert last["attributes"]["foldermon.attempt"] == 3
    assert (first[0]["trace_id"], first[0]["span_id"]) in last["links"]


def _fast(cfg: Path) -> Path:
    """The same configuration with a short backoff, for the run that finishes the file."""
    return write_config(cfg.with_name("fast.toml"), cfg.read_text().replace("backoff = 30", "backoff = 0.05"))


def test_a_file_quarantined_for_ending_the_agent_has_a_trace_linked_to_its_failed_attempts(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Attempt 1 fails, attempt 2 kills the agent, the next start quarantines the file
    (AttemptsExhausted): its record names a trace that exists, linked to attempt 1's, and lists it."""
    root = tmp_path / "root"
    drop(root, "poison.txt", "POISON\n")
    base = "[retry]\nmax_attempts = 2\nbackoff = 0.05\n"
    failing = write_config(tmp_path / "f.toml", base + FAILING.replace("picky", "p") + 'marker = "POISON"\n')
    killing = write_config(
        tmp_path / "k.toml", base + '[[processors]]\ntype = "kill_on"\nid = "p"\nmarker = "POISON"\n'
    )
    env = {**FAST, **receiver.endpoint_env("grpc")}
    log = tmp_path / "agent.log"
    agent = start("run", "--watch", str(root), "--config", str(failing), log=log, env=env)
    try:
        wait_until(lambda: any("will retry" in r.get("event", "") for r in log_records(log)), timeout=60)
    finally:
        stop(agent, signal.SIGKILL)
    assert (
        run_cli("run", "--watch", str(root), "--once", "--config", str(killing), env=env).returncode
        == -signal.SIGKILL
    )
    last = run_cli("run", "--watch", str(root), "--once", "--config", str(killing), env=env)
    assert last.returncode == 1
    record = json.loads((root / "failed" / ".poison.txt.error.json").read_text())
    said = [json.loads(line) for line in last.stdout.splitlines() if line.startswith("{")]
    (failed,) = [r for r in said if r["event"] == "file failed"]
    assert failed["trace_id"] == record["trace_id"]  # the log leads to the quarantine's trace
    assert (record["error_type"], record["attempts"], record["trace_sampled"]) == (
        "AttemptsExhausted",
        2,
        True,
    )
    assert record["first_attempt"]
    assert [t["attempt"] for t in record["attempt_traces"]][-1] == 2
    spans = receiver.wait_for(
        lambda rx: (
            [s for s in _named(rx.spans(), "foldermon.process_file") if s["trace_id"] == record["trace_id"]]
            or None
        )
    )
    assert spans[0]["attributes"]["error.type"] == "AttemptsExhausted"
    earlier = {(t["trace_id"], t["span_id"]) for t in record["attempt_traces"][:-1]}
    assert earlier
    assert set(spans[0]["links"]) == earlier


def test_process_trace_exports_the_failing_line_whatever_the_sampler(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A small file, every line of which --trace examines, failing with the sampler at always_off:
    the failing line's ERROR span is exported all the same (by the line-by-line run)."""
    src = tmp_path / "small.txt"
    src.write_text(_lines(20, bad_at=7))
    config = write_config(tmp_path / "p.toml", FAILING)
    env = {**FAST, **receiver.endpoint_env("grpc"), "OTEL_TRACES_SAMPLER": "always_off"}
    done = run_cli("process", str(src), "--trace", "--config", str(config), env=env)
    assert done.returncode == 1
    assert "failed at line 7" in done.stderr
    errors = receiver.wait_for(
        lambda rx: [s for s in _named(rx.spans(), "foldermon.line") if s["status_code"] == 2] or None
    )
    assert [s["attributes"]["foldermon.line.number"] for s in errors] == [7]


def test_run_trace_exports_the_failing_line_whatever_the_sampler(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """As for `process`: every line of a small file examined by --trace, the failing line known
    from the batch run, the sampler at always_off and one attempt: the line-by-line run is
    traced anyway, so the ERROR span is exported (with the steps before the failing one) and
    the record names its trace."""
    root = tmp_path / "root"
    drop(root, "bad.txt", _lines(20, bad_at=7))
    config = "[retry]\nmax_attempts = 1\n" + COUNTER + FAILING
    _run(root, tmp_path, receiver, config, "--trace", env={"OTEL_TRACES_SAMPLER": "always_off"})
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert (record["line"], record["trace_sampled"]) == (7, True)
    errors = receiver.wait_for(
        lambda rx: [s for s in _named(rx.spans(), "foldermon.line") if s["status_code"] == 2] or None
    )
    assert [(s["trace_id"], s["attributes"]["foldermon.line.number"]) for s in errors] == [
        (record["trace_id"], 7)
    ]
    events = [e["attributes"] for e in errors[0]["events"] if e["name"] == "foldermon.processor.step"]
    steps = [(e["foldermon.processor.id"], e["foldermon.line.result"]) for e in events]
    assert steps == [("count", "changed"), ("picky", "failed")]


def test_a_line_held_for_later_is_marked_held_not_only_dropped(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """line_joiner holds odd lines and emits them with the next: their step says `dropped` (nothing
    came out then) with foldermon.line.held; a filter's dropped line is not marked held."""
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\nthree\nfour\nfive\nsix\n")
    config = write_config(
        tmp_path / "c.toml",
        '[[processors]]\ntype = "filter"\npattern = "four"\ninvert = true\n[[processors]]\ntype = "line_joiner"\n',
    )
    env = {**FAST, **receiver.endpoint_env("grpc")}
    done = run_cli("process", str(src), "--trace", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    spans = receiver.wait_for(lambda rx: len(_named(rx.spans(), "foldermon.line")) == 6 and rx.spans())
    steps = {
        s["attributes"]["foldermon.line.number"]: [
            (e["attributes"]["foldermon.line.result"], e["attributes"].get("foldermon.line.held", False))
            for e in s["events"]
        ]
        for s in _named(spans, "foldermon.line")
    }
    assert steps[1] == [("passed", False), ("dropped", True)]  # held for line 2
    assert steps[2] == [("passed", False), ("changed", False)]  # out with line 1
    assert steps[4] == [("dropped", False)]  # the filter's: gone for good
    assert steps[5] == [("passed", False), ("changed", False)]  # out with line 3
    assert steps[6] == [("passed", False), ("dropped", True)]  # held, flushed alone at the end
    assert done.stdout.splitlines()[-1] == "six"


def test_the_supervisor_of_workers_sends_its_log_over_otlp(tmp_path: Path, receiver: OtlpReceiver) -> None:
    """With --workers 2 and OTLP logs, the supervisor's records (a worker started, finished) are sent
    as the workers' are, under its own instance id and without a worker number."""
    root = tmp_path / "root"
    for i in range(4):
        drop(root, f"f{i}.txt", "a\n")
    env = {**FAST, **receiver.endpoint_env("grpc"), "OTEL_LOGS_EXPORTER": "otlp"}
    ran = run_cli("run", "--watch", str(root), "--once", "--workers", "2", env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    said = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    started = [r for r in said if r["event"] == "worker started"]
    assert len(started) == 2
    logs = receiver.wait_for(lambda rx: [r for r in rx.logs() if r["body"] == "worker started"] or None)
    assert len(logs) == 2
    assert {r["resource"]["service.instance.id"] for r in logs} == {started[0]["instance"]}
    assert all("foldermon.worker" not in r["resource"] for r in logs)


def test_run_once_with_workers_ends_with_queue_gauges_that_describe_the_folder(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Worker 0 reports the queue gauges: under `run --once --workers 2` it stops after the other
    worker, so its last export shows the folder as the run left it."""
    root = tmp_path / "root"
    for i in range(6):
        drop(root, f"ok{i}.txt", "a\n")
    drop(root, "bad.txt", "BAD\n")
    config = (
        "[retry]\nmax_attempts = 2\nbackoff = 0.5\n"
        + FAILING
        + '[[processors]]\ntype = "sleepy"\nseconds = 0.2\n'
    )
    cfg = write_config(tmp_path / "c.toml", config)
    env = {**FAST, **receiver.endpoint_env("grpc")}
    ran = run_cli("run", "--watch", str(root), "--once", "--workers", "2", "--config", str(cfg), env=env)
    assert ran.returncode == 1, ran.stderr[-3000:]
    said = [json.loads(line) for line in ran.stdout.splitlines() if line.startswith("{")]
    index_of = {r["pid"]: r["worker"] for r in said if r["event"] == "worker started"}
    worker_of = {r["instance"]: index_of[r["pid"]] for r in said if r["event"] == "starting"}
    stops = [worker_of[r["instance"]] for r in said if r["event"] == "stopped" and r["instance"] in worker_of]
    assert stops[-1] == 0, stops
    assert census(root)["failed"] == ["bad.txt"]
    last: dict[str, int] = {}
    for point in receiver.wait_for(lambda rx: rx.metrics() or None):
        if point["name"] == "foldermon.queue.depth":
            last[point["attributes"]["foldermon.queue.state"]] = int(point["value"])
    assert (last["unprocessed"], last["underprocess"], last["failed"]) == (0, 0, 1)


def test_a_failed_attempt_s_span_says_how_many_lines_went_through(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """The file span of a failed attempt carries foldermon.lines.in/out as a processed one does: the
    lines fed before it stopped (its line-by-line run stops on line 3) and those that came out."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "a\nb\nBAD\nd\ne\n")
    _run(root, tmp_path, receiver, "[retry]\nmax_attempts = 1\n" + FAILING)
    spans = receiver.wait_for(
        lambda rx: (
            [
                s
                for s in _named(rx.spans(), "foldermon.process_file")
                if s["attributes"]["foldermon.outcome"] == "failed"
            ]
            or None
        )
    )
    attrs = spans[0]["attributes"]
    assert (attrs["foldermon.lines.in"], attrs["foldermon.lines.out"]) == (3, 2)


def test_a_file_left_without_attempts_by_a_lowered_max_attempts_keeps_its_error(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """Three attempts fail on line 2 under max_attempts = 6; the agent stops while the file waits
    and starts again with max_attempts = 2: the file is quarantined with its processor error, line
    and last trace (not as one that ended the agent), and the record says why."""
    root = tmp_path / "root"
    drop(root, "bad.txt", "ok\nBAD\n")
    many = write_config(tmp_path / "m.toml", "[retry]\nmax_attempts = 6\nbackoff = 0.05\n" + FAILING)
    env = {**FAST, **receiver.endpoint_env("grpc")}
    log = tmp_path / "agent.log"
    agent = start("run", "--watch", str(root), "--config", str(many), log=log, env=env)
    try:
        wait_until(lambda: sum("will retry" in r.get("event", "") for r in log_records(log)) >= 3, timeout=60)
    finally:
        stop(agent)
    used = json.loads((root / "unprocessed" / ".bad.txt.attempts").read_text())["attempts"]
    few = write_config(tmp_path / "f.toml", "[retry]\nmax_attempts = 2\nbackoff = 0.05\n" + FAILING)
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(few), env=env).returncode == 1
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert (record["error_type"], record["processor_id"], record["line"]) == ("ProcessorError", "picky", 2)
    assert "ValueError" in record["cause"]
    assert record["attempts"] == used >= 3
    assert "max_attempts" in record["note"]
    assert record["attempt_traces"][-1]["attempt"] == used
    assert record["trace_id"] == record["attempt_traces"][-1]["trace_id"]
