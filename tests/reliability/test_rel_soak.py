"""Soak: steady arrivals for a while; the agent's open files, threads and memory stay flat."""

from __future__ import annotations

import random
import time
from pathlib import Path

from relkit import (
    LONG,
    Producer,
    agent_argv,
    assert_all_processed_once,
    numbered,
    popen,
    proc_sample,
    terminate_all,
    wait_for_event,
)

from agentctl import census, wait_until, write_config

SECONDS = 900 if LONG else 75
WARM_UP = 10.0  # imports, first allocations and the first files
RATE = 40


def _payload(rng: random.Random, name: str) -> bytes:
    """Every 25th file is a few MiB (several batches); the rest are small. The same mix all along."""
    index = int(name[1:7])
    lines = 40_000 if index % 25 == 0 else rng.randint(1, 50)
    return b"".join(b"%s %d lorem ipsum dolor sit amet\n" % (name.encode(), i) for i in range(lines))


def test_soak_keeps_fds_threads_and_memory_flat(tmp_path: Path) -> None:
    """Over a steady stream the last third's peaks stay at the first third's: nothing grows with files processed."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "s.toml",
        '[watch]\nrescan_interval = 5.0\n[[processors]]\ntype = "line_counter"\n[[processors]]\ntype = "uppercase"\n',
    )
    log = tmp_path / "agent.log"
    (root / "unprocessed").mkdir(parents=True)
    proc = popen(agent_argv("run", "--watch", str(root), "--config", str(config)), log=log)
    wait_for_event(log, "watching")
    samples: list[dict[str, int]] = []
    with Producer(root, per_second=RATE, seed=11, payload=_payload) as producer:
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            time.sleep(0.5)
            if time.monotonic() - started >= WARM_UP:
                samples.append(proc_sample(proc.pid))
    wait_until(lambda: len(census(root)["processed"]) == len(producer.produced), timeout=120)
    assert terminate_all([proc]) == [0]
    third = len(samples) // 3
    first, last = samples[:third], samples[-third:]

    def peak(part: list[dict[str, int]], key: str) -> int:
        return max(s[key] for s in part)

    assert peak(last, "fds") <= peak(first, "fds"), (first, last)
    assert peak(last, "threads") <= peak(first, "threads"), (first, last)
    assert peak(last, "rss_kb") <= peak(first, "rss_kb") * 1.1 + 4096, [s["rss_kb"] for s in samples]
    assert len(producer.produced) >= RATE * SECONDS * 0.8
    assert_all_processed_once(root, producer.produced, lambda data: numbered(data).upper())
