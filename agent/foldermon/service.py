"""The agent: recovery, the watch loop, one file at a time through the queue, signals and drain."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from foldermon import log as logmod
from foldermon.config import Config
from foldermon.errors import ConfigError, InputRejectedError, LifecycleError
from foldermon.pipeline import build_pipeline
from foldermon.processors import Registry
from foldermon.queue.fsio import durable_rename
from foldermon.queue.layout import Layout
from foldermon.queue.lifecycle import (
    Claim,
    Directory,
    Exhausted,
    Instance,
    OutputTarget,
    Queue,
    Rejected,
    check_writable,
    fail_record,
    new_instance_id,
)
from foldermon.watch import EntryKind, NameRules, Watcher, open_watcher, scan_dir
from foldermon.worker import LineTooLongError, StreamResult, open_input, stream

# Failures of the environment, not of the file: retried without using up the file's attempts.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# Failures that the same bytes will always cause: no point retrying.
_PERMANENT = (InputRejectedError, LineTooLongError)


@dataclass(slots=True)
class Root:
    layout: Layout
    queue: Queue
    reported_dirs: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Retry:
    due: float
    root: Root
    claim: Claim
    counted: bool


class Agent:
    """Serves every configured watch root until stopped (or, with ``once``, until drained)."""

    def __init__(
        self,
        load_config: Callable[[], Config],
        registry: Registry,
        *,
        once: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._load_config = load_config
        self.config = load_config()
        self.registry = registry
        self.once = once
        self.instance_id = new_instance_id()
        self._clock = clock
        self._wall = wall_clock
        self.log = logmod.get(instance=self.instance_id)
        self.roots: list[Root] = []
        self._pending: dict[tuple[int, str], None] = {}
        self._retries: list[Retry] = []
        self._watcher: Watcher | None = None
        self._stop_at: float | None = None
        self._next_listing = 0.0
        self._reload = False

    # -- lifecycle of the agent ------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self._open_roots()
            if not self.once:
                self._watcher = open_watcher(self.config.watch, [r.layout.root for r in self.roots])
                for mode in self._watcher.modes:
                    self.log.info("watching", root=str(mode.root), mode=mode.mode, reason=mode.reason)
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _open_roots(self) -> None:
        for root_dir in self.config.watch.dirs:
            layout = Layout.for_root(root_dir, self.config.output.dir)
            try:
                layout.create()
                check_writable(layout)
                instance = Instance(layout, self.instance_id)
            except OSError as exc:
                raise LifecycleError(f"cannot use watch root {layout.root}: {exc.strerror or exc}") from exc
            queue = Queue(
                layout,
                instance,
                output_name=self.config.output.name,
                max_attempts=self.config.retry.max_attempts,
                wall_clock=self._wall,
            )
            report = queue.recover()
            if report.returned or report.temps_removed or report.dead_instances:
                self.log.info(
                    "recovered",
                    root=str(layout.root),
                    returned=len(report.returned),
                    temps_removed=report.temps_removed,
                    dead_instances=report.dead_instances,
                )
            self.roots.append(Root(layout, queue))

    def _shutdown(self) -> None:
        for retry in self._retries:
            retry.root.queue.release(retry.claim)
        self._retries.clear()
        if self._watcher is not None:
            self._watcher.close()
        for root in self.roots:
            root.queue.instance.close()
        self.log.info("stopped")

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._stop_at is None:
            self._stop_at = self._clock() + self.config.agent.drain_timeout
            self.log.info("stopping", signal=signal.Signals(signum).name)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True

    @property
    def stopping(self) -> bool:
        return self._stop_at is not None

    def _keep_going(self) -> bool:
        return self._stop_at is None or self._clock() < self._stop_at

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            if self._reload:
                self._apply_reload()
            self._collect()
            if self._run_due_retry():
                continue
            if self._pending:
                index, name = next(iter(self._pending))
                del self._pending[(index, name)]
                self._handle(self.roots[index], name)
            elif self.once and not self._retries:
                return
            elif self.once:
                time.sleep(min(0.2, max(0.0, self._retries[0].due - self._clock())))

    def _collect(self) -> None:
        if self._clock() >= self._next_listing:
            self._next_listing = self._clock() + self.config.watch.rescan_interval
            self._list_roots(take_files=self._watcher is None)
        if self._watcher is None:
            if not self._pending and not self._retries:
                self._list_roots(take_files=True)
            return
        timeout = 0.0 if self._pending else 1.0
        if self._retries and not self._pending:
            timeout = max(0.0, min(timeout, self._retries[0].due - self._clock()))
        by_root = {r.layout.root: i for i, r in enumerate(self.roots)}
        for event in self._watcher.poll(timeout):
            if event.name[:1] != ".":
                self._pending[(by_root[event.root], event.name)] = None

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
                for entry in sorted((*listing.ready, *listing.settling), key=lambda e: e.name):
                    if entry.name[:1] != ".":
                        self._pending[(index, entry.name)] = None

    def _report_dir(self, root: Root, name: str) -> None:
        if name not in root.reported_dirs:
            root.reported_dirs.add(name)
            self.log.warning("directory in unprocessed/ left in place", root=str(root.layout.root), file=name)

    def _run_due_retry(self) -> bool:
        if not self._retries or self._retries[0].due > self._clock():
            return False
        retry = self._retries.pop(0)
        claim = retry.root.queue.again(retry.claim) if retry.counted else retry.claim
        self._attempt(retry.root, claim)
        return True

    def _apply_reload(self) -> None:
        self._reload = False
        try:
            new = self._load_config()
        except ConfigError as exc:
            self.log.error("reload rejected; the running configuration stays", problems=exc.problems)
            return
        if new.watch.dirs != self.config.watch.dirs or new.output.dir != self.config.output.dir:
            self.log.warning("watch.dirs and output.dir changes take effect after a restart")
        for root in self.roots:
            root.queue.output_name = new.output.name
            root.queue.max_attempts = new.retry.max_attempts
        self.config = new
        self.log.info("reloaded", processors=[s.id for s in new.processors])

    # -- one file -----------------------------------------------------------------------------

    def _handle(self, root: Root, name: str) -> None:
        try:
            result = root.queue.claim(name)
        except OSError as exc:
            self.log.error("claim failed", root=str(root.layout.root), file=name, error=str(exc))
            return
        if isinstance(result, Claim):
            self._attempt(root, result)
        elif isinstance(result, Directory):
            if name not in root.reported_dirs:
                root.reported_dirs.add(name)
                self.log.warning(
                    "directory in unprocessed/ left in place", root=str(root.layout.root), file=name
                )
        elif isinstance(result, Rejected):
            self.log.error("input rejected", root=str(root.layout.root), file=name, reason=result.reason)
        elif isinstance(result, Exhausted):
            message = (
                f"the agent stopped (crashed or was killed) during each of {result.attempts} attempts; "
                "quarantined so it cannot crash-loop the agent"
            )
            record = fail_record(RuntimeError(message), result, now=self._wall(), instance=self.instance_id)
            record["error_type"] = "AttemptsExhausted"
            failed_as = root.queue.fail(result, record)
            self.log.error(
                "file failed",
                root=str(root.layout.root),
                file=name,
                failed_as=failed_as,
                error=message,
            )

    def _attempt(self, root: Root, claim: Claim) -> None:
        queue = root.queue
        target = queue.output_target(claim)
        log = self.log.bind(root=str(root.layout.root), file=claim.name, attempt=claim.attempt)
        started = self._clock()
        try:
            result = self._produce(claim, target)
            durable_rename(target.tmp, target.final, replace=True)
            processed_as = queue.finish(claim, target)
            self._drop_marker(root, claim.name)
        except InterruptedError:
            target.tmp.unlink(missing_ok=True)
            queue.release(claim)
            log.info("file released for another run", reason="shutdown deadline")
            return
        except Exception as exc:  # noqa: BLE001 - processors are plugin code; any failure is the file's
            target.tmp.unlink(missing_ok=True)
            self._failed_attempt(root, claim, exc, log)
            return
        log.info(
            "file processed",
            processed_as=processed_as,
            output=str(target.final),
            lines_in=result.lines_in,
            lines_out=result.lines_out,
            seconds=round(self._clock() - started, 6),
        )

    def _produce(self, claim: Claim, target: OutputTarget) -> StreamResult:
        pipeline = build_pipeline(self.config.processors, self.registry)
        with open_input(claim.path) as src:
            fd = os.open(
                target.tmp,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640,
            )
            try:
                return stream(
                    src,
                    fd,
                    pipeline,
                    max_line_bytes=self.config.pipeline.max_line_bytes,
                    keep_going=self._keep_going,
                )
            finally:
                os.close(fd)

    def _failed_attempt(self, root: Root, claim: Claim, exc: Exception, log: logmod.Logger) -> None:
        environment = isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS
        retry = environment or (not isinstance(exc, _PERMANENT) and claim.attempt < root.queue.max_attempts)
        if retry:
            delay = self.config.retry.backoff * 2 ** (claim.attempt - 1)
            self._retries.append(Retry(self._clock() + delay, root, claim, counted=not environment))
            self._retries.sort(key=lambda r: r.due)
            log.warning("attempt failed; will retry", error=_describe(exc), retry_in=delay)
            return
        record = fail_record(
            exc,
            claim,
            now=self._wall(),
            instance=self.instance_id,
            processor_id=getattr(exc, "processor_id", None),
            processor_type=getattr(exc, "processor_type", None),
            line=getattr(exc, "line", None),
            cause=_describe(exc.__cause__) if exc.__cause__ else None,
        )
        failed_as = root.queue.fail(claim, record)
        self._drop_marker(root, claim.name)
        log.error("file failed", failed_as=failed_as, error=_describe(exc))

    def _drop_marker(self, root: Root, name: str) -> None:
        """In done-file mode the marker has served its purpose once its input is finished or failed."""
        suffix = self.config.watch.done_suffix
        if suffix:
            (root.layout.unprocessed / (name + suffix)).unlink(missing_ok=True)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if exc.__cause__ is not None:
        text += f" (caused by {type(exc.__cause__).__name__}: {exc.__cause__})"
    return text


def resolve_roots(dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    """Absolute, de-duplicated watch roots in the order given."""
    seen: dict[Path, None] = {}
    for d in dirs:
        seen[d.expanduser().absolute()] = None
    return tuple(seen)
