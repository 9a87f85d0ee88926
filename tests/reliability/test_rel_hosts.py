"""Several "hosts" (separate PID and UTS namespaces) sharing one root, as on a network filesystem."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from relkit import (
    COUNTER_CONFIG,
    Producer,
    agent_argv,
    descendants,
    events,
    numbered,
    popen,
    processed_counts,
    require_root,
    require_tools,
    troubles,
    wait_for_event,
)

from agentctl import census, wait_until, write_config

pytestmark = pytest.mark.real

FILES = 300
# In each namespace sh is pid 1 and hostname pid 2; then come the extra sleeps and the agent.
# So host a and host c both run their agent as pid 3 of their namespace, host b as pid 4.
HOSTS = {"hosta": 0, "hostb": 1, "hostc": 0}


def _start_host(name: str, argv: list[str], log: Path, extra_pids: int) -> subprocess.Popen[bytes]:
    """The agent in new PID, UTS and mount namespaces with its own hostname; sh stays pid 1."""
    script = 'hostname "$1"; shift; ' + "sleep 600 & " * extra_pids + '"$@"; exit $?'
    unshare = ["unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c", script, "sh", name]
    return popen([*unshare, *argv], log=log, start_new_session=True)


def _agent_pid(host: subprocess.Popen[bytes]) -> int:
    """The agent's pid as this (the parent) namespace sees it."""
    for pid in descendants(host.pid):
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"foldermon"]:
            return pid
    raise AssertionError("no agent process in the host's namespace")


def _claims(root: Path, instance: str) -> list[str]:
    try:
        return [n for n in os.listdir(root / "underprocess" / instance) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def test_hosts_in_separate_namespaces_share_a_root_and_recover_a_killed_host(tmp_path: Path) -> None:
    """Unique ids across hosts with equal pids; both survivors run untouched and recover the killed host's claims."""
    require_root()
    require_tools("unshare")
    root = tmp_path / "root"
    config = write_config(
        tmp_path / "h.toml",
        '[watch]\nrescan_interval = 1.0\n[[processors]]\ntype = "sleepy"\nseconds = 0.05\n' + COUNTER_CONFIG,
    )
    argv = agent_argv("run", "--watch", str(root), "--config", str(config))
    logs = {name: tmp_path / f"{name}.log" for name in HOSTS}
    hosts = {name: _start_host(name, argv, logs[name], extra) for name, extra in HOSTS.items()}
    try:
        ids = {name: wait_for_event(logs[name], "watching")["instance"] for name in HOSTS}
        with Producer(
            root,
            per_second=40,
            seed=5,
            limit=FILES,
            payload=lambda rng, n: f"{n}\n".encode() * rng.randint(1, 20),
        ) as producer:
            wait_until(lambda: len(census(root)["processed"]) > 40, timeout=60)
            wait_until(lambda: _claims(root, ids["hostc"]), timeout=30, interval=0.005)
            os.killpg(hosts["hostc"].pid, signal.SIGKILL)  # the whole namespace goes at once
            hosts["hostc"].wait(30)
            stranded = _claims(root, ids["hostc"])
            wait_until(lambda: len(census(root)["processed"]) == FILES, timeout=120)
        for name in ("hosta", "hostb"):
            os.kill(_agent_pid(hosts[name]), signal.SIGTERM)
        codes = [hosts[name].wait(60) for name in ("hosta", "hostb")]
    finally:
        for host in hosts.values():
            if host.poll() is None:
                os.killpg(host.pid, signal.SIGKILL)
                host.wait(30)
    assert codes == [0, 0]
    # Same pid in two namespaces, yet distinct ids that carry each host's name.
    assert len(set(ids.values())) == 3
    assert [ids[n].split("-")[:2] for n in HOSTS] == [["hosta", "3"], ["hostb", "4"], ["hostc", "3"]]
    survivors = [logs["hosta"], logs["hostb"]]
    recovered = events(survivors, "recovered")
    assert stranded, "host c was killed without a claim in flight"
    assert any(ids["hostc"] in r["dead_instances"] for r in recovered), "nobody recovered host c's claims"
    for record in recovered:
        assert set(record["dead_instances"]) <= {ids["hostc"]}, f"a live host's claims were taken: {record}"
    problems = troubles(survivors)
    assert problems == [], problems[:5]
    counts = processed_counts(logs.values())
    assert all(processed_counts([log]) for log in survivors), "a surviving host processed nothing"
    assert [n for n, c in counts.items() if c > 1] == []
    assert len(set(producer.produced) - set(counts)) <= 1
    found = census(root)
    assert found["processed"] == sorted(producer.produced)
    assert found["unprocessed"] == found["underprocess"] == found["failed"] == []
    for name, data in producer.produced.items():
        assert (root / "output" / name.replace(".txt", "_processed.txt")).read_bytes() == numbered(data)
