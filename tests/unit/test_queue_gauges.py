"""The queue gauges read the folders afresh at every collection: the last export of a run (taken
right after another) shows the queue as the run left it."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from foldermon.telemetry._instruments import Instruments, QueueSample


def _gauges(reader: InMemoryMetricReader) -> dict[tuple[str, str], float]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[str, str], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    state = str((point.attributes or {}).get("foldermon.queue.state", ""))
                    found[metric.name, state] = point.value  # type: ignore[union-attr]
    return found


def test_each_collection_sees_the_queue_as_it_is_and_both_gauges_share_one_look() -> None:
    reader = InMemoryMetricReader()
    instruments = Instruments(MeterProvider(metric_readers=[reader]).get_meter("test"))
    queue = {"unprocessed": 0, "underprocess": 3}
    looks = 0

    def source() -> list[QueueSample]:
        nonlocal looks
        looks += 1
        return [QueueSample("/r", "id", dict(queue), 4.0 if queue["underprocess"] else None)]

    instruments.queue_source = source
    first = _gauges(reader)
    assert first["foldermon.queue.depth", "underprocess"] == 3
    assert first["foldermon.queue.oldest_age", ""] == 4.0
    assert looks == 1
    queue.update(unprocessed=3, underprocess=0)  # the run gives its claims back, then exits
    last = _gauges(reader)  # at once: the final collection
    assert last["foldermon.queue.depth", "underprocess"] == 0
    assert last["foldermon.queue.depth", "unprocessed"] == 3
    assert last["foldermon.queue.oldest_age", ""] == 0.0
    assert looks == 2
