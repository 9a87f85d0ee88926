"""Instance ids, in a module of their own: a one-shot command names itself with one (for its
telemetry) without loading the queue."""

from __future__ import annotations

import os
import re

_INSTANCE_ID = re.compile(r"[A-Za-z0-9_]{1,40}-[0-9]+-[0-9a-f]{6}")


def new_instance_id() -> str:
    """A name unique across hosts and restarts: ``host-pid-random`` (exactly two dashes)."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", os.uname().nodename)[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


def is_instance_id(name: str) -> bool:
    """Whether ``name`` is an instance id: only folders so named in ``underprocess/`` are claim
    folders (anything else there, such as another root put there by mistake, is left alone)."""
    return _INSTANCE_ID.fullmatch(name) is not None


# Claim folders of an instance are named by its id, or while being built and once fenced:
NEW_PREFIX = ".new-"  # ``.new-<id>.<try>``: half-built, never held a claim
FENCED_PREFIX = ".fenced-"  # ``.fenced-<id>.<random>``: taken over from its instance


def owner_of(entry: str) -> str:
    """The instance id of a claim folder's name: ``<id>``, ``.new-<id>.<try>`` (half-built) or
    ``.fenced-<id>.<random>`` (taken over)."""
    for prefix in (NEW_PREFIX, FENCED_PREFIX):
        if entry.startswith(prefix):
            return entry.removeprefix(prefix).rsplit(".", 1)[0]
    return entry
