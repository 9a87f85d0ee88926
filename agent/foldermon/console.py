"""What a person at a terminal sees: progress bars and the status table (rich), never in pipes or journald."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

# rich is imported by the functions that draw: a service start never pays for it.


def interactive(stream: TextIO, *, quiet: bool = False, env: Mapping[str, str] | None = None) -> bool:
    """True on a terminal, unless ``--quiet`` or running under systemd (journald must stay clean)."""
    env = os.environ if env is None else env
    under_systemd = "INVOCATION_ID" in env or "JOURNAL_STREAM" in env
    return not quiet and not under_systemd and stream.isatty()


@contextmanager
def byte_progress(total: int, label: str, console: Console | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar by bytes with rate and ETA; yields the function that sets the bytes done."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)


class FilesProgress:
    """Files done of a total, with lines per second and failures, for ``run --once``."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} files"),
            TextColumn("{task.fields[rate]} lines/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            console=console,
        )
        self._task = self._progress.add_task("processing", total=0, rate="0", failed=0)
        self._lines = 0
        self._failed = 0
        self._started = time.monotonic()

    def __enter__(self) -> FilesProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def add_total(self, files: int) -> None:
        self._progress.update(self._task, total=(self._progress.tasks[0].total or 0) + files)

    def file_done(self, outcome: str, lines: int) -> None:
        self._lines += lines
        self._failed += outcome == "failed"
        rate = self._lines / max(1e-6, time.monotonic() - self._started)
        advance = 0 if outcome == "retry" else 1
        self._progress.update(self._task, advance=advance, rate=f"{rate:,.0f}", failed=self._failed)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def print_status(roots: list[dict[str, Any]], failures: list[dict[str, Any]], console: Console) -> None:
    """A compact table per watch root, then the newest failures with their reasons."""
    from rich.table import Table
    from rich.text import Text

    from foldermon.status import printable

    def shown(text: object, style: str = "") -> Text:
        """As written: a Text is read for neither markup nor emoji codes (``:smile:``)."""
        return Text(printable(text), style=style)

    table = Table(title="foldermon-agent queue", title_justify="left")
    table.add_column("watch root")
    for state in ("unprocessed", "underprocess", "processed", "failed"):
        table.add_column(state, justify="right")
    table.add_column("oldest waiting", justify="right")
    for r in roots:
        failed = f"[red]{r['failed']}[/red]" if r["failed"] else "0"
        table.add_row(
            shown(r["path"]),
            str(r["unprocessed"]),
            str(r["underprocess"]),
            str(r["processed"]),
            failed,
            _age(r["oldest_unprocessed_age_s"]),
        )
    console.print(table)
    for r in roots:
        if r.get("paused"):
            console.print(
                Text.assemble(("held ", "yellow"), shown(r["path"]), ": ", shown(r["paused_reason"]))
            )
    if not failures:
        return
    newest = sorted(failures, key=lambda f: f.get("failed_at") or 0, reverse=True)[:5]
    detail = Table(title="newest failures", title_justify="left")
    for column in ("root", "file", "reason"):
        detail.add_column(column)
    for f in newest:
        detail.add_row(shown(f["root"]), shown(f["name"]), shown(f["reason"], "red"))
    console.print(detail)
