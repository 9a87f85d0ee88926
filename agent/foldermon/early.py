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

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_pending: list[int] = []
_recording: list[bool] = []  # non-empty while record() is in force


def _record(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def record() -> None:
    """Remember SIGTERM, SIGINT and SIGHUP from now on instead of acting on them."""
    _recording[:] = [True]
    for signum in SIGNALS:
        signal.signal(signum, _record)


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
