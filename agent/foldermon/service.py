"""The agent: recovery, the watch loop, files through the queue in claim batches, signals and drain."""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Protocol

from foldermon import __version__, early
from foldermon import log as logmod
from foldermon.attempt import Attempt, Outcome, Produced
from foldermon.config import Config
from foldermon.deadline import Alarm
from foldermon.errors import UNREACHABLE_ERRNOS, ConfigError, LifecycleError
from foldermon.processors import Registry
from foldermon.queue.fsio import fsync_dir
from foldermon.queue.instance import Instance
from foldermon.queue.layout import (
    Layout,
    check_one_filesystem,
    check_writable,
    claimed_count,
    input_names,
    oldest_age,
)
from foldermon.queue.lifecycle import (
    Claim,
    ClaimFolderGoneError,
    ClaimResult,
    Directory,
    Exhausted,
    Held,
    Queue,
    Rejected,
    Unclaimable,
)
from foldermon.queue.output import OutputTarget
from foldermon.queue.records import fail_record, migrate_legacy_records
from foldermon.retention import Retention
from foldermon.scheduler import DiskFree, Hold, Pending, Retries, disk_free, low_disk, read_pause
from foldermon.sdnotify import Notifier
from foldermon.telemetry import SPAN_DROP_REASONS, QueueSample, Telemetry, WatchModeSample
from foldermon.watch import EntryKind, NameRules, Watcher, open_watcher, scan_dir
from foldermon.watch.fstype import filesystem_type, remote_reason

# Finishes are fsynced together for at most this many files, and whenever the queue is empty.
_GROUP_COMMIT_FILES = 64
# Outputs of a claim batch are made durable together (one fsync of the output folder), or as
# soon as the inputs produced since the last such fsync add up to this many bytes.
_COMMIT_BYTES = 4 << 20
# A backlog is claimed this many files at a time (one fsync pair per batch); small enough that
# other instances on the same root still get their share and a stop has little to give back.
_CLAIM_BATCH = 16
# ... and at most this much input: large files are claimed few at a time, so that the workers
# of `run --workers` (or other instances) share a backlog of them evenly to the end.
_CLAIM_BYTES = 1 << 20
# After the drain deadline, what cannot be interrupted (a hung system call) ends the process
# this much later: time for the release, the group commit and the telemetry flush.
_EXIT_GRACE = 10.0
# Retention takes a bounded step at most this often.
_RETAIN_EVERY = 0.2


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


# The lease where hosts may share a root (network and FUSE filesystems), unless configured.
AUTO_LEASE = 5.0


def lease_for(configured: float | None, shared: bool) -> float:
    """The lease of a root's claims (``Queue.confirm_lease``): as configured, else AUTO_LEASE on a
    network or FUSE filesystem (``shared``) and none (0) on a local one, which one host mounts."""
    if configured is not None:
        return configured
    return AUTO_LEASE if shared else 0.0


class Progress(Protocol):
    """Told about files as they are queued and done (the terminal display of ``run --once``)."""

    def add_total(self, files: int) -> None: ...

    def file_done(self, outcome: str, lines: int) -> None: ...


class _NoProgress:
    def add_total(self, files: int) -> None:
        pass

    def file_done(self, outcome: str, lines: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Retry:
    due: float
    root: Root
    claim: Claim
    counted: bool
    exact: bool = False  # run line by line, to name the line a processor fails on
    finish: OutputTarget | None = None  # the output is published: only the finish is retried


def _forbidden(root: Root, name: str) -> bool:
    """A name this agent was refused the right to move: trying again changes nothing."""
    return root.unclaimable.get(name, None) in (errno.EPERM, errno.EACCES)


def _unless_unusable(root: Root, mode: str, reason: str) -> tuple[str, str]:
    """A root that cannot be served now shows as mode "unavailable" with why."""
    return ("unavailable", root.unusable) if root.unusable else (mode, reason)


class Agent:
    """Serves every configured watch root until stopped (or, with ``once``, until drained)."""

    def __init__(
        self,
        load_config: Callable[[], Config],
        registry: Registry,
        telemetry: Telemetry,
        *,
        instance_id: str,
        once: bool = False,
        notifier: Notifier | None = None,
        progress: Progress | None = None,
        queue_gauges: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._load_config = load_config
        self.config = load_config()
        self.registry = registry
        self.once = once
        self.instance_id = instance_id
        self.telemetry = telemetry
        self._clock = clock
        self._wall = wall_clock
        self.alarm = Alarm(clock)
        self.log = logmod.get(instance=self.instance_id)
        self.roots: list[Root] = []
        self._pending = Pending(self.config.watch.order, self.config.watch.priority)
        self._retries: Retries[Retry] = Retries()
        self._holds: dict[int, Hold] = {}  # roots that may not claim or retry now, and why
        self._retention = Retention(lambda: [r.layout for r in self.roots], self.config.retention)
        self._retain_at = 0.0
        self._disk: list[tuple[Root, DiskFree]] = []
        self._watcher: Watcher | None = None
        self._stop_at: float | None = None
        self._next_listing = 0.0
        self._finished_unsynced = 0
        self._reload = False
        self.notifier = notifier or Notifier.from_environ()
        self.progress = progress or _NoProgress()
        self._ready = False
        self._status_at = 0.0
        self._unreachable_said = 0.0  # when the next "filesystem unreachable" may be logged
        self.done = {"processed": 0, "failed": 0}
        if queue_gauges:
            telemetry.instruments.queue_source = self._queue_samples
            telemetry.instruments.disk_source = self._disk_samples
            telemetry.instruments.hold_source = self._hold_samples
        telemetry.instruments.mode_source = self._mode_samples

    # -- lifecycle of the agent ------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self.log.info("starting", version=__version__, pid=os.getpid())
            self._open_roots()
            if not self.once:
                self._watcher = open_watcher(self.config.watch, [r.layout.root for r in self.roots])
                for mode in self._watcher.modes:
                    self.log.info("watching", root=str(mode.root), mode=mode.mode, reason=mode.reason)
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                self.alarm.close()
                faulthandler.cancel_dump_traceback_later()
        # --once says in its exit code whether any file went to failed/ (for cron and scripts).
        return 1 if self.once and self.done["failed"] else 0

    def _open_roots(self) -> None:
        for root_dir in self.config.watch.dirs:
            layout = Layout.for_root(root_dir, self.config.output.dir)
            instance: Instance | None = None
            try:
                for made in layout.create(parents=self.config.watch.create_parents):
                    self.log.warning("folder created", root=str(layout.root), folder=str(made))
                shared = remote_reason(filesystem_type(layout.root))
                check_writable(layout)
                instance = Instance(layout, self.instance_id)
                check_one_filesystem(layout)
                migrated = migrate_legacy_records(layout)
                queue = Queue(
                    layout,
                    instance,
                    output_name=self.config.output.name,
                    max_attempts=self.config.retry.max_attempts,
                    lease=lease_for(self.config.agent.lease, shared is not None),
                    wall_clock=self._wall,
                )
            except (OSError, LifecycleError) as exc:
                if instance is not None:
                    instance.close()
                reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
                raise LifecycleError(f"cannot use watch root {layout.root}: {reason}") from exc
            if migrated:
                self.log.info(
                    "error records of an earlier version renamed", root=str(layout.root), records=migrated
                )
            self.roots.append(Root(layout, queue, shared=shared is not None))
            self.log.info(
                "serving root", root=str(layout.root), output=str(layout.output_dir), lease=queue.lease
            )
            if queue.lease <= 0 and shared:
                self.log.warning(
                    "lease off on a filesystem other hosts may share: a host cut off from it could "
                    "publish an output again after another took its files over",
                    root=str(layout.root),
                    filesystem=shared.split(" ", 1)[0],
                )
            self._recover(self.roots[-1], sweep_temps=True)
        self._zero_counters()

    def _recover(self, root: Root, *, sweep_temps: bool) -> None:
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
            self.log.info(
                "recovered",
                root=str(layout.root),
                returned=len(report.returned),
                finished=report.finished,
                temps_removed=report.temps_removed,
                dead_instances=report.dead_instances,
                leftovers=report.leftovers,
            )
        for error in report.errors:
            self.log.error(
                "recovery could not finish a published input; will retry", root=str(layout.root), error=error
            )
        self.telemetry.instruments.recovered.add(len(report.returned), root.queue.attributes)

    def _zero_counters(self) -> None:
        """Start every counter series at 0, so the first failure after a start shows as an increase."""
        ins = self.telemetry.instruments
        for root in self.roots:
            for outcome in ("processed", "retry", "failed"):
                ins.files.add(0, {"foldermon.outcome": outcome, **root.queue.attributes})
            for folder in ("processed", "output", "failed", "history"):
                ins.expired.add(0, {**root.queue.attributes, "foldermon.folder": folder})
        for spec in self.config.processors:
            attrs = {"foldermon.processor.id": spec.id, "foldermon.processor.type": spec.type}
            for counter in (ins.lines_in, ins.lines_out, ins.processor_errors):
                counter.add(0, attrs)
        for signal_name, kind in self.telemetry.settings.exporters.items():
            if kind == "otlp":
                ins.export_failures.add(0, {"foldermon.telemetry.signal": signal_name})
        if self.telemetry.settings.exporters["traces"] != "none":
            for reason in SPAN_DROP_REASONS:
                ins.spans_dropped.add(0, {"foldermon.telemetry.reason": reason})

    def _shutdown(self) -> None:
        self._group_commit()
        self.telemetry.instruments.tally.flush()
        for retry in self._retries:
            if retry.finish is None:
                try:
                    retry.root.queue.release(retry.claim)
                except OSError as exc:
                    self.log.warning(
                        "left claimed for recovery: could not release it",
                        root=str(retry.root.layout.root),
                        file=retry.claim.name,
                        error=str(exc),
                    )
            else:
                # Its output is published: released, it would be processed again. Left claimed,
                # the recovery after this instance finishes it.
                self.log.warning(
                    "left claimed for recovery: output published, finish pending",
                    root=str(retry.root.layout.root),
                    file=retry.claim.name,
                )
        self._retries.clear()
        if self._watcher is not None:
            self._watcher.close()
        for root in self.roots:
            root.queue.instance.close()
        self.log.info("stopped")
        self.telemetry.shutdown(timeout=5.0)

    def _install_signals(self) -> None:
        self.alarm.install()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for signum in early.take():
            if signum == signal.SIGHUP:
                self._reload = True
            else:
                self._on_stop(signum, None)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_at is None:
            drain = self.config.agent.drain_timeout
            self._stop_at = self._clock() + drain
            # A processor stuck inside one call is interrupted at the deadline; anything that
            # cannot be interrupted (a hung system call) ends the process shortly after it.
            self.alarm.drain_by(self._stop_at)
            faulthandler.dump_traceback_later(drain + _EXIT_GRACE, exit=True)
            self.notifier.stopping("stopping: finishing or releasing the current file")
            self.log.info("stopping", signal=signal.Signals(signum).name)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def _keep_going(self) -> bool:
        """Asked between batches of a file: the loop is alive, so the watchdog may be fed."""
        self.notifier.watchdog_if_due()
        return self._stop_at is None or self._clock() < self._stop_at

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            try:
                if self._turn():
                    return
            except OSError as exc:
                if not self._unreachable(exc):
                    raise

    def _turn(self) -> bool:
        """One turn of the loop; True once ``--once`` has nothing left to do."""
        if self._reload:
            self._apply_reload()
        for root in self.roots:
            self._after_takeover(root)
        self._collect()
        self._health()
        if self._run_due_retry():
            self.telemetry.instruments.tally.flush()
            return False
        batch = self._next_batch()
        self._retain()
        if batch is not None:
            self._handle(*batch)
            self.telemetry.instruments.tally.flush()
        elif self.once:
            due = self._retries.next_due(self._may_retry)
            if due is None and not self._pending.ready(self._may_claim):
                self._say_held()
                return True  # drained, or what is left waits for a held root
            time.sleep(min(0.2, max(0.0, due - self._clock()) if due is not None else 0.2))
        return False

    def _unreachable(self, exc: OSError) -> bool:
        """A shared root's filesystem stopped answering: wait for it, and start again with new
        claim folders once it is back, leaving what the old ones hold to recovery (others may
        have taken it over meanwhile). False for any other error, and on local roots."""
        shared = [r for r in self.roots if r.shared]
        if exc.errno not in UNREACHABLE_ERRNOS or not shared:
            return False
        if self._clock() >= self._unreachable_said:
            self._unreachable_said = self._clock() + 60.0
            self.log.warning(
                "filesystem unreachable; waiting for it, files in hand are left to recovery", error=str(exc)
            )
        for root in shared:
            root.taken_over = True
        self._retries.keep(lambda r: not r.root.shared)
        self.notifier.watchdog_if_due()
        time.sleep(1.0)
        return True

    def _collect(self) -> None:
        if self._clock() >= self._next_listing:
            first = self._next_listing == 0.0
            self._next_listing = self._clock() + self.config.watch.rescan_interval
            if not first:
                self._check_layouts()
                self._recover_all()
            self._list_roots(take_files=self._watcher is None)
        if self._watcher is None:
            if not self._pending and not self._retries:
                self._list_roots(take_files=True)
            return
        # Idle waits stay shorter than the watchdog interval so an idle agent keeps pinging.
        claimable = self._pending.ready(self._may_claim)
        timeout = 0.0 if claimable else min(1.0, self.notifier.watchdog_interval or 1.0)
        due = self._retries.next_due(self._may_retry)
        if due is not None and not claimable:
            timeout = max(0.0, min(timeout, due - self._clock()))
        by_root = {r.layout.root: i for i, r in enumerate(self.roots)}
        for event in self._watcher.poll(timeout):
            if event.name[:1] != ".":
                self._offer(by_root[event.root], event.name)

    def _offer(self, index: int, name: str) -> bool:
        return self._pending.add(index, name, self.roots[index].layout.unprocessed)

    def _may_claim(self, index: int) -> bool:
        return index not in self._holds

    def _may_retry(self, retry: Retry) -> bool:
        return self.roots.index(retry.root) not in self._holds

    def _check_layouts(self) -> None:
        for root in self.roots:
            try:
                current = root.queue.instance.is_current()
            except OSError:
                if root.shared:
                    raise  # a shared filesystem not answering: the loop waits for it
                current = False
            if root.unusable is not None or not current:
                self._reopen(root)

    def _after_takeover(self, root: Root) -> None:
        """Start again with a new claim folder once another instance took this one's over."""
        if root.taken_over:
            root.taken_over = False
            self._reopen(root, lost=True)

    def _reopen(self, root: Root, *, lost: bool = False) -> bool:
        """Make a root's folders and claim folder again after they were removed or replaced."""
        log = self.log.bind(root=str(root.layout.root))
        try:
            root.queue.reopen()
        except (OSError, LifecycleError) as exc:
            if root.unusable != str(exc):
                log.error("watch root unusable; will try again at each rescan", error=str(exc))
            root.unusable = str(exc)
            return False
        root.unusable = None
        if lost:
            log.warning(
                "new claim folder: the old one was taken over, or the filesystem unreachable; "
                "what it held is left to recovery"
            )
        else:
            log.warning("claim folder was gone (root removed or replaced); made the root's folders again")
        root.unclaimable.clear()
        root.blocked.clear()
        # Claims held in the old folder are beyond reach now: their paths lead into the new tree.
        self._retries.keep(lambda r: r.root is not root)
        if self._watcher is not None:
            self._watcher.rescan(root.layout.root)
        return True

    def _recover_all(self) -> None:
        for root in self.roots:
            try:
                self._recover(root, sweep_temps=False)
            except OSError as exc:
                if exc.errno in UNREACHABLE_ERRNOS and root.shared:
                    raise  # said once by the loop, which waits for the filesystem
                self.log.error("recovery failed", root=str(root.layout.root), error=str(exc))

    def _list_roots(self, *, take_files: bool) -> None:
        """Report directories; with ``take_files`` (``--once``) also queue every ready name.

        In watch mode files come from the watcher only, which knows when a file is complete.
        """
        rules = NameRules.from_settings(self.config.watch)
        for index, root in enumerate(self.roots):
            entries = scan_dir(root.layout.unprocessed)
            for entry in entries:
                if entry.kind is EntryKind.DIR:
                    self._report_dir(root, entry.name)
            if take_files:
                listing = rules.split(entries)
                added = 0
                for entry in sorted((*listing.ready, *listing.settling), key=lambda e: e.name):
                    # --once tries a name it may not move (permissions) once, then leaves it.
                    if entry.name[:1] != "." and not (self.once and _forbidden(root, entry.name)):
                        added += self._offer(index, entry.name)
                self.progress.add_total(added)

    def _report_dir(self, root: Root, name: str) -> None:
        if name not in root.reported_dirs:
            root.reported_dirs.add(name)
            self.log.warning("directory in unprocessed/ left in place", root=str(root.layout.root), file=name)

    def _run_due_retry(self) -> bool:
        retry = self._retries.pop_due(self._clock(), self._may_retry)
        if retry is None:
            return False
        log = self.log.bind(root=str(retry.root.layout.root), file=retry.claim.name)
        if retry.finish is not None:
            finished = self._new_attempt().finish_again(retry.root.queue, retry.claim, retry.finish, log)
            self._settle(retry.root, retry.claim, finished, retry.finish)
            self._after_takeover(retry.root)
            if not self._pending:
                self._group_commit()
            return True
        if not os.path.lexists(retry.claim.path):
            # Moved on by the failed attempt itself (say, into processed/ before a failed fsync).
            log.warning("claimed file is gone; retry dropped")
            return True
        try:
            claim = retry.root.queue.again(retry.claim) if retry.counted else retry.claim
        except OSError as exc:
            # The attempt cannot be counted on disk; running it uncounted could crash-loop.
            log.warning("could not count the attempt; will retry", error=str(exc))
            self._retries.add(replace(retry, due=self._clock() + self.config.retry.backoff))
            return True
        outcome = self._attempt(retry.root, claim, exact=retry.exact)
        if isinstance(outcome, Produced):
            self._commit(retry.root, [outcome])
        else:
            self._settle(retry.root, claim, outcome, None)
        self._after_takeover(retry.root)
        if not self._pending:
            self._group_commit()
        return True

    def _health(self) -> None:
        """READY after recovery and the first scan; then a current STATUS and watchdog pings.

        Pings come only from this loop and from between batches of a file, so a processor
        stuck forever stops them and systemd restarts the agent.
        """
        self.notifier.watchdog_if_due()
        now = self._clock()
        if self._ready and now - self._status_at < 1.0:
            return
        self._status_at = now
        self._update_holds()
        waiting = len(self._pending) + len(self._retries)
        text = (
            f"processed {self.done['processed']}, failed {self.done['failed']}, "
            f"queued {waiting} across {len(self.roots)} root(s)"
        )
        text += "".join(f"; cannot serve {r.layout.root}: {r.unusable}" for r in self.roots if r.unusable)
        text += "".join(f"; holding {self.roots[i].layout.root}: {h.reason}" for i, h in self._holds.items())
        if not self._ready:
            self._ready = True
            self.notifier.ready(text)
        else:
            self.notifier.status(text)

    def _update_holds(self) -> None:
        """Which roots may claim now: none paused by hand (the marker in the root, whoever put
        it there) or short of free disk; said in the log when it changes."""
        disk: list[tuple[Root, DiskFree]] = []
        for index, root in enumerate(self.roots):
            hold = None
            paused = read_pause(root.layout)
            if paused is not None:
                hold = Hold(
                    "manual", f"paused by {paused.get('by', 'someone')} since {paused.get('since_iso', '?')}"
                )
            try:
                free = disk_free(root.layout)
            except OSError:
                free = []
            disk += [(root, d) for d in free]
            low = low_disk(free, self.config.guard.min_free)
            if hold is None and low is not None:
                hold = Hold("low_disk", low)
            self._set_hold(index, root, hold)
        self._disk = disk

    def _retain(self) -> None:
        """A bounded step of retention, at most five times a second, so it never stalls the queue."""
        if self._clock() < self._retain_at:
            return
        self._retain_at = self._clock() + _RETAIN_EVERY
        try:
            expired = self._retention.step()
        except OSError as exc:
            self.log.error("retention step failed; will try again", error=str(exc))
            return
        roots = {r.layout.root: r for r in self.roots}
        for (path, folder), count in expired.counts.items():
            attrs = {**roots[path].queue.attributes, "foldermon.folder": folder}
            self.telemetry.instruments.expired.add(count, attrs)
        done = self._retention.pass_done()
        if done is not None:
            removed = {f"{p}:{folder}": n for (p, folder), n in done.counts.items()}
            self.log.info("retention removed old files", removed=removed)

    def _say_held(self) -> None:
        for index, hold in self._holds.items():
            self.log.warning(
                "files left waiting in a held root",
                root=str(self.roots[index].layout.root),
                reason=hold.reason,
            )

    def _set_hold(self, index: int, root: Root, hold: Hold | None) -> None:
        before = self._holds.get(index)
        if hold == before:
            return
        log = self.log.bind(root=str(root.layout.root))
        if hold is None:
            del self._holds[index]
            log.info("claiming resumed", was=before.reason if before else None)
        else:
            self._holds[index] = hold
            log.warning("claiming held; files wait in unprocessed/", hold=hold.kind, reason=hold.reason)

    def _apply_reload(self) -> None:
        self._reload = False
        self.notifier.reloading()
        try:
            new = self._load_config()
        except ConfigError as exc:
            self.log.error("reload rejected; the running configuration stays", problems=exc.problems)
            self.notifier.ready("reload rejected; running with the previous configuration")
            return
        except Exception as exc:  # noqa: BLE001 - a reload must never stop the agent
            self.log.error(
                "reload rejected; the running configuration stays", problems=[f"{type(exc).__name__}: {exc}"]
            )
            self.notifier.ready("reload rejected; running with the previous configuration")
            return
        if (new.watch.dirs, new.output.dir, new.agent.workers) != (
            self.config.watch.dirs,
            self.config.output.dir,
            self.config.agent.workers,
        ):
            self.log.warning("watch.dirs, output.dir and agent.workers changes take effect after a restart")
        for root in self.roots:
            root.queue.output_name = new.output.name
            root.queue.max_attempts = new.retry.max_attempts
        self._retention.config = new.retention
        self._pending.reorder(new.watch.order, new.watch.priority)
        self.config = new
        self.notifier.ready("configuration reloaded")
        self.log.info("reloaded", processors=[s.id for s in new.processors])

    # -- one file -----------------------------------------------------------------------------

    def _next_batch(self) -> tuple[Root, list[str]] | None:
        """The next names of one root that may claim: up to _CLAIM_BATCH files or _CLAIM_BYTES of
        input, whichever comes first."""
        taken = self._pending.take(self._may_claim, self._size, files=_CLAIM_BATCH, total_bytes=_CLAIM_BYTES)
        return None if taken is None else (self.roots[taken[0]], taken[1])

    def _size(self, index: int, name: str) -> int:
        try:
            return os.stat(self.roots[index].layout.unprocessed / name, follow_symlinks=False).st_size
        except OSError:
            return 0  # gone: the claim will leave it out

    def _claim(self, root: Root, names: list[str]) -> list[ClaimResult]:
        index = self.roots.index(root)
        try:
            return root.queue.claim_batch(names)
        except ClaimFolderGoneError:
            if self._reopen(root):
                for name in names:  # offered again; those that went with the old folder are gone
                    self._offer(index, name)
            return []
        except OSError as exc:
            for name in names:  # every name of the batch was given back (or never moved)
                self.log.error("claim failed", root=str(root.layout.root), file=name, error=str(exc))
            return []

    def _unclaimable(self, root: Root, result: Unclaimable) -> None:
        if root.unclaimable.get(result.name, -1) != result.error.errno:
            root.unclaimable[result.name] = result.error.errno
            self.log.error(
                "cannot claim file; left in place and tried again at each scan",
                root=str(root.layout.root),
                file=result.name,
                error=result.error.strerror or str(result.error),
            )

    def _handle(self, root: Root, names: list[str]) -> None:
        results = self._claim(root, names)
        group: list[Produced] = []
        for result in results:
            if isinstance(result, Held):
                root.blocked.add(result.name)
            elif isinstance(result, Unclaimable):
                self._unclaimable(root, result)
            elif isinstance(result, Claim):
                group = self._run_claim(root, result, group)
                if root.taken_over:
                    break  # the rest of the batch went with the claim folder
            elif isinstance(result, Directory):
                self._report_dir(root, result.name)
            elif isinstance(result, Rejected):
                self.done["failed"] += 1
                self.progress.file_done("failed", 0)
                self.log.error(
                    "input rejected", root=str(root.layout.root), file=result.name, reason=result.reason
                )
            else:
                self._quarantine_exhausted(root, result)
        self._commit(root, group)
        self._after_takeover(root)
        if not self._pending or self._finished_unsynced >= _GROUP_COMMIT_FILES:
            self._group_commit()

    def _run_claim(self, root: Root, claim: Claim, group: list[Produced]) -> list[Produced]:
        """Run one claimed file; its output joins ``group``, committed when the group is large."""
        root.unclaimable.pop(claim.name, None)
        if self.stopping:
            root.queue.release(claim)
            return group
        outcome = self._attempt(root, claim)
        if not isinstance(outcome, Produced):
            self._settle(root, claim, outcome, None)
            return group
        group.append(outcome)
        if sum(p.run.claim.size for p in group) < _COMMIT_BYTES:
            return group
        self._commit(root, group)
        return []

    def _quarantine_exhausted(self, root: Root, result: Exhausted) -> None:
        message = (
            f"the agent stopped (crashed or was killed) during each of {result.attempts} attempts; "
            "quarantined so it cannot crash-loop the agent"
        )
        record = fail_record(
            RuntimeError(message), result.attempts, None, now=self._wall(), instance=self.instance_id
        )
        record["error_type"] = "AttemptsExhausted"
        log = self.log.bind(root=str(root.layout.root), file=result.name)
        try:
            failed_as = root.queue.fail(result, record)
        except OSError as exc:
            # Still claimed by this instance; the next start's recovery offers it again.
            log.error("quarantine failed", error=str(exc))
            return
        self.done["failed"] += 1
        self.progress.file_done("failed", 0)
        self._drop_marker(root, result.name)
        log.error("file failed", failed_as=failed_as, error=message)

    def _attempt(self, root: Root, claim: Claim, *, exact: bool = False) -> Outcome | Produced:
        log = self.log.bind(root=str(root.layout.root), file=claim.name, attempt=claim.attempt)
        try:
            root.queue.instance.mark_active(claim.name)
        except OSError as exc:
            log.warning(
                "could not record the active file; a crash now would not count its attempt", error=str(exc)
            )
        return self._new_attempt(exact=exact).run(root.queue, claim, log)

    def _new_attempt(self, *, exact: bool = False) -> Attempt:
        return Attempt(
            self.config,
            self.registry,
            self.telemetry,
            instance_id=self.instance_id,
            keep_going=self._keep_going,
            alarm=self.alarm,
            wall_clock=self._wall,
            exact_lines=exact,
        )

    def _commit(self, root: Root, group: list[Produced]) -> None:
        """fsync the output folder once for a group of produced files, then finish each of them.

        Their finishes are fsynced later still, by the group commit: the outputs are durable
        before any input moves to processed/.
        """
        if not group:
            return
        error = None
        try:
            fsync_dir(root.layout.output_dir)
        except OSError as exc:
            error = exc
        for produced in group:
            outcome = produced.complete(error)
            self._settle(root, produced.run.claim, outcome, produced.run.target)

    def _settle(self, root: Root, claim: Claim, result: Outcome, target: OutputTarget | None) -> None:
        if result.taken_over:
            root.taken_over = True
            return
        self.progress.file_done(result.outcome, result.lines_in)
        if result.retry_in is not None:
            finish = target if result.finish_only else None
            if result.trace is not None:  # the next attempt links to this one's trace
                claim = replace(claim, traces=(*claim.traces, result.trace))
            retry = Retry(self._clock() + result.retry_in, root, claim, result.counted, result.exact, finish)
            self._retries.add(retry)
            return
        if not result.released:
            self._drop_marker(root, claim.name)
            self.done[result.outcome] += 1
            self._finished_unsynced += result.outcome == "processed"
        if claim.name in root.blocked:  # a same-named file waited for this one to leave
            root.blocked.discard(claim.name)
            self._offer(self.roots.index(root), claim.name)

    def _queue_samples(self) -> list[QueueSample]:
        """Queue depths for the gauges; called from the metrics thread."""
        samples = []
        for root in list(self.roots):
            layout = root.layout
            waiting = input_names(layout.unprocessed)
            age = oldest_age(layout.unprocessed, waiting, self._wall())
            depths = {
                "unprocessed": len(waiting),
                "underprocess": claimed_count(layout),
                "failed": len(input_names(layout.failed)),
            }
            samples.append(QueueSample(str(layout.root), root.queue.root_id, depths, age))
        return samples

    def _disk_samples(self) -> list[tuple[dict[str, str], int]]:
        return [
            ({**root.queue.attributes, "foldermon.disk.folder": d.folder}, d.free) for root, d in self._disk
        ]

    def _hold_samples(self) -> list[tuple[dict[str, str], int]]:
        """1 per held root with why ("manual" or "low_disk"), 0 for the others."""
        samples = []
        for index, root in enumerate(list(self.roots)):
            hold = self._holds.get(index)
            attrs = {**root.queue.attributes, "foldermon.pause.reason": hold.kind if hold else "none"}
            samples.append((attrs, int(hold is not None)))
        return samples

    def _mode_samples(self) -> list[WatchModeSample]:
        roots = {r.layout.root: r for r in self.roots}
        if self._watcher is None:
            modes = [(r.layout.root, "once", "run --once lists the folder") for r in self.roots]
        else:
            modes = [(m.root, m.mode, m.reason) for m in self._watcher.modes]
        return [
            WatchModeSample(
                str(path), roots[path].queue.root_id, *_unless_unusable(roots[path], mode, reason)
            )
            for path, mode, reason in modes
        ]

    def _group_commit(self) -> None:
        """fsync processed/ and the claim folders once for all the finishes since the last commit."""
        for root in self.roots:
            try:
                root.queue.sync()
            except OSError as exc:
                # The finishes stay marked unsynced, so the next group commit tries again.
                self.log.error(
                    "fsync of finished files failed; will retry", root=str(root.layout.root), error=str(exc)
                )
        self._finished_unsynced = 0

    def _drop_marker(self, root: Root, name: str) -> None:
        """In done-file mode the marker has served its purpose once its input is finished or failed."""
        suffix = self.config.watch.done_suffix
        if suffix:
            (root.layout.unprocessed / (name + suffix)).unlink(missing_ok=True)
