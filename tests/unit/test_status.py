"""Queue status of a watch root: counts per state, oldest waiting input, failure reasons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from foldermon.queue.layout import Layout
from foldermon.status import printable, render_text, root_status
from foldermon.watch import NameRules


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """Return a watch root with every queue folder created."""
    layout = Layout.for_root(tmp_path / "root")
    layout.create()
    return layout


def touch(folder: Path, *names: str) -> None:
    """Create empty files ``names`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def record(layout: Layout, name: str, error_type: str, message: str) -> None:
    """Write the error record of failed input ``name``."""
    body = {"error_type": error_type, "message": message}
    (layout.failed / f".{name}.error.json").write_text(json.dumps(body))


def test_root_status_counts_inputs_per_state(layout: Layout) -> None:
    """Each queue folder's inputs are counted, underprocess/ summed over every instance."""
    touch(layout.unprocessed, "a", "b", "c")
    touch(layout.underprocess / "host-1-aaaaaa", "d")
    touch(layout.underprocess / "host-2-bbbbbb", "e", "f")
    touch(layout.processed, "g", "h", "i", "j")
    touch(layout.failed, "k")
    status = root_status(layout.root, now=0.0)
    counts = [status[state] for state in ("unprocessed", "underprocess", "processed", "failed")]
    assert counts == [3, 3, 4, 1]


def test_root_status_counts_only_what_the_agent_will_claim(layout: Layout) -> None:
    """Names the [watch] rules never claim (excluded globs, done markers) and folders are not
    waiting inputs; a file without its marker yet is."""
    touch(layout.unprocessed, "a.csv", "b.csv", "upload.part", "c.tmp", "b.csv.done", "d.csv")
    (layout.unprocessed / "subdir").mkdir()
    rules = NameRules(exclude=("*.part", "*.tmp"), done_suffix=".done")
    status = root_status(layout.root, now=0.0, rules=rules)
    assert status["unprocessed"] == 3
    assert rules.waiting(layout.unprocessed / "gone") == []


def test_root_status_names_the_root(layout: Layout) -> None:
    """The entry's path is the absolute root."""
    assert root_status(layout.root, now=0.0)["path"] == str(layout.root)


def test_root_status_skips_bookkeeping_dotfiles(layout: Layout) -> None:
    """Locks, attempt counters and temp files are not counted as inputs."""
    touch(layout.unprocessed, ".a.attempts", ".partial.tmp")
    touch(layout.underprocess / "host-1-aaaaaa", ".lock", ".x.attempts")
    touch(layout.processed, ".hidden")
    touch(layout.failed, ".x.error.json.1.tmp")
    status = root_status(layout.root, now=0.0)
    counts = [status[state] for state in ("unprocessed", "underprocess", "processed", "failed")]
    assert counts == [0, 0, 0, 0]


def test_root_status_does_not_count_error_records_as_failed_inputs(layout: Layout) -> None:
    """A failed input and its error record count as one failed file."""
    touch(layout.failed, "bad.txt")
    record(layout, "bad.txt", "ValueError", "broken")
    status = root_status(layout.root, now=0.0)
    assert status["failed"] == 1
    assert [f["name"] for f in status["failed_files"]] == ["bad.txt"]


def test_root_status_gives_the_failure_reason_from_the_record(layout: Layout) -> None:
    """Each failed file's reason is "<error_type>: <message>" from its record, sorted by name."""
    touch(layout.failed, "b.txt", "a.txt")
    record(layout, "a.txt", "ValueError", "bad number")
    record(layout, "b.txt", "ProcessorError", "processor 'up' failed")
    assert root_status(layout.root, now=0.0)["failed_files"] == [
        {"name": "a.txt", "reason": "ValueError: bad number"},
        {"name": "b.txt", "reason": "ProcessorError: processor 'up' failed"},
    ]


def test_root_status_reports_a_missing_error_record(layout: Layout) -> None:
    """A failed input without its record has the reason "no error record"."""
    touch(layout.failed, "orphan.txt")
    reasons = [f["reason"] for f in root_status(layout.root, now=0.0)["failed_files"]]
    assert reasons == ["no error record"]


def test_root_status_treats_an_unreadable_record_as_missing(layout: Layout) -> None:
    """A record that is not valid JSON gives "no error record" instead of an error."""
    touch(layout.failed, "bad.txt")
    (layout.failed / ".bad.txt.error.json").write_bytes(b"{not json")
    reasons = [f["reason"] for f in root_status(layout.root, now=0.0)["failed_files"]]
    assert reasons == ["no error record"]


@pytest.mark.parametrize("content", [b"null", b"[]", b'"text"'])
def test_root_status_treats_a_record_that_is_not_an_object_as_missing(layout: Layout, content: bytes) -> None:
    """A record holding valid JSON other than an object gives "no error record" instead of a crash."""
    touch(layout.failed, "bad.txt")
    (layout.failed / ".bad.txt.error.json").write_bytes(content)
    reasons = [f["reason"] for f in root_status(layout.root, now=0.0)["failed_files"]]
    assert reasons == ["no error record"]


def test_root_status_gives_the_age_of_the_oldest_unprocessed_input(layout: Layout) -> None:
    """The oldest age is measured from the earliest change time among the unprocessed inputs."""
    touch(layout.unprocessed, "a", "b")
    oldest = min(os.lstat(layout.unprocessed / n).st_ctime for n in ("a", "b"))
    assert root_status(layout.root, now=oldest + 12.5)["oldest_unprocessed_age_s"] == 12.5


def test_root_status_age_is_never_negative(layout: Layout) -> None:
    """A clock behind the file's change time gives age 0, not a negative age."""
    touch(layout.unprocessed, "a")
    ctime = os.lstat(layout.unprocessed / "a").st_ctime
    assert root_status(layout.root, now=ctime - 60)["oldest_unprocessed_age_s"] == 0.0


def test_root_status_age_is_none_when_nothing_waits(layout: Layout) -> None:
    """With no unprocessed input there is no oldest age."""
    assert root_status(layout.root, now=0.0)["oldest_unprocessed_age_s"] is None


def test_root_status_of_a_root_without_queue_folders_is_all_zero(tmp_path: Path) -> None:
    """A root whose queue folders do not exist yet reports zero everywhere instead of failing."""
    status = root_status(tmp_path / "fresh", now=0.0)
    counts = [status[state] for state in ("unprocessed", "underprocess", "processed", "failed")]
    assert counts == [0, 0, 0, 0]
    assert status["failed_files"] == []


def test_render_text_lists_counts_and_failures(layout: Layout) -> None:
    """The text view shows every count and one line per failed file with its reason."""
    touch(layout.failed, "bad.txt")
    record(layout, "bad.txt", "ValueError", "broken")
    text = render_text([root_status(layout.root, now=0.0)])
    assert "unprocessed 0  underprocess 0  processed 0  failed 1  oldest waiting -" in text
    assert "failed: bad.txt: ValueError: broken" in text


def test_plain_text_escapes_what_could_break_or_forge_a_line(layout: Layout) -> None:
    """A pause reason or a file name with a newline, a terminal escape or bytes that are not
    UTF-8 shows escaped, on its own line; ordinary text, accents included, is left as it is."""
    assert printable("café report.csv") == "café report.csv"
    assert printable("a\nb\x1b[31m\udcff\u2028") == "a\\nb\\x1b[31m\\udcff\\u2028"
    touch(layout.failed, "bad\nfailed: forged")
    record(layout, "bad\nfailed: forged", "ValueError", "x\ny")
    lines = render_text([root_status(layout.root, now=0.0)]).splitlines()
    assert lines[-1] == "  failed: bad\\nfailed: forged: ValueError: x\\ny"
    assert len(lines) == 3


def test_the_terminal_table_shows_holds_and_takes_names_literally(layout: Layout) -> None:
    """The table on a terminal says which roots are held and why, and a name or reason that looks
    like rich markup (or holds an escape) is shown as written, not interpreted."""
    from rich.console import Console

    from foldermon.console import print_status

    entry = {**root_status(layout.root, now=0.0), "paused": True, "paused_reason": "paused: [bold]x\x1b"}
    failures = [
        {"root": str(layout.root), "name": "[red]name[/red] :smile:", "reason": "E: [i]y", "failed_at": 1}
    ]
    console = Console(record=True, width=200, color_system=None)
    print_status([entry], failures, console)
    text = console.export_text()
    assert "held" in text
    assert "paused: [bold]x\\x1b" in text
    assert "[red]name[/red] :smile:" in text
    assert "E: [i]y" in text


def test_status_gives_the_root_id_the_agents_report(layout: Layout, tmp_path: Path) -> None:
    """root_id is the id the gauges carry (foldermon.watch.root.id), once an agent made it; status
    makes none itself."""
    from foldermon.queue.layout import ROOT_ID_NAME, root_id

    assert root_status(layout.root, now=0.0)["root_id"] is None
    assert not (layout.root / ROOT_ID_NAME).exists()
    reported = root_id(layout.root, tmp_path)
    assert root_status(layout.root, now=0.0)["root_id"] == reported


def test_a_folder_in_failed_is_not_a_failed_file(layout: Layout) -> None:
    """Nothing quarantines folders: one found in failed/ (another root put there) is not listed;
    a quarantined link to a folder is."""
    touch(layout.failed, "bad.txt")
    (layout.failed / "inner").mkdir()
    (layout.failed / "link").symlink_to(layout.root)  # a quarantined link to a folder is one
    status = root_status(layout.root, now=0.0)
    assert status["failed"] == 2
    assert [f["name"] for f in status["failed_files"]] == ["bad.txt", "link"]
