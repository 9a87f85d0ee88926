"""Watching ``unprocessed/`` folders: inotify where it sees every write, polling elsewhere."""

from foldermon.errors import WatchUnavailableError
from foldermon.watch._base import (
    EntryInfo,
    EntryKind,
    FileEvent,
    NameRules,
    Watcher,
    WatchMode,
    WatchSettings,
    lstat_info,
    open_for_writing,
    scan_dir,
)
from foldermon.watch._combined import CombinedWatcher
from foldermon.watch._open import open_watcher
from foldermon.watch.fstype import filesystem_type, remote_reason
from foldermon.watch.inotify import InotifyBackend, describe_error
from foldermon.watch.poll import PollBackend

__all__ = [
    "CombinedWatcher",
    "EntryInfo",
    "EntryKind",
    "FileEvent",
    "InotifyBackend",
    "NameRules",
    "PollBackend",
    "WatchMode",
    "WatchSettings",
    "WatchUnavailableError",
    "Watcher",
    "describe_error",
    "filesystem_type",
    "lstat_info",
    "open_for_writing",
    "open_watcher",
    "remote_reason",
    "scan_dir",
]
