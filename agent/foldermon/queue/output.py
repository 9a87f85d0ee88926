"""Output files: named by template, written under a temp name, published without replacing.

The temp output of an input is named by its owner instance, its root and the input's
identity (``.foldermon-<instance>-<root tag>-<identity>.tmp``). Publishing links it to a
second temp name and renames that one to the final name without replacing anything (a taken
name gets the next ``.N`` suffix), then links it to a third, ``.done.tmp``; the temp names stay
until the input is finished. So while the input is still claimed, a ``.done.tmp`` name, or a
temp output with a second link and no second temp name (a stop between the two steps),
proves its output is published, even once a consumer has taken the output away: the
recovery of a dead instance finishes such an input instead of processing it again, and a
published output is never replaced or made twice.
"""

from __future__ import annotations

import contextlib
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
        pub = publishing_name(self.tmp)
        pub.unlink(missing_ok=True)  # left by an earlier publish of this output that failed
        try:
            link_noreplace(self.tmp, pub)
        except OSError as exc:
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
                pub.unlink(missing_ok=True)
            raise
        if pub != self.tmp:
            # The proof of publication that outlives the final name (a consumer may take the
            # output away first). Published already, so a failure here must not fail the file:
            # the final name's own link is the proof then.
            done = published_name(self.tmp)
            with contextlib.suppress(OSError):
                done.unlink(missing_ok=True)
                os.link(self.tmp, done)
        return final


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
    """Whether a temp output is published: it has its proof, or a link besides itself and its
    publishing name (its final name: a stop just before the proof was made).

    Counting links covers a publish interrupted inside a link-then-unlink rename (filesystems
    without RENAME_NOREPLACE), where the final name exists beside the publishing one.
    """
    try:
        links = os.lstat(tmp).st_nlink
    except FileNotFoundError:
        return False
    return os.path.lexists(published_name(tmp)) or links > 1 + os.path.lexists(publishing_name(tmp))
