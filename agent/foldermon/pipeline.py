"""A file's pipeline: its processors in order, fed batches of lines, counted per stage.

Build one per input file with :func:`build_pipeline`, so every processor's
state (counters, held lines, totals) starts fresh for that file. Counters and
timings are kept per batch, never per line, so the metrics a caller records
from :meth:`Pipeline.stats` cost nothing in the hot loop.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, cast

from foldermon.deadline import interrupts_agent
from foldermon.early import Lossy
from foldermon.errors import ProcessorError
from foldermon.processors import BUILTINS, Processor, ProcessorSpec, Registry

__all__ = [
    "LineResult",
    "Pipeline",
    "Stage",
    "StageStats",
    "Step",
    "build_pipeline",
    "may_hold",
    "step_result",
]

LineResult = Literal["passed", "changed", "dropped"]
"""What a stage did to the line(s) reaching it: unchanged, changed, or nothing out."""

Step = tuple[int, list[str], list[str]]
"""A stage's index, the lines that went into it and the lines that came out."""


class Stage(NamedTuple):
    """One configured processor of a pipeline."""

    id: str
    type: str
    processor: Processor


class StageStats(NamedTuple):
    """What one stage did so far for the current file."""

    id: str
    type: str
    lines_in: int
    lines_out: int
    seconds: float
    errors: int
    error_type: str | None = None  # of the last exception the processor raised


class _Counters:
    """The running totals behind one stage's :class:`StageStats`."""

    __slots__ = ("error_type", "errors", "lines_in", "lines_out", "seconds")

    def __init__(self) -> None:
        self.lines_in = 0
        self.lines_out = 0
        self.seconds = 0.0
        self.errors = 0
        self.error_type: str | None = None


class Pipeline:
    """Runs batches of lines through a tuple of stages, in order.

    With no stages, lines pass through unchanged. A processor that raises is
    counted on its stage and reported as
    :class:`~foldermon.errors.ProcessorError`, chained to the original
    exception.
    """

    __slots__ = ("_active", "_checked", "_clock", "_counters", "_fed", "stages")

    def __init__(self, stages: Sequence[Stage], clock: Callable[[], float] = time.perf_counter) -> None:
        """Run ``stages`` in order; ``clock`` times each processor call."""
        self.stages = tuple(stages)
        self._counters = tuple(_Counters() for _ in self.stages)
        # What plugin code returns is checked; the built-ins return lists of str.
        self._checked = tuple(stage.type not in BUILTINS for stage in self.stages)
        self._clock = clock
        self._fed = 0
        self._active = -1

    @property
    def lines_fed(self) -> int:
        """Number of input lines fed so far (the last fed line's 1-based number)."""
        return self._fed

    def feed(self, lines: list[str]) -> list[str]:
        """Return the output of every stage for one batch of input lines."""
        self._fed += len(lines)
        return self._run(lines, 0, None)

    def feed_exact(self, lines: list[str]) -> list[str]:
        """Like :meth:`feed`, one line at a time, so an error carries its line's number.

        Slower; a retry after a processor error in batch mode runs this way to name the line.
        """
        out: list[str] = []
        for line in lines:
            self._fed += 1
            out.extend(self._run([line], 0, self._fed))
        return out

    def feed_steps(self, line: str, steps: list[Step]) -> list[str]:
        """Run one line through the stages, appending to ``steps`` what went into and came out of
        each stage it reached (so after a ProcessorError ``steps`` holds the stages before it)."""
        self._fed += 1
        number = self._fed
        lines = [line]
        for index in range(len(self.stages)):
            if not lines:
                break
            out = self._step(index, lines, number)
            steps.append((index, lines, out))
            lines = out
        return lines

    def finish(self) -> list[str]:
        """Flush every stage at end of file and return what comes out at the end.

        Stage 0 is flushed first and its output runs through stages 1 onward;
        then stage 1 is flushed, and so on, so nothing a stage holds back
        skips the stages after it.
        """
        out: list[str] = []
        for index in range(len(self.stages)):
            out.extend(self._run(self._flush(index), index + 1, None))
        return out

    def active_stage(self) -> Stage | None:
        """The stage whose processor is running now (for a pipeline interrupted mid-call)."""
        return self.stages[self._active] if self._active >= 0 else None

    def stats(self) -> list[StageStats]:
        """Return each stage's counters so far, in stage order."""
        return [
            StageStats(stage.id, stage.type, c.lines_in, c.lines_out, c.seconds, c.errors, c.error_type)
            for stage, c in zip(self.stages, self._counters, strict=True)
        ]

    def _run(self, lines: list[str], first: int, number: int | None) -> list[str]:
        for index in range(first, len(self.stages)):
            if not lines:
                return lines  # an empty batch changes no processor's state
            lines = self._step(index, lines, number)
        return lines

    def _step(self, index: int, lines: list[str], number: int | None) -> list[str]:
        stage, counters = self.stages[index], self._counters[index]
        counters.lines_in += len(lines)
        self._active = index
        start = self._clock()
        # What plugin code prints goes to stderr: stdout carries the agent's records and reports.
        stdout, sys.stdout = sys.stdout, _PLUGIN_STDOUT
        try:
            out = stage.processor.process(lines)
            if self._checked[index]:
                out = _lines_of(out, "process")
        except BaseException as exc:  # plugin code: sys.exit() in it fails the file, not the agent
            if interrupts_agent(exc):
                raise
            counters.errors += 1
            counters.error_type = type(exc).__qualname__
            raise ProcessorError(stage.id, stage.type, number) from exc
        finally:
            sys.stdout = stdout
            counters.seconds += self._clock() - start
        self._active = -1
        counters.lines_out += len(out)
        return out

    def _flush(self, index: int) -> list[str]:
        stage, counters = self.stages[index], self._counters[index]
        self._active = index
        start = self._clock()
        stdout, sys.stdout = sys.stdout, _PLUGIN_STDOUT
        try:
            out = stage.processor.finish()
            if self._checked[index]:
                out = _lines_of(out, "finish")
        except BaseException as exc:  # plugin code: sys.exit() in it fails the file, not the agent
            if interrupts_agent(exc):
                raise
            counters.errors += 1
            counters.error_type = type(exc).__qualname__
            raise ProcessorError(stage.id, stage.type, None) from exc
        finally:
            sys.stdout = stdout
            counters.seconds += self._clock() - start
        self._active = -1
        counters.lines_out += len(out)
        return out


def _lines_of(out: Any, method: str) -> list[str]:
    """What a plugin's ``process`` or ``finish`` returned, as the list of str it must be (a
    tuple is taken as one); TypeError, which fails the file, for anything else."""
    if type(out) is tuple:
        out = list(out)
    if type(out) is not list:
        raise TypeError(f"{method}() returned {type(out).__name__}, not a list of str")
    if not set(map(type, out)) <= {str}:
        for item in out:  # str subclasses are str
            if not isinstance(item, str):
                raise TypeError(f"{method}() returned a list holding {type(item).__name__}, not only str")
    return cast(list[str], out)


# What plugin code prints goes to stderr, whose failures are not the file's.
_PLUGIN_STDOUT = Lossy(lambda: sys.stderr)


def may_hold(stage: Stage) -> bool:
    """Whether a stage's processor may emit later what it takes in now (a held line, a summary at
    the end of the file); only those that say ``emits_at_finish = False`` never do."""
    return getattr(stage.processor, "emits_at_finish", True) is not False


def step_result(lines: list[str], out: list[str]) -> LineResult:
    """What a stage did: ``passed`` the lines unchanged, ``changed`` them, or ``dropped`` them."""
    if not out:
        return "dropped"
    return "passed" if out == lines else "changed"


def build_pipeline(
    specs: Sequence[ProcessorSpec],
    registry: Registry,
    clock: Callable[[], float] = time.perf_counter,
) -> Pipeline:
    """Return a pipeline of fresh processors for ``specs`` (build one per file).

    Raises :class:`~foldermon.errors.OptionError` if a spec is invalid; check
    specs at config load with :meth:`Registry.check` to report every problem.
    """
    return Pipeline([Stage(s.id, s.type, registry.build(s)) for s in specs], clock)
