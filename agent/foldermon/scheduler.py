"""Scheduling: which name is claimed next, and whether anything is.

Names wait in ``Pending`` in the configured order (arrival, oldest, name) after their priority
(the index of the first ``[watch] priority`` glob they match); ``Retries`` holds claimed files
waiting for another attempt; ``Holds`` says which roots may claim and run now (a manual pause
marker in the root, or too little free disk).
"""

from __future__ import annotations

import datetime
import getpass
import heapq
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from foldermon.configcheck import parse_min_free
from foldermon.errors import BelowMinFreeError
from foldermon.queue.fsio import fsync_dir, write_new
from foldermon.queue.layout import Layout
from foldermon.watch import lstat_info

if TYPE_CHECKING:
    from foldermon.log import Logger

ORDERS = ("arrival", "oldest", "name")
PAUSE_NAME = ".foldermon-paused"


class Pending:
    """Names to claim, each once, taken in the order asked for."""

    def __init__(self, order: str = "arrival", priority: tuple[str, ...] = ()) -> None:
        self._order = order
        self._priority = priority
        self._keys: dict[tuple[int, str], tuple[Any, ...]] = {}
        self._heap: list[tuple[tuple[Any, ...], int, str]] = []
        self._folders: dict[int, Path] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: tuple[int, str]) -> bool:
        return key in self._keys

    def add(self, root: int, name: str, folder: Path) -> bool:
        """Queue ``name`` of root number ``root`` (found in ``folder``); False when already queued."""
        if (root, name) in self._keys:
            return False
        self._folders[root] = folder
        self._seq += 1
        rank = next(
            (i for i, glob in enumerate(self._priority) if fnmatchcase(name, glob)), len(self._priority)
        )
        if self._order == "name":
            key: tuple[Any, ...] = (rank, name, self._seq)
        elif self._order == "oldest":
            key = (rank, _entered(folder / name), self._seq)
        else:
            key = (rank, self._seq)
        self._keys[(root, name)] = key
        heapq.heappush(self._heap, (key, root, name))
        return True

    def take(
        self,
        allowed: Callable[[int], bool],
        size: Callable[[int, str], int],
        *,
        files: int,
        total_bytes: int,
        fits: Callable[[int, str, int, bool], bool] | None = None,
    ) -> tuple[int, list[str]] | None:
        """The next names of one root that may claim now: up to ``files`` names or ``total_bytes``
        of input, whichever comes first; None when no waiting name may be claimed. ``fits(root,
        name, bytes, first)``: whether the batch may grow to ``bytes`` of input with ``name``
        (the disk guard's room); a name that does not fit stays first in line and ends the batch."""
        chosen: list[str] = []
        held: list[tuple[tuple[Any, ...], int, str]] = []
        root = -1
        used = 0
        while self._heap and len(chosen) < files and used < total_bytes:
            entry = heapq.heappop(self._heap)
            key, index, name = entry
            if self._keys.get((index, name)) != key:
                continue  # taken or queued again since
            if not allowed(index) or (root >= 0 and index != root):
                held.append(entry)
                continue
            grown = used + size(index, name)
            if fits is not None and not fits(index, name, grown, not chosen):
                held.append(entry)
                if chosen:
                    break
                continue  # that root is held now: another may still claim
            root = index
            del self._keys[(index, name)]
            chosen.append(name)
            used = grown
        for entry in held:
            heapq.heappush(self._heap, entry)
        return (root, chosen) if chosen else None

    def ready(self, allowed: Callable[[int], bool]) -> bool:
        """Whether some waiting name may be claimed now."""
        return any(allowed(index) for index, _ in self._keys)

    def reorder(self, order: str, priority: tuple[str, ...]) -> None:
        """Take the waiting names in a new order (after a reload)."""
        if (order, priority) == (self._order, self._priority):
            return
        waiting = sorted(self._keys.items(), key=lambda item: item[1])
        self._order, self._priority = order, priority
        self._keys.clear()
        self._heap.clear()
        for (root, name), _key in waiting:
            self.add(root, name, self._folders[root])

    def drop_root(self, root: int) -> None:
        for key in [k for k in self._keys if k[0] == root]:
            del self._keys[key]


def _entered(path: Path) -> int:
    """When a file entered its folder: the rename into it set its ctime."""
    try:
        return os.lstat(path).st_ctime_ns
    except OSError:
        return 0


class _Due(Protocol):
    @property
    def due(self) -> float: ...


T = TypeVar("T", bound=_Due)


class Retries(Generic[T]):
    """Claimed files waiting for another attempt, soonest first."""

    def __init__(self) -> None:
        self._items: list[T] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))

    def add(self, item: T) -> None:
        self._items.append(item)
        self._items.sort(key=lambda r: r.due)

    def next_due(self, allowed: Callable[[T], bool]) -> float | None:
        return min((r.due for r in self._items if allowed(r)), default=None)

    def pop_due(self, now: float, allowed: Callable[[T], bool]) -> T | None:
        for item in self._items:
            if item.due <= now and allowed(item):
                self._items.remove(item)
                return item
        return None

    def keep(self, wanted: Callable[[T], bool]) -> None:
        self._items = [r for r in self._items if wanted(r)]

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a root neither claims nor runs retries now."""

    kind: str  # "manual" | "low_disk"
    reason: str


@dataclass(frozen=True, slots=True)
class DiskFree:
    folder: str  # "queue" | "output"
    path: Path
    free: int
    size: int


class Holds:
    """Which roots (by number) may neither claim nor run retries now, and why: a manual pause
    marker in the root, whoever put it there, or too little free disk, counting the output of
    the next file waiting (so a batch never takes the output folder below ``min_free``). Said in
    the log when it changes."""

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._holds: dict[int, Hold] = {}
        # The file that did not fit, as it was then (inode, size, mtime), and its output.
        self._next: dict[int, tuple[Path, tuple[int, int, int], int]] = {}
        self.disk: list[tuple[int, DiskFree]] = []  # free space per root number, last looked at
        self._unread: set[int] = set()  # roots whose free space could not be read (said once)

    def __contains__(self, index: int) -> bool:
        return index in self._holds

    def get(self, index: int) -> Hold | None:
        return self._holds.get(index)

    def items(self) -> list[tuple[int, Hold]]:
        return list(self._holds.items())

    def update(self, layouts: Sequence[Layout], min_free: str) -> None:
        """Look at each root's pause marker and free disk again."""
        disk: list[tuple[int, DiskFree]] = []
        for index, layout in enumerate(layouts):
            hold = None
            paused = read_pause(layout)
            if paused is not None:
                hold = Hold(
                    "manual", f"paused by {paused.get('by', 'someone')} since {paused.get('since_iso', '?')}"
                )
            try:
                free = disk_free(layout)
                self._unread.discard(index)
            except OSError as exc:
                free = []
                if min_free and index not in self._unread:
                    self._unread.add(index)
                    self._log.warning(
                        "cannot read free disk space; [guard] min_free is not applied until it can be",
                        root=str(layout.root),
                        error=str(exc),
                    )
            disk += [(index, d) for d in free]
            low = low_disk(free, min_free, self._waiting_output(index))
            if hold is None and low is not None:
                hold = Hold("low_disk", low)
            self._set(index, layout, hold)
        self.disk = disk

    def room(self, index: int, layout: Layout, min_free: str) -> tuple[int | None, int]:
        """Bytes of output the root may write before its output folder falls below ``min_free``,
        read now (a batch must not wait for the next look; None without a guard), and the most
        it could write with its output filesystem empty. A root already below it is held at once."""
        parsed = parse_min_free(min_free) if min_free else None
        if parsed is None:
            return None, 0
        try:
            free = disk_free(layout)
        except OSError:
            return None, 0
        self._next.pop(index, None)
        output = [d for d in free if d.folder == "output"]
        most = min(d.size - _needed(parsed, d) for d in output)
        low = low_disk(free, min_free)
        if low is not None:
            self._set(index, layout, Hold("low_disk", low))
            return -1, most  # not even an empty file
        return min(d.free - _needed(parsed, d) for d in output), most

    def no_room(self, index: int, layout: Layout, min_free: str, path: Path, output: int) -> None:
        """Hold the root: the output of ``path`` (about ``output`` bytes) would take its output
        folder below ``min_free``; claiming resumes once it fits, or once that file is gone."""
        try:
            info = lstat_info(path)
        except OSError:
            info = None
        if info is None:
            return  # gone already: the next batch weighs the next file
        self._next[index] = (path, info.signature, output)
        try:
            low = low_disk(disk_free(layout), min_free, output)
        except OSError:
            low = None
        self._set(index, layout, Hold("low_disk", low or f"low disk: no room for {path.name}"))

    def _waiting_output(self, index: int) -> int:
        """The output of the file that did not fit, while it still waits as it was."""
        if index not in self._next:
            return 0
        path, signature, output = self._next[index]
        try:
            info = lstat_info(path)
        except OSError:
            info = None
        same = info is not None and info.signature == signature
        if not same:
            del self._next[index]  # taken, removed, replaced or changed: weighed afresh
            return 0
        return output

    def weigh_again(self) -> None:
        """Forget the files that did not fit (after a reload: the rules may exclude them now)."""
        self._next.clear()

    def _set(self, index: int, layout: Layout, hold: Hold | None) -> None:
        before = self._holds.get(index)
        if hold == before:
            return
        log = self._log.bind(root=str(layout.root))
        if hold is None:
            del self._holds[index]
            log.info("claiming resumed", was=before.reason if before else None)
        else:
            self._holds[index] = hold
            log.warning("claiming held; files wait in unprocessed/", hold=hold.kind, reason=hold.reason)

    def say_held(self, layouts: Sequence[Layout]) -> None:
        """Warn of the roots whose files are left waiting (at the end of ``--once``)."""
        for index, hold in self._holds.items():
            self._log.warning(
                "files left waiting in a held root", root=str(layouts[index].root), reason=hold.reason
            )


def disk_free(layout: Layout) -> list[DiskFree]:
    """Free space for the queue folders' filesystem and the output folder's."""
    found = []
    for folder, path in (("queue", layout.root), ("output", layout.output_dir)):
        where = path
        while not where.exists() and where != where.parent:  # not made yet: where it will be
            where = where.parent
        st = os.statvfs(where)
        found.append(DiskFree(folder, path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
    return found


def low_disk(free: list[DiskFree], min_free: str, output: int = 0) -> str | None:
    """Why there is too little free space for ``[guard] min_free``, or None; ``output``: bytes
    the next file will write to the output folder, which must fit above it."""
    if not min_free:
        return None
    parsed = parse_min_free(min_free)
    if parsed is None:
        return None
    for d in free:
        extra = output if d.folder == "output" else 0
        if d.free - extra < _needed(parsed, d):
            nearly = f" and the next file's output needs about {_human(extra)}" if extra else ""
            return (
                f"low disk: {_human(d.free)} free for the {d.folder} folder {d.path}{nearly} "
                f"(min_free {min_free}); claiming resumes once there is more"
            )
    return None


def room_guard(folder: Path, min_free: str) -> Callable[[int], None] | None:
    """What an output writer calls with the bytes it wrote so far: raises BelowMinFreeError once
    ``folder`` has less than ``min_free`` free (for outputs the weighing of a batch cannot
    foresee: a pipeline that makes more text than it reads, a compressed input of unknown
    size, other writers). None without a guard."""
    parsed = parse_min_free(min_free) if min_free else None
    if parsed is None:
        return None

    def check(written: int) -> None:
        try:
            st = os.statvfs(folder)
        except OSError:
            return  # unknown, as for a batch (said by Holds.update): the file is not at fault
        disk = DiskFree("output", folder, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
        if disk.free < _needed(parsed, disk):
            raise BelowMinFreeError(
                f"the output folder {folder} fell below [guard] min_free {min_free} "
                f"({_human(disk.free)} free) after {_human(written)} of output; it waits for room",
                written,
            )

    return check


def _needed(parsed: tuple[int, float], disk: DiskFree) -> int:
    need_bytes, need_share = parsed
    return max(need_bytes, int(need_share * disk.size))


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def pause_marker(layout: Layout) -> Path:
    return layout.root / PAUSE_NAME


def read_pause(layout: Layout) -> dict[str, Any] | None:
    """The manual pause of a root (who, since when), or None when it is not paused."""
    try:
        fd = os.open(pause_marker(layout), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return {"by": "unknown", "since": None}
    try:
        with os.fdopen(fd, "rb") as f:
            data = json.loads(f.read(1 << 16))
    except (OSError, ValueError, RecursionError):
        data = {}
    return data if isinstance(data, dict) else {}


def pause(layout: Layout, reason: str = "", now: float | None = None) -> bool:
    """Put the durable pause marker in the root; False when it was paused already."""
    since = time.time() if now is None else now
    record = {
        "by": f"{getpass.getuser()}@{socket.gethostname()}",
        "since": since,
        "since_iso": datetime.datetime.fromtimestamp(since, datetime.UTC).isoformat(timespec="seconds"),
        "reason": reason,
    }
    try:
        write_new(pause_marker(layout), json.dumps(record).encode() + b"\n", layout.root, mode=0o644)
    except FileExistsError:
        return False
    return True


def resume(layout: Layout) -> bool:
    """Remove the pause marker; False when the root was not paused."""
    try:
        pause_marker(layout).unlink()
    except FileNotFoundError:
        return False
    fsync_dir(layout.root)
    return True
