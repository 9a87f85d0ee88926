"""Durable file-system primitives: fsync, atomic write, rename that never clobbers."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
# The process's own symbol table has libc; find_library would spawn ldconfig at every start.
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


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
    """Atomic rename that fails with FileExistsError when ``dst`` exists."""
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        # EINVAL/ENOSYS: the filesystem (NFS, some FUSE) or kernel lacks RENAME_NOREPLACE.
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # Fallback: link() refuses an existing name atomically; then drop the old name.
    os.link(src, dst, follow_symlinks=False)
    os.unlink(src)


def write_durable(path: Path, data: bytes, *, mode: int = 0o640) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
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
