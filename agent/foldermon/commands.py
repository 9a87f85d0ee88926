"""The verbs for people: status, failed, retry, pause, resume, gc, completion."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from foldermon import console, scheduler
from foldermon.config import Config
from foldermon.queue.layout import Layout, is_watch_root
from foldermon.queue.requeue import failed_inputs, requeue
from foldermon.retention import sweep
from foldermon.status import failed_files, printable, render_text, root_status
from foldermon.watch import NameRules


def not_roots(roots: list[Path], named_by: str) -> int:
    """Say which folders are not watch roots (exit 1), or 0 when every one is; ``named_by`` says
    where the roots came from ("--watch", "[watch] dirs" or "" for the default root)."""
    missing = [r for r in roots if not is_watch_root(r)]
    for root in missing:
        hint = (
            f"check the path given in {named_by}"
            if named_by
            else "no root was named and this is the default root"
        )
        print(
            f"foldermon-agent: {root} is not a watch root (it has no unprocessed/ folder): {hint}; "
            "the agent makes the folders when it starts on a root",
            file=sys.stderr,
        )
    return 1 if missing else 0


def status(args: argparse.Namespace, roots: list[Path], config: Config) -> int:
    """Counts per state; a table on a terminal, plain text in a pipe, JSON with --json."""
    rules = NameRules.from_settings(config.watch)
    entries = [
        root_status(d, min_free=config.guard.min_free, output_dir=config.output.dir, rules=rules)
        for d in roots
    ]
    if args.json:
        print(json.dumps({"roots": entries}, indent=2))
    elif console.interactive(sys.stdout, quiet=args.quiet):
        failures = [{**f, "root": str(d)} for d in roots for f in failed_files(Layout.for_root(d))]
        from rich.console import Console

        console.print_status(entries, failures, Console())
    else:
        print(render_text(entries))
    return 0


def failed(args: argparse.Namespace, roots: list[Path], _config: Config) -> int:
    """Quarantined files with reasons and trace ids."""
    listing = [{**f, "root": str(d)} for d in roots for f in failed_files(Layout.for_root(d))]
    if args.json:
        print(json.dumps({"failed": listing}, indent=2))
        return 0
    if not listing:
        print("no failed files")
    for f in listing:
        trace = f" trace {f['trace_id']}" if f["trace_id"] else ""
        attempts = f" after {f['attempts']} attempt(s)" if f["attempts"] else ""
        print(printable(f"{f['root']}/failed/{f['name']}: {f['reason']}{attempts}{trace}"))
    return 0


def _chosen(arg: str, layouts: list[Layout], present: dict[int, set[str]]) -> list[tuple[Layout, str]]:
    """The failed files ``arg`` names: a name in any root's failed/, or as ``failed`` prints it
    (escaped), or a path in one root's failed/ (that root only)."""
    path = Path(arg)
    within: list[Layout] = []
    if path.name and len(path.parts) > 1:
        real, shown = os.path.realpath(path.parent), str(path.parent.absolute())
        within = [
            layout
            for layout in layouts
            if real == os.path.realpath(layout.failed) or shown == printable(layout.failed.absolute())
        ]
    name = path.name if within else arg
    found = []
    for layout in within or layouts:
        names = present[id(layout)]
        # As `failed` prints it first (control characters and backslashes escaped: no two names
        # print alike), else as it is.
        printed = [n for n in names if printable(n) == name]
        found += [(layout, n) for n in printed or ([name] if name in names else [])]
    return found


def retry(args: argparse.Namespace, roots: list[Path], _config: Config) -> int:
    """Move failed files back to unprocessed/; an unknown name is an error and moves nothing."""
    layouts = [Layout.for_root(d) for d in roots]
    present = {id(layout): set(failed_inputs(layout)) for layout in layouts}
    chosen = {arg: _chosen(arg, layouts, present) for arg in args.names}
    unknown = sorted(arg for arg, found in chosen.items() if not found)
    if unknown:
        listed = ", ".join(printable(arg) for arg in unknown)
        print(
            f"foldermon-agent retry: not in failed/: {listed}; see `foldermon-agent failed`", file=sys.stderr
        )
        return 1
    for layout in layouts:
        names = (
            None
            if args.all
            else sorted({n for found in chosen.values() for lay, n in found if lay is layout})
        )
        if names is not None and not names:
            continue

        def moved(old: str, new: str, layout: Layout = layout) -> None:
            print(printable(f"{layout.failed / old} -> {layout.unprocessed / new}"))

        requeue(layout, names, report=moved)
    return 0


def pause(args: argparse.Namespace, roots: list[Path], _config: Config) -> int:
    """Put the durable pause marker in each root; every agent serving it holds within a second."""
    for root in roots:
        layout = Layout.for_root(root)
        if scheduler.pause(layout, args.reason):
            print(printable(f"{layout.root}: paused; files being processed finish, nothing new is claimed"))
        else:
            who = scheduler.read_pause(layout) or {}
            by, since = who.get("by", "someone"), who.get("since_iso", "?")
            print(printable(f"{layout.root}: already paused by {by} since {since}"))
    return 0


def resume(_args: argparse.Namespace, roots: list[Path], _config: Config) -> int:
    """Remove the pause marker; the agents claim again within a second."""
    for root in roots:
        layout = Layout.for_root(root)
        said = "resumed" if scheduler.resume(layout) else "was not paused"
        print(printable(f"{layout.root}: {said}"))
    return 0


def gc(args: argparse.Namespace, roots: list[Path], config: Config) -> int:
    """One retention pass by hand: what [retention] says is old enough goes (or, dry, is listed)."""
    ages = config.retention
    if (ages.processed_max_age, ages.output_max_age, ages.failed_max_age) == (None, None, None):
        print("nothing to do: [retention] sets no max age, so everything is kept", file=sys.stderr)
        return 0
    verb = "would remove" if args.dry_run else "removed"

    def removed(path: Path) -> None:  # as it goes: a stop signal waits until it is said
        print(printable(f"{verb} {path}"))

    for root in roots:
        expired = sweep(Layout.for_root(root, config.output.dir), ages, dry_run=args.dry_run, report=removed)
        counts = ", ".join(f"{n} from {folder}" for (_, folder), n in sorted(expired.counts.items()))
        print(f"{root}: {verb} {counts or 'nothing'}")
    return 0


def completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """Print the completion script generated from the parser itself."""
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0
