"""Filesystem type detection from mountinfo, and which types inotify cannot be trusted on."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from foldermon.watch.fstype import (
    UNKNOWN,
    Mount,
    filesystem_type,
    find_mount,
    parse_mountinfo,
    remote_reason,
)

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:40 / /srv/nfs rw,relatime shared:7 master:2 - nfs4 server:/export rw,vers=4.2
41 40 0:41 / /srv/nfs/inner rw,relatime - tmpfs tmpfs rw
42 27 0:42 / /mnt/with\\040space rw - fuse.sshfs user@host:/ rw,user_id=0
43 27 254:0 /data /bind rw - ext4 /dev/vda rw
44 27 0:44 / /srv/nfs rw - cifs //host/share rw
malformed line without separator
"""


def test_parse_mountinfo_reads_device_mount_point_and_type() -> None:
    """Optional fields of any number are skipped; malformed lines are ignored."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert mounts[2] == Mount("0:40", "/srv/nfs", "nfs4")
    assert len(mounts) == 7


def test_parse_mountinfo_unescapes_octal_in_mount_points() -> None:
    """A space written as \\040 by the kernel comes back as a space."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert mounts[4] == Mount("0:42", "/mnt/with space", "fuse.sshfs")


def test_find_mount_prefers_the_device_match() -> None:
    """The mount with the path's device wins even when another mount point is deeper."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert find_mount(mounts, "/srv/nfs/inner/x", "0:40") == mounts[2]


def test_find_mount_picks_the_deepest_bind_mount_of_the_device() -> None:
    """Among mounts of one device, the deepest mount point holding the path is chosen."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert find_mount(mounts, "/bind/x", "254:0") == mounts[5]


def test_find_mount_without_device_match_uses_the_deepest_prefix() -> None:
    """With no device match the deepest containing mount point decides."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert find_mount(mounts, "/srv/nfs/inner/x", "9:9") == mounts[3]


def test_find_mount_lets_a_later_mount_shadow_an_earlier_one() -> None:
    """A second mount on the same mount point hides the first."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert find_mount(mounts, "/srv/nfs/file", None) == mounts[6]


def test_find_mount_does_not_match_a_sibling_with_a_common_prefix() -> None:
    """/srv/nfsdata is not inside /srv/nfs."""
    mounts = parse_mountinfo(MOUNTINFO)
    found = find_mount(mounts, "/srv/nfsdata/x", None)
    assert found is not None
    assert found.mount_point == "/"


def test_filesystem_type_uses_the_given_mountinfo(tmp_path: Path) -> None:
    """The path's own device selects the line, whatever its mount point says."""
    st = tmp_path.stat()
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    text = f"1 0 {device} / /elsewhere rw - fuse.rclone remote: rw\n"
    assert filesystem_type(tmp_path, text) == "fuse.rclone"


def test_filesystem_type_of_a_missing_path_is_unknown(tmp_path: Path) -> None:
    """A path that cannot be stat'ed has an unknown type instead of raising."""
    assert filesystem_type(tmp_path / "missing") == UNKNOWN


@pytest.mark.parametrize(
    "fstype",
    ["nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs"],
)
def test_network_filesystems_are_not_trusted(fstype: str) -> None:
    """Network filesystems get a reason about other hosts' writes."""
    assert remote_reason(fstype) == (f"{fstype} filesystem: inotify does not see writes from other hosts")


@pytest.mark.parametrize("fstype", ["fuse", "fuseblk", "fuse.sshfs", "fuse.rclone"])
def test_fuse_filesystems_are_not_trusted(fstype: str) -> None:
    """FUSE filesystems, any subtype, are polled."""
    reason = remote_reason(fstype)
    assert reason is not None
    assert reason.startswith(f"{fstype} filesystem: ")


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", UNKNOWN])
def test_local_filesystems_are_trusted(fstype: str) -> None:
    """Local filesystems (and an unknown type) keep inotify."""
    assert remote_reason(fstype) is None


@pytest.mark.real
def test_real_tmpfs_folder_is_detected_as_local() -> None:
    """A folder under /dev/shm reads as tmpfs from the live mount table."""
    with tempfile.TemporaryDirectory(dir="/dev/shm") as base:
        fstype = filesystem_type(Path(base))
    assert fstype == "tmpfs"
    assert remote_reason(fstype) is None


@pytest.mark.real
def test_real_type_matches_findmnt(tmp_path: Path) -> None:
    """For the test's own temp folder the type agrees with util-linux findmnt."""
    findmnt = shutil.which("findmnt")
    assert findmnt is not None, "findmnt (util-linux) is needed for this test"
    expected = subprocess.run(
        [findmnt, "--noheadings", "--output", "FSTYPE", "--target", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert filesystem_type(tmp_path) == expected
