"""What a new user hits first: typos in paths, pipes closed early, exit codes scripts rely on."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import pytest

from agentctl import agent_env, census, command, drop, run_cli, write_config

RAISE = '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n'


@pytest.mark.parametrize(
    "verb", [["status"], ["failed"], ["retry", "--all"], ["pause"], ["resume"], ["gc", "--dry-run"]]
)
def test_a_folder_that_is_not_a_watch_root_is_an_error(tmp_path: Path, verb: list[str]) -> None:
    """Every verb on a mistyped folder says it is not a watch root (exit 1), not all zeros, and
    makes nothing there."""
    (tmp_path / "real" / "unprocessed").mkdir(parents=True)
    result = run_cli(*verb, "--watch", str(tmp_path / "rael"))
    assert result.returncode == 1
    assert "is not a watch root" in result.stderr
    assert str(tmp_path / "rael") in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "rael").exists()
    assert run_cli(*verb, "--watch", str(tmp_path / "real")).returncode == 0


def test_status_without_watch_names_the_missing_default_root(tmp_path: Path) -> None:
    """With no --watch and no root made yet, status says the default root is not there."""
    result = run_cli("status", env={"STATE_DIRECTORY": str(tmp_path / "state")})  # as under systemd
    assert result.returncode == 1
    assert str(tmp_path / "state" / "watch") in result.stderr
    assert "default root" in result.stderr


def test_a_root_under_a_missing_parent_is_refused_unless_asked(tmp_path: Path) -> None:
    """run --watch <typo> does not build a tree: the missing parent is an error with a sentence."""
    typo = tmp_path / "sppol" / "in"
    result = run_cli("run", "--watch", str(typo), "--once")
    assert result.returncode == 1
    assert f"its parent folder {typo.parent} does not exist" in result.stderr
    assert "--create-parents" in result.stderr
    assert not typo.parent.exists()

    made = run_cli("run", "--watch", str(typo), "--once", "--create-parents")
    assert made.returncode == 0, made.stderr
    assert (typo / "unprocessed").is_dir()
    created = [r["folder"] for r in _records(made.stdout) if r.get("event") == "folder created"]
    assert str(typo) in created
    assert str(typo / "unprocessed") in created
    assert all(r["level"] == "warning" for r in _records(made.stdout) if r.get("event") == "folder created")


def test_create_parents_can_be_set_in_the_config_file(tmp_path: Path) -> None:
    typo = tmp_path / "a" / "b" / "root"
    config = write_config(tmp_path / "c.toml", "[watch]\ncreate_parents = true\n")
    assert run_cli("run", "--watch", str(typo), "--once", "--config", str(config)).returncode == 0
    assert (typo / "failed").is_dir()


def test_run_once_names_each_root_it_serves(tmp_path: Path) -> None:
    """Each root served is logged at start with its output folder; nothing is said as created when
    it was all there."""
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        (root / "unprocessed").mkdir(parents=True)
    first = run_cli("run", "--watch", str(roots[0]), "--watch", str(roots[1]), "--once")
    served = {r["root"]: r["output"] for r in _records(first.stdout) if r.get("event") == "serving root"}
    assert served == {str(r): str(r / "output") for r in roots}
    again = run_cli("run", "--watch", str(roots[0]), "--once")
    assert not [r for r in _records(again.stdout) if r.get("event") == "folder created"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_once_exits_1_when_a_file_went_to_failed(tmp_path: Path, workers: str) -> None:
    """Scripts and cron tell a clean drain (0) from one that quarantined files (1); every other file
    is still processed, with workers too."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", RAISE)
    for i in range(6):
        drop(root, f"ok{i}.txt", "fine\n")
    drop(root, "bad.txt", "BAD\n")
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config), "--workers", workers)
    assert result.returncode == 1, result.stdout[-2000:]
    assert census(root)["failed"] == ["bad.txt"]
    assert census(root)["processed"] == sorted(f"ok{i}.txt" for i in range(6))

    drop(root, "good.txt", "fine\n")
    clean = run_cli("run", "--watch", str(root), "--once", "--config", str(config), "--workers", workers)
    assert clean.returncode == 0, clean.stdout[-2000:]


def _piped_into_head(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``foldermon-agent ARGS | head -1`` through a real shell pipe."""
    shell = " ".join(f"'{a}'" for a in command(*args)) + " | head -1"
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        env=agent_env(),
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_a_closed_pipe_ends_completion_quietly() -> None:
    result = _piped_into_head("completion", "bash")
    assert result.stderr == b""
    assert len(result.stdout.splitlines()) == 1


def test_a_closed_pipe_ends_process_quietly(tmp_path: Path) -> None:
    """process writing to a pipe that `head` closed stops like other Unix tools: no traceback, no
    "cannot process" message (the exit is SIGPIPE's, as with `cat`)."""
    big = tmp_path / "big.txt"
    big.write_text("some line\n" * 400_000)
    result = _piped_into_head("process", str(big))
    assert result.stderr == b""
    assert result.stdout.strip() == b"some line"
    assert result.returncode == 141  # 128 + SIGPIPE through pipefail, as `cat big | head -1` gives


def test_the_telemetry_hint_is_given_by_run_only(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    hint = "telemetry export is off"
    processed = run_cli("process", str(src), "--output", str(tmp_path / "out.txt"))
    assert processed.returncode == 0
    assert hint not in processed.stdout + processed.stderr
    ran = run_cli("run", "--watch", str(tmp_path / "root"), "--once")
    assert hint in ran.stdout


def test_every_verb_reads_foldermon_config_even_with_watch(tmp_path: Path) -> None:
    """FOLDERMON_CONFIG is the config of status with --watch as of run: its disk guard shows."""
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(tmp_path / "c.toml", '[guard]\nmin_free = "9000TiB"\n')
    shown = run_cli("status", "--watch", str(root), "--json", env={"FOLDERMON_CONFIG": str(config)})
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)["roots"][0]
    assert entry["paused"] is True
    assert "free" in entry["paused_reason"]
    broken = write_config(tmp_path / "bad.toml", "[guard\n")
    refused = run_cli("failed", "--watch", str(root), env={"FOLDERMON_CONFIG": str(broken)})
    assert refused.returncode == 78
    assert "bad.toml" in refused.stderr


def test_check_config_lists_problems_in_the_order_of_the_file(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        '[telemetry]\nnope = 1\n[watch]\nrescan_interval = -1\norder = "random"\n'
        '[[processors]]\ntype = "unknown_kind"\n[agent]\nlog_level = "loud"\n',
    )
    result = run_cli("check-config", str(config))
    assert result.returncode == 78
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    starts = [p.split()[1] for p in problems]
    assert starts == ["[telemetry]", "[watch]", "[watch]", "processors[0]", "[agent]"], problems
    assert "rescan_interval" in problems[1]
    assert "order" in problems[2]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[agent]\nlog_level = "info\nworkers = 2\n', ["line 2"]),  # unclosed quote
        ('[watch]\nexclude = ["*.tmp",\n"*.part"\n[agent]\n', ["line 4", "line 3"]),  # unclosed list
        ("[agent\nworkers = 2\n", ["line 1"]),
    ],
)
def test_a_toml_syntax_error_names_the_line_the_mistake_is_on(
    tmp_path: Path, text: str, named: list[str]
) -> None:
    """The parser stops after the mistake; the message names the line with it (and the next, when
    the parser stopped at the start of a line) and shows them."""
    config = write_config(tmp_path / "c.toml", text)
    result = run_cli("check-config", str(config))
    assert result.returncode == 78
    message = result.stderr.splitlines()[1]
    for line in named:
        assert line in message
    lines = text.splitlines()
    shown = [int(word) for word in message.replace(",", " ").replace(")", " ").split() if word.isdigit()]
    assert all(n <= len(lines) for n in shown), message
    assert lines[int(named[-1].split()[1]) - 1].strip()[:5] in message


def test_error_records_carry_iso_8601_times(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", RAISE)
    drop(root, "bad.txt", "BAD\n")
    run_cli("run", "--watch", str(root), "--once", "--config", str(config))
    record = json.loads((root / "failed" / ".bad.txt.error.json").read_text())
    assert record["failed_at_iso"].endswith("+00:00")
    assert record["failed_at_iso"].startswith("20")
    assert abs(_epoch(record["failed_at_iso"]) - record["failed_at"]) < 0.002


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def _records(stdout: str) -> list[dict[str, object]]:
    out = []
    for line in stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("workers", ["0", "-1", "65", "1000", "²"])
def test_run_workers_out_of_range_is_a_usage_error(tmp_path: Path, workers: str) -> None:
    """--workers takes 1 to 64, as [agent] workers: anything else is refused before any process
    starts (exit 2, a sentence), and nothing is processed."""
    root = tmp_path / "root"
    drop(root, "f.txt", "x\n")
    result = run_cli("run", "--watch", str(root), "--once", f"--workers={workers}")
    assert result.returncode == 2
    assert "argument --workers" in result.stderr
    assert "from 1 to 64" in result.stderr
    assert "Traceback" not in result.stderr
    assert "worker started" not in result.stdout
    assert census(root)["unprocessed"] == ["f.txt"]


@pytest.mark.parametrize("verb", [["process"], ["explain", "--line", "1", "--json"]])
def test_the_console_exporter_writes_to_stderr_when_stdout_is_the_data(
    tmp_path: Path, verb: list[str]
) -> None:
    """OTEL_TRACES_EXPORTER=console: the spans go to stderr, stdout holds only the file's records
    (process) or the report (explain)."""
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    result = run_cli(verb[0], str(src), *verb[1:], env={"OTEL_TRACES_EXPORTER": "console"})
    assert result.returncode == 0, result.stderr
    if verb[0] == "process":
        assert result.stdout == "x\n"
    else:
        assert json.loads(result.stdout)["lines"][0]["text"] == "x"
    assert f'"name": "foldermon.{"process_file" if verb[0] == "process" else "explain"}"' in result.stderr


def test_the_console_exporter_keeps_stdout_when_process_writes_a_file(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x\n")
    out = tmp_path / "out.txt"
    result = run_cli("process", str(src), "--output", str(out), env={"OTEL_TRACES_EXPORTER": "console"})
    assert result.returncode == 0, result.stderr
    assert '"name": "foldermon.process_file"' in result.stdout
    assert out.read_text() == "x\n"


def test_a_collector_that_is_down_does_not_hold_a_one_shot_verb(tmp_path: Path) -> None:
    """With the endpoint refusing connections, `process` still writes its output, says the export
    failed on stderr, and ends after a short export timeout instead of the exporters' 10 s of
    retries per signal (it used to take 14-16 s)."""
    (tmp_path / "in.txt").write_text("x\n")
    env = agent_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    result = subprocess.run(
        command("process", str(tmp_path / "in.txt")),
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=8,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x\n"
    assert "export" in result.stderr
