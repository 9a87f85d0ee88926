"""The real agent, run as a subprocess: CLI contract, pipeline output, the queue's happy path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentctl import REPO, census, drop, run_cli, write_config

ORIGINAL_PIPELINE = """{
  "processors": [
    {"type": "line_counter", "config": {"format": "Line {count}: {line}"}},
    {"type": "uppercase"},
    {"type": "filter", "config": {"pattern": "IMPORTANT"}}
  ]
}
"""


def test_run_once_moves_input_to_processed_and_writes_output(tmp_path: Path) -> None:
    """run --once drains unprocessed/: output per input, input in processed/, nothing left behind."""
    root = tmp_path / "root"
    drop(root, "data.txt", "alpha\nbeta\n")
    result = run_cli("run", "--watch", str(root), "--once")
    assert result.returncode == 0, result.stderr
    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": ["data.txt"],
        "failed": [],
    }
    assert (root / "output" / "data_processed.txt").read_text() == "alpha\nbeta\n"
    assert os.listdir(root / "output") == ["data_processed.txt"]
    assert os.listdir(root / "underprocess") == []


def test_original_monitor_flags_and_json_pipeline_work(tmp_path: Path) -> None:
    """--monitor DIR --config pipeline_config.json (the original form) numbers lines per file."""
    root = tmp_path / "watch_dir"
    config = write_config(tmp_path / "pipeline_config.json", ORIGINAL_PIPELINE)
    drop(root, "a.txt", "important one\nskip\nimportant two\n")
    drop(root, "b.txt", "x\nIMPORTANT three\n")
    out = tmp_path / "out"
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "a_processed.txt").read_text() == "LINE 1: IMPORTANT ONE\nLINE 3: IMPORTANT TWO\n"
    assert (out / "b_processed.txt").read_text() == "LINE 2: IMPORTANT THREE\n"


def test_original_file_flags_write_output_atomically(tmp_path: Path) -> None:
    """--file IN --output OUT processes one file; each record ends with exactly one newline."""
    src = tmp_path / "in.txt"
    src.write_text("a\nb")
    config = write_config(tmp_path / "p.json", '{"processors": [{"type": "uppercase"}]}')
    result = run_cli("--file", str(src), "--output", str(tmp_path / "out.txt"), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "A\nB\n"
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.txt", "p.json"]


def test_process_without_output_prints_to_stdout(tmp_path: Path) -> None:
    """process FILE with no --output writes the records to stdout."""
    src = tmp_path / "in.txt"
    src.write_text("one\ntwo\n")
    result = run_cli("process", str(src))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo\n"


def test_bytes_survive_exactly_when_processors_leave_them(tmp_path: Path) -> None:
    """Latin-1, NUL bytes and CRLF pass through the identity pipeline byte for byte."""
    root = tmp_path / "root"
    payload = b"caf\xe9\r\nnul\x00byte\n\xff\xfe\n"
    drop(root, "bin.dat", payload)
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert (root / "output" / "bin_processed.dat").read_bytes() == payload


def test_empty_file_gives_empty_output(tmp_path: Path) -> None:
    """An empty input is processed into an empty output."""
    root = tmp_path / "root"
    drop(root, "empty.txt", b"")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert (root / "output" / "empty_processed.txt").read_bytes() == b""
    assert census(root)["processed"] == ["empty.txt"]


def test_name_with_newline_and_invalid_utf8_is_processed(tmp_path: Path) -> None:
    """File names may hold any bytes: a newline and invalid UTF-8 both work."""
    root = tmp_path / "root"
    name = os.fsdecode(b"we\nird\xff.txt")
    drop(root, name, "x\n")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert census(root)["processed"] == [name]
    assert (root / "output" / os.fsdecode(b"we\nird\xff_processed.txt")).read_text() == "x\n"


def test_used_name_gets_a_suffix_for_input_and_output(tmp_path: Path) -> None:
    """A new file dropped under a name already in processed/ is suffixed; nothing is clobbered."""
    root = tmp_path / "root"
    drop(root, "data.txt", "first\n")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    drop(root, "data.txt", "second\n")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    assert census(root)["processed"] == ["data.1.txt", "data.txt"]
    assert (root / "processed" / "data.txt").read_text() == "first\n"
    assert (root / "output" / "data_processed.txt").read_text() == "first\n"
    assert (root / "output" / "data_processed.1.txt").read_text() == "second\n"


def test_output_name_template_is_configurable(tmp_path: Path) -> None:
    """[output] name changes the output file name."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "a.toml", '[output]\nname = "{stem}.out"\n')
    drop(root, "x.csv", "1\n")
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert (root / "output" / "x.out").read_text() == "1\n"


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    """check-config exits 0 and names the processors of a valid file."""
    config = write_config(tmp_path / "a.toml", '[[processors]]\ntype = "uppercase"\nid = "up"\n')
    result = run_cli("check-config", str(config))
    assert result.returncode == 0
    assert "up (uppercase)" in result.stdout


def test_check_config_reports_every_problem_with_exit_78(tmp_path: Path) -> None:
    """All problems are listed at once, each naming the processor index and id, and no traceback."""
    config = write_config(
        tmp_path / "bad.toml",
        '[watch]\nmode = "sometimes"\n[[processors]]\ntype = "uppercase"\n'
        '[[processors]]\ntype = "frobnicate"\nid = "zz9"\n',
    )
    result = run_cli("check-config", str(config))
    assert result.returncode == 78
    assert 'processors[1] (id "zz9"): unknown type "frobnicate"' in result.stderr
    assert '[watch] mode: "sometimes"' in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_bad_config_exits_78_without_touching_files(tmp_path: Path) -> None:
    """A bad config stops the agent at start, before any file moves."""
    root = tmp_path / "root"
    drop(root, "data.txt", "x\n")
    config = write_config(tmp_path / "bad.toml", '[retry]\nmax_attempts = "three"\n')
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    assert result.returncode == 78
    assert "[retry] max_attempts: expected an integer" in result.stderr
    assert census(root)["unprocessed"] == ["data.txt"]


def test_usage_error_exits_2(tmp_path: Path) -> None:
    """An unknown flag is a usage error (exit 2)."""
    result = run_cli("run", "--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_version_prints_the_version() -> None:
    """--version prints the distribution name and version."""
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("foldermon-agent ")


def test_status_json_counts_each_state_and_failed_reasons(tmp_path: Path) -> None:
    """status --json reports counts per state, the oldest waiting age and failed reasons."""
    root = tmp_path / "root"
    drop(root, "ok.txt", "x\n")
    assert run_cli("run", "--watch", str(root), "--once").returncode == 0
    drop(root, "waiting.txt", "y\n")
    os.symlink("/etc/hostname", root / "unprocessed" / "link")
    result = run_cli("status", "--watch", str(root), "--json")
    assert result.returncode == 0
    status = json.loads(result.stdout)["roots"][0]
    assert status["unprocessed"] == 2
    assert status["processed"] == 1
    assert status["failed"] == 0
    assert status["oldest_unprocessed_age_s"] >= 0
    assert run_cli("run", "--watch", str(root), "--once").returncode == 1
    status = json.loads(run_cli("status", "--watch", str(root), "--json").stdout)["roots"][0]
    assert status["failed"] == 1
    assert status["failed_files"][0]["name"] == "link"
    assert "symbolic link" in status["failed_files"][0]["reason"]


def test_status_counts_as_waiting_only_what_the_agent_claims(tmp_path: Path) -> None:
    """Names the [watch] rules exclude (the defaults and the configured ones), done markers and
    folders in unprocessed/ are not waiting files: status agrees with what run --once takes."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", '[watch]\nexclude = ["*.part", "*.tmp", "skip-*"]\n')
    for name in ("a.txt", "b.part", "c.tmp", "skip-d.txt"):
        drop(root, name, "x\n")
    (root / "unprocessed" / "folder").mkdir()
    result = run_cli("status", "--watch", str(root), "--json", "--config", str(config))
    assert json.loads(result.stdout)["roots"][0]["unprocessed"] == 1
    assert run_cli("run", "--watch", str(root), "--once", "--config", str(config)).returncode == 0
    assert census(root)["processed"] == ["a.txt"]
    result = run_cli("status", "--watch", str(root), "--json", "--config", str(config))
    assert json.loads(result.stdout)["roots"][0]["unprocessed"] == 0


def test_a_root_inside_another_roots_queue_folder_is_refused(tmp_path: Path) -> None:
    """A root named in a queue folder of another (R/underprocess, R/failed/x): refused on the
    command line (2), in a config (78) and, R being a watch root already, at start (1), before
    anything is made or moved in it."""
    root = tmp_path / "R"
    both = run_cli("run", "--watch", str(root), "--watch", str(root / "underprocess"), "--once")
    assert both.returncode == 2
    assert f"inside {root / 'underprocess'}" in both.stderr
    config = write_config(tmp_path / "c.toml", f'[watch]\ndirs = ["{root}", "{root}/failed/x"]\n')
    checked = run_cli("check-config", str(config))
    assert checked.returncode == 78
    assert "a queue folder of dirs[0]" in checked.stderr
    drop(root, "a.txt", "a\n")
    alone = run_cli("run", "--watch", str(root / "underprocess"), "--once")
    assert alone.returncode == 1
    assert f"a queue folder of the watch root {root}" in alone.stderr
    assert not (root / "underprocess").exists()  # nothing made for it
    assert census(root)["unprocessed"] == ["a.txt"]
    (root / "failed").mkdir()
    (tmp_path / "link").symlink_to(root / "failed")
    linked = run_cli("run", "--watch", str(tmp_path / "link" / "inner"), "--once")
    assert linked.returncode == 1
    assert f"a queue folder of the watch root {root}" in linked.stderr
    assert os.listdir(root / "failed") == []  # refused before any folder was made for it
    both = run_cli("run", "--watch", str(root), "--watch", str(tmp_path / "link" / "x"), "--once")
    assert both.returncode == 2
    assert "a queue folder of --watch" in both.stderr


def test_pause_takes_a_sentence_and_prints_the_root_escaped(tmp_path: Path) -> None:
    """A pause reason of more than 1,000 characters is a usage error (2), so status can always
    read who paused and why; pause and resume print a root's odd name escaped."""
    root = tmp_path / "R\x1b[2J"
    drop(root, "a.txt", "a\n")
    long = run_cli("pause", "--watch", str(root), "--reason", "x" * 1001)
    assert long.returncode == 2
    assert "at most 1000" in long.stderr
    paused = run_cli("pause", "--watch", str(root), "--reason", "y" * 1000)
    assert paused.returncode == 0
    assert "\x1b" not in paused.stdout
    assert "R\\x1b[2J: paused" in paused.stdout
    status = json.loads(run_cli("status", "--watch", str(root), "--json").stdout)["roots"][0]
    assert status["paused_reason"].endswith("y" * 1000)
    resumed = run_cli("resume", "--watch", str(root))
    assert "\x1b" not in resumed.stdout


def test_benchmark_smoke_mode_checks_outputs() -> None:
    """benchmarks/run.py --smoke runs every scenario at tiny sizes and verifies the outputs."""
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for scenario in ("P1", "P2", "P3a", "P4", "P5", "P6a", "P7a", "P7b"):
        assert f"| {scenario} |" in result.stdout
