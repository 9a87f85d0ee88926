"""The watch roots an agent serves: opening one, recovering what dead instances claimed in it,
and what the metrics show of each."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from foldermon.config import Config
from foldermon.errors import FAILURE_TYPES, UNREACHABLE_ERRNOS, LifecycleError
from foldermon.queue.instance import Instance
from foldermon.queue.layout import (
    Layout,
    check_no_links,
    check_not_nested,
    check_one_filesystem,
    check_output_place,
    check_writable,
    claimed_count,
    oldest_age,
)
from foldermon.queue.lifecycle import Queue
from foldermon.queue.records import migrate_legacy_records
from foldermon.queue.requeue import failed_inputs
from foldermon.scheduler import Holds
from foldermon.telemetry import SPAN_DROP_REASONS, Instruments, QueueSample, Telemetry, WatchModeSample
from foldermon.watch import EntryKind, NameRules, Watcher, open_for_writing, scan_dir
from foldermon.watch.fstype import filesystem_type, remote_reason

if TYPE_CHECKING:
    from foldermon.log import Logger

# The lease where hosts may share a root (network and FUSE filesystems), unless configured.
AUTO_LEASE = 5.0


@dataclass(slots=True)
class Root:
    layout: Layout
    queue: Queue
    reported_dirs: set[str] = field(default_factory=set)
    # Names that could not be claimed, with the errno reported (each is reported once).
    unclaimable: dict[str, int | None] = field(default_factory=dict)
    # Names arrived while a same-named file is held here (waiting for a retry): claimed after it.
    blocked: set[str] = field(default_factory=set)
    unusable: str | None = None  # why the root cannot be served now (its folders gone, say)
    shared: bool = False  # on a network or FUSE filesystem: other hosts may serve it, it may stop answering
    taken_over: bool = False  # another instance fenced this instance's claim folder
    # Dead instances' claim folders left because their output folder is not reachable here.
    said_unreachable: set[str] = field(default_factory=set)
    # Files `run --once` left because a process had them open for writing.
    still_written: list[str] = field(default_factory=list)
    # Files `run --once` waits on to settle: each one's entry signature and since when it is so;
    # and when the run first saw each file not settled yet (those it left as still written too).
    settling: dict[str, tuple[tuple[int, int, int], float]] = field(default_factory=dict)
    unsettled_since: dict[str, float] = field(default_factory=dict)

    def forbidden(self, name: str) -> bool:
        """A name this agent was refused the right to move: trying again changes nothing."""
        return self.unclaimable.get(name, None) in (errno.EPERM, errno.EACCES)

    def listing(
        self,
        rules: NameRules | None,
        log: Logger,
        *,
        settle: float = 0.0,
        now: float = 0.0,
        wall: float = 0.0,
    ) -> list[str]:
        """The names in unprocessed/ ready to claim under ``rules``, by name (none without rules:
        the watcher finds them); folders in it are reported, once. A file that must settle is
        ready once no process has it open for writing and it is ``settle`` seconds old (by
        ``wall``, its mtime) or has been seen unchanged that long (by ``now``, monotonic);
        until then it waits in ``settling``, for at most twice ``settle`` and a second: one
        still changing then is still being written, and left."""
        entries = scan_dir(self.layout.unprocessed)
        for entry in entries:
            if entry.kind is EntryKind.DIR:
                self.report_dir(entry.name, log)
        if rules is None:
            return []
        listed = rules.split(entries)
        names = [e.name for e in listed.ready if e.name[:1] != "."]
        before = self.still_written
        # Files without their done marker are still being written, by the producer's word.
        self.still_written = [e.name for e in listed.unmarked if e.name[:1] != "."]
        settling, self.settling = self.settling, {}
        first_seen, self.unsettled_since = self.unsettled_since, {}
        for entry in listed.settling:
            if entry.name[:1] == ".":
                continue
            if open_for_writing(self.layout.unprocessed / entry.name):
                self.still_written.append(entry.name)
                continue
            seen = settling.get(entry.name)
            since = seen[1] if seen is not None and seen[0] == entry.signature else now
            if wall - entry.mtime_ns / 1e9 >= settle or now - since >= settle:
                names.append(entry.name)
                continue
            first = self.unsettled_since[entry.name] = first_seen.get(entry.name, now)
            if now - first > 2 * settle + 1.0:
                self.still_written.append(entry.name)
            else:
                self.settling[entry.name] = (entry.signature, since)
        if self.still_written and self.still_written != before:
            log.info(
                "files still being written (open, or without their done marker) left for a later run",
                root=str(self.layout.root),
                files=len(self.still_written),
                first=self.still_written[0],
            )
        return sorted(names)

    def report_dir(self, name: str, log: Logger) -> None:
        """Say once that a folder in unprocessed/ is left alone."""
        if name not in self.reported_dirs:
            self.reported_dirs.add(name)
            log.warning("directory in unprocessed/ left in place", root=str(self.layout.root), file=name)


def lease_for(configured: float | None, shared: bool) -> float:
    """The lease of a root's claims (``Queue.confirm_lease``): as configured, else AUTO_LEASE on a
    network or FUSE filesystem (``shared``) and none (0) on a local one, which one host mounts."""
    if configured is not None:
        return configured
    return AUTO_LEASE if shared else 0.0


def open_root(
    root_dir: Path, config: Config, instance_id: str, wall_clock: Callable[[], float], log: Logger
) -> Root:
    """Make a root's folders as needed, take this instance's claim folder in it, and say so."""
    layout = Layout.for_root(root_dir, config.output.dir)
    instance: Instance | None = None
    try:
        check_output_place(layout)  # by name, before any folder is made for it
        check_not_nested(layout)
        for made in layout.create(parents=config.watch.create_parents):
            log.warning("folder created", root=str(layout.root), folder=str(made))
        shared = remote_reason(filesystem_type(layout.root))
        check_no_links(layout)
        check_output_place(layout)  # and the same folder under another name, now it exists
        check_writable(layout)
        instance = Instance(layout, instance_id)
        check_one_filesystem(layout)
        migrated = migrate_legacy_records(layout)
        queue = Queue(
            layout,
            instance,
            output_name=config.output.name,
            max_attempts=config.retry.max_attempts,
            lease=lease_for(config.agent.lease, shared is not None),
            wall_clock=wall_clock,
        )
    except (OSError, LifecycleError) as exc:
        if instance is not None:
            instance.close()
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        raise LifecycleError(f"cannot use watch root {layout.root}: {reason}") from exc
    if migrated:
        log.info("error records of an earlier version renamed", root=str(layout.root), records=migrated)
    log.info("serving root", root=str(layout.root), output=str(layout.output_dir), lease=queue.lease)
    if queue.lease <= 0 and shared:
        log.warning(
            "lease off on a filesystem other hosts may share: a host cut off from it could "
            "publish an output again after another took its files over",
            root=str(layout.root),
            filesystem=shared.split(" ", 1)[0],
        )
    return Root(layout, queue, shared=shared is not None)


def recover(root: Root, log: Logger, instruments: Instruments, *, sweep_temps: bool) -> None:
    """Return dead instances' claims: at start, and every rescan so survivors take over a dead host's."""
    layout = root.layout
    report = root.queue.recover(sweep_temps=sweep_temps)
    if (
        report.returned
        or report.finished
        or report.temps_removed
        or report.dead_instances
        or report.leftovers
    ):
        log.info(
            "recovered",
            root=str(layout.root),
            returned=len(report.returned),
            finished=report.finished,
            temps_removed=report.temps_removed,
            dead_instances=report.dead_instances,
            leftovers=report.leftovers,
        )
    for error in report.errors:
        log.error(
            "recovery could not finish a published input; will retry", root=str(layout.root), error=error
        )
    for folder in set(report.unreachable) - root.said_unreachable:
        log.error(
            "a dead instance's output folder is not reachable here: its claimed files stay in "
            "underprocess/ until an instance that reaches it recovers them",
            root=str(layout.root),
            claim_folder=folder,
        )
    root.said_unreachable = set(report.unreachable)
    instruments.recovered.add(len(report.returned), root.queue.attributes)
    if report.finished:  # processed by the dead instance, which died before counting them
        outcome = {"foldermon.outcome": "processed", **root.queue.attributes}
        instruments.tally.add(instruments.files, len(report.finished), outcome)


def recover_all(roots: Sequence[Root], log: Logger, instruments: Instruments) -> None:
    """Recover every root (each rescan); a shared root's filesystem not answering is raised."""
    for root in roots:
        try:
            recover(root, log, instruments, sweep_temps=False)
        except OSError as exc:
            if exc.errno in UNREACHABLE_ERRNOS and root.shared:
                raise  # said once by the loop, which waits for the filesystem
            log.error("recovery failed", root=str(root.layout.root), error=str(exc))


def queue_samples(roots: Sequence[Root], rules: NameRules, now: float) -> list[QueueSample]:
    """Queue depths and the oldest waiting file's age, for the gauges."""
    samples = []
    for root in roots:
        layout = root.layout
        waiting = rules.waiting(layout.unprocessed)
        age = oldest_age(layout.unprocessed, waiting, now)
        depths = {
            "unprocessed": len(waiting),
            "underprocess": claimed_count(layout),
            "failed": len(failed_inputs(layout)),
        }
        samples.append(QueueSample(str(layout.root), root.queue.root_id, depths, age))
    return samples


def mode_samples(roots: Sequence[Root], watcher: Watcher | None) -> list[WatchModeSample]:
    """How each root is watched and why; a root that cannot be served now shows "unavailable"."""
    by_path = {r.layout.root: r for r in roots}
    if watcher is None:
        modes = [(r.layout.root, "once", "run --once lists the folder") for r in roots]
    else:
        modes = [(m.root, m.mode, m.reason) for m in watcher.modes]
    samples = []
    for path, mode, reason in modes:
        root = by_path[path]
        shown = ("unavailable", root.unusable) if root.unusable else (mode, reason)
        samples.append(WatchModeSample(str(path), root.queue.root_id, *shown))
    return samples


def disk_samples(roots: Sequence[Root], holds: Holds) -> list[tuple[dict[str, str], int]]:
    """Free bytes for each root's queue and output folders, as last looked at."""
    return [
        ({**roots[index].queue.attributes, "foldermon.disk.folder": d.folder}, d.free)
        for index, d in holds.disk
        if index < len(roots)
    ]


def hold_samples(roots: Sequence[Root], holds: Holds) -> list[tuple[dict[str, str], int]]:
    """1 per held root with why ("manual" or "low_disk"), 0 for the others."""
    samples = []
    for index, root in enumerate(roots):
        hold = holds.get(index)
        attrs = {**root.queue.attributes, "foldermon.pause.reason": hold.kind if hold else "none"}
        samples.append((attrs, int(hold is not None)))
    return samples


def zero_counters(roots: Sequence[Root], config: Config, telemetry: Telemetry) -> None:
    """Start every counter series at 0, so the first failure after a start shows as an increase."""
    ins = telemetry.instruments
    for root in roots:
        for outcome in ("processed", "retry", "failed"):
            ins.files.add(0, {"foldermon.outcome": outcome, **root.queue.attributes})
        for error_type in FAILURE_TYPES:  # a failed file's series carries its error type
            failed = {"foldermon.outcome": "failed", "error.type": error_type}
            ins.files.add(0, {**failed, **root.queue.attributes})
        for folder in ("processed", "output", "failed", "history"):
            ins.expired.add(0, {**root.queue.attributes, "foldermon.folder": folder})
        ins.lines_read.add(0, root.queue.attributes)
    for spec in config.processors:
        attrs = {"foldermon.processor.id": spec.id, "foldermon.processor.type": spec.type}
        for counter in (ins.lines_in, ins.lines_out, ins.processor_errors):
            counter.add(0, attrs)
    for signal_name, kind in telemetry.settings.exporters.items():
        if kind == "otlp":
            ins.export_failures.add(0, {"foldermon.telemetry.signal": signal_name})
    if telemetry.settings.exporters["traces"] != "none":
        for reason in SPAN_DROP_REASONS:
            ins.spans_dropped.add(0, {"foldermon.telemetry.reason": reason})
