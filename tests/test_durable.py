"""One atomic write (`owl_core.durable`) for every file the engine, the project and the batch
job write: whole or not at all, no temp litter, the mode an ordinary open() would give."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from owl_core import durable
from owl_core.durable import atomic_write, synced_temp
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import save_project


def umask_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def test_atomic_write_replaces_the_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")
    atomic_write(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["a.json"]
    assert path.stat().st_mode & 0o777 == umask_mode()


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")

    def no_rename(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(durable.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_skipped_rename_leaves_no_temp(tmp_path):
    with synced_temp(tmp_path / "x.bin", b"data", prefix=".x-", suffix=".part") as tmp:
        assert tmp.name.startswith(".x-") and tmp.name.endswith(".part")
        assert tmp.read_bytes() == b"data"
    assert os.listdir(tmp_path) == []


def test_project_files_get_the_mode_open_would_give(tmp_path):
    """project.json and the images copied into a project were owner-only (mkstemp's 0600)
    while the embedding store's shards followed the umask: one write, one rule."""
    library = ProjectLibrary(tmp_path / "projects")
    project = library.create("Modes", classes=["coin"])
    source = tmp_path / "a.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(source)
    record = project.add_image(source, role="example")
    save_project(project)
    folder = Path(project.folder)
    for path in (folder / "project.json", folder / record.file):
        assert path.stat().st_mode & 0o777 == umask_mode(), path
    assert not [p.name for p in folder.rglob("*.tmp")] + [p.name for p in folder.rglob(".tmp-*")]


def test_a_temp_removed_by_another_writer_mid_write_is_for_the_caller_to_notice(tmp_path,
                                                                                monkeypatch):
    """A full save removes stale ``.project.json.*.tmp`` files under the folder lock while a
    compaction, which writes its temp without the lock, may be writing one: the write itself
    must not fail on the vanished name (the compaction then finds it overtaken)."""
    real_fsync = os.fsync

    def fsync_after_removal(fd):
        for leftover in tmp_path.glob(".x.*.tmp"):
            leftover.unlink()
        real_fsync(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync_after_removal)
    with synced_temp(tmp_path / "x", b"data") as tmp:
        assert not tmp.exists()
    assert os.listdir(tmp_path) == []
