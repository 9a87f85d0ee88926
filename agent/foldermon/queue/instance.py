"""An instance's claim folder ``underprocess/<id>/``, held with flock for the process's life."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from foldermon.errors import LifecycleError
from foldermon.queue.fsio import durable_rename, fsync_dir
from foldermon.queue.ids import FENCED_PREFIX, NEW_PREFIX
from foldermon.queue.layout import LOCK_NAME, Layout, mount_id

_BUILD_TRIES = 5

# The lock descriptors of this process's instances. An flock lives while any descriptor of it
# is open, and a child forked by plugin code (a multiprocessing pool) inherits them: orphaned
# by a killed agent, it would hold the dead instance's claims from recovery for good. A forked
# child closes them at once (a child that execs closes them anyway: they are close-on-exec).
_HELD: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def fence(folder: Path) -> str:
    """Rename a claim folder to ``.fenced-<id>.<random>``; its new name.

    From then on its owner can neither move anything out of it nor publish an output for it
    (``Queue.confirm_lease``); recovery settles it once it has been fenced for ``2 * lease``.
    """
    name = f"{FENCED_PREFIX}{folder.name}.{os.urandom(4).hex()}"
    os.rename(folder, folder.with_name(name))
    fsync_dir(folder.parent)
    return name


def try_lock(path: Path) -> int | None:
    """Open and exclusively lock ``path``; None when another live process holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


@dataclass(frozen=True, slots=True)
class LockInfo:
    """What a claim folder's lock file says about its instance."""

    active: str | None  # the input its current attempt is on
    # Where it writes temp outputs: relative to the root when on its mount (hosts mount a shared
    # root at different paths); None in lock files of older versions.
    output_dir: Path | None
    # The device and inode of an output folder on another filesystem ("dev:ino"): a folder at
    # that path on another host (its own disk) or made anew is another folder.
    output_id: str | None = None
    active_since: float | None = None  # when the active input's first attempt began


def read_lock(lock_fd: int | None) -> LockInfo:
    """The lock file: a first line naming host and pid, a JSON line with the output folder, then
    the input of the current attempt (see ``Instance.mark_active``)."""
    if lock_fd is None:
        return LockInfo(None, None)
    _, _, rest = os.pread(lock_fd, 8192, 0).partition(b"\n")
    output = output_id = None
    if rest.startswith(b'{"output":'):
        line, _, rest = rest.partition(b"\n")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            fields = json.loads(line)
            output = Path(os.fsdecode(fields["output"]))
            output_id = fields.get("output_id")
    active, _, first = rest.partition(b"\0")
    try:
        first_attempt = float(first) if first else None
    except ValueError:
        first_attempt = None
    return LockInfo(os.fsdecode(active) if active else None, output, output_id, first_attempt)


def folder_id(path: Path) -> str:
    """A folder's device and inode, as a lock file keeps them (``LockInfo.output_id``)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def output_as_named(layout: Layout) -> Path:
    """The output folder as a lock file names it: relative to the root when it is on the root's
    mount, inside the root or beside it (``../out``), so that every host finds it however it
    mounts a shared volume; else as it is (another filesystem: only this host may see it)."""
    output, root = layout.output_dir, layout.root
    if output.is_relative_to(root):
        return output.relative_to(root)
    with contextlib.suppress(OSError):
        if mount_id(output) == mount_id(root) is not None:
            # ".." is followed from the root's real folder: the relative name must lead to the
            # output folder itself (a symlink on the way to either could send it elsewhere).
            relative = Path(os.path.relpath(output, root))
            if folder_id(root / relative) == folder_id(output):
                return relative
    return output


class Instance:
    """This process's claim folder ``underprocess/<id>/``, locked with flock for its whole life."""

    def __init__(self, layout: Layout, instance_id: str) -> None:
        self.id = instance_id
        self.dir = layout.underprocess / instance_id
        self._output_dir = output_as_named(layout)
        for tries_left in reversed(range(_BUILD_TRIES)):
            try:
                fd = self._build(layout, staging=layout.underprocess / f"{NEW_PREFIX}{self.id}.{tries_left}")
            except (FileNotFoundError, BlockingIOError):
                # Another instance starting at the same moment found the half-built folder with its
                # lock still free, took it for a dead one's and is removing it: build it again.
                if not tries_left:
                    raise
            else:
                self._lock_fd: int | None = fd
                _HELD.add(fd)
                return

    def mark_active(self, name: str, first_attempt: float = 0.0) -> None:
        """Write the input an attempt starts on after the lock file's first line, and when the
        file's first attempt began (a NUL between: no name holds one).

        Recovery after a crash counts an attempt against this input only, not against the
        others this instance had claimed but not started, dated from that first attempt. Not
        fsynced: it has to outlive the process (kill -9, a crash in a processor), not the
        machine. An empty name: no attempt is running.
        """
        if self._lock_fd is None:
            raise LifecycleError(f"instance {self.id} is closed")
        data = os.fsencode(name) + (f"\0{first_attempt!r}".encode() if name and first_attempt else b"")
        os.pwrite(self._lock_fd, data, self._header_len)
        os.ftruncate(self._lock_fd, self._header_len + len(data))

    def is_current(self) -> bool:
        """Whether the claim folder this instance locked is still the one at its path.

        False once the root was removed (and maybe made again), a root symlink was switched to
        another tree (claims there would fail, or land where no one serves them), the folder was
        fenced by another instance, or the lock is lost: another instance holds it, or its
        descriptor went bad (a network filesystem's server dropped this client's locks, which
        the client is not told). A lock dropped and free is taken again here, before anyone
        fences the folder. Raises OSError when it cannot tell (the filesystem is unreachable).
        """
        if self._lock_fd is None:
            return False
        try:
            st = os.stat(self.dir / LOCK_NAME)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            held = os.fstat(self._lock_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held already: a no-op
        except OSError as exc:
            if exc.errno in (errno.EBADF, errno.EBADFD, errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    def _build(self, layout: Layout, staging: Path) -> int:
        # Built under a dot name and renamed in, so every visible instance folder has its lock.
        staging.mkdir(mode=0o750)
        try:
            return self._lock_in(staging)
        except (FileNotFoundError, BlockingIOError):
            raise  # another instance took it for a dead one's and is removing it
        except OSError:
            # A full disk, say: nothing of this start is left behind for the next one's recovery.
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _lock_in(self, staging: Path) -> int:
        fd = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Where this instance's temp outputs are: its recovery looks for them there.
            named: dict[str, str] = {"output": os.fsdecode(self._output_dir)}
            if self._output_dir.is_absolute():
                named["output_id"] = folder_id(self._output_dir)
            output = json.dumps(named)
            header = f"{socket.gethostname()} pid {os.getpid()}\n{output}\n".encode()
            self._header_len = os.write(fd, header)
            os.fsync(fd)
            # The id is unique, so a plain rename is safe; it also works where no-replace is missing.
            durable_rename(staging, self.dir, replace=True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def close(self) -> None:
        """Remove the claim folder if nothing is left in it, then drop the lock.

        Never raises for an unreachable filesystem: the lock is dropped, the folder is left to
        recovery.
        """
        if self._lock_fd is None:
            return
        try:
            # Ours, or else not (the root was replaced, the folder fenced): then left alone.
            leftovers = [n for n in os.listdir(self.dir) if n != LOCK_NAME] if self.is_current() else None
        except OSError:
            leftovers = None
        fd, self._lock_fd = self._lock_fd, None
        _HELD.discard(fd)
        # Unlocked before the lock file goes: on FUSE and NFS an open file that is unlinked
        # lingers under a hidden name, and the folder could not be removed.
        with contextlib.suppress(OSError):  # a bad descriptor is closed all the same
            os.close(fd)
        if leftovers == []:
            # Another instance's recovery may remove the emptied folder first.
            with contextlib.suppress(OSError):
                (self.dir / LOCK_NAME).unlink(missing_ok=True)
                self.dir.rmdir()
                fsync_dir(self.dir.parent)
