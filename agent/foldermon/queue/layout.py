"""Where a watch root keeps its queue folders; the folder names live here only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
            path.mkdir(parents=True, exist_ok=True)


def is_input_name(name: str) -> bool:
    """Dotfiles are the agent's bookkeeping; every other name in a queue folder is an input."""
    return not name.startswith(".")


def input_names(folder: Path) -> list[str]:
    """Names of the inputs in a queue folder (unsorted); an absent folder has none."""
    try:
        return [n for n in os.listdir(folder) if is_input_name(n)]
    except FileNotFoundError:
        return []
