"""A stand-in for systemd's notification socket, for the sd_notify tests."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

# struct ucred: pid, uid, gid
_CREDENTIALS = struct.Struct("iII")


class NotifySocket:
    """An AF_UNIX datagram socket whose thread records (arrival time, message) pairs and, as
    systemd does for ``NotifyAccess=main``, the pid of each sender."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self.senders: set[int] = set()
        self._open = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._open:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except TimeoutError:
                continue
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    self.senders.add(_CREDENTIALS.unpack(value[: _CREDENTIALS.size])[0])
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._open = False
        self._thread.join()
        self.sock.close()

    def drain(self) -> list[tuple[float, str]]:
        return list(self.messages)

    def has(self, field: str) -> bool:
        return any(field in m.split("\n") for _, m in self.drain())

    def pings(self) -> list[float]:
        return [t for t, m in self.drain() if m == "WATCHDOG=1"]
