"""A model-based test of the queue: random interleavings of instances on real roots, invariants after each step.

Several instances serve two roots that share one output folder, under an output template that
maps ``a.txt`` and ``a.csv`` to one name. Inputs reuse names (``x`` and ``x.error.json`` among
them) and each carries unique bytes, so every check reads the folders themselves: where each
input is, which outputs exist and what they hold.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from foldermon.queue.claims import Claim
from foldermon.queue.instance import Instance
from foldermon.queue.layout import LOCK_NAME, Layout, record_name
from foldermon.queue.lifecycle import Queue
from foldermon.queue.output import OutputTarget, publishing_name, temp_owner
from foldermon.queue.records import read_record
from foldermon.queue.requeue import requeue

LONG = os.environ.get("FOLDERMON_LONG") == "1"
NAMES = ("a.txt", "a.csv", "x", "x.error.json")
TEMPLATE = "{stem}.out"


def transform(data: bytes) -> bytes:
    return b"OUT:" + data


@dataclass
class Agent:
    """One live instance: its queue and what it holds (claims, published outputs)."""

    queue: Queue
    claims: dict[str, Claim] = field(default_factory=dict)
    targets: dict[str, OutputTarget] = field(default_factory=dict)  # produced into a temp output
    published: dict[str, OutputTarget] = field(default_factory=dict)


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="queue-model-"))
        output = self.base / "out"
        self.layouts = [Layout.for_root(self.base / f"r{i}", output) for i in (1, 2)]
        for layout in self.layouts:
            layout.create()
        self.agents: list[Agent] = []
        self.dead: list[tuple[int, str]] = []  # (root index, instance id) of crashed instances
        self.serial = 0
        self.tokens: dict[bytes, int] = {}  # input bytes -> root index, for inputs that must exist
        self.outputs: dict[str, bytes] = {}  # output name -> content once published

    def teardown(self) -> None:
        for agent in self.agents:
            agent.queue.instance.close()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- rules ------------------------------------------------------------------------------

    @initialize()
    def start_three(self) -> None:
        """Two instances on the first root and one on the second, all writing to one output folder."""
        for root in (0, 0, 1):
            self.start(root)

    @precondition(lambda self: len(self.agents) < 3)
    @rule(root=st.integers(0, 1))
    def start(self, root: int) -> None:
        self.serial += 1
        instance = Instance(self.layouts[root], f"host-{self.serial}-{self.serial:06x}")
        queue = Queue(self.layouts[root], instance, output_name=TEMPLATE, max_attempts=2)
        self.agents.append(Agent(queue))
        queue.recover()

    @precondition(lambda self: self._free_names())
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """A producer renames a new file in, under a name not waiting there now."""
        root, name = data.draw(st.sampled_from(self._free_names()))
        self.serial += 1
        content = b"input %d\n" % self.serial
        staged = self.base / "staged"
        staged.write_bytes(content)
        os.rename(staged, self.layouts[root].unprocessed / name)
        self.tokens[content] = root

    @precondition(lambda self: any(_names(a.queue.layout.unprocessed) for a in self.agents))
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        agent = data.draw(st.sampled_from([a for a in self.agents if _names(a.queue.layout.unprocessed)]))
        waiting = _names(agent.queue.layout.unprocessed)
        names = data.draw(st.lists(st.sampled_from(waiting), unique=True, min_size=1))
        for result in agent.queue.claim_batch(names):
            if isinstance(result, Claim):
                agent.claims[result.name] = result

    @precondition(lambda self: any(set(a.claims) - set(a.targets) for a in self.agents))
    @rule(data=st.data())
    def produce(self, data: st.DataObject) -> None:
        """Run the pipeline into the temp output (its final name is chosen, not yet taken)."""
        agent, name = self._pick(data, lambda a, n: n not in a.targets)
        claim = agent.claims[name]
        target = agent.queue.output_target(claim)
        target.tmp.write_bytes(transform(claim.path.read_bytes()))
        agent.targets[name] = target

    @precondition(lambda self: any(set(a.targets) - set(a.published) for a in self.agents))
    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        agent, name = self._pick(data, lambda a, n: n in a.targets and n not in a.published)
        final = agent.targets[name].publish()
        assert final.name not in self.outputs, f"{final.name} was published twice"
        self.outputs[final.name] = final.read_bytes()
        agent.published[name] = agent.targets[name]

    @precondition(lambda self: any(a.published for a in self.agents))
    @rule(data=st.data(), sync=st.booleans())
    def finish(self, data: st.DataObject, sync: bool) -> None:
        agent, name = self._pick(data, lambda a, n: n in a.published)
        del agent.targets[name]
        agent.queue.finish(agent.claims.pop(name), agent.published.pop(name), sync=sync)

    @precondition(lambda self: any(a.queue._markers for a in self.agents))
    @rule()
    def group_commit(self) -> None:
        for agent in self.agents:
            agent.queue.sync()

    @precondition(lambda self: any(set(a.claims) - set(a.published) for a in self.agents))
    @rule(data=st.data(), release=st.booleans())
    def fail_or_release(self, data: st.DataObject, release: bool) -> None:
        """A failed attempt (its temp output removed, as the agent does), then quarantine or release."""
        agent, name = self._pick(data, lambda a, n: n not in a.published)
        target = agent.targets.pop(name, None)
        if target is not None:
            target.tmp.unlink()
        claim = agent.claims.pop(name)
        if release:
            agent.queue.release(claim)
        else:
            agent.queue.fail(claim, {"error_type": "ValueError", "message": "model"})

    @precondition(lambda self: self.agents)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """The process dies: its lock goes, nothing is cleaned up (and unsynced finishes may stay)."""
        agent = data.draw(st.sampled_from(self.agents))
        self.agents.remove(agent)
        instance = agent.queue.instance
        assert instance._lock_fd is not None
        os.close(instance._lock_fd)
        instance._lock_fd = None
        self.dead.append((self.layouts.index(agent.queue.layout), instance.id))

    @precondition(lambda self: self._recoverable())
    @rule(data=st.data(), sweep=st.booleans())
    def recover(self, data: st.DataObject, sweep: bool) -> None:
        agent = data.draw(st.sampled_from(self._recoverable()))
        report = agent.queue.recover(sweep_temps=sweep)
        assert report.errors == []
        # Every instance of this root that died is gone now, with its claim folder and temp outputs.
        root = self.layouts.index(agent.queue.layout)
        output = agent.queue.layout.output_dir
        for dead in [d for index, d in self.dead if index == root]:
            assert not os.path.lexists(agent.queue.layout.underprocess / dead)
            prefix = f".foldermon-{dead}-{agent.queue.root_tag}-"
            assert not [n for n in os.listdir(output) if n.startswith(prefix)], f"temps of {dead} left"
            self.dead.remove((root, dead))

    @precondition(lambda self: any(_names(layout.processed) for layout in self.layouts))
    @rule(data=st.data())
    def prune_processed(self, data: st.DataObject) -> None:
        """The operator deletes a processed input (its output stays)."""
        layout = data.draw(st.sampled_from([la for la in self.layouts if _names(la.processed)]))
        path = layout.processed / data.draw(st.sampled_from(_names(layout.processed)))
        del self.tokens[path.read_bytes()]
        path.unlink()

    @precondition(lambda self: any(_names(layout.failed) for layout in self.layouts))
    @rule(data=st.data())
    def retry_all(self, data: st.DataObject) -> None:
        requeue(data.draw(st.sampled_from([la for la in self.layouts if _names(la.failed)])), None)

    def _free_names(self) -> list[tuple[int, str]]:
        return [
            (root, name)
            for root, layout in enumerate(self.layouts)
            for name in NAMES
            if not os.path.lexists(layout.unprocessed / name)
        ]

    def _recoverable(self) -> list[Agent]:
        """Live instances of a root where an instance died and was not recovered yet."""
        roots = {index for index, _ in self.dead}
        return [a for a in self.agents if self.layouts.index(a.queue.layout) in roots]

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def every_input_is_in_exactly_one_queue_folder(self) -> None:
        found: dict[bytes, list[str]] = {}
        for index, layout in enumerate(self.layouts):
            for path in _inputs(layout):
                found.setdefault(path.read_bytes(), []).append(f"r{index + 1}:{path}")
        for data, root in self.tokens.items():
            places = found.get(data, [])
            assert len(places) == 1, f"{data!r} of r{root + 1} is in {places}"
        assert set(found) <= set(self.tokens), f"unknown inputs: {set(found) - set(self.tokens)}"

    @invariant()
    def no_published_output_ever_changes(self) -> None:
        folder = self.layouts[0].output_dir
        for name, content in self.outputs.items():
            assert (folder / name).read_bytes() == content, f"output {name} was replaced"

    @invariant()
    def no_input_has_two_outputs_and_every_processed_one_has_one(self) -> None:
        folder = self.layouts[0].output_dir
        outputs = [(folder / n).read_bytes() for n in os.listdir(folder) if not n.startswith(".")]
        assert len(outputs) == len(set(outputs)), "an input was given two outputs"
        for layout in self.layouts:
            for name in _names(layout.processed):
                expected = transform((layout.processed / name).read_bytes())
                assert expected in outputs, f"processed {name} has no output"

    @invariant()
    def failed_inputs_have_their_own_records(self) -> None:
        for layout in self.layouts:
            for name in _names(layout.failed):
                assert read_record(layout.failed, name).get("failed_name") == name
                assert (layout.failed / record_name(name)).is_file()

    @invariant()
    def dead_instances_leave_nothing_once_recovered(self) -> None:
        """After a live instance of a root recovers, its dead instances' folders and temps are gone."""
        live_ids = {a.queue.instance.id for a in self.agents}
        folder = self.layouts[0].output_dir
        for name in os.listdir(folder):
            owner = temp_owner(name)
            if name.startswith(".") and owner is None:
                pytest.fail(f"unknown dotfile {name} in the output folder")
            if name.endswith(".pub.tmp"):
                assert owner in live_ids, f"publishing name {name} left by a dead instance"
        for agent in self.agents:
            for claim_name, target in agent.published.items():
                assert target.committed(), f"{claim_name}: published but not proven"
                assert not os.path.lexists(publishing_name(target.tmp))

    def _pick(self, data: st.DataObject, wanted: Callable[[Agent, str], bool]) -> tuple[Agent, str]:
        pairs = [
            (agent, name) for agent in self.agents for name in sorted(agent.claims) if wanted(agent, name)
        ]
        return data.draw(st.sampled_from(pairs))


def _names(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _inputs(layout: Layout) -> list[Path]:
    paths = [layout.unprocessed / n for n in _names(layout.unprocessed)]
    paths += [layout.processed / n for n in _names(layout.processed)]
    paths += [layout.failed / n for n in _names(layout.failed)]
    for entry in os.listdir(layout.underprocess):
        folder = layout.underprocess / entry
        if folder.is_dir():
            paths += [folder / n for n in os.listdir(folder) if not n.startswith(".") and n != LOCK_NAME]
    return paths


QueueModel.TestCase.settings = settings(
    max_examples=2000 if LONG else 200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_queue_model = QueueModel.TestCase
