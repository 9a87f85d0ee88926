"""Output files: named by template, written under a temp name, published without replacing.

The temp output of an input is named by its owner instance, its root and the input's
identity (``.foldermon-<instance>-<root tag>-<identity>.tmp``). Publishing links it to a
second temp name, ``.pub.tmp``, and a third, ``.done.tmp``, then renames the ``.pub.tmp`` one
to the final name without replacing anything (a taken name gets the next ``.N`` suffix); the
temp names stay until the input is finished. The rename is the publication, and it takes the
``.pub.tmp`` name away: so while the input is still claimed, a ``.done.tmp`` name without a
``.pub.tmp`` one, or a link of the temp output besides its temp names (the final name, in a
rename made of a link and an unlink), proves the output is published, even once a consumer
has taken the output away: the recovery of a dead instance finishes such an input instead of
processing it again, and a published output is never replaced or made twice.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foldermon.queue.fsio import link_noreplace, rename_noreplace, unique_name

TMP_MARK = ".foldermon-"
TMP_SUFFIX = ".tmp"
# Hard links refused: the filesystem has none (FAT, some FUSE and SMB mounts).
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})


def identity(root_id: str, name: str, st: os.stat_result) -> str:
    """What tells one input from every other, kept across renames within its filesystem."""
    key = f"{root_id}\0{name}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_size}"
    return hashlib.sha256(os.fsencode(key)).hexdigest()[:32]


def temp_prefix(instance_id: str, root_tag: str = "") -> str:
    """Names of the temp outputs of an instance (for one root, when ``root_tag`` is given)."""
    return f"{TMP_MARK}{instance_id}-{root_tag + '-' if root_tag else ''}"


def temp_owner(name: str) -> str | None:
    """The instance id (``host-pid-random``) in a temp output's name, or None for other names."""
    if not name.startswith(TMP_MARK) or not name.endswith(TMP_SUFFIX):
        return None
    parts = name[len(TMP_MARK) :].split("-", 3)
    return "-".join(parts[:3]) if len(parts) == 4 else None


def output_filename(template: str, name: str) -> str:
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    else:
        suffix = "." + suffix
    return template.format(stem=stem, suffix=suffix, name=name)


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """Where one attempt writes: ``tmp``, then published as ``name`` or its first free ``.N`` form."""

    folder: Path
    name: str
    tmp: Path
    n: int

    def committed(self) -> bool:
        """Whether the output is published."""
        return is_committed(self.tmp)

    def publish(self, fence: Callable[[], None] | None = None) -> Path:
        """Give the finished temp file its final name, never replacing one; returns the final path.

        ``fence`` is called just before each try of a final name, and raises when this
        instance may no longer publish (``Queue.confirm_lease``). Not yet durable: the caller
        fsyncs the folder (once for a batch of outputs).
        """
        pub, done = publishing_name(self.tmp), published_name(self.tmp)
        _unpublish(pub, done)  # left by an earlier publish of this output that failed
        try:
            link_noreplace(self.tmp, pub)
            os.link(self.tmp, done)  # proves the publication once the rename takes ``pub`` away
        except OSError as exc:
            _unpublish(pub, done)
            if exc.errno not in _NO_LINKS:
                raise
            # No hard links: the output is still never replaced, but a crash before its input
            # is finished makes a second output (README, Known limitations).
            pub = self.tmp
        n = self.n
        try:
            while True:
                final = self.folder / unique_name(self.name, n)
                if fence is not None:
                    fence()
                try:
                    rename_noreplace(pub, final)
                except FileExistsError:
                    n += 1
                else:
                    break
        except BaseException:
            if pub != self.tmp:
                _unpublish(pub, done)
            raise
        return final


def _unpublish(pub: Path, done: Path) -> None:
    """Take an unpublished output's proof away, then its publishing name: in this order, a stop
    in between never leaves the proof without the publishing name (which says "published")."""
    done.unlink(missing_ok=True)
    pub.unlink(missing_ok=True)


def publishing_name(tmp: Path) -> Path:
    """The second temp name an output has while it is being published."""
    return tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX) + ".pub" + TMP_SUFFIX)


def published_name(tmp: Path) -> Path:
    """The temp name that proves an output is published, until its input is finished."""
    return tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX) + ".done" + TMP_SUFFIX)


def temp_names(tmp: Path) -> tuple[Path, Path, Path]:
    """Every name a temp output has on its way: while written, published, and proving it."""
    return tmp, publishing_name(tmp), published_name(tmp)


def is_committed(tmp: Path) -> bool:
    """Whether a temp output is published: it has its proof and the rename took its publishing
    name away, or it has a link besides its temp names that is a final name in its folder.

    The link covers a publish interrupted inside a link-then-unlink rename (filesystems without
    RENAME_NOREPLACE), where the final name exists beside the publishing one, and the temp
    outputs of earlier versions, which made the proof after the rename. A link elsewhere (a
    hard-link snapshot of the folder, ``cp -al``, taken while the output was written) proves
    nothing.
    """
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return False
    done = os.path.lexists(published_name(tmp))
    pub = os.path.lexists(publishing_name(tmp))
    if done and not pub:
        return True
    return st.st_nlink > 1 + pub + done and _final_name_of(tmp.parent, st)


def _final_name_of(folder: Path, st: os.stat_result) -> bool:
    """Whether an output name in ``folder`` (not a dot name: temp names and anything else
    hidden there are none) is a link of the file ``st``."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                other = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (other.st_ino, other.st_dev) == (st.st_ino, st.st_dev):
                return True
    return False
