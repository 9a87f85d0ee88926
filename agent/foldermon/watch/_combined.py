"""One watcher over both backends, so roots on local and network filesystems can be mixed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from foldermon.watch._base import FileEvent, WatchMode
from foldermon.watch.inotify import InotifyBackend
from foldermon.watch.poll import PollBackend

# Never wait less than this for due work, so a zero interval cannot turn into a busy loop.
_MIN_WAIT = 0.001


class CombinedWatcher:
    """Serves inotify roots and poll roots together; implements the ``Watcher`` protocol.

    ``poll`` blocks on the inotify fd (or, with no inotify roots, sleeps) no longer than
    the time to the next poll scan or other due work, and returns as soon as anything is ready.
    """

    def __init__(
        self,
        modes: tuple[WatchMode, ...],
        inotify: InotifyBackend | None,
        poller: PollBackend,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.modes = modes
        self._inotify = inotify
        self._poller = poller
        self._clock = clock
        self._sleep = sleep

    def poll(self, timeout: float) -> list[FileEvent]:
        """Block up to ``timeout`` seconds; return the names that look ready."""
        deadline = self._clock() + max(0.0, timeout)
        while True:
            now = self._clock()
            events = self._collect(now)
            if events or now >= deadline:
                return events
            wait = min(deadline - now, max(self._next_due() - now, _MIN_WAIT))
            if self._inotify is None:
                self._sleep(wait)
                continue
            events = self._inotify.wait(wait, self._clock)
            if events:
                return events

    def rescan(self, root: Path | None = None) -> None:
        """Scan ``root`` (or every root) in full at the next ``poll``."""
        if self._inotify is not None:
            self._inotify.rescan(root)
        self._poller.rescan(root)

    def close(self) -> None:
        """Release the inotify fd."""
        if self._inotify is not None:
            self._inotify.close()

    def _next_due(self) -> float:
        due = self._poller.next_due()
        if self._inotify is not None:
            due = min(due, self._inotify.next_due())
        return due

    def _collect(self, now: float) -> list[FileEvent]:
        events: list[FileEvent] = []
        if self._inotify is not None:
            events.extend(self._inotify.collect(now))
            for root, reason in self._inotify.take_lost():
                # Watches can run out after start (others took them): keep serving by polling.
                self._poller.add_root(root)
                self.modes = tuple(
                    WatchMode(root, "poll", reason) if mode.root == root else mode for mode in self.modes
                )
        events.extend(self._poller.collect(now))
        return events
