"""Which filesystem holds a folder, and whether inotify can see every write to it.

The type comes from ``/proc/self/mountinfo`` rather than ``statfs(2)``: it names FUSE
subtypes (``fuse.sshfs``), needs no per-architecture struct layout, and reflects this
process's mount namespace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
UNKNOWN = "unknown"

# Writes made on other hosts (or behind a userspace daemon) never reach this kernel's inotify.
_NETWORK = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "smb", "ncpfs", "ncp", "9p", "ceph",
        "glusterfs", "lustre", "gpfs", "afs", "openafs", "coda", "beegfs", "orangefs",
        "pvfs2", "panfs", "vboxsf", "vmhgfs", "virtiofs", "ocfs2", "gfs2", "dlm",
    }
)  # fmt: skip
_FUSE = frozenset({"fuse", "fuseblk"})
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    device: str  # "major:minor"
    mount_point: str
    fstype: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (proc(5)); malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            mounts.append(Mount(fields[2], _unescape(fields[4]), fields[separator + 1]))
        except (ValueError, IndexError):
            continue
    return mounts


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount points as octal escapes.
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)
    return os.fsdecode(raw.encode("latin-1", "surrogateescape"))


def find_mount(mounts: Sequence[Mount], path: str, device: str | None) -> Mount | None:
    """The mount holding ``path`` (absolute, symlinks resolved), preferring mounts of ``device``.

    A device match names the right superblock even when the path was reached in ways the
    mount table cannot show; among bind mounts of one device the deepest containing the
    path wins. With no device match (btrfs subvolumes report their own device) the deepest
    mount point containing the path does, a later line shadowing an earlier one.
    """
    same_device = [m for m in mounts if m.device == device]
    if same_device:
        return _deepest(same_device, path) or same_device[-1]
    return _deepest(mounts, path)


def _deepest(mounts: Sequence[Mount], path: str) -> Mount | None:
    best: Mount | None = None
    for mount in mounts:
        if _contains(mount.mount_point, path) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the filesystem holding ``path`` (e.g. ``ext4``, ``nfs4``, ``fuse.sshfs``)."""
    try:
        text = MOUNTINFO.read_text(encoding="latin-1") if mountinfo is None else mountinfo
        st = path.stat()
    except OSError:
        return UNKNOWN
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    mounts = parse_mountinfo(text)
    same_device = [m for m in mounts if m.device == device]
    if same_device:
        # Every mount of one device shares its superblock, and so its type: no need to resolve
        # the path (which would look at every folder above the root).
        return same_device[-1].fstype
    try:
        real = os.path.realpath(path)
    except OSError:
        return UNKNOWN
    mount = find_mount(mounts, real, device)
    return UNKNOWN if mount is None else mount.fstype


def is_fuse(fstype: str) -> bool:
    """Whether ``fstype`` is served by a userspace (FUSE) daemon."""
    return fstype in _FUSE or fstype.startswith(("fuse.", "fuseblk."))


def remote_reason(fstype: str) -> str | None:
    """Why inotify cannot be trusted on ``fstype``, or None when it can (a local filesystem)."""
    if is_fuse(fstype):
        return f"{fstype} filesystem: inotify does not see writes made through the FUSE daemon"
    if fstype in _NETWORK:
        return f"{fstype} filesystem: inotify does not see writes from other hosts"
    return None
