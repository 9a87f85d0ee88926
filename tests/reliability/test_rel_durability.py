"""Durability order read from the agent's system calls, and faults injected into them with strace."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from relkit import leftovers, numbered, output_name, require_tools
from stracetrace import Call, main_pid, parse, run_traced

from agentctl import census, drop, write_config

pytestmark = pytest.mark.real

SYSCALLS = "openat,write,fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,close,mkdir"
RENAMES = frozenset({"rename", "renameat", "renameat2"})
LINKS = frozenset({"link", "linkat"})
FSYNCS = frozenset({"fsync", "fdatasync"})
WRITE_FLAGS = re.compile(r"\bO_(WRONLY|RDWR)\b")
GOOD = {f"good{i}.txt": f"good {i}\nsecond line\n".encode() for i in range(4)}
BAD = b"fine\nBAD line\n"


def _under(path: str, *dirs: Path) -> bool:
    return any(path == str(d) or path.startswith(f"{d}/") for d in dirs)


@dataclass
class Order:
    """Replays a trace and lists every break of the write-fsync-rename-fsync order."""

    scope: tuple[Path, ...]
    dirty: set[str]
    moved: dict[str, set[str]]  # path -> folders whose fsync is owed since its last move
    created: dict[str, str]  # folder made by mkdir/rename -> parent whose fsync is owed
    problems: list[str]
    renamed_written: int = 0

    @classmethod
    def check(cls, calls: list[Call], *scope: Path) -> Order:
        order = cls(scope, set(), {}, {}, [])
        for call in calls:
            if call.ok:
                order._step(call)
        for path, owed in order.moved.items():
            if owed:
                order.problems.append(f"{path}: folders {sorted(owed)} never fsynced after its last move")
        return order

    def _step(self, call: Call) -> None:
        if call.name == "openat" and WRITE_FLAGS.search(call.args):
            path = call.returned_path
            if path and _under(path, *self.scope):
                self.dirty.add(path)
        elif call.name == "write" and call.fds and _under(call.fds[0], *self.scope):
            self.dirty.add(call.fds[0])
        elif call.name in FSYNCS and call.fds:
            self._synced(call.fds[0])
        elif call.name == "mkdir" and _under(call.strings[0], *self.scope):
            self.created[call.strings[0]] = os.path.dirname(call.strings[0])
        elif call.name in RENAMES and _under(call.strings[1], *self.scope):
            self._renamed(call, call.strings[0], call.strings[1])
        elif call.name in LINKS and _under(call.strings[1], *self.scope):
            self._linked(call, call.strings[0], call.strings[1])
        elif call.name == "unlink":
            self.dirty.discard(call.strings[0])
            self.moved.pop(call.strings[0], None)

    def _synced(self, path: str) -> None:
        self.dirty.discard(path)
        for owed in self.moved.values():
            owed.discard(path)
        for folder, parent in list(self.created.items()):
            if parent == path:
                del self.created[folder]

    def _linked(self, call: Call, src: str, dst: str) -> None:
        """A second name for a file (how final names are taken without replacing): written data first."""
        if src in self.dirty:
            self.problems.append(f"#{call.index} {src} linked before it was fsynced")
        self.moved[dst] = {os.path.dirname(dst)}

    def _renamed(self, call: Call, src: str, dst: str) -> None:
        if src in self.dirty:
            self.problems.append(f"#{call.index} {src} renamed before it was fsynced")
            self.dirty.discard(src)
        elif os.path.basename(src).endswith(".tmp"):
            self.renamed_written += 1
        parent = os.path.dirname(dst)
        # Within one folder a later fsync of it covers both names.
        if self.moved.get(src, set()) - {parent}:
            self.problems.append(
                f"#{call.index} {src} moved again before {sorted(self.moved[src])} were fsynced"
            )
        if parent in self.created:
            self.problems.append(
                f"#{call.index} {src} moved into {parent}, whose creation is not durable yet"
            )
        self.moved.pop(src, None)
        self.moved[dst] = {os.path.dirname(src), parent}
        if src in self.created or call.strings[0] in self.created:
            del self.created[src]
        if not os.path.splitext(dst)[1]:
            # A folder (the instance's claim folder) renamed into place: its entry is owed too.
            self.created[dst] = parent


@pytest.fixture(scope="module")
def order_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Call], str]:
    """One traced drain of a fresh root: good files, a retried then failed file, a dead claim, a clash."""
    require_tools("strace")
    tmp = tmp_path_factory.mktemp("order")
    root = tmp / "root"
    for name, data in GOOD.items():
        drop(root, name, data)
    drop(root, "bad.txt", BAD)
    drop(root, "dup.txt", b"second dup\n")
    (root / "processed").mkdir()
    (root / "processed" / "dup.txt").write_bytes(b"first dup\n")
    dead = root / "underprocess" / "deadhost-7-abcdef"
    dead.mkdir(parents=True)
    (dead / ".lock").write_text("deadhost pid 7\n")
    (dead / "orphan.txt").write_bytes(b"left by a dead instance\n")
    config = write_config(
        tmp / "c.toml",
        '[retry]\nmax_attempts = 2\nbackoff = 0.01\n[[processors]]\ntype = "raise_on"\n'
        '[[processors]]\ntype = "line_counter"\n',
    )
    trace = tmp / "trace.txt"
    result = run_traced(
        ["run", "--watch", str(root), "--once", "--config", str(config)], trace, syscalls=SYSCALLS
    )
    assert result.returncode == 1, result.stdout + result.stderr
    return root, parse(trace.read_text()), result.stdout


def test_order_run_moved_every_kind_of_file(order_run: tuple[Path, list[Call], str]) -> None:
    """The traced run did claim, commit, finish, retry, quarantine and recover (so the checks below bite)."""
    root, calls, _ = order_run
    assert census(root) == {
        "unprocessed": [],
        "underprocess": [],
        "processed": sorted([*GOOD, "dup.1.txt", "dup.txt", "orphan.txt"]),
        "failed": ["bad.txt"],
    }
    renamed = [c.strings[0] for c in calls if c.name in RENAMES and c.ok]
    for kind in (".foldermon-", ".attempts.", "/unprocessed/", "/deadhost-7-abcdef/"):
        assert any(kind in path for path in renamed), f"no rename of a {kind!r} path traced"
    linked = [c.strings[1] for c in calls if c.name in LINKS and c.ok]
    assert str(root / "failed" / ".bad.txt.error.json") in linked, "no error record taken by link"


def test_every_written_file_is_fsynced_before_its_rename(order_run: tuple[Path, list[Call], str]) -> None:
    """Temp outputs, attempt counters and error records: each fsynced after its last write, before its rename."""
    root, calls, _ = order_run
    order = Order.check(calls, root)
    renames_before_fsync = [p for p in order.problems if "before it was fsynced" in p]
    assert renames_before_fsync == []
    assert order.renamed_written >= len(GOOD) + 3


def test_folders_are_fsynced_after_each_move_before_the_next(order_run: tuple[Path, list[Call], str]) -> None:
    """After every rename both folders are fsynced before that file moves again, and new folders before use."""
    root, calls, _ = order_run
    order = Order.check(calls, root)
    assert [p for p in order.problems if "before it was fsynced" not in p] == []


def test_each_output_is_committed_before_its_input_is_finished(
    order_run: tuple[Path, list[Call], str],
) -> None:
    """The rename of an input into processed/ comes after the rename of its output to its final name."""
    root, calls, _ = order_run
    outputs = {n: output_name(n) for n in GOOD} | {
        "dup.1.txt": "dup_processed.1.txt",
        "orphan.txt": "orphan_processed.txt",
    }
    renamed = [c for c in calls if c.name in RENAMES and c.ok]
    finishes = {
        os.path.basename(c.strings[1]): c.index
        for c in renamed
        if c.strings[1].startswith(f"{root}/processed/")
    }
    assert sorted(finishes) == sorted(outputs)
    for name, output in outputs.items():
        commits = [c.index for c in renamed if c.strings[1] == str(root / "output" / output)]
        assert commits, f"no commit of {output} traced"
        assert commits[0] < finishes[name], f"{name} finished before its output {output} was committed"


def test_outputs_of_the_traced_run_are_byte_exact(order_run: tuple[Path, list[Call], str]) -> None:
    """The traced run's outputs are right, the clash kept both inputs, and nothing was left behind."""
    root, _, _ = order_run
    for name, data in GOOD.items():
        assert (root / "output" / output_name(name)).read_bytes() == numbered(data)
    assert (root / "output" / "dup_processed.1.txt").read_bytes() == numbered(b"second dup\n")
    assert (root / "processed" / "dup.txt").read_bytes() == b"first dup\n"
    assert (root / "output" / "orphan_processed.txt").read_bytes() == numbered(b"left by a dead instance\n")
    assert leftovers(root) == []


# -- fault injection ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure injected into the first system call matching ``pick`` after one matching ``after``."""

    syscall: str
    error: str
    pick: Callable[[Call, Path], bool]
    after: Callable[[Call, Path], bool] = lambda c, root: True
    failing: bool = False  # the victim's pipeline always raises
    attempts: int = 3
    # The finish into processed/ is fsynced by a later group commit, after the output is durable
    # and the file reported: that fsync failing is logged and retried with the next group.
    group_commit: bool = False
    orphan: bool = False  # the victim starts in a dead instance's claim folder, active (so it gets a counter)


def _matches(pattern: str, text: str | None, root: Path) -> bool:
    return text is not None and re.fullmatch(pattern.format(root=re.escape(str(root))), text) is not None


def _fd_is(pattern: str) -> Callable[[Call, Path], bool]:
    return lambda c, root: c.name in FSYNCS and _matches(pattern, c.fds[0] if c.fds else None, root)


def _src_is(pattern: str) -> Callable[[Call, Path], bool]:
    return lambda c, root: c.name in RENAMES and _matches(pattern, c.strings[0], root)


def _dst_is(pattern: str) -> Callable[[Call, Path], bool]:
    return lambda c, root: c.name in RENAMES and _matches(pattern, c.strings[1], root)


def _link_is(pattern: str) -> Callable[[Call, Path], bool]:
    return lambda c, root: c.name in LINKS and _matches(pattern, c.strings[1], root)


CLAIM_DIR = r"{root}/underprocess/[^/.][^/]*"
# The victim is processed first: the first temp output written is its.
OUTPUT_TMP = r"{root}/output/\.foldermon-[^/]*-[0-9a-f]{{32}}\.tmp"
OUTPUT_PUB = r"{root}/output/\.foldermon-[^/]*-[0-9a-f]{{32}}\.pub\.tmp"
FAULTS = {
    "fsync-EIO-output-temp": Fault("fsync", "EIO", _fd_is(OUTPUT_TMP)),
    "fsync-EIO-output-folder": Fault("fsync", "EIO", _fd_is(r"{root}/output"), after=_src_is(OUTPUT_PUB)),
    "fsync-EIO-claim-folder": Fault("fsync", "EIO", _fd_is(CLAIM_DIR), after=_src_is(r"{root}/unprocessed/victim\.txt")),
    "fsync-EIO-processed-folder": Fault("fsync", "EIO", _fd_is(r"{root}/processed"), after=_dst_is(r"{root}/processed/victim\.txt"), group_commit=True),
    "fsync-EIO-attempt-counter": Fault("fsync", "EIO", _fd_is(CLAIM_DIR + r"/\.\.victim\.txt\.attempts\..*\.tmp"), failing=True),
    # After the claim: the root's id, made at start, has a temp file of that form in the claim folder too.
    "fsync-EIO-error-record": Fault("fsync", "EIO", _fd_is(CLAIM_DIR + r"/\.\d+-[0-9a-f]{{8}}\.new"), after=_src_is(r"{root}/unprocessed/victim\.txt"), failing=True, attempts=1),
    "linkat-EIO-output-publish": Fault("linkat", "EIO", _link_is(OUTPUT_PUB)),
    "renameat2-ENOSPC-output-commit": Fault("renameat2", "ENOSPC", _src_is(OUTPUT_PUB)),
    "fsync-EIO-claim-folder-at-finish": Fault("fsync", "EIO", _fd_is(CLAIM_DIR), after=_dst_is(r"{root}/processed/victim\.txt"), orphan=True, group_commit=True),
    "rename-ENOSPC-claim": Fault("rename", "ENOSPC", _src_is(r"{root}/unprocessed/victim\.txt")),
    "linkat-EIO-error-record": Fault("linkat", "EIO", _link_is(r"{root}/failed/\.victim\.txt\.error\.json"), failing=True, attempts=1),
    "renameat2-ENOSPC-finish": Fault("renameat2", "ENOSPC", _dst_is(r"{root}/processed/victim\.txt")),
    "renameat2-ENOSPC-quarantine": Fault("renameat2", "ENOSPC", _dst_is(r"{root}/failed/victim\.txt"), failing=True, attempts=1),
}  # fmt: skip

VICTIM = b"victim line one\nvictim line two\n"
BYSTANDER = b"bystander\n"


def _fault_root(tmp: Path, name: str, fault: Fault) -> Path:
    root = tmp / name
    drop(root, "victim.txt", VICTIM + (b"BAD\n" if fault.failing else b""))
    if fault.orphan:
        dead = root / "underprocess" / "deadhost-9-abcdef"
        dead.mkdir(parents=True)
        (dead / ".lock").write_text("deadhost pid 9\nvictim.txt")  # it died working on the victim
        os.rename(root / "unprocessed" / "victim.txt", dead / "victim.txt")
    drop(root, "zbystander.txt", BYSTANDER)
    return root


def _fault_config(tmp: Path, fault: Fault) -> Path:
    return write_config(
        tmp / "fault.toml",
        f'[retry]\nmax_attempts = {fault.attempts}\nbackoff = 0.05\n[[processors]]\ntype = "raise_on"\n'
        '[[processors]]\ntype = "line_counter"\n',
    )


def _nth(calls: list[Call], fault: Fault, root: Path) -> int:
    """Which invocation of the syscall (in the main thread, counting from 1) the fault must hit."""
    pid = main_pid(calls)
    n = 0
    armed = False
    for call in calls:
        if call.pid != pid:
            continue
        armed = armed or fault.after(call, root)
        if call.name == fault.syscall:
            n += 1
            if armed and fault.pick(call, root):
                return n
    raise AssertionError(f"the dry run made no matching {fault.syscall} call")


def _victim_events(stdout: str) -> list[str]:
    found = []
    for record in (r for r in _parse_records(stdout) if r.get("file") == "victim.txt"):
        found.append(record["event"])
    return found


def _parse_records(stdout: str) -> list[dict[str, object]]:
    import json

    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("fault_name", list(FAULTS))
def test_injected_fault_is_never_reported_as_success_and_loses_nothing(
    tmp_path: Path, fault_name: str
) -> None:
    """A failing fsync or rename: no success reported for that attempt, the file retried or quarantined, none lost."""
    require_tools("strace")
    fault = FAULTS[fault_name]
    config = _fault_config(tmp_path, fault)
    dry_root = _fault_root(tmp_path, "dry", fault)
    args = ["run", "--once", "--config", str(config), "--watch"]
    dry = run_traced([*args, str(dry_root)], tmp_path / "dry.txt", syscalls=SYSCALLS)
    assert dry.returncode == (1 if census(dry_root)["failed"] else 0), dry.stderr
    n = _nth(parse((tmp_path / "dry.txt").read_text()), fault, dry_root)

    root = _fault_root(tmp_path, "hit", fault)
    result = run_traced(
        [*args, str(root)],
        tmp_path / "hit.txt",
        syscalls=SYSCALLS,
        inject=f"{fault.syscall}:error={fault.error}:when={n}",
    )
    hit = [c for c in parse((tmp_path / "hit.txt").read_text()) if c.injected]
    assert len(hit) == 1, f"expected one injected fault, got {hit}"
    assert fault.pick(hit[0], root), f"the fault landed elsewhere: {hit[0]}"
    assert result.returncode == (1 if census(root)["failed"] else 0), (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    assert "Traceback" not in result.stdout + result.stderr
    done = _victim_events(result.stdout)
    final = "file failed" if fault.failing else "file processed"
    # The faulted attempt said so, and success (or the quarantine) is reported only after it, once.
    assert done.count(final) == 1, done
    if fault.group_commit:
        assert "fsync of finished files failed; will retry" in result.stdout
    else:
        before = set(done[: done.index(final)])
        assert before & {
            "attempt failed; will retry",
            "claim failed",
            "quarantine failed; will retry",
            "could not count the attempt; will retry",
            "cannot claim file; left in place and tried again at each scan",
            "output published but the input could not be finished; will retry",
        }, done
    found = census(root)
    state = "failed" if fault.failing else "processed"
    assert found[state] == sorted({"victim.txt"} | ({"zbystander.txt"} if state == "processed" else set()))
    assert found["unprocessed"] == found["underprocess"] == []
    assert (root / "output" / "zbystander_processed.txt").read_bytes() == numbered(BYSTANDER)
    if not fault.failing:
        assert (root / "output" / "victim_processed.txt").read_bytes() == numbered(VICTIM)
    assert leftovers(root) == []
