"""Final names, proved on the real agent: error records are dotfiles beside their inputs, no
committed output is ever replaced (a clash takes the next free ``.N``), one agent never removes
another's live temp output, and a crash between publishing an output and finishing its input
is finished on recovery instead of processed again."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    COUNTER_CONFIG,
    events,
    leftovers,
    numbered,
    output_name,
    passthrough,
    popen,
    queue_dirs,
    records,
    require_tools,
    start_agent,
    terminate_all,
    troubles,
    wait_for_event,
)

from agentctl import census, command, drop, run_cli, wait_until, write_config

pytestmark = pytest.mark.real

TMP_MARK = ".foldermon-"
# The agent reads 256 KiB per batch: a file of several batches keeps a slow pipeline busy for a while.
BATCH = 256 * 1024


def run_once(log: Path, *args: str, timeout: float = 60) -> int:
    """``run --once`` on the given arguments to completion; its output goes to ``log``."""
    proc = start_agent("run", *args, "--once", log=log)
    return proc.wait(timeout)


def cli_json(*args: str) -> dict[str, Any]:
    """A read verb with ``--json``, which must succeed; its parsed output."""
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def files(folder: Path) -> dict[str, bytes]:
    """Every non-dot file in ``folder`` with its content."""
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder)) if not n.startswith(".")}


def temps(folder: Path) -> list[str]:
    """The temp outputs (``.foldermon-<instance>-...tmp``) in an output folder."""
    return sorted(n for n in os.listdir(folder) if n.startswith(TMP_MARK) and n.endswith(".tmp"))


def big(label: bytes, size: int) -> bytes:
    """About ``size`` bytes of lines that name ``label``, so two such files never share content."""
    line = b"%s %07d " + b"x" * 80 + b"\n"
    count = size // len(line % (label, 0)) + 1
    return b"".join(line % (label, i) for i in range(count))


def watching(log: Path) -> dict[str, Any]:
    return wait_for_event(log, "watching", timeout=30)


def assert_outputs_exact(
    out: Path, produced: list[bytes], expect: Callable[[bytes], bytes]
) -> dict[str, bytes]:
    """Each input's expected output is in ``out`` exactly once and nothing else is; returns the files."""
    found = files(out)
    wanted = Counter(expect(data) for data in produced)
    got = Counter(found.values())
    assert got == wanted, (
        f"outputs lost or replaced: {sum((wanted - got).values())} expected missing, "
        f"{sum((got - wanted).values())} unexpected; names {sorted(found)}"
    )
    return found


# -- 1. error records are dotfiles --------------------------------------------------------------


def test_inputs_named_like_error_records_are_ordinary_inputs_in_failed_list_and_retry(
    tmp_path: Path,
) -> None:
    """Failing inputs 'a', 'a.error.json', 'b.error.json', 'b' each keep their bytes and own record in failed/, are all listed, counted and retried."""
    root = tmp_path / "root"
    log = tmp_path / "agent.log"
    config = write_config(
        tmp_path / "c.toml",
        '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "raise_on"\n',
    )
    content = {
        name: f"BAD input called {name}\n".encode() for name in ("a", "a.error.json", "b", "b.error.json")
    }
    # 'a' fails before 'a.error.json', 'b.error.json' before 'b': each name is taken first once.
    for batch in (("a", "b.error.json"), ("a.error.json", "b")):
        for name in batch:
            drop(root, name, content[name])
        assert run_once(log, "--watch", str(root), "--config", str(config)) == 1  # files failed

    failed = root / "failed"
    assert census(root) == {"unprocessed": [], "underprocess": [], "processed": [], "failed": sorted(content)}
    for name, data in content.items():
        assert (failed / name).read_bytes() == data, f"failed/{name} is not the input it was"
        record = json.loads((failed / f".{name}.error.json").read_text())
        assert record["file"] == name
        assert record["failed_name"] == name
        assert record["processor_type"] == "raise_on"
        assert f"'BAD input called {name}'" in json.dumps(record), "the record tells another input's failure"
    assert leftovers(root) == []

    listed = cli_json("failed", "--watch", str(root))["failed"]
    assert sorted(f["name"] for f in listed) == sorted(content)
    assert all(f["reason"] != "no error record" for f in listed), listed
    status = cli_json("status", "--watch", str(root))["roots"][0]
    assert status["failed"] == 4
    assert sorted(f["name"] for f in status["failed_files"]) == sorted(content)

    retried = run_cli("retry", "--watch", str(root), "--all")
    assert retried.returncode == 0, retried.stderr
    assert files(root / "unprocessed") == dict(sorted(content.items()))
    assert census(root)["failed"] == []
    assert sorted(os.listdir(failed)) == [".history"], "error records left in failed/ after retry"
    history = [json.loads(p.read_text()) for p in (failed / ".history").iterdir()]
    assert sorted(r["file"] for r in history) == sorted(content)


# -- 2. a committed output is never replaced ---------------------------------------------------


def test_output_template_mapping_two_inputs_to_one_name_keeps_both_outputs(tmp_path: Path) -> None:
    """With name = "{stem}.out", inputs a.txt and a.csv give a.out and a.1.out holding both outputs."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", '[output]\nname = "{stem}.out"\n')
    produced = {"a.txt": b"text lines\nof a.txt\n", "a.csv": b"x,y\n1,2\n"}
    for name, data in produced.items():
        drop(root, name, data)
    assert run_once(tmp_path / "agent.log", "--watch", str(root), "--config", str(config)) == 0

    found = assert_outputs_exact(root / "output", list(produced.values()), passthrough)
    assert sorted(found) == ["a.1.out", "a.out"]
    assert sorted(files(root / "processed").values()) == sorted(produced.values()), "an input was lost"
    assert census(root)["failed"] == []
    assert leftovers(root) == []


def _two_roots(tmp_path: Path, count: int) -> tuple[Path, Path, Path, list[bytes]]:
    """Two roots holding inputs of the same names and different content, and one output folder."""
    r1, r2, out = tmp_path / "r1", tmp_path / "r2", tmp_path / "out"
    produced = []
    for root in (r1, r2):
        for i in range(count):
            name = "data.txt" if i == 0 else f"f{i:03d}.log"
            data = f"{root.name} {name}\nsecond line {i}\n".encode()
            drop(root, name, data)
            produced.append(data)
    return r1, r2, out, produced


def _assert_both_roots_drained(r1: Path, r2: Path, out: Path, count: int) -> None:
    for root in (r1, r2):
        found = census(root)
        assert found["unprocessed"] == found["underprocess"] == found["failed"] == []
        assert len(found["processed"]) == count
        assert leftovers(root, out) == []


def test_two_roots_in_one_agent_sharing_an_output_folder_lose_no_output(tmp_path: Path) -> None:
    """One agent on two roots with the same input names and one --output-dir keeps every output once."""
    count = 5
    r1, r2, out, produced = _two_roots(tmp_path, count)
    code = run_once(tmp_path / "agent.log", "--watch", str(r1), "--watch", str(r2), "--output-dir", str(out))
    assert code == 0

    found = assert_outputs_exact(out, produced, passthrough)
    assert {output_name("data.txt"), output_name("data.txt", 1)} <= set(found)
    _assert_both_roots_drained(r1, r2, out, count)


def test_two_agents_on_two_roots_sharing_an_output_folder_at_once_lose_no_output(tmp_path: Path) -> None:
    """Two agents at the same time, one per root, same input names and one --output-dir: every output once."""
    count = 30
    r1, r2, out, produced = _two_roots(tmp_path, count)
    # A short sleep per file keeps both agents publishing over the same second or two.
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "sleepy"\nseconds = 0.03\n')
    logs = [tmp_path / "agent1.log", tmp_path / "agent2.log"]
    procs = [
        start_agent(
            "run", "--watch", str(root), "--output-dir", str(out), "--config", str(config), "--once", log=log
        )
        for root, log in zip((r1, r2), logs, strict=True)
    ]
    assert [p.wait(60) for p in procs] == [0, 0]

    spans = []
    for log in logs:
        stamps = [r["timestamp"] for r in events([log], "file processed")]
        assert len(stamps) == count
        spans.append((min(stamps), max(stamps)))
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the agents did not run at once: {spans}"
    found = assert_outputs_exact(out, produced, passthrough)
    assert len(found) == 2 * count
    _assert_both_roots_drained(r1, r2, out, count)


def test_output_of_a_name_pruned_from_processed_is_kept_and_the_new_one_suffixed(tmp_path: Path) -> None:
    """After the operator deletes processed/data.txt, a new data.txt gets data_processed.1.txt; the old output stays."""
    root = tmp_path / "root"
    log = tmp_path / "agent.log"
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    first, second = b"first data\nof the day\n", b"second data\nwith\nthree lines\n"
    drop(root, "data.txt", first)
    assert run_once(log, "--watch", str(root), "--config", str(config)) == 0
    assert (root / "output" / "data_processed.txt").read_bytes() == numbered(first)

    (root / "processed" / "data.txt").unlink()
    drop(root, "data.txt", second)
    assert run_once(log, "--watch", str(root), "--config", str(config)) == 0

    assert files(root / "output") == {
        "data_processed.txt": numbered(first),
        "data_processed.1.txt": numbered(second),
    }
    assert list(files(root / "processed").values()) == [second]
    assert leftovers(root) == []


def test_two_instances_processing_two_files_of_one_name_at_once_keep_both(tmp_path: Path) -> None:
    """Two agents on one root each hold a different 'same.txt' at once: both inputs and both outputs are kept."""
    root = tmp_path / "root"
    queue_dirs(root)
    config = write_config(
        tmp_path / "c.toml",
        '[[processors]]\ntype = "sleepy"\nseconds = 0.5\n' + COUNTER_CONFIG,
    )
    logs = [tmp_path / "agent1.log", tmp_path / "agent2.log"]
    procs = [start_agent("run", "--watch", str(root), "--config", str(config), log=log) for log in logs]
    for log in logs:
        watching(log)
    first, second = big(b"A", 5 * BATCH), big(b"B", 5 * BATCH)

    def holders() -> list[str]:
        under = root / "underprocess"
        return sorted(d for d in os.listdir(under) if (under / d / "same.txt").exists())

    drop(root, "same.txt", first)
    wait_until(holders, timeout=10, what="same.txt claimed")
    drop(root, "same.txt", second)
    # Both files of the name are in flight at once, each in its own instance's claim folder.
    wait_until(lambda: len(holders()) == 2, timeout=10, what="the second same.txt claimed by the other agent")
    wait_until(lambda: len(census(root)["processed"]) == 2, timeout=30, what="both processed")
    assert terminate_all(procs) == [0, 0]

    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": ["same.1.txt", "same.txt"],
        "failed": [],
    }
    assert sorted(files(root / "processed").values()) == sorted([first, second])
    found = assert_outputs_exact(root / "output", [first, second], numbered)
    assert sorted(found) == ["same_processed.1.txt", "same_processed.txt"]
    assert leftovers(root) == []


# -- 3. another agent's live temp output is never removed --------------------------------------


def test_agent_starting_on_another_root_keeps_a_live_agents_temp_output(tmp_path: Path) -> None:
    """Agent A starting on its own root beside agent B's shared --output-dir leaves B's temp output; B finishes byte-exact."""
    ra, rb, out = tmp_path / "ra", tmp_path / "rb", tmp_path / "out"
    queue_dirs(rb)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    # One attempt only: a removed temp output would fail the file instead of being retried away.
    config_b = write_config(
        tmp_path / "b.toml",
        '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "sleepy"\nseconds = 0.5\n',
    )
    agent_b = start_agent(
        "run", "--watch", str(rb), "--output-dir", str(out), "--config", str(config_b), log=log_b
    )
    watching(log_b)
    data = big(b"slow", 10 * BATCH)
    drop(rb, "big.txt", data)
    live = wait_until(lambda: temps(out), timeout=10, what="B's temp output")
    assert len(live) == 1

    agent_a = start_agent("run", "--watch", str(ra), "--output-dir", str(out), log=log_a)
    watching(log_a)
    assert census(rb)["processed"] == [], "B finished before A started: make the file larger"
    assert temps(out) == live, "A's start-up removed B's live temp output"
    drop(ra, "quick.txt", b"A works meanwhile\n")

    wait_until(lambda: census(rb)["processed"] == ["big.txt"], timeout=30, what="B to finish big.txt")
    wait_until(lambda: census(ra)["processed"] == ["quick.txt"], timeout=10, what="A to finish quick.txt")
    assert terminate_all([agent_a, agent_b]) == [0, 0]

    done = [r for r in events([log_b], "file processed") if r.get("file") == "big.txt"]
    assert len(done) == 1, records(log_b)
    problems = troubles([log_a, log_b])
    assert problems == []
    assert census(rb)["failed"] == []
    assert files(out) == {
        "big_processed.txt": passthrough(data),
        "quick_processed.txt": b"A works meanwhile\n",
    }
    assert leftovers(ra, out) == leftovers(rb, out) == []


# -- 4. a crash between publishing and finishing ----------------------------------------------


@pytest.mark.parametrize("where", ["snapshot", "dot name"])
def test_a_hard_link_snapshot_of_a_temp_output_is_no_proof_of_publication(tmp_path: Path, where: str) -> None:
    """A hard-link snapshot of the output folder (``cp -al``, rsnapshot), or a hidden link in
    it, made while an output is written gives its temp a second link, then the agent is
    SIGKILLed: the input is processed again and its output published (the extra link is not
    an output name in the output folder)."""
    root = tmp_path / "root"
    snap = tmp_path / "snap" if where == "snapshot" else root / "output"
    config = write_config(tmp_path / "c.toml", '[[processors]]\ntype = "sleepy"\nseconds = 0.5\n')
    data = big(b"snap", 10 * BATCH)
    drop(root, "big.txt", data)
    (root / "output").mkdir()
    agent = start_agent("run", "--watch", str(root), "--config", str(config), log=tmp_path / "a.log")
    live = wait_until(lambda: temps(root / "output"), timeout=20, what="the temp output")
    snap.mkdir(exist_ok=True)
    for name in live:
        os.link(root / "output" / name, snap / (name if where == "snapshot" else ".kept"))
    agent.kill()
    agent.wait(10)
    assert census(root)["processed"] == []
    assert run_once(tmp_path / "b.log", "--watch", str(root), "--config", str(config)) == 0
    assert census(root)["processed"] == ["big.txt"]
    assert files(root / "output") == {"big_processed.txt": passthrough(data)}


def test_kill_between_output_publish_and_input_finish_is_finished_not_reprocessed(tmp_path: Path) -> None:
    """SIGKILL at the rename into processed/ (strace); the next run finishes the input and keeps the one output."""
    require_tools("strace")
    root = tmp_path / "root"
    queue_dirs(root)
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    data = b"line one\nline two\nline three\n"
    drop(root, "data.txt", data)
    trace, log = tmp_path / "trace", tmp_path / "agent.log"
    target = root / "processed" / "data.txt"
    argv = [
        "strace", "-f", "-qq", "-o", str(trace),
        "-e", "trace=renameat2", "-e", "inject=renameat2:signal=KILL", "-P", str(target),
        *command("run", "--watch", str(root), "--config", str(config), "--once"),
    ]  # fmt: skip
    code = popen(argv, log=log).wait(60)

    # strace ends itself with the signal that killed the agent (137 if a shell reports it).
    assert code in (-9, 137), f"the agent was not killed: exit {code}"
    text = trace.read_text()
    assert f'"{target}"' in text, text
    assert "killed by SIGKILL" in text, text
    assert census(root) == {"unprocessed": [], "underprocess": ["data.txt"], "processed": [], "failed": []}
    claim_folder = [
        d for d in os.listdir(root / "underprocess") if (root / "underprocess" / d / "data.txt").exists()
    ]
    assert len(claim_folder) == 1
    output = root / "output" / "data_processed.txt"
    assert output.read_bytes() == numbered(data)
    before = os.stat(output)

    log2 = tmp_path / "agent2.log"
    assert run_once(log2, "--watch", str(root), "--config", str(config)) == 0

    assert census(root) == {"unprocessed": [], "underprocess": [], "processed": ["data.txt"], "failed": []}
    assert (root / "processed" / "data.txt").read_bytes() == data
    assert files(root / "output") == {"data_processed.txt": numbered(data)}
    after = os.stat(output)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "the output was replaced"
    assert events([log2], "file processed") == [], "the input was processed again"
    assert leftovers(root) == []


def test_a_crash_before_the_finish_is_finished_by_an_agent_with_another_output_folder(tmp_path: Path) -> None:
    """The first agent (output o1) is killed between publishing and finishing; the root is then
    served with output o2: the recovery finds the proof in o1 (its lock says where), finishes the
    input, makes no second output and leaves nothing in o1."""
    require_tools("strace")
    root, o1, o2 = tmp_path / "root", tmp_path / "o1", tmp_path / "o2"
    queue_dirs(root)
    drop(root, "a.txt", b"hello\n")
    target = root / "processed" / "a.txt"
    argv = [
        "strace", "-f", "-qq", "-o", str(tmp_path / "trace"),
        "-e", "trace=renameat2", "-e", "inject=renameat2:signal=KILL", "-P", str(target),
        *command("run", "--watch", str(root), "--output-dir", str(o1), "--once"),
    ]  # fmt: skip
    assert popen(argv, log=tmp_path / "a1.log").wait(60) in (-9, 137)
    assert os.listdir(o1) != []
    assert run_once(tmp_path / "a2.log", "--watch", str(root), "--output-dir", str(o2)) == 0
    assert census(root)["processed"] == ["a.txt"]
    assert files(o1) == {"a_processed.txt": b"hello\n"}
    assert os.listdir(o2) == []
    assert temps(o1) == []


def test_a_processed_input_moved_back_gets_a_new_output_and_the_first_is_never_touched(
    tmp_path: Path,
) -> None:
    """An input moved from processed/ back to unprocessed/ while the agent drains a backlog (its
    output's proof of publication may still be there): the published output keeps its bytes and
    inode, and the input gets a second output."""
    root = tmp_path / "root"
    config = write_config(tmp_path / "c.toml", COUNTER_CONFIG)
    log = tmp_path / "agent.log"
    proc = start_agent("run", "--watch", str(root), "--config", str(config), log=log)
    watching(log)
    payload = big(b"x", 8 * BATCH)
    for trial in range(5):
        name = f"x{trial}.txt"
        drop(root, name, payload)
        for i in range(40):  # a backlog behind it, so the group commit waits
            drop(root, f"s{trial}-{i:02}.txt", b"small\n" * 500)
        wait_until(lambda n=name: (root / "processed" / n).exists(), timeout=30)
        output = root / "output" / output_name(name)
        first = os.stat(output)
        os.rename(root / "processed" / name, root / "unprocessed" / name)
        again = f"x{trial}.1.txt"  # processed/ and the output name are taken: both take .1
        wait_until(lambda n=again: (root / "processed" / n).exists(), timeout=30)
        after = os.stat(output)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
            first.st_ino,
            first.st_size,
            first.st_mtime_ns,
        )
        assert output.read_bytes() == numbered(payload)
        assert (root / "output" / output_name(name, 1)).read_bytes() == numbered(payload)
    assert terminate_all([proc]) == [0]


def test_a_copied_root_is_another_root_and_never_removes_the_originals_temp_outputs(tmp_path: Path) -> None:
    """Root B made with cp -a from root A (its id file too), both writing to one output folder: the
    agent starting on B leaves A's live temp output alone, and A's file is processed."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "O"
    queue_dirs(a)
    assert run_once(tmp_path / "init.log", "--watch", str(a), "--output-dir", str(out)) == 0
    os.system(f"cp -a {a} {b}")  # noqa: S605 - the operator's own copy, flags and all
    config = write_config(
        tmp_path / "c.toml", '[retry]\nmax_attempts = 1\n[[processors]]\ntype = "sleepy"\nseconds = 0.3\n'
    )
    log = tmp_path / "a.log"
    proc = start_agent("run", "--watch", str(a), "--output-dir", str(out), "--config", str(config), log=log)
    watching(log)
    payload = big(b"a", 6 * BATCH)
    drop(a, "big.txt", payload)
    wait_until(lambda: temps(out), timeout=20, what="A's temp output")
    assert run_once(tmp_path / "b.log", "--watch", str(b), "--output-dir", str(out)) == 0
    assert temps(out), "B's start removed A's live temp output"
    wait_until(lambda: census(a)["processed"] == ["big.txt"], timeout=60)
    assert terminate_all([proc]) == [0]
    assert census(a)["failed"] == []
    assert (out / "big_processed.txt").read_bytes() == payload
