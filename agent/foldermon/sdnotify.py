"""The systemd notification protocol (``sd_notify(3)``) in plain socket code.

systemd passes the address of its notification socket in ``NOTIFY_SOCKET`` and, when the
unit has ``WatchdogSec=``, the watchdog timeout in ``WATCHDOG_USEC`` (for the process named
by ``WATCHDOG_PID``, if that is set). Every message is one datagram of ``KEY=value`` lines.

Notification is advisory: without ``NOTIFY_SOCKET`` every method does nothing, and a failed
send is counted (``errors``, ``last_error``) but never raised, so a broken or busy socket
cannot stop the agent from processing files.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping

# Long enough for systemd to drain its queue under load, short enough never to stall the loop.
_SEND_TIMEOUT = 1.0


def parse_address(value: str | None) -> str | None:
    """The ``AF_UNIX`` address named by ``NOTIFY_SOCKET``, or None when notification is off.

    ``@name`` is Linux's abstract namespace (a leading NUL byte); other schemes that newer
    systemd versions may pass (``vsock:``) are not supported and turn notification off.
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def parse_watchdog(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout in seconds for process ``pid``, or None when it is not watched.

    Mirrors ``sd_watchdog_enabled(3)``: ``WATCHDOG_USEC`` must be a positive integer, and when
    ``WATCHDOG_PID`` is set it must name this process (a child must not ping for its parent).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        watched_pid = int(environ.get("WATCHDOG_PID", str(pid)))
    except ValueError:
        return None
    if usec <= 0 or watched_pid != pid:
        return None
    return usec / 1_000_000


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes and watchdog pings to systemd; a silent no-op when not under it."""

    __slots__ = (
        "_address",
        "_clock",
        "_last_ping",
        "_monotonic_usec",
        "_socket",
        "_watchdog_timeout",
        "errors",
        "last_error",
        "sent",
    )

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self._address = address
        self._watchdog_timeout = watchdog_timeout if address is not None else None
        self._clock = clock
        self._monotonic_usec = monotonic_usec
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self.sent = 0
        self.errors = 0
        self.last_error: OSError | None = None

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        own_pid = os.getpid() if pid is None else pid
        return cls(
            parse_address(env.get("NOTIFY_SOCKET")),
            watchdog_timeout=parse_watchdog(env, own_pid),
            clock=clock,
        )

    @property
    def enabled(self) -> bool:
        """Whether messages are sent at all (``NOTIFY_SOCKET`` names a usable socket)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the watchdog timeout), or None without a watchdog."""
        if self._watchdog_timeout is None:
            return None
        return self._watchdog_timeout / 2

    # -- messages ----------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, optionally with a status line."""
        return self.send("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """A one-line, human-readable state shown by ``systemctl status``."""
        return self.send(*_status_field(text))

    def reloading(self) -> bool:
        """A configuration reload has begun; ``ready()`` must follow when it is done.

        ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd 253+) and ignored
        by older versions and other service types.
        """
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun: ``STOPPING=1``."""
        return self.send("STOPPING=1", *_status_field(status))

    def watchdog(self) -> bool:
        """Tell the watchdog this process is healthy; only when a watchdog is set for it."""
        if self._watchdog_timeout is None:
            return False
        self._last_ping = self._clock()
        return self.send("WATCHDOG=1")

    def watchdog_if_due(self) -> bool:
        """Ping at most once per ``watchdog_interval``, so a busy loop can call this freely."""
        interval = self.watchdog_interval
        if interval is None:
            return False
        if self._last_ping is not None and self._clock() - self._last_ping < interval:
            return False
        return self.watchdog()

    # -- transport ----------------------------------------------------------------------------

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; True if it was handed to the kernel."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.settimeout(_SEND_TIMEOUT)
            self._socket.sendto(payload, self._address)
        except OSError as exc:
            self.errors += 1
            self.last_error = exc
            # A fresh socket next time, in case this one is what broke.
            self.close()
            return False
        self.sent += 1
        return True

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the socket; a later message opens a new one."""
        if self._socket is not None:
            sock, self._socket = self._socket, None
            with contextlib.suppress(OSError):
                sock.close()


def _status_field(text: str | None) -> tuple[str, ...]:
    # One datagram line per field: a newline inside the text would start a bogus field.
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)


__all__ = ["Notifier", "parse_address", "parse_watchdog"]
