"""Processors used by the integration tests to make the agent slow, crash, raise or hang on cue."""

from __future__ import annotations

import builtins
import os
import signal
import time


class Sleepy:
    """Sleeps ``seconds`` per batch, so a test can act while a file is in flight."""

    def __init__(self, *, seconds: float = 0.5) -> None:
        self.seconds = seconds

    def process(self, lines: list[str]) -> list[str]:
        time.sleep(self.seconds)
        return lines

    def finish(self) -> list[str]:
        return []


class KillOn:
    """SIGKILLs its own process when a line contains ``marker`` (a poison file)."""

    def __init__(self, *, marker: str = "POISON") -> None:
        self.marker = marker

    def process(self, lines: list[str]) -> list[str]:
        if any(self.marker in line for line in lines):
            os.kill(os.getpid(), signal.SIGKILL)
        return lines

    def finish(self) -> list[str]:
        return []


class RaiseOn:
    """Raises ``exception`` (a built-in's name; ValueError by default) when a line contains
    ``marker``, or at the end of the file when ``at_finish``."""

    def __init__(
        self, *, marker: str = "BAD", exception: str = "ValueError", at_finish: bool = False
    ) -> None:
        self.marker = marker
        self.exception: type[BaseException] = getattr(builtins, exception)
        self.at_finish = at_finish
        self.seen = False

    def process(self, lines: list[str]) -> list[str]:
        for line in lines:
            if self.marker in line:
                self.seen = True
                if not self.at_finish:
                    raise self.exception(f"cannot handle line {line!r}")
        return lines

    def finish(self) -> list[str]:
        if self.seen and self.at_finish:
            raise self.exception("cannot finish")
        return []


class Hang:
    """Blocks forever when a line contains ``marker`` (for watchdog tests)."""

    def __init__(self, *, marker: str = "HANG") -> None:
        self.marker = marker

    def process(self, lines: list[str]) -> list[str]:
        if any(self.marker in line for line in lines):
            while True:
                time.sleep(3600)
        return lines

    def finish(self) -> list[str]:
        return []


class Stubborn:
    """Never returns when a line contains ``marker``, swallowing even the agent's interrupts."""

    def __init__(self, *, marker: str = "STUCK") -> None:
        self.marker = marker

    def process(self, lines: list[str]) -> list[str]:
        if any(self.marker in line for line in lines):
            while True:
                try:
                    time.sleep(3600)
                except BaseException:  # noqa: BLE001, S112 - the point: a plugin that ignores everything
                    continue
        return lines

    def finish(self) -> list[str]:
        return []


class Chatty:
    """Prints every batch it sees to stdout, as a careless plugin does."""

    def process(self, lines: list[str]) -> list[str]:
        print(f"chatty saw {len(lines)} lines")
        return lines

    def finish(self) -> list[str]:
        print("chatty done")
        return []


class FdWriter:
    """Writes to file descriptor 1 itself, as a C library might, around every batch."""

    def process(self, lines: list[str]) -> list[str]:
        os.write(1, f"fdwriter saw {len(lines)} lines\n".encode())
        return lines

    def finish(self) -> list[str]:
        os.write(1, b"fdwriter done\n")
        return []


class Returns:
    """Returns what a careless plugin might instead of a list of str when a line contains
    ``marker``: ``what`` is "none", "generator", "ints", "bytes", "none-inside" or "tuple"."""

    def __init__(self, *, what: str = "none", marker: str = "BAD") -> None:
        self.what = what
        self.marker = marker

    def process(self, lines: list[str]) -> object:
        if not any(self.marker in line for line in lines):
            return lines
        made: dict[str, object] = {
            "none": None,
            "generator": (line for line in lines),
            "ints": [len(line) for line in lines],
            "bytes": [line.encode() for line in lines],
            "none-inside": [*lines, None],
            "tuple": tuple(lines),
        }
        return made[self.what]

    def finish(self) -> list[str]:
        return []
