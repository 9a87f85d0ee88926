"""Polling backend: scan each ``unprocessed/`` every ``poll_interval``; files must settle."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from foldermon.watch._base import (
    UNPROCESSED,
    EntryInfo,
    FileEvent,
    NameRules,
    Scan,
    open_for_writing,
    scan_dir,
)


@dataclass(slots=True)
class _Track:
    """What the scans know of one name: its signature, since when, and when it was returned."""

    signature: tuple[int, int, int]
    since: float
    returned_at: float | None = None


class PollBackend:
    """Scans folders on a fixed cadence; works on any filesystem, network ones included.

    A regular file is returned once its (inode, size, mtime_ns) has not changed for ``settle``
    seconds of the clock, then not again while it stays unchanged, except every
    ``rescan_interval`` as a safety net for a consumer that dropped it. ``scan`` and the
    ``now`` passed to ``collect`` come from the caller, so tests drive it without sleeping.
    """

    def __init__(
        self,
        roots: Iterable[Path],
        rules: NameRules,
        *,
        poll_interval: float,
        settle: float,
        rescan_interval: float,
        scan: Scan = scan_dir,
    ) -> None:
        self._rules = rules
        self._poll_interval = poll_interval
        self._settle = settle
        self._rescan_interval = rescan_interval
        self._scan = scan
        self._tracks: dict[Path, dict[str, _Track]] = {}
        self._next_scan = -math.inf
        for root in roots:
            self.add_root(root)

    @property
    def roots(self) -> tuple[Path, ...]:
        """The roots this backend scans."""
        return tuple(self._tracks)

    def add_root(self, root: Path) -> None:
        """Start scanning ``root`` (at the next ``collect``)."""
        self._tracks.setdefault(root, {})
        self._next_scan = -math.inf

    def next_due(self) -> float:
        """Clock time of the next scan (never, with no roots)."""
        return self._next_scan if self._tracks else math.inf

    def rescan(self, root: Path | None = None) -> None:
        """Scan at the next ``collect`` and return every ready name again, even unchanged ones."""
        for key, tracks in self._tracks.items():
            if root is None or key == root:
                for track in tracks.values():
                    track.returned_at = None
        self._next_scan = -math.inf

    def collect(self, now: float) -> list[FileEvent]:
        """Scan every root if a scan is due; return the names that became ready."""
        if now < self._next_scan:
            return []
        self._next_scan = now + self._poll_interval
        events: list[FileEvent] = []
        for root, tracks in self._tracks.items():
            entries = self._scan(root / UNPROCESSED)
            ready = self._update(root / UNPROCESSED, tracks, entries, now)
            events.extend(FileEvent(root, name) for name in ready)
        return events

    def _update(
        self, folder: Path, tracks: dict[str, _Track], entries: Iterable[EntryInfo], now: float
    ) -> list[str]:
        listing = self._rules.split(list(entries))
        seen: dict[str, _Track] = {}
        ready: list[str] = []
        for entry, settled_needed in _with_flag(listing.ready, listing.settling):
            track = tracks.get(entry.name)
            if track is None or track.signature != entry.signature:
                track = _Track(entry.signature, now)
            seen[entry.name] = track
            if settled_needed and now - track.since < self._settle:
                continue
            if track.returned_at is None or now - track.returned_at >= self._rescan_interval:
                if settled_needed and open_for_writing(folder / entry.name):
                    track.since = now  # still open for writing, though unchanged: wait again
                    continue
                track.returned_at = now
                ready.append(entry.name)
        # Names that left the folder are forgotten, so memory follows the folder's size.
        tracks.clear()
        tracks.update(seen)
        return ready


def _with_flag(ready: Iterable[EntryInfo], settling: Iterable[EntryInfo]) -> Iterable[tuple[EntryInfo, bool]]:
    for entry in ready:
        yield entry, False
    for entry in settling:
        yield entry, True
