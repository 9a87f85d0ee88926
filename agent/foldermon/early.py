"""Signals that arrive before the agent has installed its handlers.

The console script installs ``record`` first thing, before the heavy imports, so a SIGTERM or
SIGHUP in the first instants of a start is remembered instead of killing the process: the
agent applies it once its own handlers are in place (``take``); other commands put the
default actions back and have it delivered again (``restore``).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

TYPE_CHECKING = False  # typing itself is not loaded this early: it costs a few ms at every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_pending: list[int] = []
_recording: list[bool] = []  # non-empty while record() is in force


def _record(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def record() -> None:
    """Remember SIGTERM, SIGINT and SIGHUP from now on instead of acting on them. A worker is
    started with them blocked (``blocked_while``): those that came meanwhile arrive now."""
    _recording[:] = [True]
    for signum in SIGNALS:
        signal.signal(signum, _record)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def blocked_while(call: Callable[[], _T]) -> _T:
    """``call()`` with SIGTERM, SIGINT and SIGHUP held back in this thread, and so in a process
    it starts until that one's ``record`` (a signal sent to the whole process group while a
    worker's interpreter starts would kill it); here they arrive when it returns."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        return call()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def take() -> list[int]:
    """The signals recorded so far (the caller's handlers are installed by now)."""
    taken = list(_pending)
    _pending.clear()
    return taken


class CtrlC(KeyboardInterrupt):
    """Ctrl-C in a one-shot verb: raised by the SIGINT handler ``restore`` installs, so it is
    told apart from a KeyboardInterrupt that plugin code raises itself (that one fails the file)."""


def _ctrl_c(_signum: int, _frame: FrameType | None) -> None:
    raise CtrlC


def restore() -> None:
    """Give the signals their default actions back and deliver any that came meanwhile."""
    if not _recording:
        return
    _recording.clear()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, _ctrl_c)
    for signum in take():
        os.kill(os.getpid(), signum)
