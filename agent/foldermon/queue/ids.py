"""Instance ids, in a module of their own: a one-shot command names itself with one (for its
telemetry) without loading the queue."""

from __future__ import annotations

import os
import re


def new_instance_id() -> str:
    """A name unique across hosts and restarts: ``host-pid-random`` (exactly two dashes)."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", os.uname().nodename)[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"
