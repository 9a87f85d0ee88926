"""What a claim gives: the claimed file, or why a name was not claimed; and the errors that say
this instance's claims are gone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foldermon.errors import LifecycleError
from foldermon.queue.counter import Count, TraceRef


class ClaimFolderGoneError(LifecycleError):
    """This instance's claim folder is gone (the root was removed, or a root symlink switched)."""


class LeaseLostError(LifecycleError):
    """This instance's claim folder is no longer its own: another instance took its claims over."""


@dataclass(frozen=True, slots=True)
class Claim:
    name: str
    path: Path
    attempt: int
    first_attempt: float
    size: int
    arrived: float
    identity: str
    traces: tuple[TraceRef, ...] = ()  # of the earlier attempts
    generation: int = 0  # of the claim folder it was claimed into (Queue.generation)
    waits: int = 0  # retries in a row that waited for the environment (a full disk), uncounted
    error: dict[str, Any] | None = None  # how its last failed attempt failed (Count.error)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry quarantined at claim, never opened: not a regular file, or a name too long to use."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Directory:
    name: str


@dataclass(frozen=True, slots=True)
class Held:
    """A name this instance already holds (a file of that name waits for its retry): claimed later."""

    name: str


@dataclass(frozen=True, slots=True)
class Unclaimable:
    """A name whose claim failed (permissions, say): left where it is, offered again at each scan."""

    name: str
    error: OSError


@dataclass(frozen=True, slots=True)
class Exhausted:
    """An input that used up its attempts in earlier runs (e.g. it crashed the agent each time)."""

    name: str
    count: Count


ClaimResult = Claim | Rejected | Directory | Exhausted | Held | Unclaimable
