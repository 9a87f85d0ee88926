"""sd_notify: exact datagrams on a real AF_UNIX socket, environment parsing, never raising."""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from foldermon.sdnotify import Notifier, parse_address, parse_watchdog


class Receiver:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def take(self) -> bytes:
        """Return the next datagram (fails the test if none arrives)."""
        return self.sock.recv(4096)

    def take_with_pid(self) -> tuple[bytes, int]:
        """Return the next datagram and the sender pid the kernel attached to it."""
        size = struct.calcsize("3i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(size))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                return data, struct.unpack("3i", payload[:size])[0]
        raise AssertionError("no credentials attached")

    def pending(self) -> bool:
        """Return whether a datagram is waiting."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(2.0)
        return True


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Yield a directory whose socket paths fit in sun_path (108 bytes), unlike deep tmp_paths."""
    with tempfile.TemporaryDirectory(prefix="sdn") as name:
        yield Path(name)


@pytest.fixture
def receiver(short_dir: Path) -> Iterator[Receiver]:
    """Yield a receiver bound to a filesystem path."""
    recv = Receiver(str(short_dir / "notify"))
    yield recv
    recv.sock.close()


Make = Callable[..., Notifier]
Keep = Callable[[Notifier], Notifier]


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def notifiers() -> Iterator[list[Notifier]]:
    """Collect the notifiers a test builds and close their sockets afterwards."""
    built: list[Notifier] = []
    yield built
    for notifier in built:
        notifier.close()


@pytest.fixture
def notifier_for(notifiers: list[Notifier]) -> Make:
    """Return a builder of notifiers whose environment points at a receiver."""

    def build(receiver: Receiver, **env: str) -> Notifier:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": receiver.address, **env})
        notifiers.append(notifier)
        return notifier

    return build


@pytest.fixture
def keep(notifiers: list[Notifier]) -> Keep:
    """Return a function that registers a directly built notifier for closing."""

    def register(notifier: Notifier) -> Notifier:
        notifiers.append(notifier)
        return notifier

    return register


# -- without systemd -------------------------------------------------------------------------


def test_without_notify_socket_every_message_is_a_silent_no_op() -> None:
    """No NOTIFY_SOCKET: nothing is sent, nothing raises, no watchdog is announced."""
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
    state = (notifier.enabled, notifier.watchdog_interval)
    results = [
        notifier.ready("up"),
        notifier.status("x"),
        notifier.reloading(),
        notifier.stopping(),
        notifier.watchdog(),
        notifier.watchdog_if_due(),
    ]
    assert results == [False] * 6
    assert state == (False, None)
    assert (notifier.sent, notifier.errors) == (0, 0)


def test_empty_notify_socket_turns_notification_off() -> None:
    """An empty NOTIFY_SOCKET is treated like an unset one."""
    assert not Notifier.from_environ({"NOTIFY_SOCKET": ""}).enabled


def test_unsupported_address_scheme_turns_notification_off() -> None:
    """A vsock: address (newer systemd in VMs) is not an AF_UNIX path, so nothing is sent."""
    assert parse_address("vsock:2:1234") is None


def test_lone_at_sign_is_not_an_abstract_address() -> None:
    """A lone "@" names no abstract socket."""
    assert parse_address("@") is None


# -- exact datagrams -----------------------------------------------------------------------


def test_ready_sends_ready_1(receiver: Receiver, notifier_for: Make) -> None:
    """ready() sends exactly READY=1."""
    assert notifier_for(receiver).ready()
    assert receiver.take() == b"READY=1"


def test_ready_with_status_sends_both_fields_in_one_datagram(receiver: Receiver, notifier_for: Make) -> None:
    """ready(status) puts READY=1 and STATUS= in one message, so systemctl shows the status at once."""
    notifier_for(receiver).ready("watching 1 root")
    assert receiver.take() == b"READY=1\nSTATUS=watching 1 root"


def test_status_sends_status_line(receiver: Receiver, notifier_for: Make) -> None:
    """status(text) sends STATUS=text."""
    notifier_for(receiver).status("unprocessed=3 underprocess=1 failed=0")
    assert receiver.take() == b"STATUS=unprocessed=3 underprocess=1 failed=0"


def test_status_newlines_cannot_inject_fields(receiver: Receiver, notifier_for: Make) -> None:
    """A newline in the status text is flattened, so it cannot start a READY=1 of its own."""
    notifier_for(receiver).status("a\nREADY=1")
    assert receiver.take() == b"STATUS=a READY=1"


def test_status_is_utf8(receiver: Receiver, notifier_for: Make) -> None:
    """Non-ASCII status text is sent as UTF-8."""
    notifier_for(receiver).status("café")
    assert receiver.take() == "STATUS=café".encode()


def test_stopping_sends_stopping_1(receiver: Receiver, notifier_for: Make) -> None:
    """stopping() sends exactly STOPPING=1."""
    notifier_for(receiver).stopping()
    assert receiver.take() == b"STOPPING=1"


def test_stopping_with_status_adds_status(receiver: Receiver, notifier_for: Make) -> None:
    """stopping(status) sends STOPPING=1 and the status in one datagram."""
    notifier_for(receiver).stopping("draining")
    assert receiver.take() == b"STOPPING=1\nSTATUS=draining"


def test_reloading_sends_monotonic_timestamp(receiver: Receiver, keep: Keep) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC from the monotonic clock in microseconds."""
    notifier = keep(Notifier(receiver.address, monotonic_usec=lambda: 123456789))
    notifier.reloading()
    assert receiver.take() == b"RELOADING=1\nMONOTONIC_USEC=123456789"


def test_reloading_timestamp_is_clock_monotonic(receiver: Receiver, notifier_for: Make) -> None:
    """The default MONOTONIC_USEC lies between two CLOCK_MONOTONIC readings taken around the call."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(receiver).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receiver.take().split(b"\n")
    assert first == b"RELOADING=1"
    assert second.startswith(b"MONOTONIC_USEC=")
    assert before <= int(second.removeprefix(b"MONOTONIC_USEC=")) <= after


def test_abstract_namespace_address_is_reached(short_dir: Path, keep: Keep) -> None:
    """NOTIFY_SOCKET=@name reaches the abstract socket "\\0name"."""
    name = f"foldermon-test-{os.getpid()}-{short_dir.name}"
    recv = Receiver("\0" + name)
    try:
        keep(Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})).ready()
        assert recv.take() == b"READY=1"
    finally:
        recv.sock.close()


def test_datagrams_carry_the_sender_pid(receiver: Receiver, notifier_for: Make) -> None:
    """The kernel attaches this process's pid, which systemd checks for NotifyAccess=main."""
    notifier_for(receiver).ready()
    assert receiver.take_with_pid() == (b"READY=1", os.getpid())


def test_one_socket_is_reused_for_every_message(receiver: Receiver, notifier_for: Make) -> None:
    """Consecutive messages arrive in order from one sender socket."""
    notifier = notifier_for(receiver)
    notifier.ready()
    notifier.status("s")
    notifier.stopping()
    assert [receiver.take() for _ in range(3)] == [b"READY=1", b"STATUS=s", b"STOPPING=1"]
    assert notifier.sent == 3


# -- watchdog ------------------------------------------------------------------------------


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: Receiver, notifier_for: Make) -> None:
    """WATCHDOG_USEC=30000000 (30 s) gives a ping every 15 s."""
    assert notifier_for(receiver, WATCHDOG_USEC="30000000").watchdog_interval == 15.0


def test_watchdog_sends_watchdog_1(receiver: Receiver, notifier_for: Make) -> None:
    """watchdog() sends exactly WATCHDOG=1 when a watchdog is set."""
    assert notifier_for(receiver, WATCHDOG_USEC="30000000").watchdog()
    assert receiver.take() == b"WATCHDOG=1"


def test_watchdog_for_this_pid_is_honoured(receiver: Receiver, keep: Keep) -> None:
    """WATCHDOG_PID equal to our pid keeps the watchdog on."""
    notifier = keep(
        Notifier.from_environ(
            {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "77"}, pid=77
        )
    )
    assert notifier.watchdog_interval == 2.0


def test_watchdog_for_another_pid_is_ignored(receiver: Receiver, keep: Keep) -> None:
    """WATCHDOG_PID naming another process (we are its child) means we are not watched, and send no ping."""
    notifier = keep(
        Notifier.from_environ(
            {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "77"}, pid=78
        )
    )
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog()
    assert not receiver.pending()


def test_without_watchdog_usec_no_ping_is_sent(receiver: Receiver, notifier_for: Make) -> None:
    """No WATCHDOG_USEC: watchdog() sends nothing while other messages still work."""
    notifier = notifier_for(receiver)
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog()
    assert not receiver.pending()


@pytest.mark.parametrize("usec", ["", "0", "-5", "abc", "1.5"])
def test_invalid_watchdog_usec_disables_watchdog(usec: str) -> None:
    """WATCHDOG_USEC must be a positive integer, as sd_watchdog_enabled() requires."""
    assert parse_watchdog({"WATCHDOG_USEC": usec}, pid=1) is None


def test_invalid_watchdog_pid_disables_watchdog() -> None:
    """A WATCHDOG_PID that is not a number disables the watchdog."""
    assert parse_watchdog({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, pid=1) is None


def test_watchdog_if_due_pings_once_per_interval(receiver: Receiver, keep: Keep) -> None:
    """watchdog_if_due() pings at once, then not again until half the timeout has passed."""
    clock = FakeClock()
    notifier = keep(Notifier(receiver.address, watchdog_timeout=10.0, clock=clock))
    sent = [notifier.watchdog_if_due()]
    for step in (1.0, 3.9, 0.1, 4.9, 0.2):
        clock.now += step
        sent.append(notifier.watchdog_if_due())
    assert sent == [True, False, False, True, False, True]
    assert notifier.sent == 3


def test_explicit_watchdog_restarts_the_interval(receiver: Receiver, keep: Keep) -> None:
    """A direct watchdog() ping counts, so watchdog_if_due() waits a full interval after it."""
    clock = FakeClock()
    notifier = keep(Notifier(receiver.address, watchdog_timeout=10.0, clock=clock))
    notifier.watchdog()
    clock.now += 4.0
    assert not notifier.watchdog_if_due()


# -- failures -----------------------------------------------------------------------------


def test_missing_socket_is_counted_not_raised(short_dir: Path, keep: Keep) -> None:
    """Sending to a socket that does not exist returns False and counts the error."""
    notifier = keep(Notifier(str(short_dir / "absent")))
    assert not notifier.ready()
    assert not notifier.status("x")
    assert (notifier.sent, notifier.errors) == (0, 2)
    assert isinstance(notifier.last_error, FileNotFoundError)


def test_sending_recovers_once_the_socket_appears(short_dir: Path, keep: Keep) -> None:
    """After a failed send the notifier opens a fresh socket and later messages get through."""
    address = str(short_dir / "late")
    notifier = keep(Notifier(address))
    notifier.status("lost")
    recv = Receiver(address)
    try:
        assert notifier.ready()
        assert recv.take() == b"READY=1"
    finally:
        recv.sock.close()


def test_oversized_message_is_counted_not_raised(receiver: Receiver, notifier_for: Make) -> None:
    """A datagram larger than the socket allows fails with EMSGSIZE, which is swallowed."""
    notifier = notifier_for(receiver)
    assert not notifier.status("x" * (16 * 1024 * 1024))
    assert notifier.errors == 1
    assert notifier.ready()


def test_close_then_send_reopens(receiver: Receiver, notifier_for: Make) -> None:
    """close() releases the socket, and the next message opens a new one."""
    notifier = notifier_for(receiver)
    notifier.ready()
    notifier.close()
    notifier.stopping()
    assert [receiver.take(), receiver.take()] == [b"READY=1", b"STOPPING=1"]
