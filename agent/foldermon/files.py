"""Files through the queue: a claim batch claimed, each file attempted, the outputs of the batch
made durable together, the inputs finished and their finishes fsynced in groups; retries and
quarantine."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from foldermon.attempt import Attempt, Outcome, Produced, exact_for, exhausted_trace, trace_fields
from foldermon.config import Config
from foldermon.deadline import Alarm
from foldermon.errors import ProcessorError
from foldermon.processors import Registry
from foldermon.queue.claims import (
    Claim,
    ClaimFolderGoneError,
    ClaimResult,
    Directory,
    Exhausted,
    Held,
    Rejected,
    Unclaimable,
)
from foldermon.queue.fsio import fsync_dir
from foldermon.queue.output import OutputTarget
from foldermon.queue.records import fail_record
from foldermon.roots import Root
from foldermon.scheduler import Pending, Retries, pause_marker
from foldermon.telemetry import Telemetry

if TYPE_CHECKING:
    from foldermon.log import Logger

# Finishes are fsynced together for at most this many files, and whenever the queue is empty.
GROUP_COMMIT_FILES = 64
# Outputs of a claim batch are made durable together (one fsync of the output folder), or as
# soon as the inputs produced since the last such fsync add up to this many bytes, or once the
# first of them has waited this many seconds while a later file of the batch runs.
COMMIT_BYTES = 4 << 20
COMMIT_SECONDS = 0.5


class Progress(Protocol):
    """Told about files as they are queued and done (the terminal display of ``run --once``)."""

    def add_total(self, files: int) -> None: ...

    def file_done(self, outcome: str, lines: int) -> None: ...


class NoProgress:
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
    exact: ProcessorError | None = None  # run line by line, to name the line this error is on
    finish: OutputTarget | None = None  # the output is published: only the finish is retried
    environment: bool = False  # waits for the environment (a full disk), not for the file
    room_needed: int = 0  # bytes of output the disk guard must have room for first


@dataclass(slots=True)
class Context:
    """What running files needs from the agent around it."""

    config: Config  # replaced on reload
    registry: Registry
    telemetry: Telemetry
    instance_id: str
    alarm: Alarm
    log: Logger
    progress: Progress
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    keep_going: Callable[[], bool]  # asked between batches of a file
    stopping: Callable[[], bool]
    reopen: Callable[[Root], bool]  # the claim folder was gone: make it again
    after_takeover: Callable[[Root], None]  # start again if another instance fenced the claims


class Files:
    """Runs claim batches and retries of the roots; counts what was processed and failed."""

    def __init__(
        self, ctx: Context, roots: Sequence[Root], pending: Pending, retries: Retries[Retry]
    ) -> None:
        self.ctx = ctx
        self._roots = roots
        self._pending = pending
        self.retries = retries
        self.done = {"processed": 0, "failed": 0}
        self._finished_unsynced = 0
        # Produced files of the running claim batch, not yet committed, of this root, since when.
        self._group: list[Produced] = []
        self._group_root: Root | None = None
        self._group_since = 0.0

    def offer(self, root: Root, name: str) -> bool:
        return self._pending.add(self._roots.index(root), name, root.layout.unprocessed)

    def handle(self, root: Root, names: list[str]) -> None:
        """Claim ``names`` of ``root`` in one batch and run each file claimed."""
        for result in self._claim(root, names):
            if isinstance(result, Held):
                root.blocked.add(result.name)
            elif isinstance(result, Unclaimable):
                self._unclaimable(root, result)
            elif isinstance(result, Claim):
                self._run_claim(root, result)
                if root.taken_over:
                    break  # the rest of the batch went with the claim folder
            elif isinstance(result, Directory):
                root.report_dir(result.name, self.ctx.log)
            elif isinstance(result, Rejected):
                self._count_failed(root, "InputRejected")
                self.ctx.log.error(
                    "input rejected", root=str(root.layout.root), file=result.name, reason=result.reason
                )
            else:
                self._quarantine_exhausted(root, result)
        self._commit_group()
        self.ctx.after_takeover(root)
        if not self._pending or self._finished_unsynced >= GROUP_COMMIT_FILES:
            self.group_commit()

    def run_due_retry(self, allowed: Callable[[Retry], bool]) -> bool:
        """Run the retry that is due, if any (False when none is)."""
        retry = self.retries.pop_due(self.ctx.clock(), allowed)
        if retry is None:
            return False
        log = self.ctx.log.bind(root=str(retry.root.layout.root), file=retry.claim.name)
        if retry.finish is not None:
            finished = self._new_attempt().finish_again(retry.root.queue, retry.claim, retry.finish, log)
            self._settle(retry.root, retry.claim, finished, retry.finish)
        elif not os.path.lexists(retry.claim.path):
            # Moved on by the failed attempt itself (say, into processed/ before a failed fsync),
            # or removed by hand: a new file of that name is claimed afresh.
            log.warning("claimed file is gone; retry dropped")
            retry.root.queue.forget(retry.claim)
            self._unblock(retry.root, retry.claim.name)
            return True
        else:
            try:
                claim = retry.root.queue.again(retry.claim) if retry.counted else retry.claim
            except OSError as exc:
                # The attempt cannot be counted on disk; running it uncounted could crash-loop.
                log.warning("could not count the attempt; will retry", error=str(exc))
                waited = replace(retry.claim, waits=retry.claim.waits + 1)  # on the disk, not the file
                due = self.ctx.clock() + self.ctx.config.retry.backoff
                self.retries.add(replace(retry, due=due, claim=waited, environment=True))
                return True
            outcome = self._attempt(retry.root, claim, exact=retry.exact)
            if isinstance(outcome, Produced):
                self._commit(retry.root, [outcome])
            else:
                self._settle(retry.root, claim, outcome, None)
        self.ctx.after_takeover(retry.root)
        if not self._pending:
            self.group_commit()
        return True

    def release_waiting(self) -> None:
        """At stop: give the files waiting for a retry back to unprocessed/ (and forget them)."""
        for retry in self.retries:
            log = self.ctx.log.bind(root=str(retry.root.layout.root), file=retry.claim.name)
            if retry.finish is not None:
                # Its output is published: released, it would be processed again. Left claimed,
                # the recovery after this instance finishes it.
                log.warning("left claimed for recovery: output published, finish pending")
                continue
            try:
                retry.root.queue.release(retry.claim)
            except OSError as exc:
                log.warning("left claimed for recovery: could not release it", error=str(exc))
            else:
                log.info("file released for another run", reason="waiting for a retry")
        self.retries.clear()

    def group_commit(self) -> None:
        """fsync processed/ and the claim folders once for all the finishes since the last commit."""
        for root in self._roots:
            try:
                root.queue.sync()
            except OSError as exc:
                # The finishes stay marked unsynced, so the next group commit tries again.
                self.ctx.log.error(
                    "fsync of finished files failed; will retry", root=str(root.layout.root), error=str(exc)
                )
        self._finished_unsynced = 0

    def _claim(self, root: Root, names: list[str]) -> list[ClaimResult]:
        try:
            return root.queue.claim_batch(names)
        except ClaimFolderGoneError:
            if self.ctx.reopen(root):
                for name in names:  # offered again; those that went with the old folder are gone
                    self.offer(root, name)
            return []
        except OSError as exc:
            for name in names:  # every name of the batch was given back (or never moved)
                self.ctx.log.error("claim failed", root=str(root.layout.root), file=name, error=str(exc))
            return []

    def _unclaimable(self, root: Root, result: Unclaimable) -> None:
        if root.unclaimable.get(result.name, -1) != result.error.errno:
            root.unclaimable[result.name] = result.error.errno
            self.ctx.log.error(
                "cannot claim file; left in place and tried again at each scan",
                root=str(root.layout.root),
                file=result.name,
                error=result.error.strerror or str(result.error),
            )

    def _run_claim(self, root: Root, claim: Claim) -> None:
        """Run one claimed file; its output joins the batch's group, committed when it is large."""
        root.unclaimable.pop(claim.name, None)
        # A stop, or a pause (`foldermon-agent pause`, looked at before each file: files not
        # started yet are released, so a pause holds within a file, not a claim batch).
        if self.ctx.stopping() or os.path.lexists(pause_marker(root.layout)):
            root.queue.release(claim)
            return
        outcome = self._attempt(root, claim, exact=exact_for(claim))
        if not isinstance(outcome, Produced):
            self._settle(root, claim, outcome, None)
            return
        if not self._group:
            self._group_root, self._group_since = root, self.ctx.clock()
        self._group.append(outcome)
        if sum(p.run.claim.size for p in self._group) >= COMMIT_BYTES:
            self._commit_group()

    def commit_due(self) -> None:
        """Between batches of a file: the outputs its claim batch produced before it are made
        durable and their inputs finished once they have waited COMMIT_SECONDS, so a long file
        does not hold up (nor lengthen the spans and durations of) the files before it."""
        if self._group and self.ctx.clock() - self._group_since >= COMMIT_SECONDS:
            self._commit_group()

    def _commit_group(self) -> None:
        group, self._group = self._group, []
        if group and self._group_root is not None:
            self._commit(self._group_root, group)

    def _quarantine_exhausted(self, root: Root, result: Exhausted) -> None:
        count = result.count
        last = count.error
        if last is not None and last.get("attempt") == count.attempts:
            self._quarantine_lowered(root, result, last)
            return
        message = (
            f"its {count.attempts} attempts are used up, the last ended by the agent stopping (a crash "
            "or a kill); quarantined so it cannot crash-loop the agent"
        )
        record = fail_record(
            RuntimeError(message),
            count.attempts,
            count.first or None,
            now=self.ctx.wall_clock(),
            instance=self.ctx.instance_id,
        )
        record["error_type"] = "AttemptsExhausted"
        # The attempts that ended the agent left no trace: the quarantine has one, linked to the
        # traces of those attempts that failed and were kept.
        with exhausted_trace(self.ctx.telemetry, root.queue, result.name, count, message) as fields:
            record.update(fields)
            self._quarantine_at_claim(root, result, record, message)

    def _quarantine_lowered(self, root: Root, result: Exhausted, last: dict[str, Any]) -> None:
        """A file whose last attempt failed (not ended the agent) and that has no attempt left
        under a max_attempts lowered since: quarantined with that attempt's error and trace."""
        count = result.count
        keep = ("error_type", "message", "processor_id", "processor_type", "line", "cause")
        record: dict[str, Any] = {k: last[k] for k in keep if last.get(k) is not None}
        record.update(
            attempts=count.attempts,
            first_attempt=count.first or None,
            last_attempt=self.ctx.wall_clock(),
            instance=self.ctx.instance_id,
            note=f"max_attempts ({root.queue.max_attempts}) was lowered after this attempt failed",
        )
        if count.traces and count.traces[-1].attempt == count.attempts:
            record.update(trace_fields(count.traces[:-1], count.traces[-1]))
        error = f"{record.get('error_type', '_OTHER')}: {record.get('message')}"
        self._quarantine_at_claim(root, result, record, error)

    def _quarantine_at_claim(self, root: Root, result: Exhausted, record: dict[str, Any], error: str) -> None:
        """Quarantine a file given up on when claimed, with its record; logged and counted."""
        log = self.ctx.log.bind(root=str(root.layout.root), file=result.name)
        try:
            failed_as = root.queue.fail(result, record)
        except OSError as exc:
            # Still claimed by this instance; the next start's recovery offers it again.
            log.error("quarantine failed", error=str(exc))
            return
        log.error("file failed", failed_as=failed_as, error=error)
        self._count_failed(root, str(record.get("error_type", "_OTHER")))
        self._drop_marker(root, result.name)

    def _count_failed(self, root: Root, error_type: str) -> None:
        """A file quarantined when claimed, without an attempt: counted as any failed file."""
        self.done["failed"] += 1
        self.ctx.progress.file_done("failed", 0)
        ins = self.ctx.telemetry.instruments
        attrs = {"foldermon.outcome": "failed", "error.type": error_type, **root.queue.attributes}
        ins.tally.add(ins.files, 1, attrs)

    def _attempt(
        self, root: Root, claim: Claim, *, exact: ProcessorError | None = None
    ) -> Outcome | Produced:
        log = self.ctx.log.bind(root=str(root.layout.root), file=claim.name, attempt=claim.attempt)
        try:
            root.queue.instance.mark_active(claim.name, claim.first_attempt)
        except OSError as exc:
            log.warning(
                "could not record the active file; a crash now would not count its attempt", error=str(exc)
            )
        return self._new_attempt(exact=exact).run(root.queue, claim, log)

    def _new_attempt(self, *, exact: ProcessorError | None = None) -> Attempt:
        ctx = self.ctx
        return Attempt(
            ctx.config,
            ctx.registry,
            ctx.telemetry,
            instance_id=ctx.instance_id,
            keep_going=ctx.keep_going,
            alarm=ctx.alarm,
            wall_clock=ctx.wall_clock,
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
        self.ctx.progress.file_done(result.outcome, result.lines_in)
        if result.retry_in is not None:
            finish = target if result.finish_only else None
            # The next attempt links to this one's trace. A batch run that runs again at once
            # line by line is the same attempt: that run links to (and the record lists) its
            # trace when it was kept, and traces the attempt itself whatever the sampler says.
            if result.trace is not None and (result.trace.sampled or not result.rerun):
                claim = replace(claim, traces=(*claim.traces, result.trace))
            if result.failure is not None:
                claim = replace(claim, error=result.failure)
            if result.counted and not result.finish_only:
                try:
                    root.queue.attempt_failed(claim)
                except OSError as exc:  # counted when the retry starts (``again``), as before
                    self.ctx.log.warning("could not record the failed attempt yet", error=str(exc))
            elif not result.rerun:
                # It waits uncounted (a full disk): no attempt runs, so a crash meanwhile counts none.
                try:
                    if result.room_needed:
                        root.queue.wait_for_room(claim, result.room_needed)
                    else:
                        root.queue.instance.mark_active("")
                except OSError as exc:
                    self.ctx.log.warning("could not record that the file waits", error=str(exc))
            if result.environment:
                claim = replace(claim, waits=claim.waits + 1)
            retry = Retry(
                self.ctx.clock() + result.retry_in,
                root,
                claim,
                result.counted,
                result.exact,
                finish,
                result.environment,
                result.room_needed,
            )
            self.retries.add(retry)
            return
        if not result.released:
            self._drop_marker(root, claim.name)
            self.done[result.outcome] += 1
            self._finished_unsynced += result.outcome == "processed"
        self._unblock(root, claim.name)

    def _unblock(self, root: Root, name: str) -> None:
        if name in root.blocked:  # a same-named file waited for this one to leave
            root.blocked.discard(name)
            self.offer(root, name)

    def _drop_marker(self, root: Root, name: str) -> None:
        """In done-file mode the marker has served its purpose once its input is finished or failed."""
        suffix = self.ctx.config.watch.done_suffix
        if suffix:
            (root.layout.unprocessed / (name + suffix)).unlink(missing_ok=True)
