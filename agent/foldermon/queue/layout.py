"""Where a watch root keeps its queue folders; the folder names live here only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from foldermon.errors import LifecycleError
from foldermon.queue.fsio import fsync_dir

UNPROCESSED = "unprocessed"
UNDERPROCESS = "underprocess"
PROCESSED = "processed"
FAILED = "failed"
STATES = (UNPROCESSED, UNDERPROCESS, PROCESSED, FAILED)
LOCK_NAME = ".lock"
ERROR_SUFFIX = ".error.json"


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

    def create(self) -> None:
        """Create every missing queue folder and the output folder."""
        for path in (
            self.unprocessed,
            self.underprocess,
            self.processed,
            self.failed,
            self.output_dir,
        ):
            make_dir(path)


def make_dir(path: Path) -> None:
    """Create ``path`` and any missing parents, each made durable before anything is moved into it."""
    if path.is_dir():
        return
    make_dir(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        if path.is_dir():
            return  # another instance made it (and syncs its parent)
        raise
    fsync_dir(path.parent)


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
    """Inputs claimed by any instance: the names in every ``underprocess/<instance>/`` folder."""
    names: list[str] = []
    for entry in input_names(layout.underprocess):
        folder = layout.underprocess / entry
        if folder.is_dir() and not folder.is_symlink():
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


def check_writable(layout: Layout) -> None:
    """Fail early, with a sentence, when a queue folder is not writable (read-only mount, permissions)."""
    for folder in (
        layout.unprocessed,
        layout.underprocess,
        layout.processed,
        layout.failed,
        layout.output_dir,
    ):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise LifecycleError(
                f"{folder} is not writable by this user (uid {os.geteuid()}); fix its permissions or mount"
            )
