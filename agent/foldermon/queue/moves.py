"""Moves of inputs between queue folders, each a rename that never replaces a name."""

from __future__ import annotations

import os
from pathlib import Path

from foldermon.queue.counter import counter_name
from foldermon.queue.fsio import durable_rename, rename_noreplace, unique_name
from foldermon.queue.layout import Layout


def move_unique(src: Path, folder: Path, name: str, n: int = 0) -> str:
    """Rename ``src`` to ``folder/name`` or its first free ``.N`` form from ``n`` on; not fsynced."""
    while True:
        target = unique_name(name, n)
        try:
            rename_noreplace(src, folder / target)
        except FileExistsError:
            n += 1
        else:
            return target


def return_input(layout: Layout, folder: Path, name: str) -> str:
    """Move an input and its counter from a claim folder back to ``unprocessed/``; its name there.

    The counter goes first: a crash between the two moves leaves the input in the dead
    folder, where the next recovery finds it, and its count already waiting for it.
    """
    n = 0
    while os.path.lexists(layout.unprocessed / unique_name(name, n)):
        n += 1
    _move_counter(layout, folder / counter_name(name), unique_name(name, n))
    while True:
        dst_name = unique_name(name, n)
        try:
            durable_rename(folder / name, layout.unprocessed / dst_name)
        except FileExistsError:
            # A producer dropped the same name meanwhile: the counter follows to the next name.
            n += 1
            _move_counter(layout, layout.unprocessed / counter_name(dst_name), unique_name(name, n))
        else:
            return dst_name


def _move_counter(layout: Layout, counter: Path, input_name: str) -> None:
    if os.path.lexists(counter):
        durable_rename(counter, layout.unprocessed / counter_name(input_name), replace=True)
