"""End to end in a booted systemd: install the .deb of each release in that release and operate the service.

The tests share one container and run in file order, each starting from the state the one
before left: install → process → reload → stop → watchdog restarts → remove and purge.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from machine import Container, debian_root, wait_for
from pkgsupport import RELEASES, REPO, cache_dir, require_root, require_tools

pytestmark = pytest.mark.real

UNIT = "foldermon-agent.service"
WATCH = "/var/lib/foldermon/watch"
CONFIG = "/etc/foldermon/agent.toml"
SHARE = "/mnt/foldermon"
PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture(scope="module")
def container(deb: Path, release: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted container of the release with its package and the test plugins at /mnt/foldermon."""
    require_root()
    require_tools("mmdebstrap", "systemd-nspawn", "nsenter")
    root = debian_root(cache_dir(tmp_path_factory, "roots"), release)
    share = tmp_path_factory.mktemp("share")
    shutil.copy(deb, share / deb.name)
    shutil.copytree(PLUGINS, share / "plugins", ignore=shutil.ignore_patterns("__pycache__"))
    log = tmp_path_factory.mktemp("nspawn") / "console.log"
    machine = Container(root, name=f"foldermon-test-{os.getpid()}", binds=[(share, SHARE)], log=log)
    try:
        machine.wait_booted()
        yield machine
    finally:
        machine.close()


@pytest.fixture(scope="module")
def box(container: Container, deb: Path) -> Container:
    """The container with the package installed as operators do (which also starts the service)."""
    container.run("apt-get", "install", "--yes", f"{SHARE}/{deb.name}", timeout=300)
    return container


def show(box: Container, prop: str) -> str:
    """One property of the unit, as systemctl show prints it."""
    return box.run("systemctl", "show", "--property", prop, "--value", UNIT).stdout.strip()


def events(box: Container) -> list[str]:
    """The "event" of every JSON record the agent logged to the journal, oldest first."""
    return [str(r["event"]) for r in box.records(UNIT) if "event" in r]


def journal(box: Container) -> str:
    """The unit's journal, for failure messages."""
    return box.run("journalctl", "--unit", UNIT, "--no-pager", "-n", "60", check=False).stdout


def drop(box: Container, name: str, text: str) -> None:
    """Write a file next to the queue, then rename it into unprocessed/ as producers should."""
    box.write(f"{WATCH}/.{name}.part", text)
    box.run("mv", f"{WATCH}/.{name}.part", f"{WATCH}/unprocessed/{name}")


def exists(box: Container, path: str) -> bool:
    """Whether a path exists inside the container."""
    return box.run("test", "-e", path, check=False).returncode == 0


def reload_and_wait(box: Container, event: str) -> None:
    """systemctl reload, then wait until the agent has logged ``event`` once more."""
    before = events(box).count(event)
    box.run("systemctl", "reload", UNIT)
    wait_for(lambda: events(box).count(event) > before, 20, f"the agent to log {event!r}")


def test_installing_the_package_starts_the_service(box: Container) -> None:
    """dpkg -i creates the user and the queue and starts the unit, which reaches active (READY=1)."""
    assert box.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "active", journal(box)
    assert box.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"


def test_queue_folders_belong_to_the_foldermon_user(box: Container) -> None:
    """postinst made the four queue folders, owned by foldermon."""
    listing = box.run(
        "stat",
        "-c",
        "%n %U:%G",
        *(f"{WATCH}/{d}" for d in ("unprocessed", "underprocess", "processed", "failed")),
    ).stdout.split("\n")
    assert [line.split()[1] for line in listing if line] == ["foldermon:foldermon"] * 4


def test_installed_units_verify_silently(box: Container) -> None:
    """systemd-analyze verify, inside with the real /usr/bin/foldermon-agent, prints nothing."""
    result = box.run("systemd-analyze", "verify", UNIT, "foldermon-agent@example.service", check=False)
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_dropped_file_is_processed(box: Container) -> None:
    """A file renamed into unprocessed/ ends in processed/, with its output in output/."""
    drop(box, "first.txt", "alpha\nbeta\n")
    wait_for(lambda: exists(box, f"{WATCH}/processed/first.txt"), 30, "first.txt in processed/")
    assert box.run("cat", f"{WATCH}/output/first_processed.txt").stdout == "alpha\nbeta\n"


def test_status_text_shows_the_counts(box: Container) -> None:
    """STATUS= reaches systemd: systemctl shows the agent's counts."""
    wait_for(lambda: "processed 1" in show(box, "StatusText"), 10, "StatusText with the count")


def test_reload_applies_a_new_config(box: Container) -> None:
    """systemctl reload (SIGHUP) makes the running agent use a new pipeline, without a restart."""
    pid = show(box, "MainPID")
    box.write(CONFIG, f'[watch]\ndirs = ["{WATCH}"]\n\n[[processors]]\ntype = "uppercase"\n')
    reload_and_wait(box, "reloaded")
    drop(box, "second.txt", "gamma\n")
    wait_for(lambda: exists(box, f"{WATCH}/processed/second.txt"), 30, "second.txt in processed/")
    assert box.run("cat", f"{WATCH}/output/second_processed.txt").stdout == "GAMMA\n"
    assert (show(box, "MainPID"), show(box, "ActiveState")) == (pid, "active")


def test_reload_with_a_bad_config_keeps_the_running_one(box: Container) -> None:
    """An invalid new config is rejected on reload; the service stays up with the old pipeline."""
    box.write(CONFIG, f'[watch]\ndirs = ["{WATCH}"]\n\n[[processors]]\ntype = "no_such_processor"\n')
    reload_and_wait(box, "reload rejected; the running configuration stays")
    drop(box, "third.txt", "delta\n")
    wait_for(lambda: exists(box, f"{WATCH}/processed/third.txt"), 30, "third.txt in processed/")
    assert box.run("cat", f"{WATCH}/output/third_processed.txt").stdout == "DELTA\n"
    assert show(box, "ActiveState") == "active"


def test_stop_is_clean(box: Container) -> None:
    """systemctl stop ends the agent with exit status 0 and result "success"."""
    box.run("systemctl", "stop", UNIT, timeout=60)
    assert show(box, "ActiveState") == "inactive"
    assert (show(box, "Result"), show(box, "ExecMainStatus")) == ("success", "0"), journal(box)
    assert "stopped" in events(box)


def test_workers_run_as_one_service(box: Container) -> None:
    """With workers = 2 systemd sees one service: the main process is ready once both workers
    are, shows their STATUS, reloads them and stops cleanly; each worker processes files."""
    box.write(
        CONFIG, f'[watch]\ndirs = ["{WATCH}"]\n\n[agent]\nworkers = 2\n\n[[processors]]\ntype = "uppercase"\n'
    )
    box.run("systemctl", "start", UNIT, timeout=60)
    assert show(box, "ActiveState") == "active", journal(box)
    main = show(box, "MainPID")
    workers = box.run("cat", f"/proc/{main}/task/{main}/children").stdout.split()
    assert len(workers) == 2
    wait_for(lambda: "2 of 2 workers running" in show(box, "StatusText"), 10, "the workers in StatusText")
    for i in range(8):
        drop(box, f"w{i}.txt", f"worker file {i}\n")
    wait_for(
        lambda: all(exists(box, f"{WATCH}/processed/w{i}.txt") for i in range(8)), 30, "8 files processed"
    )
    assert box.run("cat", f"{WATCH}/output/w7_processed.txt").stdout == "WORKER FILE 7\n"
    before = events(box).count("reloaded")
    box.run("systemctl", "reload", UNIT)
    wait_for(lambda: events(box).count("reloaded") == before + 2, 20, "both workers to reload")
    assert show(box, "ActiveState") == "active"
    box.run("systemctl", "stop", UNIT, timeout=60)
    assert (show(box, "Result"), show(box, "ExecMainStatus")) == ("success", "0"), journal(box)


def test_watchdog_restarts_a_hung_agent(box: Container, release: str) -> None:
    """A processor stuck forever stops the watchdog pings, and systemd restarts the agent."""
    site = f"/opt/venvs/foldermon-agent/lib/python{RELEASES[release][1]}/site-packages"
    box.run("sh", "-c", f"cp -r {SHARE}/plugins/. {site}/")
    # A short watchdog keeps the test quick; no core files from the watchdog's SIGABRT.
    box.write(f"/run/systemd/system/{UNIT}.d/test.conf", "[Service]\nWatchdogSec=3\nLimitCORE=0\n")
    box.write(CONFIG, f'[watch]\ndirs = ["{WATCH}"]\n\n[[processors]]\ntype = "hang"\nmarker = "HANG"\n')
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", UNIT, timeout=60)
    before = int(show(box, "NRestarts"))
    drop(box, "stuck.txt", "HANG\n")
    wait_for(lambda: int(show(box, "NRestarts")) > before, 30, "a watchdog restart")
    assert "watchdog" in journal(box).lower()


def test_file_that_hangs_every_attempt_is_quarantined(box: Container) -> None:
    """After max_attempts watchdog kills the hanging file goes to failed/ and the agent keeps running."""
    wait_for(lambda: exists(box, f"{WATCH}/failed/stuck.txt"), 90, "stuck.txt in failed/")
    assert int(show(box, "NRestarts")) >= 3
    wait_for(lambda: show(box, "ActiveState") == "active", 30, "the service to be active again")


def as_user(box: Container, user: str, command: str, *, check: bool = True) -> str:
    """Run a shell command as ``user`` with its user manager reachable; return its output."""
    uid = box.run("id", "-u", user).stdout.strip()
    result = box.run(
        "runuser",
        "-u",
        user,
        "--",
        "env",
        f"XDG_RUNTIME_DIR=/run/user/{uid}",
        "sh",
        "-c",
        command,
        check=check,
    )
    return result.stdout.strip()


def test_user_unit_runs_the_agent_for_a_user(box: Container) -> None:
    """The user unit is opt-in, starts under a user manager and serves ~/.local/share/foldermon/watch."""
    box.run("adduser", "--disabled-password", "--gecos", "", "alice")
    box.run("loginctl", "enable-linger", "alice")
    uid = box.run("id", "-u", "alice").stdout.strip()
    wait_for(lambda: exists(box, f"/run/user/{uid}/systemd/private"), 30, "alice's user manager")
    assert as_user(box, "alice", "systemctl --user is-enabled foldermon-agent", check=False) == "disabled"
    as_user(box, "alice", "systemctl --user start foldermon-agent")
    watch = "/home/alice/.local/share/foldermon/watch"
    as_user(box, "alice", f"printf 'hi\\n' > {watch}/.u.part && mv {watch}/.u.part {watch}/unprocessed/u.txt")
    wait_for(lambda: exists(box, f"{watch}/processed/u.txt"), 30, "u.txt in alice's processed/")
    assert box.run("cat", f"{watch}/output/u_processed.txt").stdout == "hi\n"
    as_user(box, "alice", "systemctl --user stop foldermon-agent")
    result = as_user(box, "alice", "systemctl --user show -p Result --value foldermon-agent")
    assert result == "success"


def test_remove_keeps_the_queue_and_purge_deletes_it(box: Container) -> None:
    """dpkg -r keeps /var/lib/foldermon and its files; dpkg -P deletes them and the config."""
    box.run("dpkg", "--remove", "foldermon-agent", timeout=120)
    assert exists(box, f"{WATCH}/processed/first.txt")
    assert not exists(box, "/usr/bin/foldermon-agent")
    box.run("dpkg", "--purge", "foldermon-agent", timeout=120)
    assert not exists(box, "/var/lib/foldermon")
    assert not exists(box, CONFIG)
