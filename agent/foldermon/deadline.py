"""Deadlines that interrupt a pipeline stuck inside one call (a backtracking regex, say).

Checking a deadline between read batches is not enough: one line can keep a processor busy
forever. A SIGALRM timer is armed for the nearest deadline; its handler raises in the main
thread, and C code such as the regex engine checks for signals while it runs, so the
processor is interrupted mid-call. Outside ``interruptible()`` the alarm only re-arms.
"""

from __future__ import annotations

import faulthandler
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from foldermon.early import CtrlC


class Interrupted(BaseException):
    """Raised inside the pipeline by a deadline; a BaseException so plugin code cannot swallow it."""


class DrainExpired(Interrupted):
    """The drain after SIGTERM ran out: the file is released, its attempt not counted."""


class FileTimeLimit(Interrupted):
    """The file took longer than ``[pipeline] max_file_seconds``: the attempt fails."""


def interrupts_agent(exc: BaseException) -> bool:
    """Whether ``exc``, coming out of plugin code, stops the agent's own work rather than failing
    that code: a deadline, or Ctrl-C in a one-shot verb (``early.CtrlC``; Python's own SIGINT
    handler where the console script did not install that one). Anything else plugin code
    raises (SystemExit from ``sys.exit``, GeneratorExit, a KeyboardInterrupt it raises itself,
    any other BaseException) is its failure."""
    if isinstance(exc, Interrupted | CtrlC):
        return True
    raised_by_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    return isinstance(exc, KeyboardInterrupt) and raised_by_sigint


# What does not let the interrupt through (a plugin that swallows it, a hung system call) ends
# the process this long after the deadline it overran: time for the release, the group commit
# and the telemetry flush after a drain.
EXIT_GRACE = 10.0


class Alarm:
    """The drain deadline and the per-file time limit, served by one SIGALRM timer; and, past
    either by EXIT_GRACE, the end of the process (faulthandler's timer, which needs no help
    from the code that is stuck)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, grace: float = EXIT_GRACE) -> None:
        self._clock = clock
        self._grace = grace
        self._drain_at: float | None = None
        self._file_at: float | None = None
        self._inside = False
        self._armed = False
        self._exit_at: dict[str, float] = {}  # drain | file -> when the process ends

    def install(self) -> None:
        signal.signal(signal.SIGALRM, self._on_alarm)

    def close(self) -> None:
        """Disarm the timers and give SIGALRM back its default action."""
        self._drain_at = self._file_at = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        self._armed = False
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        self._exit_at.clear()
        faulthandler.cancel_dump_traceback_later()

    def drain_by(self, at: float) -> None:
        """From now on a pipeline still running at ``at`` is interrupted with DrainExpired."""
        self._drain_at = at
        self._exit_at["drain"] = at + self._grace
        self._arm()
        self._arm_exit()

    @contextmanager
    def interruptible(self, limit: float) -> Iterator[None]:
        """Run the body under the drain deadline and, when ``limit`` > 0, a limit of that many seconds."""
        if self._drain_at is not None and self._clock() >= self._drain_at:
            raise DrainExpired
        self._file_at = self._clock() + limit if limit > 0 else None
        self._inside = True
        self._arm()
        try:
            yield
        finally:
            self._inside = False
            self._file_at = None
            self._arm()
            if self._exit_at.pop("file", None) is not None:
                self._arm_exit()

    def _arm_exit(self) -> None:
        if self._exit_at:
            delay = max(0.001, min(self._exit_at.values()) - self._clock())
            faulthandler.dump_traceback_later(delay, exit=True)
        else:
            faulthandler.cancel_dump_traceback_later()

    def _arm(self) -> None:
        due = [t for t in (self._drain_at, self._file_at) if t is not None]
        if not due and not self._armed:
            return  # the common case: no deadline, no system call
        self._armed = bool(due)
        delay = max(0.001, min(due) - self._clock()) if due else 0.0
        signal.setitimer(signal.ITIMER_REAL, delay)

    def _on_alarm(self, _signum: int, _frame: FrameType | None) -> None:
        now = self._clock()
        if self._inside and self._drain_at is not None and now >= self._drain_at:
            raise DrainExpired
        if self._inside and self._file_at is not None and now >= self._file_at:
            self._file_at = None
            # Armed only now, so that a file within its limit costs no timer: a processor that
            # swallows the interrupt ends the process EXIT_GRACE later.
            self._exit_at["file"] = now + self._grace
            self._arm_exit()
            raise FileTimeLimit
        if self._drain_at is not None and now >= self._drain_at:
            self._drain_at = None  # outside the pipeline the drain is checked by the loop
        self._arm()


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """``[pipeline] max_file_seconds`` in a one-shot verb as the agent applies it: a processor still
    running when it is spent is interrupted mid-call (FileTimeLimit), so ``process`` and
    ``explain`` never hang where the agent gives up."""
    if seconds <= 0:
        yield
        return
    alarm = Alarm()
    alarm.install()
    try:
        with alarm.interruptible(seconds):
            yield
    finally:
        alarm.close()
