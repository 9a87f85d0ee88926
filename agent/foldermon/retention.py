"""Retention: removing processed inputs, outputs and failed inputs older than ``[retention]`` says.

Age is the time a file entered its folder (its ctime: the rename or link into the folder set it),
not the producer's mtime. A failed input goes with its error record; records left without an
input and the records kept in ``failed/.history/`` follow ``failed_max_age`` too. A name already
gone (another instance or host removed it) is fine. The agent runs retention in small steps
between files, a bounded number of entries at a time, so a folder of millions never stalls
processing; ``foldermon-agent gc`` runs one whole pass.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from foldermon import early
from foldermon.config import RetentionConfig
from foldermon.queue.fsio import fsync_dir
from foldermon.queue.layout import ERROR_SUFFIX, Layout, record_name
from foldermon.queue.requeue import HISTORY

if TYPE_CHECKING:
    from foldermon.log import Logger

FOLDERS = ("processed", "output", "failed")
# A pass starts again this long after the last one began, or sooner for short ages.
PASS_INTERVAL = 60.0


@dataclass(slots=True)
class Expired:
    """What a retention pass (or step) removed, per (root, folder), and the paths (for gc --dry-run)."""

    counts: Counter[tuple[Path, str]] = field(default_factory=Counter)
    paths: list[Path] = field(default_factory=list)

    def add(self, other: Expired) -> None:
        self.counts.update(other.counts)
        self.paths += other.paths


@dataclass(frozen=True, slots=True)
class _Job:
    root: Path
    folder: str  # processed | output | failed | history
    path: Path
    max_age: float


def _jobs(layout: Layout, config: RetentionConfig) -> list[_Job]:
    wanted = (
        ("processed", layout.processed, config.processed_max_age),
        ("output", layout.output_dir, config.output_max_age),
        ("failed", layout.failed, config.failed_max_age),
        ("history", layout.failed / HISTORY, config.failed_max_age),
    )
    return [_Job(layout.root, folder, path, age) for folder, path, age in wanted if age is not None]


def sweep(
    layout: Layout,
    config: RetentionConfig,
    *,
    dry_run: bool = False,
    now: float | None = None,
    report: Callable[[Path], object] | None = None,
) -> Expired:
    """One whole pass over a root's folders (``foldermon-agent gc``); ``report`` is told of each
    path as it goes, a stop signal held until it is (so a pass cut short still says all it did)."""
    expired = Expired()
    when = time.time() if now is None else now
    for job in _jobs(layout, config):
        entries = _entries(job.path)
        expired.add(_expire(job, entries, when, dry_run=dry_run, report=report))
    return expired


class Retention:
    """Runs retention in bounded steps between files, over every root, pass after pass."""

    def __init__(
        self,
        layouts: Callable[[], list[Layout]],
        config: RetentionConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._layouts = layouts
        self._config = config
        self._clock = clock
        self._work: list[tuple[_Job, Iterator[os.DirEntry[str]]]] = []
        self._next_pass = 0.0
        self.this_pass = Expired()

    @property
    def config(self) -> RetentionConfig:
        return self._config

    @config.setter
    def config(self, config: RetentionConfig) -> None:
        """New ages (a reload) take effect at once: the next pass starts with the next step."""
        if config != self._config:
            self._config = config
            self._next_pass = 0.0

    def step(self, budget: int = 256) -> Expired:
        """Look at up to ``budget`` entries and remove the expired ones among them."""
        expired = Expired()
        now = self._clock()
        if not self._work:
            if now < self._next_pass:
                return expired
            jobs = [job for la in self._layouts() for job in _jobs(la, self._config)]
            self._work = [(job, _entries(job.path)) for job in jobs]
            self._next_pass = now + min([PASS_INTERVAL, *(job.max_age / 4 for job in jobs)])
        while self._work and budget > 0:
            job, entries = self._work[0]
            chunk = [e for _, e in zip(range(budget), entries, strict=False)]
            budget -= len(chunk)
            expired.add(_expire(job, iter(chunk), now))
            if len(chunk) == 0 or budget > 0:
                self._work.pop(0)  # this folder is done for this pass
        self.this_pass.add(expired)
        return expired

    def step_reported(
        self,
        attributes: Mapping[Path, Mapping[str, str]],
        count: Callable[[int, dict[str, str]], None],
        log: Logger,
    ) -> None:
        """A step, with what it removed counted (``count``, under each root's ``attributes``)
        and, at the end of a pass, logged; an error is logged and the next step tries again."""
        try:
            expired = self.step()
        except OSError as exc:
            log.error("retention step failed; will try again", error=str(exc))
            return
        for (path, folder), n in expired.counts.items():
            count(n, {**attributes[path], "foldermon.folder": folder})
        done = self.pass_done()
        if done is not None:
            removed = {f"{p}:{folder}": n for (p, folder), n in done.counts.items()}
            log.info("retention removed old files", removed=removed)

    def pass_done(self) -> Expired | None:
        """What the pass that just ended removed (once, when it ends); None otherwise."""
        if self._work or not self.this_pass.counts:
            return None
        done, self.this_pass = self.this_pass, Expired()
        return done


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            yield from it
    except FileNotFoundError:
        return


def _expire(
    job: _Job,
    entries: Iterator[os.DirEntry[str]],
    now: float,
    *,
    dry_run: bool = False,
    report: Callable[[Path], object] | None = None,
) -> Expired:
    expired = Expired()
    cutoff = now - job.max_age

    def remove(path: Path) -> bool:
        gone = dry_run or _remove(job, path)
        if gone and report is not None:
            report(path)
        return gone

    for entry in entries:
        path = Path(entry.path)
        if not _removable(job, entry.name, path):
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_ctime >= cutoff or stat.S_ISDIR(st.st_mode):
            continue
        if remove(path) if report is None else early.blocked_while(partial(remove, path)):
            expired.paths.append(path)
            expired.counts[job.root, job.folder] += 1
    if expired.counts and not dry_run:
        fsync_dir(job.path)  # the removals are durable
    return expired


def _removable(job: _Job, name: str, path: Path) -> bool:
    """Inputs and outputs (non-dot names); in failed/, also records left without their input."""
    if job.folder == "history":
        return name.endswith(ERROR_SUFFIX)
    if not name.startswith("."):
        return True
    if job.folder == "failed" and name.endswith(ERROR_SUFFIX):
        return not os.path.lexists(path.with_name(name[1 : -len(ERROR_SUFFIX)]))
    return False


def _remove(job: _Job, path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False  # removed meanwhile by another instance or host
    if job.folder == "failed" and not path.name.startswith("."):
        path.with_name(record_name(path.name)).unlink(missing_ok=True)  # its record goes with it
    return True
