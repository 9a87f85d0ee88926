"""Kill -9 storm: files keep arriving while the agent is SIGKILLed at random moments, then a drain."""

from __future__ import annotations

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


def test_kill_storm_then_drain_processes_every_input_exactly_once(tmp_path: Path) -> None:
    """After many SIGKILLs at random moments and a drain, every input is processed once, byte-exact, nothing left."""
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "storm.toml",
        # Kills must never quarantine a file: each one may count as an attempt.
        f"[retry]\nmax_attempts = {KILLS * 10}\nbackoff = 0.05\n{COUNTER_CONFIG}",
    )
    rng = random.Random(6)
    in_flight = 0
    log = tmp_path / "agent.log"
    with Producer(root, per_second=40, seed=7) as producer:
        for _ in range(KILLS):
            proc = popen(agent_argv("run", "--watch", str(root), "--config", str(config)), log=log)
            # Mostly while files are in flight; sometimes during start-up and recovery.
            time.sleep(rng.uniform(0.0, 0.5) if rng.random() < 0.2 else rng.uniform(0.5, 1.3))
            kill(proc)
            in_flight += bool(census(root)["underprocess"])
    result = run_cli("run", "--watch", str(root), "--once", "--config", str(config), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(producer.produced) > KILLS * 10
    # Proof that the storm hit the window it is about: kills with a file claimed.
    assert in_flight >= KILLS // 10, f"only {in_flight} of {KILLS} kills landed with a file in flight"
    assert_all_processed_once(root, producer.produced, numbered)
