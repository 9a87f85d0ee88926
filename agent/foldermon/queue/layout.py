"""Where a watch root keeps its queue folders; the folder names live here only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from foldermon.errors import LifecycleError
from foldermon.queue.fsio import fsync_dir, write_new
from foldermon.queue.ids import is_instance_id, owner_of

UNPROCESSED = "unprocessed"
UNDERPROCESS = "underprocess"
PROCESSED = "processed"
FAILED = "failed"
STATES = (UNPROCESSED, UNDERPROCESS, PROCESSED, FAILED)
LOCK_NAME = ".lock"
ERROR_SUFFIX = ".error.json"
# A random id kept in the root itself, so every host and instance serving it names it alike.
ROOT_ID_NAME = ".foldermon-root-id"
_MKDIR_TRIES = 5


def record_name(name: str) -> str:
    """The error record of ``failed/<name>``: a dotfile, so it can never share a name with an input."""
    return f".{name}{ERROR_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path
    output_dir: Path

    @classmethod
    def for_root(cls, root: Path, output_dir: Path | None = None) -> Layout:
        root = root.absolute()
        return cls(root, (output_dir or root / "output").absolute())

    @property
    def unprocessed(self) -> Path:
        return self.root / UNPROCESSED

    @property
    def underprocess(self) -> Path:
        return self.root / UNDERPROCESS

    @property
    def processed(self) -> Path:
        return self.root / PROCESSED

    @property
    def failed(self) -> Path:
        return self.root / FAILED

    @property
    def queue_folders(self) -> tuple[Path, Path, Path, Path]:
        """``unprocessed/``, ``underprocess/``, ``processed/`` and ``failed/``."""
        return self.unprocessed, self.underprocess, self.processed, self.failed

    def create(self, *, parents: bool = True) -> list[Path]:
        """Create every missing queue folder and the output folder; the folders it had to make.

        Without ``parents`` the root's parent folder must exist: a mistyped root is an error,
        not a new tree.
        """
        if not parents and not self.root.is_dir() and not self.root.parent.is_dir():
            if self.root.parent.exists():
                raise LifecycleError(f"its parent {self.root.parent} is a file, not a folder")
            raise LifecycleError(
                f"its parent folder {self.root.parent} does not exist (a typo?); create it, or "
                "let the agent make it (--create-parents, or [watch] create_parents = true)"
            )
        if self.root.exists() and not self.root.is_dir():
            raise LifecycleError("it is a file, not a folder")
        made: list[Path] = []
        for path in (
            self.root,
            self.unprocessed,
            self.underprocess,
            self.processed,
            self.failed,
            self.output_dir,
        ):
            if not path.is_dir():
                try:
                    make_dir(path)
                except FileExistsError as exc:  # not a folder: made by another instance is fine
                    what = "a symbolic link to no folder" if os.path.islink(path) else "in the way: a file"
                    raise LifecycleError(f"{path} is {what}, not a folder") from exc
                made.append(path)
        return made


def make_dir(path: Path) -> None:
    """Create ``path`` and any missing parents, each made durable before anything is moved into it."""
    if path.is_dir():
        return
    make_dir(path.parent)
    for tries_left in reversed(range(_MKDIR_TRIES)):
        try:
            path.mkdir()
        except FileExistsError:
            if path.is_dir():
                return  # another instance made it (and syncs its parent)
            # Network filesystems (GlusterFS) can answer EEXIST to racing mkdirs of a name
            # that none of them made yet: look again.
            if not tries_left or os.path.lexists(path):
                raise
            time.sleep(0.01)
        else:
            break
    fsync_dir(path.parent)


def root_id(root: Path, tmp_dir: Path) -> str:
    """The root's id: the random id kept in it (made once by whichever instance comes first; link:
    exactly one wins), bound to the root folder itself, so that a copy of the root (``cp -a``) is
    another root. Every host sees one folder's inode alike, so they all name it alike.
    ``tmp_dir`` (this instance's claim folder) holds the new id's temp file: a start killed
    meanwhile leaves it to the recovery of that folder, never in the root."""
    path = root / ROOT_ID_NAME
    try:
        kept = _read_id(path)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            write_new(path, uuid.uuid4().hex.encode() + b"\n", tmp_dir)
        kept = _read_id(path)
    return _bound(kept, root)


def known_root_id(root: Path) -> str | None:
    """The root's id as its agents report it, or None when no agent has given it one yet (or
    its id file cannot be read); makes nothing."""
    try:
        return _bound(_read_id(root / ROOT_ID_NAME), root)
    except (OSError, LifecycleError):
        return None


def _bound(kept: str, root: Path) -> str:
    """The kept id bound to the root folder itself (its inode)."""
    return hashlib.sha256(f"{kept}:{os.stat(root).st_ino}".encode()).hexdigest()[:32]


def _read_id(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        text = f.read(64).decode("ascii", "replace").strip()
    if not text or not text.isalnum():
        raise LifecycleError(f"{path} does not hold a root id; remove it and the agent makes a new one")
    return text


def is_input_name(name: str) -> bool:
    """Dotfiles are the agent's bookkeeping; every other name in a queue folder is an input."""
    return not name.startswith(".")


def input_names(folder: Path) -> list[str]:
    """Names of the inputs in a queue folder (unsorted); an absent folder has none."""
    try:
        return [n for n in os.listdir(folder) if is_input_name(n)]
    except FileNotFoundError:
        return []


def claimed_names(layout: Layout) -> list[str]:
    """Inputs claimed by any instance: the names in every claim folder in ``underprocess/``
    (an instance's, or one fenced off it that waits to be settled)."""
    names: list[str] = []
    try:
        entries = os.listdir(layout.underprocess)
    except FileNotFoundError:
        entries = []
    for entry in (e for e in entries if is_instance_id(owner_of(e))):
        folder = layout.underprocess / entry
        if folder.is_dir() and not folder.is_symlink() and not is_watch_root(folder):
            names += input_names(folder)
    return names


def claimed_count(layout: Layout) -> int:
    """How many inputs are claimed by any instance."""
    return len(claimed_names(layout))


def oldest_age(folder: Path, names: list[str], now: float) -> float | None:
    """Seconds since the earliest arrival (ctime: set by the rename in) among ``names``."""
    times = []
    for name in names:
        try:
            times.append(os.lstat(folder / name).st_ctime)
        except FileNotFoundError:
            continue
    return round(max(0.0, now - min(times)), 3) if times else None


def is_watch_root(root: Path) -> bool:
    """Whether a folder looks like a watch root: it has an ``unprocessed/`` folder."""
    return (root / UNPROCESSED).is_dir()


def check_no_links(layout: Layout) -> None:
    """Refuse queue folders that are symbolic links (and the default output folder, which is in
    the root): the agent would read, move and write outside the root through them."""
    folders = list(layout.queue_folders)
    if layout.output_dir.parent == layout.root:
        folders.append(layout.output_dir)
    for folder in folders:
        if folder.is_symlink():
            raise LifecycleError(
                f"{folder} is a symbolic link: links out of a root are never followed; make it a "
                "folder of its own (outputs can go elsewhere with [output] dir)"
            )


def check_output_place(layout: Layout) -> None:
    """Refuse an output folder inside a queue folder: in ``unprocessed/`` every output would be
    taken as a new input, without end; in the others it would be moved or removed as an input."""
    output = Path(os.path.normpath(layout.output_dir))  # as named: nothing outside the root is read
    try:
        st = os.stat(layout.output_dir)
        same = (st.st_dev, st.st_ino)  # the same folder under another name (a symlink on the way)
    except OSError:
        same = None
    for folder in layout.queue_folders:
        try:
            folder_st = os.stat(folder)
            is_it = same == (folder_st.st_dev, folder_st.st_ino)
        except OSError:
            is_it = False
        if is_it or output.is_relative_to(os.path.normpath(folder)):
            raise LifecycleError(
                f"the output folder {layout.output_dir} is inside {folder}: outputs would be taken "
                "for inputs; set [output] dir outside the queue folders"
            )


def check_not_nested(layout: Layout) -> None:
    """Refuse a root that lies in a queue folder of another watch root (``R/underprocess`` as a
    root of its own, by name or through a symbolic link): that root's agents would take its
    folders for claim folders or inputs. (Through a bind mount it cannot be seen from here: the
    recovery of that root leaves alone a folder that is a watch root.)"""
    named = Path(os.path.normpath(layout.root))
    real = real_path(layout.root) or named  # through symbolic links on the way
    for folder in (named, *named.parents, real, *real.parents):
        if folder.name in STATES and is_watch_root(folder.parent):
            raise LifecycleError(
                f"it is in {folder}, a queue folder of the watch root {folder.parent}: the agents "
                "serving that root would take its files for their own; put it elsewhere"
            )


def real_path(folder: Path) -> Path | None:
    """Where the absolute ``folder`` really is, through symbolic links, as the kernel names its
    open descriptor (nothing else on the way is looked at); for a folder not made yet, where it
    would be made. None when that cannot be told."""
    missing: list[str] = []
    for at in (folder, *folder.parents):
        try:
            fd = os.open(at, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except ValueError:
            return None  # a NUL in the name: no such folder (the config checks say so)
        except OSError:
            missing.insert(0, at.name)
            continue
        try:
            return Path(os.readlink(f"/proc/self/fd/{fd}"), *missing)
        except OSError:
            return None
        finally:
            os.close(fd)
    return None


def check_one_filesystem(layout: Layout) -> None:
    """Refuse a root whose queue folders are on different filesystems or mounts.

    Every lifecycle move must be one atomic rename; across mounts (bind mounts of one
    filesystem included) it fails with EXDEV, which would surface only after an output is
    published.
    """
    seen = {folder: (mount_id(folder), os.stat(folder).st_dev) for folder in layout.queue_folders}
    first = seen[layout.unprocessed]
    for folder, where in seen.items():
        if where != first:
            raise LifecycleError(
                f"{layout.unprocessed} and {folder} are on different filesystems or mounts: every "
                "move between queue folders must be a rename within one mount; put the whole root "
                f"{layout.root} on one mount"
            )


def mount_id(path: Path) -> int | None:
    """The id of the mount ``path`` is on (bind mounts of one filesystem differ); None without /proc."""
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def check_writable(layout: Layout) -> None:
    """Fail early, with a sentence, when a queue folder is not writable (read-only mount, permissions)."""
    for folder in (*layout.queue_folders, layout.output_dir):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise LifecycleError(
                f"{folder} is not writable by this user (uid {os.geteuid()}); fix its permissions or mount"
            )
