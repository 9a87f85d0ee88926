"""Signals that arrive before the agent has installed its handlers.

The console script installs ``record`` first thing, before the heavy imports, so a SIGTERM or
SIGHUP in the first instants of a start is remembered instead of killing the process: the
agent applies it once its own handlers are in place (``take``); other commands stop on it,
cleaning up first, and have it delivered again (``restore``).
"""

from __future__ import annotations

import io
import os
import signal
from types import FrameType

TYPE_CHECKING = False  # typing itself is not loaded this early: it costs a few ms at every start
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO, TypeVar

    _T = TypeVar("_T")

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Started with stdout closed (the console script put /dev/null there): only a verb that writes
# nothing to stdout (`process --output FILE`) may run.
stdout_closed = False
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
    """SIGINT (Ctrl-C), SIGTERM or SIGHUP in a one-shot verb, raised by the handler ``restore``
    installs: the verb stops as the signal asks, after its clean-up (a temp output removed), and
    exits with 128 + ``signum``. Told apart from a KeyboardInterrupt that plugin code raises
    itself (that one fails the file)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_verb(signum: int, _frame: FrameType | None) -> None:
    raise CtrlC(signum)


def restore() -> None:
    """For the one-shot verbs: SIGTERM, SIGINT and SIGHUP stop the verb (``CtrlC``), and any
    that came meanwhile is delivered now."""
    if not _recording:
        return
    _recording.clear()
    for stop in SIGNALS:
        signal.signal(stop, _stop_verb)
    for signum in take():
        os.kill(os.getpid(), signum)


class Lossy(io.TextIOBase):
    """Text for a stream whose failures (full, a broken pipe, closed) lose the text, never the
    work: the agent's stderr, and what plugin code prints (sent to stderr). ``target`` gives
    the stream at each write."""

    def __init__(self, target: Callable[[], TextIO]) -> None:
        self._target = target

    def write(self, text: str) -> int:
        try:  # noqa: SIM105 - contextlib is not loaded this early
            self._target().write(text)
        except (OSError, ValueError):
            pass
        return len(text)

    def flush(self) -> None:
        try:  # noqa: SIM105
            self._target().flush()
        except (OSError, ValueError):
            pass

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._target().fileno()

    def isatty(self) -> bool:
        try:
            return self._target().isatty()
        except (OSError, ValueError):
            return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._target().encoding


class Reported(Lossy):
    """A verb's stdout: a write that fails says that it is stdout that failed (what the verb did
    before it is done). A broken pipe stays what it is (the verb ends quietly, as ``cat``)."""

    def write(self, text: str) -> int:
        return _on_stdout(lambda: self._target().write(text))

    def flush(self) -> None:
        _on_stdout(self._target().flush)


def _on_stdout(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write to standard output: {exc.strerror or exc}") from exc
