"""The agent: recovery, the watch loop, signals and drain; wiring of the roots, the scheduling
and the files through the queue."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from foldermon import __version__, early
from foldermon import log as logmod
from foldermon.compression import output_estimate
from foldermon.config import DEFAULT_MAX_INPUT_BYTES, Config
from foldermon.configcheck import WATCHER_SETTINGS, restart_only_changes
from foldermon.deadline import Alarm
from foldermon.errors import EX_TEMPFAIL, UNREACHABLE_ERRNOS, ConfigError, LifecycleError
from foldermon.files import Context, Files, NoProgress, Progress, Retry
from foldermon.processors import Registry
from foldermon.queue.counter import counter_name, read_counter
from foldermon.retention import Retention
from foldermon.roots import (
    Root,
    disk_samples,
    hold_samples,
    mode_samples,
    open_root,
    queue_samples,
    recover,
    recover_all,
    zero_counters,
)
from foldermon.scheduler import Holds, Pending, Retries
from foldermon.sdnotify import Notifier
from foldermon.telemetry import Telemetry
from foldermon.watch import NameRules, Watcher, open_watcher

# A backlog is claimed this many files at a time (one fsync pair per batch); small enough that
# other instances on the same root still get their share and a stop has little to give back.
_CLAIM_BATCH = 16
# ... and at most this much input: large files are claimed few at a time, so that the workers
# of `run --workers` (or other instances) share a backlog of them evenly to the end.
_CLAIM_BYTES = 1 << 20
# The disk guard's allowance per claimed file beyond its output: block rounding, lock, record.
_PER_FILE_BYTES = 16 << 10
# A long file's lines read are counted this often (the backlog alert tells work from a wedge by them).
_PROGRESS_EVERY = 5.0
# Retention takes a bounded step at most this often.
_RETAIN_EVERY = 0.2


ONCE_ENVIRONMENT_TRIES = 3


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
        siblings: Callable[[Callable[[], bool], Callable[[], object]], None] | None = None,
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
        self._holds = Holds(self.log)
        self._retention = Retention(lambda: [r.layout for r in self.roots], self.config.retention)
        self._retain_at = 0.0
        self._watcher: Watcher | None = None
        self._stop_at: float | None = None
        self._left_waiting = False  # --once ended with files waiting in a held root
        self._next_listing = 0.0
        self._reload = False
        # With --once, the worker reporting the queue gauges waits for the others before its
        # final export (supervisor.wait_for_siblings).
        self._siblings = siblings
        self.notifier = notifier or Notifier.from_environ()
        self.files = Files(
            Context(
                self.config,
                registry,
                telemetry,
                instance_id,
                self.alarm,
                self.log,
                progress or NoProgress(),
                clock,
                wall_clock,
                keep_going=self._keep_going,
                stopping=lambda: self.stopping,
                reopen=self._reopen,
                after_takeover=self._after_takeover,
            ),
            self.roots,
            self._pending,
            self._retries,
        )
        self._ready = False
        self._status_at = 0.0
        self._unreachable_said = 0.0  # when the next "filesystem unreachable" may be logged
        if queue_gauges:
            telemetry.instruments.queue_source = lambda: queue_samples(
                list(self.roots), NameRules.from_settings(self.config.watch), self._wall()
            )
            telemetry.instruments.disk_source = lambda: disk_samples(list(self.roots), self._holds)
            telemetry.instruments.hold_source = lambda: hold_samples(list(self.roots), self._holds)
        telemetry.instruments.mode_source = lambda: mode_samples(list(self.roots), self._watcher)

    # -- lifecycle of the agent ------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self.log.info("starting", version=__version__, pid=os.getpid())
            self._open_roots()
            if not self.once:
                self._watcher = self._open_watcher(self.config)
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                self.alarm.close()
        # --once says in its exit code whether any file went to failed/ or could not be claimed
        # (left in unprocessed/, reported), or else was left waiting (a held root, a full disk, a
        # file still being written): for cron and scripts.
        if self.once and (self.files.done["failed"] or self._unclaimed()):
            return 1
        return EX_TEMPFAIL if self.once and self._left_waiting else 0

    def _open_roots(self) -> None:
        for root_dir in self.config.watch.dirs:
            self.roots.append(open_root(root_dir, self.config, self.instance_id, self._wall, self.log))
        # Every counter series at 0 reaches the collector before the first count (a recovery's).
        zero_counters(self.roots, self.config, self.telemetry)
        self.telemetry.export_counters_now()
        for root in self.roots:
            recover(root, self.log, self.telemetry.instruments, sweep_temps=True)

    def _shutdown(self) -> None:
        self.files.group_commit()
        self.telemetry.instruments.tally.flush()
        self.files.release_waiting()
        if self._watcher is not None:
            self._watcher.close()
        for root in self.roots:
            root.queue.instance.close()
        if self.once and self._siblings is not None:
            self._siblings(lambda: not self.stopping, self.notifier.watchdog_if_due)
        self.log.info("stopped")
        self.telemetry.shutdown(timeout=5.0)

    def _install_signals(self) -> None:
        self.alarm.install()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        # A writer opening a file while a scan holds its read lease (watch.open_for_writing) breaks
        # the lease, which sends SIGIO; its default action would end the agent.
        signal.signal(signal.SIGIO, signal.SIG_IGN)
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
            self.notifier.stopping("stopping: finishing or releasing the current file")
            self.log.info("stopping", signal=signal.Signals(signum).name)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        # Said at once, each time: a reload is applied between files, and a long (or hung) file
        # delays it (then the file as it is at that time is read, once).
        self.log.info("reload requested; applied once the file being processed, if any, is done")
        self._reload = True

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def _keep_going(self) -> bool:
        """Asked between batches of a file: the loop is alive, so the watchdog may be fed, and the
        lines read so far counted."""
        self.notifier.watchdog_if_due()
        self.files.commit_due()
        self.telemetry.instruments.tally.flush_every(_PROGRESS_EVERY, self._clock())
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
        if self.files.run_due_retry(self._may_retry):
            self.telemetry.instruments.tally.flush()
            return False
        batch = self._next_batch()
        self._retain()
        if batch is not None:
            self.files.handle(*batch)
            self.telemetry.instruments.tally.flush()
        elif self.once:
            fencing = self._settle_fenced()
            due = self._retries.next_due(self._may_retry)
            settling = any(root.settling for root in self.roots)
            if due is None and not settling and not fencing and not self._pending.ready(self._may_claim):
                self._recover_and_list()  # a last look: an agent that died during this run
                if self._pending.ready(self._may_claim) or self._settle_fenced():
                    return False
                self._holds.say_held([r.layout for r in self.roots])
                written = any(root.still_written for root in self.roots)
                unsettled = any(root.queue.fenced_seen for root in self.roots)
                self._left_waiting = written or unsettled or len(self._pending) + len(self._retries) > 0
                return True  # drained, or what is left waits for a held root
            time.sleep(min(0.2, max(0.0, due - self._clock()) if due is not None else 0.2))
        return False

    def _settle_fenced(self) -> bool:
        """``--once``: the claims of dead instances fenced on a shared root are settled once fenced
        for twice the lease (and their files taken): True while some wait for that."""

        def due() -> list[float]:
            return [first + 2 * r.queue.lease for r in self.roots for first in r.queue.fenced_seen.values()]

        now = self._clock()
        if any(when <= now for when in due()):
            self._recover_and_list()
        return any(when > now for when in due())

    def _recover_and_list(self) -> None:
        """``--once``: settle the claims of dead instances, and queue what that gave back."""
        recover_all(self.roots, self.log, self.telemetry.instruments)
        self._list_roots(take_files=True)

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
                recover_all(self.roots, self.log, self.telemetry.instruments)
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
        return self.files.offer(self.roots[index], name)

    def _unclaimed(self) -> bool:
        """Whether a file this agent could not claim is still there."""
        return any(
            os.path.lexists(root.layout.unprocessed / name)
            for root in self.roots
            for name in root.unclaimable
        )

    def _may_claim(self, index: int) -> bool:
        return index not in self._holds

    def _may_retry(self, retry: Retry) -> bool:
        # --once does not wait long for a full disk to be freed: after max_attempts tries in a row
        # (three at least: one failed write must not end the run) the file is left for a later run.
        tries = max(self.config.retry.max_attempts, ONCE_ENVIRONMENT_TRIES)
        if self.once and retry.environment and retry.claim.waits >= tries:
            return False
        index = self.roots.index(retry.root)
        if index in self._holds:
            return False
        if retry.room_needed:  # its output took the disk below min_free: wait for room for it
            room, _most = self._holds.room(index, retry.root.layout, self.config.guard.min_free)
            return room is None or room >= retry.room_needed
        return True

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

    def _list_roots(self, *, take_files: bool) -> None:
        """Report directories; with ``take_files`` (``--once``) also queue every ready name.

        In watch mode files come from the watcher only, which knows when a file is complete.
        """
        rules = NameRules.from_settings(self.config.watch) if take_files else None
        now, wall = self._clock(), self._wall()
        for index, root in enumerate(self.roots):
            names = root.listing(rules, self.log, settle=self.config.watch.settle, now=now, wall=wall)
            if take_files:
                # --once tries a name it may not move (permissions) once, then leaves it.
                added = sum(self._offer(index, n) for n in names if not (self.once and root.forbidden(n)))
                self.files.ctx.progress.add_total(added)

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
        self._holds.update([r.layout for r in self.roots], self.config.guard.min_free)
        waiting = len(self._pending) + len(self._retries)
        text = (
            f"processed {self.files.done['processed']}, failed {self.files.done['failed']}, "
            f"queued {waiting} across {len(self.roots)} root(s)"
        )
        text += "".join(f"; cannot serve {r.layout.root}: {r.unusable}" for r in self.roots if r.unusable)
        text += "".join(f"; holding {self.roots[i].layout.root}: {h.reason}" for i, h in self._holds.items())
        if not self._ready:
            self._ready = True
            self.notifier.ready(text)
        else:
            self.notifier.status(text)

    def _retain(self) -> None:
        """A bounded step of retention, at most five times a second, so it never stalls the queue."""
        if self._clock() >= self._retain_at:
            self._retain_at = self._clock() + _RETAIN_EVERY
            attributes = {r.layout.root: r.queue.attributes for r in self.roots}
            self._retention.step_reported(attributes, self.telemetry.instruments.expired.add, self.log)

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
        old = self.config
        later = restart_only_changes(old, new)
        if later:
            self.log.warning("these changes take effect after a restart", settings=later)
        if any(getattr(new.watch, k) != getattr(old.watch, k) for k in WATCHER_SETTINGS):
            self._rewatch(new)
        for root in self.roots:
            root.queue.output_name = new.output.name
            root.queue.max_attempts = new.retry.max_attempts
        self._retention.config = new.retention
        self._pending.reorder(new.watch.order, new.watch.priority)
        self._holds.weigh_again()  # under the new rules and min_free, from the next batch
        self.config = self.files.ctx.config = new
        self.notifier.ready("configuration reloaded")
        self.log.info("reloaded", processors=[s.id for s in new.processors])

    def _rewatch(self, new: Config) -> None:
        """Watch with new name rules, settle time or mode: a new watcher, whose first scan offers
        again, under the new rules, the names waiting to be claimed."""
        if self._watcher is None:
            return
        try:
            watcher = self._open_watcher(new)
        except Exception as exc:  # noqa: BLE001 - a reload must never stop the agent
            self.log.error("watch settings not changed; the running watcher stays", error=str(exc))
            return
        self._watcher.close()
        self._watcher = watcher
        for index in range(len(self.roots)):
            self._pending.drop_root(index)

    def _open_watcher(self, config: Config) -> Watcher:
        """A watcher of every root under ``config``'s watch settings, its mode per root said."""
        watcher = open_watcher(config.watch, [r.layout.root for r in self.roots])
        for mode in watcher.modes:
            self.log.info("watching", root=str(mode.root), mode=mode.mode, reason=mode.reason)
        return watcher

    # -- one file -----------------------------------------------------------------------------

    def _next_batch(self) -> tuple[Root, list[str]] | None:
        """The next names of one root that may claim: up to _CLAIM_BATCH files or _CLAIM_BYTES of
        input, whichever comes first, and with ``[guard] min_free`` no more output than the
        output folder has room for above it."""
        min_free = self.config.guard.min_free
        fits = None
        if min_free:
            rooms: dict[int, tuple[int | None, int]] = {}

            def fits(index: int, name: str, output: int, first: bool) -> bool:
                layout = self.roots[index].layout
                if index not in rooms:
                    rooms[index] = self._holds.room(index, layout, min_free)
                room, most = rooms[index]
                if room is None or output <= room:
                    return True
                # Weighed by its size or its header to more than would fit on an empty disk (but
                # for the input itself, when it is on that disk), a file is not waited for (it
                # would hold the root for good): its run shows what it really writes (a pipeline
                # may shrink it, a header may lie), and the write check stops it at min_free.
                # Only output it really wrote holds the root.
                never = output > most - _on_disk_of(layout.unprocessed / name, layout.output_dir)
                if room > 0 and never and not self._room_needed(index, name):
                    return True
                if first:
                    self._holds.no_room(index, layout, min_free, layout.unprocessed / name, output)
                return False

        size = self._size if fits is None else self._output_size
        taken = self._pending.take(
            self._may_claim, size, files=_CLAIM_BATCH, total_bytes=_CLAIM_BYTES, fits=fits
        )
        return None if taken is None else (self.roots[taken[0]], taken[1])

    def _output_size(self, index: int, name: str) -> int:
        """What a file takes from the disk guard's room: its output (at least what an attempt
        stopped by the guard had written, as its counter says), plus the blocks of its
        bookkeeping (lock, record) and of rounding."""
        path = self.roots[index].layout.unprocessed / name
        limit = self.config.pipeline.max_input_bytes or DEFAULT_MAX_INPUT_BYTES
        estimate = output_estimate(path, self.config.output.compress, limit)
        return max(estimate, self._room_needed(index, name)) + _PER_FILE_BYTES

    def _room_needed(self, index: int, name: str) -> int:
        """The output an attempt the guard stopped had written, as the file's counter keeps it."""
        path = self.roots[index].layout.unprocessed / name
        counter = path.with_name(counter_name(name))
        if os.path.lexists(counter):
            with contextlib.suppress(OSError):
                return read_counter(counter, os.lstat(path)).room_needed
        return 0

    def _size(self, index: int, name: str) -> int:
        try:
            return os.stat(self.roots[index].layout.unprocessed / name, follow_symlinks=False).st_size
        except OSError:
            return 0  # gone: the claim will leave it out


def _on_disk_of(path: Path, folder: Path) -> int:
    """The bytes ``path`` takes on ``folder``'s filesystem: its size there, else 0."""
    try:
        st = os.stat(path, follow_symlinks=False)
        return st.st_size if st.st_dev == os.stat(folder).st_dev else 0
    except OSError:
        return 0
