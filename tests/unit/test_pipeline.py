"""The pipeline: stage order, end-of-file flushing, per-stage counters, tracing, errors."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest

from foldermon.errors import OptionError, ProcessorError
from foldermon.pipeline import LineResult, Pipeline, Stage, StageStats, Step, build_pipeline, step_result
from foldermon.processors import BUILTINS, ProcessorSpec, Registry


class Boom:
    """Raises on any line containing "boom", and at finish if told to."""

    def __init__(self, *, on_finish: bool = False) -> None:
        self.on_finish = on_finish

    def process(self, lines: list[str]) -> list[str]:
        """Return the lines, or raise if one contains "boom"."""
        if any("boom" in s for s in lines):
            raise ValueError("boom found")
        return lines

    def finish(self) -> list[str]:
        """Return nothing, or raise if built with on_finish."""
        if self.on_finish:
            raise RuntimeError("cannot flush")
        return []


def registry() -> Registry:
    """Return the built-ins plus the failing test processor."""
    return Registry({**BUILTINS, "boom": Boom})


def pipeline(*stages: tuple[str, dict[str, Any]], clock: Any = None) -> Pipeline:
    """Build a pipeline whose stage ids are s0, s1, ..."""
    specs = [ProcessorSpec(kind, f"s{i}", opts) for i, (kind, opts) in enumerate(stages)]
    if clock is None:
        return build_pipeline(specs, registry())
    return build_pipeline(specs, registry(), clock)


def test_empty_pipeline_returns_input_unchanged() -> None:
    """With no stages, lines pass through as they are."""
    assert pipeline().feed(["a", "b"]) == ["a", "b"]
    assert pipeline().finish() == []


def test_stages_run_in_order() -> None:
    """Each stage receives the previous stage's output."""
    upper_first = pipeline(("uppercase", {}), ("filter", {"pattern": "A"}))
    filter_first = pipeline(("filter", {"pattern": "A"}), ("uppercase", {}))
    assert upper_first.feed(["a", "b"]) == ["A"]
    assert filter_first.feed(["a", "b"]) == []


def test_stages_carry_spec_ids_and_types() -> None:
    """Stages are named after their specs."""
    stages = pipeline(("uppercase", {}), ("strip", {})).stages
    assert [(s.id, s.type) for s in stages] == [("s0", "uppercase"), ("s1", "strip")]


def test_finish_feeds_earlier_flushes_through_later_stages() -> None:
    """A joiner's odd last line still goes through the counter after it."""
    p = pipeline(("line_joiner", {}), ("line_counter", {}))
    assert p.feed(["a", "b", "c"]) == ["[1] a | b"]
    assert p.finish() == ["[2] c"]


def test_finish_flushes_stages_in_order() -> None:
    """Stage 0 is flushed before stage 1, so stage 1's summary includes it."""
    p = pipeline(("line_joiner", {}), ("count_by", {"field": 0, "delimiter": "|"}))
    p.feed(["x", "y", "x"])
    assert p.finish() == ["x", "x: 2"]


def test_build_pipeline_gives_fresh_state_per_call() -> None:
    """Two pipelines from the same specs (two files) do not share counters."""
    pipeline(("line_counter", {})).feed(["a", "b"])
    assert pipeline(("line_counter", {})).feed(["c"]) == ["[1] c"]


def test_build_pipeline_rejects_bad_specs() -> None:
    """An invalid spec raises OptionError when the pipeline is built."""
    with pytest.raises(OptionError, match="unknown type"):
        pipeline(("nope", {}))


def test_counters_equal_real_lines_in_and_out_per_stage() -> None:
    """lines_in/lines_out per stage are the real numbers, finish output included."""
    p = pipeline(
        ("line_splitter", {}),
        ("filter", {"pattern": "x", "invert": True}),
        ("line_joiner", {}),
    )
    out = p.feed(["a,b,x", "c"]) + p.feed(["x,d,e"]) + p.finish()
    assert out == ["a | b", "c | d", "e"]
    got = [(s.id, s.type, s.lines_in, s.lines_out, s.errors) for s in p.stats()]
    assert got == [
        ("s0", "line_splitter", 3, 7, 0),
        ("s1", "filter", 7, 5, 0),
        ("s2", "line_joiner", 5, 3, 0),
    ]


def test_seconds_are_measured_once_per_batch() -> None:
    """The clock is read twice per stage per batch, never per line."""
    ticks = count()
    p = pipeline(("uppercase", {}), ("strip", {}), clock=lambda: float(next(ticks)))
    p.feed(["a"] * 100)
    p.feed(["b"] * 100)
    assert [s.seconds for s in p.stats()] == [2.0, 2.0]
    assert next(ticks) == 8


def test_stats_are_value_objects() -> None:
    """stats() returns StageStats snapshots."""
    p = pipeline(("uppercase", {}))
    p.feed(["a"])
    [stats] = p.stats()
    assert stats == StageStats("s0", "uppercase", 1, 1, stats.seconds, 0)


def test_empty_batch_reaches_no_stage() -> None:
    """Once a batch is empty, later stages are not called and count nothing."""
    p = pipeline(("filter", {"pattern": "z"}), ("uppercase", {}))
    assert p.feed(["a"]) == []
    assert [s.lines_in for s in p.stats()] == [1, 0]


def traced(p: Pipeline, line: str) -> tuple[list[str], list[tuple[int, LineResult]]]:
    """One line through ``p`` and what each stage it reached did to it."""
    steps: list[Step] = []
    out = p.feed_steps(line, steps)
    return out, [(index, step_result(before, after)) for index, before, after in steps]


def test_lines_fed_counts_input_lines() -> None:
    """lines_fed is the running number of input lines of the file."""
    p = pipeline(("uppercase", {}))
    p.feed(["a", "b"])
    traced(p, "c")
    assert p.lines_fed == 3


def test_feed_steps_reports_passed_changed_dropped() -> None:
    """Each stage reached reports what it did; stages after a drop are absent."""
    p = pipeline(("strip", {}), ("uppercase", {}), ("filter", {"pattern": "Q"}), ("lowercase", {}))
    assert traced(p, "abc") == ([], [(0, "passed"), (1, "changed"), (2, "dropped")])


def test_feed_steps_returns_output_of_all_stages() -> None:
    """A line that passes every stage comes out processed."""
    p = pipeline(("line_counter", {}), ("uppercase", {}))
    assert traced(p, "a") == (["[1] A"], [(0, "changed"), (1, "changed")])


def test_feed_steps_follows_split_lines_as_a_group() -> None:
    """After a split, the next stage's result covers all the parts."""
    p = pipeline(("line_splitter", {}), ("lowercase", {}))
    assert traced(p, "a,b") == (["a", "b"], [(0, "changed"), (1, "passed")])


def test_feed_steps_counts_like_feed() -> None:
    """Traced lines are counted on their stages like batched ones."""
    p = pipeline(("filter", {"pattern": "a"}))
    traced(p, "a")
    traced(p, "b")
    assert [(s.lines_in, s.lines_out) for s in p.stats()] == [(2, 1)]


def test_processor_error_in_feed_has_no_line_number() -> None:
    """Errors in batched feed carry line None and chain the original exception."""
    p = pipeline(("strip", {}), ("boom", {}))
    with pytest.raises(ProcessorError) as caught:
        p.feed(["a", "boom"])
    err = caught.value
    assert (err.processor_id, err.processor_type, err.line) == ("s1", "boom", None)
    assert isinstance(err.__cause__, ValueError)


def test_processor_error_in_feed_steps_has_the_line_number_and_keeps_the_steps_before() -> None:
    """feed_steps errors carry the 1-based line number within the file, and the steps hold what
    the stages before the failing one did (the failing line's span shows them)."""
    p = pipeline(("line_counter", {}), ("strip", {}), ("boom", {}))
    p.feed(["a", "b"])
    traced(p, "c")
    steps: list[Step] = []
    with pytest.raises(ProcessorError) as caught:
        p.feed_steps("boom", steps)
    assert caught.value.line == 4
    assert str(caught.value) == "processor 's2' (boom) failed at line 4"
    assert [(i, step_result(before, after)) for i, before, after in steps] == [(0, "changed"), (1, "passed")]


def test_feed_exact_gives_what_feed_gives_and_names_the_failing_line() -> None:
    """Line by line: the same output and counts as a batch, and an error carries its line number."""
    stages = (("line_counter", {"format": "{count}:{line}"}), ("line_joiner", {}), ("boom", {}))
    batched, exact = pipeline(*stages), pipeline(*stages)
    lines = ["a", "b", "c", "d", "e"]
    assert exact.feed_exact(lines) == batched.feed(lines) == ["1:a | 2:b", "3:c | 4:d"]
    assert exact.finish() == batched.finish() == ["5:e"]
    counts = [[(s.lines_in, s.lines_out, s.errors) for s in p.stats()] for p in (exact, batched)]
    assert counts[0] == counts[1] == [(5, 5, 0), (5, 3, 0), (3, 3, 0)]
    failing = pipeline(("strip", {}), ("boom", {}))
    failing.feed_exact(["a", "b"])
    with pytest.raises(ProcessorError) as caught:
        failing.feed_exact(["c", "d boom", "e"])
    assert caught.value.line == 4  # two lines before, then the second of this batch


def test_processor_error_is_counted_on_its_stage() -> None:
    """The failing stage's error counter goes up; the others' do not."""
    p = pipeline(("strip", {}), ("boom", {}))
    with pytest.raises(ProcessorError):
        p.feed(["boom"])
    assert [s.errors for s in p.stats()] == [0, 1]


def test_processor_error_in_finish_names_stage() -> None:
    """An exception from finish() is reported and counted like one from process()."""
    p = pipeline(("uppercase", {}), ("boom", {"on_finish": True}))
    with pytest.raises(ProcessorError) as caught:
        p.finish()
    assert (caught.value.processor_id, caught.value.line) == ("s1", None)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert [s.errors for s in p.stats()] == [0, 1]


def test_pipeline_can_be_built_from_stages_directly() -> None:
    """A Pipeline is a tuple of stages, whatever built their processors."""
    upper = registry().build(ProcessorSpec("uppercase", "u", {}))
    p = Pipeline([Stage("u", "uppercase", upper)])
    assert p.feed(["a"]) == ["A"]
    assert p.stages == (Stage("u", "uppercase", upper),)
