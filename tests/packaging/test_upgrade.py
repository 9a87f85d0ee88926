"""Upgrade and downgrade under load, in a booted systemd of each release.

Version A (this tree built as an older version) runs with the operator's edited config while
a producer keeps dropping files; version B is installed over it with apt as an unattended
upgrade does, the producer keeps going, and everything is drained. Then back to A the same
way. Nothing may be lost or processed twice, no output may be partial, the files the old
process had claimed are finished by the new one, and the operator's edits stay.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from machine import Container, debian_root, wait_for
from pkgsupport import OLD_VERSION, RELEASES, REPO, cache_dir, package_version, require_root, require_tools

pytestmark = pytest.mark.real

UNIT = "foldermon-agent.service"
WATCH = "/var/lib/foldermon/watch"
SHARE = "/mnt/foldermon"
CONFIG = "/etc/foldermon/agent.toml"
DEFAULTS = "/etc/default/foldermon-agent"
# Each read batch (256 KiB) of a file costs 0.1 s; a stop waits at most 0.5 s for the file
# in flight, then releases it for the next process.
EDITED_CONFIG = f"""# edited by the operator
[watch]
dirs = ["{WATCH}"]
[agent]
drain_timeout = 0.5
[[processors]]
type = "line_counter"
format = "{{count}}: {{line}}"
[[processors]]
type = "uppercase"
[[processors]]
type = "sleepy"
seconds = 0.1
"""
EDITED_DEFAULTS = "# edited by the operator\nFOLDERMON_OPERATOR_MARK=kept\n"
# A second agent, an instance of the template unit with a config file of its own.
INSTANCE = "foldermon-agent@extra.service"
INSTANCE_CONFIG = '[watch]\ndirs = ["/var/lib/foldermon/extra"]\n'
# unprocessed/ opened to a producers' group by the operator: an upgrade must keep it so.
PRODUCERS_MODE = "2770"
SMALL = 200  # lines of the files the producer drops
BIG = 300_000  # lines of the one file in flight at the upgrade: about 60 batches, 6 s of work
# Runs inside the container (Debian's python3). "drop WATCH NAME LINES" drops one file;
# "produce WATCH STOP EVERY PREFIX" drops numbered files until the stop file appears, then
# lists them in STOP.done. Files are written beside the queue and renamed in.
PRODUCER = (
    """
import os, sys, time

def drop(watch, name, lines):
    part = os.path.join(watch, "." + name + ".part")
    with open(part, "w") as f:
        for i in range(lines):
            f.write(f"{name} line {i} of a file produced under load\\n")
    os.rename(part, os.path.join(watch, "unprocessed", name))

if sys.argv[1] == "drop":
    drop(sys.argv[2], sys.argv[3], int(sys.argv[4]))
else:
    watch, stop, every, prefix = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    n = 0
    while not os.path.exists(stop):
        n += 1
        drop(watch, f"{prefix}-{n:04d}.txt", SMALL_LINES)
        time.sleep(every)
    with open(stop + ".done", "w") as f:
        f.write("\\n".join(f"{prefix}-{i:04d}.txt" for i in range(1, n + 1)))
"""
).replace("SMALL_LINES", str(SMALL))
APT = [
    "apt-get",
    "install",
    "--yes",
    "--allow-downgrades",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
]


@pytest.fixture(scope="module")
def packages(build_deb: Callable[[str, str | None], Path], release: str) -> tuple[Path, Path]:
    """Version A (older) and version B (this tree) for the release."""
    return build_deb(release, OLD_VERSION), build_deb(release, None)


@pytest.fixture(scope="module")
def box(
    packages: tuple[Path, Path], release: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    """A booted container of the release with A installed, the operator's edits and the test plugins."""
    require_root()
    require_tools("mmdebstrap", "systemd-nspawn", "nsenter")
    root = debian_root(cache_dir(tmp_path_factory, "roots"), release)
    share = tmp_path_factory.mktemp("upgrade-share")
    for deb in packages:
        shutil.copy(deb, share / deb.name)
    shutil.copytree(
        REPO / "tests" / "plugins", share / "plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    (share / "producer.py").write_text(PRODUCER)
    log = tmp_path_factory.mktemp("nspawn") / "console.log"
    machine = Container(root, name=f"foldermon-up-{os.getpid()}", binds=[(share, SHARE)], log=log)
    try:
        machine.wait_booted()
        machine.run(*APT, f"{SHARE}/{packages[0].name}", timeout=300)
        site = f"/opt/venvs/foldermon-agent/lib/python{RELEASES[release][1]}/site-packages"
        machine.run("sh", "-c", f"cp -r {SHARE}/plugins/. {site}/")
        machine.write(CONFIG, EDITED_CONFIG)
        machine.write(DEFAULTS, EDITED_DEFAULTS)
        machine.write("/etc/foldermon/extra.toml", INSTANCE_CONFIG)
        machine.run("chmod", PRODUCERS_MODE, f"{WATCH}/unprocessed")
        machine.run("systemctl", "restart", UNIT, timeout=60)
        machine.run("systemctl", "enable", "--now", INSTANCE, timeout=60)
        yield machine
    finally:
        machine.close()


def installed_version(box: Container) -> str:
    return box.run("dpkg-query", "-W", "-f", "${Version}", "foldermon-agent").stdout.strip()


def records(box: Container, unit: str = UNIT) -> list[dict[str, object]]:
    """The agent's JSON log records in the journal, oldest first."""
    return box.records(unit)


def listing(box: Container, folder: str) -> list[str]:
    out = box.run("sh", "-c", f"cd {WATCH}/{folder} && find . -type f -printf '%P\\n'", check=False).stdout
    return sorted(line for line in out.splitlines() if line)


def claimed(box: Container) -> list[str]:
    """Files in the agents' claim folders now (not the folders' own dotfiles)."""
    inside = [p.split("/", 1)[1] for p in listing(box, "underprocess") if "/" in p]
    return [name for name in inside if not name.startswith(".")]


def expected_output(name: str, lines: int) -> str:
    return "".join(f"{i + 1}: {name.upper()} LINE {i} OF A FILE PRODUCED UNDER LOAD\n" for i in range(lines))


def install_under_load(box: Container, deb: Path, prefix: str) -> tuple[list[str], str]:
    """Install ``deb`` with apt while a producer drops files and a big file is being processed;
    drain. The names of the small files produced, and the big file's name."""
    stop = f"/run/producer-{prefix}"
    big = f"{prefix}-big.txt"
    box.run(
        "systemd-run", "--unit", f"producer-{prefix}", "--collect", "--quiet",
        "python3", f"{SHARE}/producer.py", "produce", WATCH, stop, "0.3", prefix,
    )  # fmt: skip
    box.run("python3", f"{SHARE}/producer.py", "drop", WATCH, big, str(BIG), timeout=120)
    wait_for(lambda: big in claimed(box), 60, f"{big} claimed by the running agent")
    box.run(*APT, f"{SHARE}/{deb.name}", timeout=600)
    time.sleep(3)  # files keep arriving after the upgrade
    box.run("touch", stop)
    done = wait_for(lambda: box.run("cat", f"{stop}.done", check=False).stdout or None, 60, "the producer")
    names = str(done).split()
    everything = {*names, big}
    wait_for(
        lambda: (
            everything <= set(listing(box, "processed"))
            and not claimed(box)
            and not listing(box, "unprocessed")
        ),
        600,
        "the backlog to drain",
    )
    return names, big


def instance_of(box: Container, pid: int) -> str:
    """The instance id the process ``pid`` logged its start with."""
    for record in records(box):
        if record.get("event") == "starting" and record.get("pid") == pid:
            return str(record["instance"])
    raise AssertionError(f"no 'starting' record of pid {pid}")


def check_everything_once(
    box: Container, *, prefix: str, names: list[str], big: str, old: str, new: str
) -> None:
    """Every file processed once with its whole output; the big file released by the old
    process at the deadline of its stop and finished by the new one."""
    assert len(names) > 5, "the producer barely ran"
    mine = sorted([*names, big])
    assert [n for n in listing(box, "processed") if n.startswith(prefix + "-")] == mine, "lost, or doubled"
    assert [n for n in listing(box, "failed") if not n.startswith(".")] == []
    outputs = [n for n in listing(box, "output") if n.startswith(prefix + "-")]
    assert outputs == sorted(n.replace(".txt", "_processed.txt") for n in mine), (
        "an output missing or doubled"
    )
    assert not [n for n in listing(box, "output") if n.startswith(".")], "a temp output was left"
    for name in mine:
        text = box.run("cat", f"{WATCH}/output/{name.replace('.txt', '_processed.txt')}").stdout
        lines = BIG if name == big else SMALL
        assert text == expected_output(name, lines), f"{name}: output differs (partial or processed twice)"
    log = records(box)
    released = [r for r in log if r.get("event") == "file released for another run" and r.get("file") == big]
    assert [r.get("instance") for r in released] == [old], (
        "the old process did not release the file in flight"
    )
    finished = [r.get("instance") for r in log if r.get("event") == "file processed" and r.get("file") == big]
    assert finished == [new], f"{big} was finished by {finished}, not the new process {new}"


def check_operator_edits_kept(box: Container) -> None:
    assert box.run("cat", CONFIG).stdout == EDITED_CONFIG
    assert box.run("cat", DEFAULTS).stdout == EDITED_DEFAULTS
    assert box.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "active"
    assert box.run("stat", "-c", "%a", f"{WATCH}/unprocessed").stdout.strip() == PRODUCERS_MODE


def main_pid(box: Container, unit: str = UNIT) -> int:
    return int(box.run("systemctl", "show", "--property", "MainPID", "--value", unit).stdout.strip())


def started_version(box: Container, pid: int, unit: str = UNIT) -> str:
    for record in records(box, unit):
        if record.get("event") == "starting" and record.get("pid") == pid:
            return str(record.get("version"))
    raise AssertionError(f"no 'starting' record of pid {pid}")


def test_upgrade_under_load_loses_nothing_and_keeps_the_operators_edits(
    box: Container, packages: tuple[Path, Path], release: str
) -> None:
    _, new = packages
    tag = RELEASES[release][0]
    assert installed_version(box) == f"{OLD_VERSION}~{tag}"
    old_instance = instance_of(box, main_pid(box))
    names, big = install_under_load(box, new, "up")
    assert installed_version(box) == f"{package_version()}~{tag}"
    pid = main_pid(box)
    assert started_version(box, pid) == package_version()
    check_everything_once(box, prefix="up", names=names, big=big, old=old_instance, new=instance_of(box, pid))
    check_operator_edits_kept(box)
    # The instance was stopped before the virtualenv was replaced, and runs the new version.
    assert box.run("systemctl", "is-active", INSTANCE, check=False).stdout.strip() == "active"
    assert started_version(box, main_pid(box, INSTANCE), INSTANCE) == package_version()


def test_downgrade_under_load_loses_nothing_either(
    box: Container, packages: tuple[Path, Path], release: str
) -> None:
    old, _ = packages
    old_instance = instance_of(box, main_pid(box))
    names, big = install_under_load(box, old, "down")
    assert installed_version(box) == f"{OLD_VERSION}~{RELEASES[release][0]}"
    pid = main_pid(box)
    assert started_version(box, pid) == OLD_VERSION
    check_everything_once(
        box, prefix="down", names=names, big=big, old=old_instance, new=instance_of(box, pid)
    )
    check_operator_edits_kept(box)
    assert started_version(box, main_pid(box, INSTANCE), INSTANCE) == OLD_VERSION


def test_an_invalid_config_fails_the_upgrade_clearly_and_loses_nothing(
    box: Container, packages: tuple[Path, Path], release: str
) -> None:
    """The operator saved a broken agent.toml (the running agent refused it on reload): the
    upgrade says so and starts nothing; fixed, `dpkg --configure -a` finishes it."""
    _, new = packages
    box.write(CONFIG, EDITED_CONFIG + "[agent]\nworkers = 0\n")
    upgrade = box.run(*APT, f"{SHARE}/{new.name}", timeout=600, check=False)
    assert upgrade.returncode != 0
    said = upgrade.stdout + upgrade.stderr
    assert f"{CONFIG} is invalid, so foldermon-agent.service was not started" in said, said[-3000:]
    assert "dpkg --configure -a" in said
    assert box.run("systemctl", "is-active", UNIT, check=False).stdout.strip() != "active"
    box.run("python3", f"{SHARE}/producer.py", "drop", WATCH, "waited.txt", "3")
    box.write(CONFIG, EDITED_CONFIG)
    box.run("dpkg", "--configure", "-a", timeout=300)
    assert installed_version(box) == f"{package_version()}~{RELEASES[release][0]}"
    wait_for(lambda: "waited.txt" in listing(box, "processed"), 60, "the file that waited")
    assert started_version(box, main_pid(box)) == package_version()
