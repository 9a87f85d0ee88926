"""``open_watcher``: inotify per root, or polling where inotify cannot see every write."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from foldermon.errors import ConfigError, WatchUnavailableError
from foldermon.watch._base import (
    UNPROCESSED,
    NameRules,
    Scan,
    Watcher,
    WatchMode,
    WatchSettings,
    scan_dir,
)
from foldermon.watch._combined import CombinedWatcher
from foldermon.watch.fstype import filesystem_type, remote_reason
from foldermon.watch.inotify import InotifyBackend
from foldermon.watch.poll import PollBackend

MODES = ("auto", "inotify", "poll")


def open_watcher(
    config: WatchSettings,
    roots: Sequence[Path],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    scan: Scan = scan_dir,
    fstype: Callable[[Path], str] = filesystem_type,
) -> Watcher:
    """Watch each root's ``unprocessed/``; ``watch.mode = inotify`` raises WatchUnavailableError.

    In ``auto`` mode a root on a network or FUSE filesystem is polled, and a root inotify
    refuses (limits reached, no kernel support) falls back to polling with the reason.
    """
    if config.mode not in MODES:
        raise ConfigError([f"watch.mode: {config.mode!r} is not one of {', '.join(MODES)}"])
    rules = NameRules.from_settings(config)
    wanted = [(root, *_choose(config.mode, root, fstype)) for root in dict.fromkeys(roots)]
    inotify: InotifyBackend | None = None
    modes: list[WatchMode] = []
    if any(mode == "inotify" for _, mode, _ in wanted):
        inotify, init_error = _open_inotify(config, rules, scan, strict=config.mode == "inotify")
    for root, wanted_mode, why in wanted:
        mode, reason = wanted_mode, why
        if mode == "inotify" and inotify is None:
            mode, reason = "poll", init_error
        elif mode == "inotify" and inotify is not None:
            try:
                inotify.add_root(root)
            except WatchUnavailableError as exc:
                if config.mode == "inotify":
                    inotify.close()
                    raise
                mode, reason = "poll", str(exc)
        modes.append(WatchMode(root, mode, reason))
    if inotify is not None and not inotify.roots:
        inotify.close()
        inotify = None
    poller = PollBackend(
        [m.root for m in modes if m.mode == "poll"],
        rules,
        poll_interval=config.poll_interval,
        settle=config.settle,
        rescan_interval=config.rescan_interval,
        scan=scan,
    )
    return CombinedWatcher(tuple(modes), inotify, poller, clock=clock, sleep=sleep)


def _choose(mode: str, root: Path, fstype: Callable[[Path], str]) -> tuple[str, str]:
    if mode == "poll":
        return "poll", "watch.mode = poll"
    kind = fstype(root / UNPROCESSED)
    remote = remote_reason(kind)
    if mode == "inotify":
        return "inotify", "watch.mode = inotify" + (f" (although {remote})" if remote else "")
    if remote is not None:
        return "poll", remote
    return "inotify", f"inotify available ({kind} filesystem)"


def _open_inotify(
    config: WatchSettings, rules: NameRules, scan: Scan, *, strict: bool
) -> tuple[InotifyBackend | None, str]:
    try:
        backend = InotifyBackend(
            rules,
            settle=config.settle,
            poll_interval=config.poll_interval,
            rescan_interval=config.rescan_interval,
            scan=scan,
        )
    except WatchUnavailableError as exc:
        if strict:
            raise
        return None, str(exc)
    return backend, ""
