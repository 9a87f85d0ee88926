"""Durable file-system primitives: atomic write, renames that never clobber, unique names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from foldermon.queue.fsio import durable_rename, fsync_dir, rename_noreplace, unique_name, write_durable


def test_write_durable_creates_the_file_with_the_data(tmp_path: Path) -> None:
    """write_durable leaves exactly the given bytes under the given name."""
    target = tmp_path / "record.json"
    write_durable(target, b"{}\n")
    assert target.read_bytes() == b"{}\n"


def test_write_durable_leaves_no_temp_file(tmp_path: Path) -> None:
    """After write_durable the folder holds the target and nothing else."""
    write_durable(tmp_path / "record.json", b"data")
    assert os.listdir(tmp_path) == ["record.json"]


def test_write_durable_replaces_by_rename_not_in_place(tmp_path: Path) -> None:
    """An existing file is replaced by a new inode, so a reader of the old one never sees a mix."""
    target = tmp_path / "record.json"
    target.write_bytes(b"old content that is longer")
    with target.open("rb") as reader:
        old_inode = os.fstat(reader.fileno()).st_ino
        write_durable(target, b"new")
        assert reader.read() == b"old content that is longer"
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != old_inode


def test_write_durable_uses_the_given_mode(tmp_path: Path) -> None:
    """The written file gets the requested permission bits."""
    target = tmp_path / "record.json"
    write_durable(target, b"x", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600


def test_write_durable_removes_its_temp_file_when_it_fails(tmp_path: Path) -> None:
    """A write that cannot be put in place (the name is a folder) leaves no temp file behind."""
    (tmp_path / "taken" / "inner").mkdir(parents=True)
    with pytest.raises(OSError, match="directory"):
        write_durable(tmp_path / "taken", b"x")
    assert os.listdir(tmp_path) == ["taken"]


def test_rename_noreplace_moves_the_file(tmp_path: Path) -> None:
    """rename_noreplace moves the file to a free name."""
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"a")
    rename_noreplace(src, dst)
    assert not src.exists()
    assert dst.read_bytes() == b"a"


def test_rename_noreplace_refuses_an_existing_destination(tmp_path: Path) -> None:
    """rename_noreplace raises FileExistsError and leaves both files as they were."""
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"a")
    dst.write_bytes(b"b")
    with pytest.raises(FileExistsError):
        rename_noreplace(src, dst)
    assert src.read_bytes() == b"a"
    assert dst.read_bytes() == b"b"


def test_rename_noreplace_of_a_missing_source_raises_file_not_found(tmp_path: Path) -> None:
    """Losing a race for the source shows as FileNotFoundError, which callers treat as normal."""
    with pytest.raises(FileNotFoundError):
        rename_noreplace(tmp_path / "gone", tmp_path / "b")


def test_rename_noreplace_moves_a_directory(tmp_path: Path) -> None:
    """A directory (an instance's staging folder) can be renamed in without clobbering."""
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / ".lock").write_bytes(b"")
    rename_noreplace(tmp_path / "staging", tmp_path / "final")
    assert (tmp_path / "final" / ".lock").exists()


def test_rename_noreplace_moves_a_symlink_itself(tmp_path: Path) -> None:
    """A symlink is moved as a link; its target stays where it is."""
    (tmp_path / "target").write_bytes(b"t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    rename_noreplace(tmp_path / "link", tmp_path / "moved")
    assert (tmp_path / "moved").is_symlink()
    assert (tmp_path / "target").read_bytes() == b"t"


def test_durable_rename_refuses_an_existing_destination_by_default(tmp_path: Path) -> None:
    """durable_rename without replace never clobbers the destination."""
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"a")
    dst.write_bytes(b"b")
    with pytest.raises(FileExistsError):
        durable_rename(src, dst)
    assert src.read_bytes() == b"a"
    assert dst.read_bytes() == b"b"


def test_durable_rename_with_replace_replaces_the_destination(tmp_path: Path) -> None:
    """durable_rename(replace=True) puts the source in place of an existing destination."""
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"a")
    dst.write_bytes(b"b")
    durable_rename(src, dst, replace=True)
    assert not src.exists()
    assert dst.read_bytes() == b"a"


def test_durable_rename_moves_between_folders(tmp_path: Path) -> None:
    """durable_rename moves a file from one folder to another."""
    (tmp_path / "from").mkdir()
    (tmp_path / "to").mkdir()
    (tmp_path / "from" / "x").write_bytes(b"x")
    durable_rename(tmp_path / "from" / "x", tmp_path / "to" / "x")
    assert os.listdir(tmp_path / "from") == []
    assert (tmp_path / "to" / "x").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("data.txt", 0, "data.txt"),
        ("data.txt", 2, "data.2.txt"),
        ("archive.tar.gz", 3, "archive.tar.3.gz"),
        ("name", 2, "name.2"),
        (".x", 2, ".x.2"),
    ],
)
def test_unique_name(name: str, n: int, expected: str) -> None:
    """unique_name puts n before the last suffix, or at the end when there is no stem or suffix."""
    assert unique_name(name, n) == expected


def test_unique_names_differ_for_every_n() -> None:
    """Successive suffixes never give the same name twice."""
    names = [unique_name("data.txt", n) for n in range(20)]
    assert len(set(names)) == 20


def test_fsync_dir_accepts_a_directory(tmp_path: Path) -> None:
    """fsync_dir completes on a directory and leaves it unchanged."""
    (tmp_path / "x").write_bytes(b"")
    fsync_dir(tmp_path)
    assert os.listdir(tmp_path) == ["x"]


def test_fsync_dir_refuses_a_regular_file(tmp_path: Path) -> None:
    """fsync_dir on a file raises NotADirectoryError instead of syncing the wrong thing."""
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "x")
