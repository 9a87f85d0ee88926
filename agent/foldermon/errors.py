"""Typed errors; the command line maps them to exit codes."""

from __future__ import annotations

import errno

# What a network filesystem answers while its server is unreachable, or after its client
# reconnected and dropped the descriptors that held locks.
UNREACHABLE_ERRNOS = frozenset(
    {errno.ENOTCONN, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETUNREACH}
    | {errno.EBADFD}
)


class BelowMinFreeError(OSError):
    """Writing an output took its folder below ``[guard] min_free``: a failure of the disk, not
    of the file (as a full disk), retried once there is room for at least ``needed`` bytes."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(errno.ENOSPC, message)
        self.needed = needed


class FoldermonError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(FoldermonError):
    """The configuration is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


class WatchUnavailableError(FoldermonError):
    """A watch backend cannot be used here; the message says why."""


class LifecycleError(FoldermonError):
    """A queue move failed (permissions, missing folder, full disk)."""


class InputRejectedError(FoldermonError):
    """An input is unsafe or unreadable and goes to ``failed/`` without processing."""


class OptionError(FoldermonError):
    """A processor option is invalid; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"option {key!r}: {message}")


class ProcessorError(FoldermonError):
    """A processor raised while handling a file's lines."""

    def __init__(self, processor_id: str, processor_type: str, line: int | None) -> None:
        self.processor_id = processor_id
        self.processor_type = processor_type
        self.line = line
        at = f" at line {line}" if line is not None else ""
        super().__init__(f"processor {processor_id!r} ({processor_type}) failed{at}")


class ProcessingTimeLimitError(FoldermonError):
    """A file took longer than ``[pipeline] max_file_seconds``; ``processor_id`` names the one running."""

    def __init__(self, limit: float, processor_id: str | None, processor_type: str | None) -> None:
        self.processor_id = processor_id
        self.processor_type = processor_type
        running = f" while processor {processor_id!r} ({processor_type}) was running" if processor_id else ""
        super().__init__(f"processing took longer than max_file_seconds ({limit:g} s){running}")


# What the error.type of a failed file names, besides an OSError's class: a processor's failure, a
# line or an input the agent refuses, the time limit, an entry refused when claimed (not a regular
# file, a name too long) and a file that ended the agent on each of its attempts. The agent's
# counters start each at 0 so that the first failure of each shows as an increase.
FAILURE_TYPES = (
    "ProcessorError",
    "LineTooLongError",
    "InputRejectedError",
    "ProcessingTimeLimitError",
    "InputRejected",
    "AttemptsExhausted",
)


# Exit codes (sysexits where one fits): `run --once` leaving files in a held root ends with
# EX_TEMPFAIL, a configuration error with EX_CONFIG.
EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_TEMPFAIL = 75
EX_CONFIG = 78
