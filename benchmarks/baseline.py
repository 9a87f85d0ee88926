"""The baselines the agent is measured against: the smallest durable Python loops doing the same moves.

python baseline.py once ROOT      # drain ROOT/unprocessed once (P2)
python baseline.py watch ROOT     # inotify mover until SIGTERM (P3)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from inotify_simple import INotify, flags


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)


def move(root: Path, name: str) -> None:
    """Claim, upper-case into a temp output, fsync, rename, finish: each move made durable."""
    src, claimed = root / "unprocessed" / name, root / "underprocess" / name
    os.rename(src, claimed)
    fsync_dir(claimed.parent)
    fsync_dir(src.parent)
    stem, _, suffix = name.rpartition(".")
    final = root / "output" / f"{stem}_processed.{suffix}"
    tmp = final.with_name("." + final.name + ".tmp")
    data = claimed.read_bytes().upper()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    os.rename(claimed, root / "processed" / name)
    fsync_dir(root / "processed")
    fsync_dir(claimed.parent)


def prepare(root: Path) -> None:
    for d in ("unprocessed", "underprocess", "processed", "output"):
        (root / d).mkdir(parents=True, exist_ok=True)


def once(root: Path) -> None:
    prepare(root)
    for name in sorted(os.listdir(root / "unprocessed")):
        move(root, name)


def watch(root: Path) -> None:
    prepare(root)
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    inotify = INotify()
    inotify.add_watch(root / "unprocessed", flags.CLOSE_WRITE | flags.MOVED_TO)
    print("ready", flush=True)
    while not stop:
        for event in inotify.read(timeout=200):
            if not event.name.startswith("."):
                move(root, event.name)


if __name__ == "__main__":
    {"once": once, "watch": watch}[sys.argv[1]](Path(sys.argv[2]))
