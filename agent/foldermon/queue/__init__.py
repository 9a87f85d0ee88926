"""The durable folder queue."""

from foldermon.queue.instance import Instance, new_instance_id
from foldermon.queue.layout import FAILED, PROCESSED, STATES, UNDERPROCESS, UNPROCESSED, Layout
from foldermon.queue.lifecycle import Claim, Queue
from foldermon.queue.recovery import Recovery

__all__ = [
    "FAILED",
    "PROCESSED",
    "STATES",
    "UNDERPROCESS",
    "UNPROCESSED",
    "Claim",
    "Instance",
    "Layout",
    "Queue",
    "Recovery",
    "new_instance_id",
]
