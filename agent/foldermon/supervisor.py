"""``run`` with ``workers`` > 1: one agent process per worker, started and watched from here.

Each worker is a whole agent (its own claim folder, processor instances and telemetry
providers) run as ``python -m foldermon`` with this process's arguments. The folder queue
already makes several agents on one root safe, so workers share nothing but the folders and
use every core where one Python process would use one. This process does no queue work:

- SIGTERM and SIGINT are passed on to every worker, which drains as a single agent would;
  SIGHUP too, so each worker reloads (or rejects) the new configuration.
- A worker killed by a signal is started again after ``RESTART_DELAY``; its successor's
  recovery returns the claims it left, counting the attempt (a file that kills its worker
  every time is quarantined after ``max_attempts``, as with one agent under systemd). With
  ``--once`` a worker's exit 1 (some files failed) is remembered as this process's exit code;
  any other exit while running stops the other workers and becomes this process's exit code.
- Each worker speaks sd_notify to its own socket here. systemd hears ``READY=1`` once every
  worker is ready, a ``STATUS=`` made of theirs, and ``WATCHDOG=1`` only while every worker
  pings: one processor stuck forever still gets the service restarted.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from foldermon import early
from foldermon import log as logmod
from foldermon.errors import EX_CONFIG, EX_TEMPFAIL
from foldermon.queue.layout import Layout, claimed_names
from foldermon.sdnotify import Notifier
from foldermon.watch import NameRules

if TYPE_CHECKING:
    from foldermon.files import Progress

# Set in a worker's environment: its index (0-based) and the supervisor's pid.
WORKER_ENV = "FOLDERMON_WORKER"
SUPERVISOR_ENV = "FOLDERMON_SUPERVISOR"
# Set when the supervisor draws progress: each worker then reports every file it finishes.
PROGRESS_ENV = "FOLDERMON_WORKER_PROGRESS"
PROGRESS_FIELD = "X_FOLDERMON_FILE"
# Like systemd's RestartSec: a worker that dies at once every time does not spin.
RESTART_DELAY = 1.0
# A worker started again that finds the configuration file broken (an edit not reloaded yet)
# tries again this often; the other workers keep running on the configuration they have.
CONFIG_RETRY = 10.0
# Workers end themselves at most 10 s after their drain; this much later they are killed.
KILL_GRACE = 25.0
_TICK = 0.2
_PR_SET_PDEATHSIG = 1
_UCRED = struct.Struct("iII")  # the sender's pid, uid and gid


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid: int = _UCRED.unpack(data[: _UCRED.size])[0]
            return pid
    return None


def die_with_supervisor(environ: Mapping[str, str] = os.environ) -> int | None:
    """In a worker: exit on SIGTERM when the supervisor dies, even by SIGKILL; its index."""
    index = environ.get(WORKER_ENV)
    if index is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The supervisor may have died before prctl: then this process already has a new parent.
    if os.getppid() != int(environ.get(SUPERVISOR_ENV, "0")):
        os.kill(os.getpid(), signal.SIGTERM)
    return int(index)


def wait_for_siblings(waiting: Callable[[], bool], tick: Callable[[], object]) -> None:
    """In a worker: wait until the supervisor's other workers (those it starts again meanwhile
    too) have exited, while ``waiting()`` says to, calling ``tick`` (the watchdog) meanwhile.
    Worker 0 of ``run --once`` reports the queue gauges: it waits so that its last export shows
    the folders as the run left them."""
    supervisor = os.getppid()
    while waiting():
        try:
            children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        except OSError:
            return  # a kernel without the list: the gauges may end before the other workers do
        others = [int(c) for c in children if int(c) != os.getpid()]
        if not others:
            return
        tick()
        try:
            pidfd = os.pidfd_open(others[0])
        except OSError:
            continue  # exited meanwhile
        try:
            exited, _, _ = select.select([pidfd], [], [], _TICK)
        finally:
            os.close(pidfd)
        if exited:  # listed until the supervisor reaps it
            time.sleep(0.02)


class ProgressReporter:
    """A worker's side of the supervisor's progress display: one datagram per finished file."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def add_total(self, files: int) -> None:
        pass  # every worker lists the same folders; the supervisor counts them itself

    def file_done(self, outcome: str, lines: int) -> None:
        self._notifier.send(f"{PROGRESS_FIELD}={outcome} {lines}")


@dataclass(slots=True)
class Worker:
    index: int
    sock: socket.socket
    address: str
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int = -1  # readable once the process has exited: wakes the loop at once
    output: bytes = b""  # the start of a line the worker has not finished writing
    restart_at: float | None = None
    finished: bool = False  # exited 0 after draining (``--once``) or after a stop
    ready: bool = False
    last_ping: float = 0.0
    status: str = "starting"
    replacement: bool = False  # started again after its predecessor died


class Supervisor:
    """Runs ``workers`` agent processes on the same roots until stopped (or drained, with ``once``)."""

    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        layouts: list[Layout],
        *,
        once: bool,
        drain_timeout: float,
        progress: Progress | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        instance_id: str = "",
        rules: NameRules | None = None,
    ) -> None:
        self.argv = [sys.executable, "-m", "foldermon", *argv]
        self.layouts = layouts
        self.rules = rules or NameRules()
        self.once = once
        self.drain_timeout = drain_timeout
        self.progress = progress
        self.notifier = notifier or Notifier.from_environ()
        self._clock = clock
        # The supervisor's own id (each worker has its own): its lines say which agent they are.
        self.log = logmod.get(component="supervisor", instance=instance_id)
        tag = f"foldermon-{os.getpid()}-{secrets.token_hex(4)}"
        self.workers = [self._socket(i, f"{tag}-{i}") for i in range(workers)]
        self.code = 0
        self._stopping = False
        self._stop_signal: int | None = None
        self._kill_at: float | None = None
        self._reload = False
        self._announced = False
        self._status_at = 0.0
        self._done = 0
        self._counted_total = 0
        self._seen: set[tuple[Path, str]] = set()

    @staticmethod
    def _socket(index: int, name: str) -> Worker:
        # Abstract addresses: nothing on disk, and gone with the process.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind("\0" + name)
        sock.setblocking(False)
        return Worker(index, sock, "@" + name)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        for signum in early.take():
            if signum == signal.SIGHUP:
                self._reload = True
            else:
                self._stop_signal = signum
        try:
            for worker in self.workers:
                self._start(worker)
            while not all(w.finished or (w.proc is None and w.restart_at is None) for w in self.workers):
                self._receive(_TICK)
                self._reap()
                # Signals are acted on here, never in the handler: a worker being started
                # when SIGTERM arrives must be told too.
                if self._stop_signal is not None and not self._stopping:
                    self.log.info("stopping", signal=signal.Signals(self._stop_signal).name)
                    self._stop()
                if self._reload:
                    self._forward_reload()
                self._restart_due()
                self._health()
                self._kill_overdue()
        finally:
            self._kill_leftovers()
            for worker in self.workers:
                worker.sock.close()
        self.log.info("stopped", code=self.code)
        return self.code

    def _start(self, worker: Worker) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update({WORKER_ENV: str(worker.index), SUPERVISOR_ENV: str(os.getpid())})
        env["NOTIFY_SOCKET"] = worker.address
        if self.notifier.watchdog_interval is not None:
            # Workers ping twice as often as this process must, so one late ping never starves it.
            env["WATCHDOG_USEC"] = str(int(self.notifier.watchdog_interval * 1_000_000))
        if self.progress is not None:
            env[PROGRESS_ENV] = "1"
        # Under a progress display the workers' log lines are printed from here, above it.
        stdout = subprocess.PIPE if self.progress is not None else None
        worker.proc = early.blocked_while(lambda: subprocess.Popen(self.argv, env=env, stdout=stdout))
        worker.pidfd = os.pidfd_open(worker.proc.pid)
        worker.restart_at = None
        worker.ready = False
        worker.last_ping = self._clock()  # start-up counts as a ping: recovery takes a moment
        self.log.info("worker started", worker=worker.index, pid=worker.proc.pid)

    def _receive(self, timeout: float) -> None:
        """Read the workers' messages; returns early when one has a message or has exited."""
        socks = {w.sock.fileno(): w for w in self.workers}
        pidfds = [w.pidfd for w in self.workers if w.proc is not None]
        pipes = {w.proc.stdout.fileno(): w for w in self.workers if w.proc is not None and w.proc.stdout}
        readable, _, _ = select.select([*socks, *pidfds, *pipes], [], [], timeout)
        for fd in readable:
            if fd in pipes:
                self._relay(pipes[fd], os.read(fd, 65536))
            if fd not in socks:
                continue  # output, or an exit that _reap() sees
            worker = socks[fd]
            while True:
                try:
                    data, ancillary, _, _ = worker.sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
                except BlockingIOError:
                    break
                # Abstract sockets are open to the whole host: like systemd's NotifyAccess=main,
                # only the worker's own process is listened to.
                if worker.proc is not None and _sender(ancillary) == worker.proc.pid:
                    self._message(worker, data.decode("utf-8", "replace"))

    def _message(self, worker: Worker, text: str) -> None:
        for line in text.split("\n"):
            key, _, value = line.partition("=")
            if key == "READY":
                worker.ready = True
            elif key in ("RELOADING", "STOPPING"):
                worker.ready = False
            elif key == "WATCHDOG":
                worker.last_ping = self._clock()
            elif key == "STATUS":
                worker.status = value
            elif key == PROGRESS_FIELD and self.progress is not None:
                outcome, _, lines = value.partition(" ")
                self._done += outcome != "retry"
                self.progress.file_done(outcome, int(lines or 0))

    def _relay(self, worker: Worker, data: bytes) -> None:
        *lines, worker.output = (worker.output + data).split(b"\n")
        for line in lines:
            sys.stdout.write(line.decode("utf-8", "replace") + "\n")
        sys.stdout.flush()

    def _reap(self) -> None:
        for worker in self.workers:
            if worker.proc is None or (code := worker.proc.poll()) is None:
                continue
            if worker.proc.stdout is not None:
                self._relay(worker, worker.proc.stdout.read())
                if worker.output:
                    self._relay(worker, b"\n")
                worker.proc.stdout.close()
            worker.proc = None
            os.close(worker.pidfd)
            worker.ready = False
            # A worker told to stop before it installed its handlers dies of the SIGTERM itself;
            # it had claimed nothing yet.
            if (code == 0 and (self.once or self._stopping)) or (code == -signal.SIGTERM and self._stopping):
                worker.finished = True
            elif code in (1, EX_TEMPFAIL) and self.once:
                # `run --once` ends with 1 when a file went to failed/, 75 when files wait in a
                # held root: the others keep draining; 1 says more than 75.
                self.log.warning("worker finished; some files failed or wait", worker=worker.index, code=code)
                worker.finished = True
                self.code = 1 if 1 in (self.code, code) else code
            elif code < 0 and not self._stopping:
                name = signal.Signals(-code).name
                self.log.error("worker killed; starting it again", worker=worker.index, signal=name)
                worker.restart_at = self._clock() + RESTART_DELAY
                worker.replacement = True
            elif code == EX_CONFIG and worker.replacement and not self._stopping:
                self.log.error(
                    "a worker started again finds the configuration file broken; the others keep "
                    "running. Fix it (foldermon-agent check-config), then reload (SIGHUP)",
                    worker=worker.index,
                    retry_in=CONFIG_RETRY,
                )
                worker.restart_at = self._clock() + CONFIG_RETRY
            else:
                self.log.error("worker exited; stopping the others", worker=worker.index, code=code)
                self.code = self.code or (code if code > 0 else 1)
                self._stop()

    def _restart_due(self) -> None:
        for worker in self.workers:
            if worker.restart_at is not None and self._clock() >= worker.restart_at:
                if self._stopping:
                    worker.restart_at = None
                else:
                    self._start(worker)

    # -- signals --------------------------------------------------------------------------------

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._kill_at = self._clock() + self.drain_timeout + KILL_GRACE
        self.notifier.stopping("stopping: the workers finish or release their current files")
        self._signal_all(signal.SIGTERM)

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True

    def _kill_overdue(self) -> None:
        """A worker still running well past its drain (it bounds itself; this is the backstop)."""
        if self._kill_at is None or self._clock() < self._kill_at:
            return
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                self.log.error("worker did not stop in time; killed", worker=worker.index)
                worker.proc.kill()
        self._kill_at = None

    def _forward_reload(self) -> None:
        self._reload = False
        self.notifier.reloading()
        self._announced = False
        for worker in self.workers:
            worker.ready = False
            if worker.proc is None and worker.restart_at is not None:
                worker.restart_at = self._clock()  # waiting for a fixed configuration: try it now
        self._signal_all(signal.SIGHUP)

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self.workers:
            if worker.proc is not None:
                worker.proc.send_signal(signum)

    def _kill_leftovers(self) -> None:
        """After an error here: stop the workers, and kill those that outlive their drain."""
        alive = [w.proc for w in self.workers if w.proc is not None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = self._clock() + self.drain_timeout + KILL_GRACE
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- systemd and the terminal ------------------------------------------------------------

    def _health(self) -> None:
        now = self._clock()
        running = [w for w in self.workers if w.proc is not None]
        limit = self.notifier.watchdog_interval
        if limit is not None and all(now - w.last_ping < limit for w in running):
            self.notifier.watchdog_if_due()
        if self._stopping or (self._announced and now - self._status_at < 1.0):
            return
        self._status_at = now
        if self.progress is not None:
            self._count_total(self.progress)
        text = f"{len(running)} of {len(self.workers)} workers running; " + "; ".join(
            f"worker {w.index}: {w.status}" for w in self.workers
        )
        if not self._announced and all(w.ready for w in running) and running:
            self._announced = True
            self.notifier.ready(text)
        else:
            self.notifier.status(text)

    def _count_total(self, progress: Progress) -> None:
        """Every input seen waiting or claimed so far: grows as files keep arriving."""
        for layout in self.layouts:
            for name in (*self.rules.waiting(layout.unprocessed), *claimed_names(layout)):
                self._seen.add((layout.root, name))
        total = max(len(self._seen), self._done)
        if total > self._counted_total:
            progress.add_total(total - self._counted_total)
            self._counted_total = total


__all__ = ["PROGRESS_ENV", "WORKER_ENV", "ProgressReporter", "Supervisor", "die_with_supervisor"]
