"""The .deb of each release from packaging/build-deb: name, contents, conffiles, dependencies, lintian."""

from __future__ import annotations

import gzip
import itertools
import re
import subprocess
from pathlib import Path

import pytest
from pkgsupport import RELEASES, REPO, in_build_root, package_version

VENV = "opt/venvs/foldermon-agent"


def package_version_of(py_version: str | None, release: str = "bookworm") -> str:
    """The package version build-deb gives ``py_version`` (the tree's own when None)."""
    version = ["--version", py_version] if py_version else []
    result = subprocess.run(
        [str(REPO / "packaging" / "build-deb"), "--release", release, *version, "--print-version"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def dpkg_deb(*args: str) -> str:
    """Run dpkg-deb and return its standard output."""
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def contents(deb: Path) -> dict[str, str]:
    """Map each path in the package (without the leading "./") to its dpkg-deb -c line."""
    listing: dict[str, str] = {}
    for line in dpkg_deb("-c", str(deb)).splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        listing[name.removeprefix("./").rstrip("/")] = line
    return listing


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files unpacked into a temp dir."""
    root = tmp_path_factory.mktemp("deb-root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def test_changelog_version_matches_the_agent_version() -> None:
    """packaging/debian/changelog's newest entry carries the version in agent/foldermon/__init__.py."""
    first = (REPO / "packaging" / "debian" / "changelog").read_text().splitlines()[0]
    match = re.match(r"foldermon-agent \(([^)]+)\)", first)
    assert match, first
    assert f"{match.group(1)}~deb12" == package_version_of(None)
    assert package_version_of(package_version()) == package_version_of(None)


def test_package_versions_sort_as_pip_sorts_them_and_by_release() -> None:
    """dev < alpha < rc < release < post, for each release; a release's packages before the next one's."""
    order = ["1.2.dev1", "1.2a1", "1.2b2", "1.2rc1", "1.2", "1.2.post1", "1.3.dev1"]
    for release in RELEASES:
        versions = [package_version_of(v, release) for v in order]
        for low, high in itertools.pairwise(versions):
            assert (
                subprocess.run(["dpkg", "--compare-versions", low, "lt", high], check=False).returncode == 0
            ), f"{low} does not sort before {high}"
    bookworm, trixie = (package_version_of("1.2", r) for r in ("bookworm", "trixie"))
    assert subprocess.run(["dpkg", "--compare-versions", bookworm, "lt", trixie], check=False).returncode == 0


@pytest.mark.parametrize("bad", ["1.0/2", "1.0_x", "1.0 rc1", "v1.0", "1.0-1"])
def test_a_version_build_deb_cannot_package_is_refused_with_a_sentence(bad: str) -> None:
    result = subprocess.run(
        [str(REPO / "packaging" / "build-deb"), "--release", "bookworm", "--version", bad, "--print-version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "is not a version this script can package" in result.stderr


def site(release: str) -> str:
    """The virtualenv's site-packages for the release's Python."""
    return f"{VENV}/lib/python{RELEASES[release][1]}/site-packages"


@pytest.mark.real
def test_package_is_named_by_version_release_and_architecture(deb: Path, release: str) -> None:
    """The file is foldermon-agent_<version>~deb12_<arch>.deb (~deb13 for trixie) with the
    control fields to match."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    version = package_version_of(None, release)
    assert deb.name == f"foldermon-agent_{version}_{arch}.deb"
    fields = dpkg_deb("-f", str(deb), "Package", "Version", "Architecture")
    assert fields.split("\n")[:3] == [
        "Package: foldermon-agent",
        f"Version: {version}",
        f"Architecture: {arch}",
    ]


@pytest.mark.real
def test_command_is_a_symlink_into_the_virtualenv(contents: dict[str, str]) -> None:
    """/usr/bin/foldermon-agent points at the console script of the virtualenv."""
    assert contents["usr/bin/foldermon-agent"].endswith(f"-> /{VENV}/bin/foldermon-agent")


@pytest.mark.real
def test_virtualenv_uses_debians_python(contents: dict[str, str], release: str) -> None:
    """The virtualenv's interpreter is /usr/bin/python3 of the release, not a copy or a build-host path."""
    assert contents[f"{VENV}/bin/python3"].endswith("-> /usr/bin/python3")
    assert f"{site(release)}/foldermon/service.py" in contents


@pytest.mark.real
def test_units_are_installed_for_systemd(contents: dict[str, str], release: str) -> None:
    """The system units go to the release's system unit folder (/lib/systemd/system on
    bookworm, /usr/lib/systemd/system on trixie) and the user unit to /usr/lib/systemd/user."""
    for unit in (
        f"{unit_dir(release)}/foldermon-agent.service",
        f"{unit_dir(release)}/foldermon-agent@.service",
        "usr/lib/systemd/user/foldermon-agent.service",
    ):
        assert unit in contents


def unit_dir(release: str) -> str:
    """Where debhelper of the release installs system units (trixie's is merged into /usr)."""
    return "lib/systemd/system" if release == "bookworm" else "usr/lib/systemd/system"


@pytest.mark.real
@pytest.mark.parametrize(
    ("packaged", "source"),
    [
        ("{units}/foldermon-agent.service", "systemd/foldermon-agent.service"),
        ("{units}/foldermon-agent@.service", "systemd/foldermon-agent@.service"),
        ("usr/lib/systemd/user/foldermon-agent.service", "systemd/user/foldermon-agent.service"),
        ("etc/default/foldermon-agent", "systemd/foldermon-agent.default"),
        ("etc/foldermon/agent.toml", "packaging/agent.toml"),
    ],
)
def test_packaged_files_are_the_repository_files(
    extracted: Path, release: str, packaged: str, source: str
) -> None:
    """Units, environment file and config ship exactly as they are in the repository."""
    path = extracted / packaged.format(units=unit_dir(release))
    assert path.read_bytes() == (REPO / source).read_bytes()


@pytest.mark.real
def test_conffiles_are_the_config_and_environment_files(deb: Path, tmp_path: Path) -> None:
    """dpkg treats exactly /etc/foldermon/agent.toml and /etc/default/foldermon-agent as conffiles."""
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    conffiles = (tmp_path / "control" / "conffiles").read_text().split()
    assert sorted(conffiles) == ["/etc/default/foldermon-agent", "/etc/foldermon/agent.toml"]


@pytest.mark.real
def test_docs_copyright_changelog_manual_and_completions_are_shipped(contents: dict[str, str]) -> None:
    """Debian's required documentation, the generated manual page and shell completions are in the package."""
    for path in (
        "usr/share/doc/foldermon-agent/copyright",
        "usr/share/doc/foldermon-agent/changelog.gz",
        "usr/share/doc/foldermon-agent/README.md.gz",
        "usr/share/man/man1/foldermon-agent.1.gz",
        "usr/share/bash-completion/completions/foldermon-agent",
        "usr/share/zsh/vendor-completions/_foldermon-agent",
    ):
        assert path in contents


@pytest.mark.real
def test_manual_page_is_generated_from_the_parser(deb: Path, tmp_path: Path) -> None:
    """The shipped manual page documents every verb of the command line, including the newest."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    page = gzip.decompress((tmp_path / "root/usr/share/man/man1/foldermon-agent.1.gz").read_bytes()).decode()
    for verb in ("run", "process", "status", "failed", "retry", "check\\-config", "completion"):
        assert verb in page


@pytest.mark.real
def test_no_bytecode_or_build_tools_are_shipped(contents: dict[str, str], release: str) -> None:
    """Bytecode is compiled at install time, and pip/setuptools stay out of the runtime virtualenv."""
    packages = f"{site(release)}/"
    assert not [p for p in contents if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in contents if p.startswith((packages + "pip/", packages + "setuptools/"))]
    assert f"{VENV}/.gitignore" not in contents


@pytest.mark.real
def test_dependencies_are_exactly_the_pinned_ones(contents: dict[str, str], release: str) -> None:
    """The virtualenv holds the agent and exactly the versions of packaging/requirements.lock."""
    lock = (REPO / "packaging" / "requirements.lock").read_text().splitlines()
    pinned = {
        _norm(name): version for name, _, version in (line.partition("==") for line in lock if "==" in line)
    }
    found = {}
    for path in contents:
        folder = path.removeprefix(f"{site(release)}/")
        if folder != path and folder.endswith(".dist-info") and "/" not in folder:
            name, _, version = folder.removesuffix(".dist-info").rpartition("-")
            found[_norm(name)] = version
    assert found.pop("foldermon-agent") == package_version()
    assert found == pinned


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.real
def test_depends_pin_python_and_name_what_the_scripts_run(deb: Path, release: str) -> None:
    """The release's Python minor version, which the virtualenv needs, is pinned; adduser and
    kill(1) are required."""
    depends = [d.strip() for d in dpkg_deb("-f", str(deb), "Depends").split(",")]
    python = RELEASES[release][1]
    major, minor = python.split(".")
    assert f"python3 (>= {python})" in depends
    assert f"python3 (<< {major}.{int(minor) + 1})" in depends
    assert "adduser" in depends
    assert "procps" in depends  # /bin/kill for ExecReload=


@pytest.mark.real
def test_maintainer_scripts_create_user_and_queue_and_enable_the_unit(deb: Path, tmp_path: Path) -> None:
    """postinst adds the foldermon user, the queue folders and enables the service; postrm purges data."""
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    postinst = (tmp_path / "control" / "postinst").read_text()
    postrm = (tmp_path / "control" / "postrm").read_text()
    assert "adduser --system" in postinst
    for folder in ("unprocessed", "underprocess", "processed", "failed"):
        assert f"$STATE/watch/{folder}:" in postinst
    assert "deb-systemd-helper" in postinst
    assert "enable" in postinst
    assert 'if [ "$1" = purge ]; then\n    rm -rf /var/lib/foldermon' in postrm


@pytest.mark.real
def test_user_unit_is_not_enabled_for_every_user(deb: Path, tmp_path: Path) -> None:
    """Installing the package must not start an agent in every user's session: the user unit is opt-in."""
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path / "control")], check=True)
    assert "--user enable" not in (tmp_path / "control" / "postinst").read_text()


@pytest.mark.real
def test_virtualenv_runs_the_agent(extracted: Path, release: str) -> None:
    """The unpacked virtualenv is complete: on its release, its interpreter imports the agent and
    prints the version."""
    python = extracted / VENV / "bin" / "python"
    result = in_build_root(release, [str(python), "-m", "foldermon", "--version"], binds=[extracted])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"foldermon-agent {package_version()}"


@pytest.fixture(scope="module")
def lintian(deb: Path, release: str) -> subprocess.CompletedProcess[str]:
    """One run of the release's own lintian over its package, info tags included, failing on
    errors and warnings."""
    argv = ["lintian", "--color=never", "--fail-on", "error,warning", "--info", str(deb)]
    return in_build_root(release, argv, binds=[deb.parent], user="nobody")


@pytest.mark.real
def test_lintian_reports_no_error_or_warning(lintian: subprocess.CompletedProcess[str]) -> None:
    """lintian passes with only the commented /opt/venvs overrides (info tags are allowed)."""
    problems = [line for line in lintian.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert lintian.returncode == 0, lintian.stdout + lintian.stderr
    assert problems == []


@pytest.mark.real
def test_no_lintian_override_is_unused(lintian: subprocess.CompletedProcess[str]) -> None:
    """Every override still matches something, so none hides a problem that has gone away."""
    assert "unused-override" not in lintian.stdout
    assert "mismatched-override" not in lintian.stdout


def test_every_lintian_override_follows_a_comment() -> None:
    """Each override (or group of overrides) is preceded by a comment saying why."""
    overrides = REPO / "packaging" / "debian" / "foldermon-agent.lintian-overrides"
    previous = ""
    for line in overrides.read_text().splitlines():
        if line.startswith("foldermon-agent:"):
            assert previous.startswith("#"), f"override without a comment: {line}"
        else:
            previous = line
