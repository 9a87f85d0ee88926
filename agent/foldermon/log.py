"""structlog setup: JSON lines on stdout for journald, a readable console on a terminal.

structlog (with its console renderer) is imported when the first logger is asked for, not
when the log is configured: a short command that never logs does not pay for it.
"""

from __future__ import annotations

import _thread
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import structlog

    Logger = structlog.typing.FilteringBoundLogger

Processor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]

_pending: list[Callable[[], None]] = []  # the configuration to apply before the next logger
# Held while the configuration is applied: a logger asked for by another thread meanwhile (an
# exporter thread reporting) must wait for it, or it would write with structlog's defaults.
# The interpreter's own lock type: `threading` is more than a short command needs to load.
_applying = _thread.allocate_lock()


def configure(
    level: str = "info",
    *,
    stream: TextIO | None = None,
    json: bool | None = None,
    extra: Sequence[Processor] = (),
) -> None:
    """Configure the log for the process; ``extra`` processors run before rendering. Applied
    when the next logger is asked for (:func:`get`)."""
    _pending[:] = [lambda: _apply(level, stream, json, tuple(extra))]


def _apply(level: str, stream: TextIO | None, json: bool | None, extra: Sequence[Processor]) -> None:
    import logging  # with structlog, on first use

    import structlog

    out = stream or sys.stdout
    use_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *extra,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_args: _LineLogger(stream),
        cache_logger_on_first_use=False,
    )


def get(**context: Any) -> Logger:
    """A logger bound to ``context``, writing as last configured."""
    import structlog  # see the module's docstring

    with _applying:
        if _pending:
            _pending.pop()()
    logger: Logger = structlog.get_logger().bind(**context)
    return logger


class _LineLogger:
    """Writes each record and its newline in one write, so that the records of processes sharing
    one stdout (the workers of ``run --workers``, journald's stream) never interleave, even
    unbuffered. Without a stream, to whatever ``sys.stdout`` is at the time, so a progress
    display can redirect it."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        out = self._stream or sys.stdout
        try:
            out.write(message + "\n")
            out.flush()
        except (OSError, ValueError):
            pass  # a full or broken log stream loses the record, never the work being logged

    debug = info = warning = warn = error = err = critical = exception = fatal = msg
