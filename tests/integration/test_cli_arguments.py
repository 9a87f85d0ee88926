"""The command line's grammar: options before or after the verb, the original tool's flags, and
the paths and config values every verb must read the same way."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from agentctl import agent_env, command, run_cli, start, stop, wait_until, write_config


def _root(path: Path) -> Path:
    (path / "unprocessed").mkdir(parents=True)
    return path


def test_config_before_the_verb_is_the_config_of_every_verb(tmp_path: Path) -> None:
    """``--config FILE status`` reads FILE, as ``status --config FILE`` does, and wins over
    FOLDERMON_CONFIG; ``pause`` acts on the root it names."""
    mine = _root(tmp_path / "mine")
    config = write_config(tmp_path / "mine.toml", f'[watch]\ndirs = ["{mine}"]\n')
    other = write_config(tmp_path / "other.toml", f'[watch]\ndirs = ["{tmp_path / "other"}"]\n')
    for args in (
        ["--config", str(config), "status", "--json"],
        ["status", "--json", "--config", str(config)],
    ):
        shown = run_cli(*args, env={"FOLDERMON_CONFIG": str(other)})
        assert shown.returncode == 0, shown.stderr
        assert [r["path"] for r in json.loads(shown.stdout)["roots"]] == [str(mine)]
    paused = run_cli("--config", str(config), "pause", "--reason", "test")
    assert paused.returncode == 0, paused.stderr
    assert (mine / ".foldermon-paused").exists()


def test_config_before_explain_is_the_pipeline_replayed(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    config = write_config(tmp_path / "p.toml", '[[processors]]\ntype = "uppercase"\n')
    shown = run_cli("--config", str(config), "explain", str(src), "--line", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    steps = json.loads(shown.stdout)["lines"][0]["steps"]
    assert [s["processor_type"] for s in steps] == ["uppercase"]


def test_output_before_process_is_where_the_output_goes(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    done = run_cli("--output", str(tmp_path / "out.txt"), "process", str(src))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert (tmp_path / "out.txt").read_text() == "one\n"


@pytest.mark.parametrize(
    ("flag", "rest"),
    [
        ("--file", ["process", "{tmp}/b.txt"]),
        ("--monitor", ["run", "--once", "--watch", "{tmp}/r"]),
        ("--output", ["status", "--watch", "{tmp}/r"]),
    ],
)
def test_an_original_flag_with_a_verb_is_a_usage_error(tmp_path: Path, flag: str, rest: list[str]) -> None:
    """The original tool's flags are forms of a verb; given with one, nothing runs."""
    (tmp_path / "b.txt").write_text("b\n")
    args = [flag, str(tmp_path / "m"), *(a.format(tmp=tmp_path) for a in rest)]
    done = run_cli(*args)
    assert done.returncode == 2
    assert flag in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args", [["--hel", "run"], ["--conf", "c.toml", "process", "x"], ["--tra", "status"]]
)
def test_an_abbreviated_option_is_refused_before_the_verb_as_after_it(args: list[str]) -> None:
    shown = run_cli(*args)
    assert shown.returncode == 2
    assert "unrecognized arguments" in shown.stderr or "invalid choice" in shown.stderr, shown.stderr


def test_an_unknown_option_after_a_verb_is_said_by_that_verb() -> None:
    refused = run_cli("run", "--bogus")
    assert refused.returncode == 2
    assert "foldermon-agent run: error: unrecognized arguments: --bogus" in refused.stderr


@pytest.mark.parametrize(
    "argv", [["--watch", "/srv/drop", "status"], ["--once", "run"], ["--line=7", "explain", "x"]]
)
def test_a_verbs_option_before_the_verb_is_said_as_such(argv: list[str]) -> None:
    refused = run_cli(*argv)
    flag, verb = argv[0].split("=")[0], next(a for a in argv if a in ("status", "run", "explain"))
    assert refused.returncode == 2
    assert f"{flag} is an option of {verb}: give it after the verb" in refused.stderr
    assert "invalid choice" not in refused.stderr


def test_retry_without_names_or_all_is_a_usage_error_before_anything_is_read(tmp_path: Path) -> None:
    broken = write_config(tmp_path / "bad.toml", "[watch\n")
    refused = run_cli("retry", "--watch", str(tmp_path / "nothing"), "--config", str(broken))
    assert refused.returncode == 2
    assert "--all" in refused.stderr


@pytest.mark.parametrize("lease", ["nan", "inf", "-1", '"30d"'])
def test_a_lease_out_of_range_is_a_configuration_error(tmp_path: Path, lease: str) -> None:
    config = write_config(tmp_path / "l.toml", f"[agent]\nlease = {lease}\n")
    for args in (
        ["check-config", str(config)],
        ["run", "--once", "--watch", str(tmp_path / "r"), "--config", str(config)],
    ):
        refused = run_cli(*args, timeout=30)
        assert refused.returncode == 78, refused.stderr
        assert "[agent] lease" in refused.stderr


def test_the_same_root_twice_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "d"
    config = write_config(tmp_path / "dd.toml", f'[watch]\ndirs = ["{root}", "{root}/"]\n')
    for args in (["check-config", str(config)], ["run", "--once", "--config", str(config)]):
        refused = run_cli(*args)
        assert refused.returncode == 78
        assert "dirs[1]: the same folder as dirs[0]" in refused.stderr
    twice = run_cli("run", "--once", "--watch", str(root), "--watch", f"{tmp_path}/./d/")
    assert twice.returncode == 2
    assert "given twice" in twice.stderr
    assert not root.exists()


def test_the_same_root_through_a_symlink_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    root = _root(tmp_path / "d")
    (tmp_path / "link").symlink_to(root)
    twice = run_cli("run", "--once", "--watch", str(root), "--watch", str(tmp_path / "link"))
    assert twice.returncode == 2
    assert "given twice" in twice.stderr
    assert sorted(p.name for p in root.iterdir()) == ["unprocessed"]
    config = write_config(tmp_path / "l.toml", f'[watch]\ndirs = ["{root}", "{tmp_path / "link"}"]\n')
    refused = run_cli("check-config", str(config))
    assert refused.returncode == 78
    assert "dirs[1]: the same folder as dirs[0]" in refused.stderr


def test_an_empty_path_is_refused_rather_than_the_current_folder(tmp_path: Path) -> None:
    config = write_config(tmp_path / "e.toml", '[watch]\ndirs = [""]\n')
    refused = run_cli("check-config", str(config))
    assert refused.returncode == 78
    assert "[watch] dirs: an empty path" in refused.stderr
    assert run_cli("run", "--once", "--watch", "").returncode == 2


def test_a_tilde_in_the_config_is_the_home_folder_for_every_verb(tmp_path: Path) -> None:
    home = tmp_path / "home"
    drop = _root(home / "drop")
    (drop / "unprocessed" / "f.txt").write_text("a\n")
    config = write_config(tmp_path / "t.toml", '[watch]\ndirs = ["~/drop"]\n[output]\ndir = "~/out"\n')
    env = {"HOME": str(home)}
    ran = run_cli("run", "--once", "--config", str(config), env=env)
    assert ran.returncode == 0, ran.stderr
    assert (home / "out" / "f_processed.txt").read_text() == "a\n"
    shown = run_cli("status", "--json", "--config", str(config), env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["roots"][0]["processed"] == 1


def test_a_process_output_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    (tmp_path / "adir").mkdir()
    for dst in (tmp_path / "no" / "dir" / "out.txt", tmp_path / "adir"):
        refused = run_cli("process", str(src), "--output", str(dst))
        assert refused.returncode == 1
        assert f"cannot write {dst}" in refused.stderr


def test_a_folder_given_as_the_config_file_is_said_in_words(tmp_path: Path) -> None:
    refused = run_cli("check-config", str(tmp_path))
    assert refused.returncode == 78
    assert "cannot read the config file: Is a directory" in refused.stderr


def test_a_watch_root_that_is_a_file_is_said_in_words(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("")
    refused = run_cli("run", "--once", "--watch", str(tmp_path / "run"))
    assert refused.returncode == 1
    assert "it is a file, not a folder" in refused.stderr


@pytest.mark.parametrize("folder", ["unprocessed", "processed", "failed", "output"])
def test_a_queue_folder_that_is_a_symlink_is_refused_and_nothing_outside_is_touched(
    tmp_path: Path, folder: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("not the agent's\n")
    root = _root(tmp_path / "root")
    (root / "unprocessed" / "a.txt").write_text("a\n")
    if folder == "unprocessed":
        (root / "unprocessed" / "a.txt").unlink()
        (root / "unprocessed").rmdir()
    (root / folder).symlink_to(outside)
    refused = run_cli("run", "--once", "--watch", str(root))
    assert refused.returncode == 1
    assert f"{root / folder} is a symbolic link" in refused.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["private.txt"]


def test_an_output_folder_inside_a_queue_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "unprocessed").mkdir(parents=True)
    config = write_config(tmp_path / "o.toml", f'[output]\ndir = "{root}/unprocessed/out"\n')
    refused = run_cli("run", "--once", "--watch", str(root), "--config", str(config))
    assert refused.returncode == 1
    assert "outputs would be taken for inputs" in refused.stderr
    assert not (root / "unprocessed" / "out").exists()  # refused before any folder is made
    (tmp_path / "link").symlink_to(root)  # the same folder named through a symlink
    via_link = run_cli(
        "run", "--once", "--watch", str(tmp_path / "link"), "--output-dir", str(root / "unprocessed")
    )
    assert via_link.returncode == 1
    assert "outputs would be taken for inputs" in via_link.stderr


def test_explain_without_watch_looks_in_the_configured_root(tmp_path: Path) -> None:
    root = _root(tmp_path / "root")
    (root / "processed").mkdir()
    (root / "processed" / "f.txt").write_text("one\n")
    config = write_config(tmp_path / "c.toml", f'[watch]\ndirs = ["{root}"]\n')
    shown = run_cli("explain", "f.txt", "--line", "1", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "'one'" in shown.stdout


def test_process_output_replaces_a_file_keeping_its_mode_and_writes_through_a_link(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("secret\n")
    private = tmp_path / "private.txt"
    private.write_text("old\n")
    private.chmod(0o600)
    assert run_cli("process", str(src), "--output", str(private)).returncode == 0
    assert (private.read_text(), private.stat().st_mode & 0o777) == ("secret\n", 0o600)
    target = tmp_path / "target.txt"
    target.write_text("old\n")
    (tmp_path / "link").symlink_to(target.name)
    assert run_cli("process", str(src), "--output", str(tmp_path / "link")).returncode == 0
    assert (tmp_path / "link").is_symlink()
    assert target.read_text() == "secret\n"
    fresh = tmp_path / "new.txt"
    assert run_cli("process", str(src), "--output", str(fresh)).returncode == 0
    assert fresh.stat().st_mode & 0o777 == 0o644
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_process_output_that_is_not_a_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A pipe, a device or a folder named by --output is never replaced by a regular file."""
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    places = [fifo, tmp_path]
    if os.geteuid() == 0:
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        places.append(device)
    for place in places:
        done = run_cli("process", str(src), "--output", str(place))
        assert done.returncode == 1
        assert f"cannot write {place}: it is a" in done.stderr
        assert "Traceback" not in done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    if os.geteuid() == 0:
        assert stat.S_ISCHR((tmp_path / "null").stat().st_mode)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


@pytest.mark.parametrize(
    "args",
    [
        ["--output-dir", "{tmp}/od", "status", "--watch", "{tmp}/r"],
        ["--trace", "explain", "{tmp}/b.txt", "--line", "1"],
        ["--config", "{tmp}/c.toml", "check-config", "{tmp}/c.toml"],
        ["--output-dir", "{tmp}/od", "process", "{tmp}/b.txt"],
        ["process", "{tmp}/b.txt", "--output-dir", "{tmp}/od"],
        ["run", "--once", "--watch", "{tmp}/r", "--output", "{tmp}/od"],  # not --output-dir
        ["--monitor", "{tmp}/r", "--output", "{tmp}/od"],
        ["--file", "{tmp}/b.txt", "--output-dir", "{tmp}/od"],
    ],
)
def test_an_option_the_verb_does_not_take_is_a_usage_error_before_it_as_after_it(
    tmp_path: Path, args: list[str]
) -> None:
    """Nothing runs with an option that would be ignored, wherever it stands, and a verb's
    options are not abbreviated (`run --output` is not `--output-dir`)."""
    (tmp_path / "b.txt").write_text("b\n")
    write_config(tmp_path / "c.toml", "")
    _root(tmp_path / "r")
    done = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "od").exists()


def test_a_config_path_starting_with_a_tilde_is_in_the_home_folder(tmp_path: Path) -> None:
    """``--config=~/p.toml`` (which the shell leaves alone) and FOLDERMON_CONFIG="~/p.toml" (a
    unit's Environment=) both mean the file in $HOME, as ``--watch=~/drop`` does."""
    write_config(tmp_path / "p.toml", '[[processors]]\ntype = "uppercase"\n')
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    home = {"HOME": str(tmp_path)}
    for args, env in (
        (["process", str(src), "--config=~/p.toml"], home),
        (["process", str(src)], {**home, "FOLDERMON_CONFIG": "~/p.toml"}),
    ):
        done = run_cli(*args, env=env)
        assert (done.returncode, done.stdout) == (0, "ONE\n"), done.stderr


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path: Path) -> None:
    """A queue folder, the output folder or a root's parent that is a file: the error names it."""
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "r1" / "unprocessed").parent.mkdir()
    (tmp_path / "r1" / "unprocessed").write_text("x\n")
    cases = [
        (["--watch", str(tmp_path / "r1")], f"{tmp_path / 'r1' / 'unprocessed'} is in the way"),
        (
            ["--watch", str(tmp_path / "r2"), "--output-dir", str(tmp_path / "afile")],
            f"{tmp_path / 'afile'} is in the way",
        ),
        (["--watch", str(tmp_path / "afile" / "x")], f"its parent {tmp_path / 'afile'} is a file"),
    ]
    for args, said in cases:
        done = run_cli("run", "--once", *args)
        assert done.returncode == 1
        assert said in done.stderr, done.stderr
    shown = run_cli("process", ".")
    assert (shown.returncode, shown.stderr.strip()) == (1, "foldermon-agent: . is not a regular file")


def test_sigterm_stops_process_and_leaves_no_temp_output(tmp_path: Path) -> None:
    """timeout, cron and systemd stop with SIGTERM: `process --output` removes its temp file and
    exits with 128 + 15, the old output untouched."""
    config = write_config(tmp_path / "s.toml", '[[processors]]\ntype = "sleepy"\nseconds = 60\n')
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    proc = start("process", str(src), "--output", str(out), "--config", str(config), log=tmp_path / "p.log")
    wait_until(lambda: any(n.endswith(".tmp") for n in os.listdir(tmp_path)), timeout=20)
    assert stop(proc, signal.SIGTERM) == 128 + signal.SIGTERM
    assert out.read_text() == "old\n"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_a_replaced_output_keeps_its_set_id_bits_and_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file another owner")
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    os.chown(out, 65534, 65534)
    out.chmod(0o4750)
    assert run_cli("process", str(src), "--output", str(out)).returncode == 0
    st = out.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, out.read_text()) == (0o4750, 65534, "one\n")


def test_a_closed_standard_output_is_said(tmp_path: Path) -> None:
    closed = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command("status", "--watch", str(tmp_path))],
        env=agent_env(),
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert closed.returncode == 1
    assert "standard output is closed" in closed.stderr
    assert "Traceback" not in closed.stderr


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"])
@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["status", "-h"]])
def test_help_that_cannot_be_written_fails(redirect: str, args: list[str]) -> None:
    """Help on a closed or full stdout exits 1 saying why (argparse drops it and exits 0)."""
    done = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *command(*args)],
        env=agent_env(),
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("foldermon-agent: "), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("verb", ["status", "pause", "failed"])
def test_a_report_that_cannot_be_written_names_standard_output(tmp_path: Path, verb: str) -> None:
    """stdout on a full disk: the verb fails (1) saying it could not write to standard output,
    without a traceback."""
    root = _root(tmp_path / "root")
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >/dev/full', "sh", *command(verb, "--watch", str(root))],
        env=agent_env(),
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "foldermon-agent: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_into_a_pipe_closed_early_ends_quietly(args: list[str]) -> None:
    """`--help | head`: the reader gone, help ends as `cat` would (141, nothing on stderr)."""
    with subprocess.Popen(
        command(*args), env=agent_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        assert (proc.wait(30), proc.stderr.read()) == (141, b"")


def test_explain_a_name_with_watch_reads_the_root_s_file_not_one_in_the_current_folder(
    tmp_path: Path,
) -> None:
    root = _root(tmp_path / "root")
    (root / "processed").mkdir()
    (root / "processed" / "x.txt").write_text("from the root\n")
    here = tmp_path / "here"
    here.mkdir()
    (here / "x.txt").write_text("from here\n")
    done = subprocess.run(
        command("explain", "x.txt", "--line", "1", "--json", "--watch", str(root)),
        env=agent_env(),
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["lines"][0]["text"] == "from the root"


def test_retry_all_stopped_by_a_signal_leaves_no_file_without_its_record(tmp_path: Path) -> None:
    """SIGTERM in the middle of `retry --all`: each file has moved with its record or not at
    all (the signal waits for the pair), every move made is reported on stdout (a file here, so
    buffered), and the verb ends with 128 + 15."""
    root = _root(tmp_path / "root")
    (root / "failed").mkdir()
    for i in range(3000):
        (root / "failed" / f"f{i:04}").write_text("x\n")
        (root / "failed" / f".f{i:04}.error.json").write_text('{"file": "f", "error_type": "E"}\n')
    proc = start("retry", "--watch", str(root), "--all", log=tmp_path / "r.log")
    wait_until(lambda: len(os.listdir(root / "unprocessed")) > 10, timeout=20, interval=0.001)
    code = stop(proc, signal.SIGTERM)
    left = {n for n in os.listdir(root / "failed") if not n.startswith(".")}
    assert code == 128 + signal.SIGTERM or not left  # it may have finished first
    for name in left:
        assert (root / "failed" / f".{name}.error.json").exists(), name
    moved = set(os.listdir(root / "unprocessed"))
    assert not any((root / "failed" / f".{name}.error.json").exists() for name in moved)
    assert len(moved) + len(left) == 3000
    reported = (tmp_path / "r.log").read_text().splitlines()
    assert reported == [f"{root / 'failed' / n} -> {root / 'unprocessed' / n}" for n in sorted(moved)]


def test_gc_stopped_by_a_signal_reports_every_file_it_removed(tmp_path: Path) -> None:
    """SIGTERM in the middle of `gc`: every removal made is on stdout (buffered in a file),
    none that was not, and the verb ends with 128 + 15."""
    root = _root(tmp_path / "root")
    (root / "processed").mkdir()
    for i in range(20_000):
        (root / "processed" / f"p{i:05}").touch()
    config = write_config(tmp_path / "c.toml", "[retention]\nprocessed_max_age = 1\n")
    time.sleep(1.1)  # ages go by ctime
    proc = start("gc", "--watch", str(root), "--config", str(config), log=tmp_path / "gc.log")
    wait_until(lambda: len(os.listdir(root / "processed")) < 19_900, timeout=20, interval=0.001)
    code = stop(proc, signal.SIGTERM)
    left = set(os.listdir(root / "processed"))
    assert code == 128 + signal.SIGTERM or not left
    reported = [
        line for line in (tmp_path / "gc.log").read_text().splitlines() if line.startswith("removed ")
    ]
    gone = {f"p{i:05}" for i in range(20_000)} - left
    assert sorted(reported) == sorted(f"removed {root / 'processed' / n}" for n in gone)
