"""Durable file-system primitives: fsync, atomic write, rename that never clobbers."""

from __future__ import annotations

import errno
import functools
import os
import stat
from pathlib import Path
from typing import Any

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2, or None; looked up at the first rename (ctypes costs every start)."""
    import ctypes

    # The process's own symbol table has libc; find_library would spawn ldconfig.
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What kind of file ``mode`` (an ``st_mode``) is, in words: "a folder", "a FIFO (named pipe)"."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def fsync_fd(fd: int) -> None:
    """fsync, tolerating filesystems that do not support it (EINVAL), as on some FUSE mounts."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)


def durable_rename(src: Path, dst: Path, *, replace: bool = False) -> None:
    """Rename ``src`` to ``dst`` and fsync both directories.

    Without ``replace`` an existing ``dst`` raises FileExistsError instead of being clobbered.
    """
    if replace:
        os.rename(src, dst)
    else:
        rename_noreplace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def durable_rename_unique(src: Path, folder: Path, name: str) -> str:
    """Move ``src`` into ``folder`` as ``name``, or the first free ``unique_name(name, n)``; returns it."""
    n = 0
    while True:
        target = unique_name(name, n)
        try:
            durable_rename(src, folder / target)
        except FileExistsError:
            n += 1
        else:
            return target


def rename_noreplace(src: Path, dst: Path) -> None:
    """Atomic rename that fails with FileExistsError when ``dst`` exists.

    Where the filesystem lacks RENAME_NOREPLACE the move is ``link`` then ``unlink``; a crash
    between the two leaves one file under both names. Moving such a file again finds ``dst``
    to be the same file and only drops the old name, so the leftover is never taken for a
    second input.
    """
    renameat2 = _renameat2()
    if renameat2 is not None:
        import ctypes

        rc = renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST and _same_file(src, dst):
            os.unlink(src)
            return
        # EINVAL/ENOSYS: the filesystem (NFS, some FUSE) or kernel lacks RENAME_NOREPLACE.
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # Fallback: link() refuses an existing name atomically; then drop the old name.
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        if not _same_file(src, dst):
            raise
    os.unlink(src)


def renames_atomically(folder: Path) -> bool:
    """Whether moves in ``folder``'s filesystem are single renames (it has RENAME_NOREPLACE):
    then a move never leaves one file under two names. Tried on a probe file in ``folder``."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    import ctypes

    probe = folder / f".probe-{os.getpid()}"
    moved = probe.with_name(probe.name + ".moved")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fsync_fd(fd)  # like every file the agent renames: durable before it moves
    finally:
        os.close(fd)
    try:
        rc = renameat2(_AT_FDCWD, os.fsencode(probe), _AT_FDCWD, os.fsencode(moved), _RENAME_NOREPLACE)
        return rc == 0 or ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS)
    finally:
        probe.unlink(missing_ok=True)
        moved.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two names are links of one inode (a half-done link-then-unlink move)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) and not stat.S_ISDIR(sa.st_mode)


def link_noreplace(src: Path, dst: Path) -> None:
    """Give ``src`` the second name ``dst``; FileExistsError when ``dst`` is taken. Works on every
    filesystem with hard links, network ones included, where RENAME_NOREPLACE is often missing."""
    os.link(src, dst, follow_symlinks=False)


def write_new(path: Path, data: bytes, tmp_dir: Path, *, mode: int = 0o640) -> None:
    """Write ``data`` durably under ``path``, which must not exist (FileExistsError otherwise).

    The temp file is written in ``tmp_dir`` (same filesystem), fsynced, then linked in.
    """
    tmp = tmp_dir / f".{os.getpid()}-{os.urandom(4).hex()}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            _write_all(fd, data)
            fsync_fd(fd)
        finally:
            os.close(fd)
        link_noreplace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_durable(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory. The
    temp file is named after ``path`` unless that would pass the 255-byte limit of a name (a
    counter of an input named near it): then by a digest of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if len(os.fsencode(tmp.name)) > 255:
        import hashlib

        tmp = path.with_name(f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            _write_all(fd, data)
            fsync_fd(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        # A failed write (full disk, name taken by a folder) must not leave its temp file behind.
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def unique_name(name: str, n: int) -> str:
    """``data.txt`` with n=2 → ``data.2.txt``; n=0 keeps the name."""
    if n == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return f"{name}.{n}"
    return f"{stem}.{n}.{suffix}"
