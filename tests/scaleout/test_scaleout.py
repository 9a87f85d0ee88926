"""Three hosts on one GlusterFS volume: a backlog shared, a host SIGKILLed, a host cut off.

Each "host" mounts the volume with its own GlusterFS client in its own network namespace
and runs its agent with its own hostname (glusterkit). Every agent uses the defaults a
shared filesystem gets: poll mode and a 5 s lease (README, Scaling out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from glusterkit import Cluster, Host
from relkit import (
    COUNTER_CONFIG,
    Producer,
    agent_argv,
    assert_all_processed_once,
    events,
    numbered,
    processed_counts,
    records,
    wait_for_event,
)

from agentctl import agent_env, census, wait_until, write_config

pytestmark = pytest.mark.real

LEASE = 5.0  # the default on a FUSE filesystem
CONFIG = "[watch]\nrescan_interval = 1.0\npoll_interval = 0.2\nsettle = 0.2\n"


class Agents:
    """One agent per host on one root; stopped (and checked to exit cleanly) by ``stop``."""

    def __init__(self, cluster: Cluster, tmp_path: Path, root: str, config: str) -> None:
        self.cluster = cluster
        self.root = root
        self.config = write_config(tmp_path / f"{root}.toml", CONFIG + config)
        self.logs = {h.name: tmp_path / f"{root}-{h.name}.log" for h in cluster.hosts}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def at(self, host: Host) -> Path:
        """The root as ``host`` sees it, through its own mount."""
        return host.mount / self.root

    def start(self, *hosts: Host) -> dict[str, str]:
        """Start the agents of ``hosts`` all at once; their instance ids once they watch."""
        argv = agent_argv("run", "--watch", "ROOT", "--config", str(self.config))
        for host in hosts:
            argv[argv.index("--watch") + 1] = str(self.at(host))
            self.procs[host.name] = host.popen(argv, self.logs[host.name], env=agent_env())
        return {h.name: wait_for_event(self.logs[h.name], "watching", timeout=60)["instance"] for h in hosts}

    def stop(self) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = None
        return codes

    def tracebacks(self) -> list[str]:
        return [name for name, log in self.logs.items() if log.exists() and "Traceback" in log.read_text()]


def _arriving(root: Path, *, per_second: float, seed: int, limit: int) -> Producer:
    """Files of 1 to 20 short lines arriving while the agents run."""
    return Producer(
        root,
        per_second=per_second,
        seed=seed,
        limit=limit,
        payload=lambda rng, name: f"{name}\n".encode() * rng.randint(1, 20),
    )


def _claims(root: Path, instance: str) -> list[str]:
    try:
        return [n for n in os.listdir(root / "underprocess" / instance) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def test_three_hosts_drain_a_backlog_together_each_file_once(cluster: Cluster, tmp_path: Path) -> None:
    agents = Agents(cluster, tmp_path, "backlog", COUNTER_CONFIG)
    hosta = cluster.hosts[0]
    producer = Producer(agents.at(hosta), per_second=1000, seed=11)
    for _ in range(300):
        producer.drop_one()
    try:
        # Started together, they make the root's folders at once (GlusterFS may answer EEXIST
        # to every one of several racing mkdirs).
        agents.start(*cluster.hosts)
        wait_until(lambda: len(census(agents.at(hosta))["processed"]) == 300, timeout=240, interval=0.5)
    finally:
        codes = agents.stop()
    assert codes == {h.name: 0 for h in cluster.hosts}, codes
    assert agents.tracebacks() == []
    # Auto mode polls a FUSE root and says why; the lease is on.
    for log in agents.logs.values():
        (watching,) = events([log], "watching")
        assert watching["mode"] == "poll", watching
        assert "fuse" in watching["reason"], watching
        assert events([log], "serving root")[0]["lease"] == LEASE
    counts = processed_counts(agents.logs.values())
    assert [n for n, c in counts.items() if c > 1] == []
    per_host = {name: sum(processed_counts([log]).values()) for name, log in agents.logs.items()}
    assert all(per_host.values()), f"a host processed nothing: {per_host}"
    assert sum(per_host.values()) == 300
    assert_all_processed_once(agents.at(hosta), producer.produced, numbered)


def test_a_host_killed_mid_run_is_taken_over_and_nothing_is_lost_or_doubled(
    cluster: Cluster, tmp_path: Path
) -> None:
    agents = Agents(
        cluster, tmp_path, "killed", '[[processors]]\ntype = "sleepy"\nseconds = 0.05\n' + COUNTER_CONFIG
    )
    hosta = cluster.hosts[0]
    root = agents.at(hosta)
    ids = agents.start(*cluster.hosts)
    try:
        with _arriving(root, per_second=40, seed=12, limit=240) as producer:
            wait_until(lambda: len(census(root)["processed"]) > 40, timeout=120)
            wait_until(lambda: _claims(root, ids["hostb"]), timeout=60, interval=0.01)
            agents.procs["hostb"].kill()
            killed_at = time.monotonic()
            held = _claims(root, ids["hostb"])
            wait_until(
                lambda: any(
                    ids["hostb"] in r["dead_instances"] for r in events(agents.logs.values(), "recovered")
                ),
                timeout=60,
            )
            taken_over_in = time.monotonic() - killed_at
            wait_until(lambda: len(census(root)["processed"]) == 240, timeout=240, interval=0.5)
    finally:
        codes = agents.stop()
    assert held, "the kill did not land while host b held a claim"
    assert {n: codes[n] for n in ("hosta", "hostc")} == {"hosta": 0, "hostc": 0}, codes
    # Fenced at the first rescan after the lock is free, settled 2 * lease later.
    assert 2 * LEASE <= taken_over_in < 2 * LEASE + 10, taken_over_in
    assert agents.tracebacks() == []
    counts = processed_counts(agents.logs.values())
    assert [n for n, c in counts.items() if c > 1] == []
    assert_all_processed_once(root, producer.produced, numbered)


def test_a_host_cut_off_mid_run_publishes_nothing_the_others_took_over(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The cut-off host's lock frees without it knowing; the others fence its claim folder and
    settle it 2 * lease later. When it comes back it finds its claims taken, publishes nothing
    for them, starts a new claim folder and goes on; every file once, no traceback."""
    agents = Agents(
        cluster, tmp_path, "cut", '[[processors]]\ntype = "sleepy"\nseconds = 0.1\n' + COUNTER_CONFIG
    )
    hosta, _, hostc = cluster.hosts
    root = agents.at(hosta)
    ids = agents.start(*cluster.hosts)
    victim = ids["hostc"]
    try:
        with _arriving(root, per_second=30, seed=13, limit=300) as producer:
            wait_until(lambda: len(census(root)["processed"]) > 30, timeout=120)
            wait_until(lambda: _claims(root, victim), timeout=60, interval=0.01)
            hostc.cut()
            held = _claims(root, victim)
            try:
                wait_until(
                    lambda: any(
                        victim in r["dead_instances"] for r in events(agents.logs.values(), "recovered")
                    ),
                    timeout=90,
                )
                time.sleep(3)  # the others go on while host c is still cut off
            finally:
                hostc.restore()
            wait_until(lambda: len(census(root)["processed"]) == 300, timeout=300, interval=0.5)
        # Back, host c goes on with a new claim folder: alone now, it takes the next files.
        for name in ("hosta", "hostb"):
            agents.procs[name].send_signal(signal.SIGTERM)
            assert agents.procs[name].wait(60) == 0
        before = sum(processed_counts([agents.logs["hostc"]]).values())
        for _ in range(20):
            producer.drop_one()
        wait_until(lambda: len(census(root)["processed"]) == 320, timeout=120, interval=0.5)
        assert sum(processed_counts([agents.logs["hostc"]]).values()) == before + 20
    finally:
        codes = agents.stop()
    assert held, "the cut did not land while host c held a claim"
    assert codes == {h.name: 0 for h in cluster.hosts}, codes
    assert agents.tracebacks() == []
    # It said so, and started a new claim folder.
    said = {r["event"] for r in records(agents.logs["hostc"])}
    assert "filesystem unreachable; waiting for it, files in hand are left to recovery" in said, said
    assert any(e.startswith("new claim folder") for e in said), said
    counts = processed_counts(agents.logs.values())
    assert [n for n, c in counts.items() if c > 1] == []
    assert_all_processed_once(root, producer.produced, numbered)


def test_with_the_lease_off_an_unreachable_volume_is_waited_for_too(cluster: Cluster, tmp_path: Path) -> None:
    """`lease = 0` turns fencing off (and is warned about on a shared filesystem), not the wait:
    a cut-off agent keeps running and serves the root again once its mount answers."""
    agents = Agents(cluster, tmp_path, "nolease", "[agent]\nlease = 0\n" + COUNTER_CONFIG)
    hosta, hostb = cluster.hosts[:2]
    root = agents.at(hostb)  # what the test does goes through a mount that is never cut
    agents.start(hosta)
    producer = Producer(root, per_second=1000, seed=14)
    try:
        producer.drop_one()
        wait_until(lambda: len(census(root)["processed"]) == 1, timeout=30)
        hosta.cut()
        try:
            wait_for_event(
                agents.logs["hosta"],
                "filesystem unreachable; waiting for it, files in hand are left to recovery",
                timeout=30,
            )
            assert agents.procs["hosta"].poll() is None
        finally:
            hosta.restore()
        for _ in range(3):
            producer.drop_one()
        wait_until(lambda: len(census(root)["processed"]) == 4, timeout=60, interval=0.5)
    finally:
        codes = agents.stop()
    assert codes == {"hosta": 0}, codes
    assert agents.tracebacks() == []
    assert events(
        [agents.logs["hosta"]],
        "lease off on a filesystem other hosts may share: a host cut off from it could publish an output again after another took its files over",
    )
    assert_all_processed_once(root, producer.produced, numbered)
