"""Kill -9 storm: files keep arriving while the agent is SIGKILLed at random moments, then a drain."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from relkit import (
    COUNTER_CONFIG,
    LONG,
    Producer,
    agent_argv,
    assert_all_processed_once,
    kill,
    numbered,
    popen,
)

from agentctl import census, run_cli, write_config

KILLS = 500 if LONG else 50


def instances(root: Path) -> set[str]:
    folder = root / "underprocess"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def claimed(root: Path, old: set[str]) -> bool:
    """Whether an instance not in ``old`` holds a claimed input (cheap to poll: only underprocess/ is read)."""
    folder = root / "underprocess"
    for instance in instances(root) - old:
        try:
            if any(not n.startswith(".") for n in os.listdir(folder / instance)):
                return True
        except (FileNotFoundError, NotADirectoryError):
            continue  # a dead instance's folder, emptied and removed by a recovery meanwhile
    return False


def wait_for_claim(root: Path, old: set[str], timeout: float) -> None:
    """Return as soon as a new instance has claimed a file, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not claimed(root, old) and time.monotonic() < deadline:
        time.sleep(0.0005)


def test_kill_storm_then_drain_processes_every_input_exactly_once(tmp_path: Path) -> None:
    """After many SIGKILLs at random moments and a drain, every input is processed once, byte-exact, nothing left."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "storm.toml",
        # Kills must never quarantine a file: each one may count as an attempt. The operations
        # features run too (passes of retention that keep everything, the disk guard, ordering).
        f"[retry]\nmax_attempts = {KILLS * 10}\nbackoff = 0.05\n"
        '[watch]\norder = "oldest"\npriority = ["*7*"]\n'
        '[retention]\nprocessed_max_age = "30d"\noutput_max_age = "30d"\nfailed_max_age = "30d"\n'
        f'[guard]\nmin_free = "1%"\n{COUNTER_CONFIG}',
    )
    rng = random.Random(6)
    in_flight = 0
    log = tmp_path / "agent.log"
    with Producer(root, per_second=40, seed=7) as producer:
        for _ in range(KILLS):
            # Claim folders of killed instances: their files are not the new instance's claims.
            old = instances(root)
            proc = popen(agent_argv("run", "--watch", str(root), "--config", str(config)), log=log)
            # Some during start-up and recovery, some at random, half aimed at a claimed file.
            mode = rng.random()
            if mode < 0.2:
                time.sleep(rng.uniform(0.0, 0.5))
            elif mode < 0.5:
                time.sleep(rng.uniform(0.5, 1.3))
            else:
                time.sleep(rng.uniform(0.3, 0.8))
                wait_for_claim(root, old, timeout=3.0)
            kill(proc)
            in_flight += bool(census(root)["underprocess"])
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(producer.produced) > KILLS * 10
    # Proof that the storm hit the window it is about: kills with a file claimed.
    assert in_flight >= KILLS // 4, f"only {in_flight} of {KILLS} kills landed with a file in flight"
    assert_all_processed_once(root, producer.produced, numbered)
