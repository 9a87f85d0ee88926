"""The read-and-repair verbs: status, failed, retry, completion."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from foldermon import console
from foldermon.queue.layout import Layout
from foldermon.queue.requeue import failed_inputs, requeue
from foldermon.status import failed_files, render_text, root_status


def status(args: argparse.Namespace, roots: list[Path]) -> int:
    """Counts per state; a table on a terminal, plain text in a pipe, JSON with --json."""
    entries = [root_status(d) for d in roots]
    if args.json:
        print(json.dumps({"roots": entries}, indent=2))
    elif console.interactive(sys.stdout):
        failures = [{**f, "root": str(d)} for d in roots for f in failed_files(Layout.for_root(d))]
        from rich.console import Console

        console.print_status(entries, failures, Console())
    else:
        print(render_text(entries))
    return 0


def failed(args: argparse.Namespace, roots: list[Path]) -> int:
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
        print(f"{f['root']}/failed/{f['name']}: {f['reason']}{attempts}{trace}")
    return 0


def retry(args: argparse.Namespace, roots: list[Path]) -> int:
    """Move failed files back to unprocessed/; an unknown name is an error and moves nothing."""
    if bool(args.names) == bool(args.all):
        print("foldermon-agent retry: give file names or --all (not both)", file=sys.stderr)
        return 2
    layouts = [Layout.for_root(d) for d in roots]
    present = {id(layout): set(failed_inputs(layout)) for layout in layouts}
    wanted = set(args.names)
    unknown = wanted - set().union(*present.values())
    if unknown:
        listed = ", ".join(sorted(unknown))
        print(
            f"foldermon-agent retry: not in failed/: {listed}; see `foldermon-agent failed`", file=sys.stderr
        )
        return 1
    for layout in layouts:
        chosen = None if args.all else sorted(wanted & present[id(layout)])
        if chosen is not None and not chosen:
            continue
        for old, new in requeue(layout, chosen):
            print(f"{layout.failed / old} -> {layout.unprocessed / new}")
    return 0


def completion(parser: argparse.ArgumentParser, shell: str) -> int:
    """Print the completion script generated from the parser itself."""
    import shtab

    print(shtab.complete(parser, shell=shell))
    return 0
