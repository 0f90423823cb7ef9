"""What the studio server owns besides sessions (`ui.runtime`, `ui.handlers.common`): scratch
folders that a killed server leaves behind, the one embedding-cache budget, error messages
without server paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ui.handlers.common import user_message
from ui.runtime import (
    WORK_DIR_PREFIX,
    WorkDir,
    clean_stale_work_dirs,
    default_cache_bytes,
    default_embeddings_dir,
    physical_memory_bytes,
    shared_cache,
)


def test_a_killed_servers_scratch_folder_is_removed_at_the_next_start(tmp_path):
    # a server that dies with kill -9 cannot clean up: its folder stays, its lock goes
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(sys.path[0])!r})
        from ui.runtime import WorkDir
        work = WorkDir({str(tmp_path)!r})
        (work.path / "session-x").mkdir()
        print(work.path, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    left = tmp_path / proc.stdout.strip().rsplit("/", 1)[-1]
    assert proc.returncode == -9 and left.is_dir() and left.name.startswith(WORK_DIR_PREFIX)
    live = WorkDir(tmp_path)  # the next start: the dead server's folder goes, its own stays
    try:
        assert live.removed == [left] and not left.exists() and live.path.is_dir()
        other = WorkDir(tmp_path)  # a second live server never deletes the first one's
        assert other.removed == [] and live.path.is_dir()
        other.close()
    finally:
        live.close()
    assert not live.path.exists()
    (tmp_path / "owl-studio-notours").mkdir()  # no lock file: not a scratch folder of ours
    assert clean_stale_work_dirs(tmp_path) == []


def test_one_cache_budget_from_the_machines_ram(tmp_path):
    assert 0 < default_cache_bytes(0.25) <= physical_memory_bytes() // 4 + 1
    cache = shared_cache("cpu", 64 * 2**20, device_bytes=10 * 2**30)
    stats = cache.stats()
    assert stats.budget_device == 64 * 2**20 and stats.budget_host == 0  # CPU: one RAM tier
    assert default_embeddings_dir(tmp_path / "data" / "projects") == \
        (tmp_path / "data" / "embeddings").resolve()


@pytest.mark.parametrize("message, shown", [
    ("/tmp/gradio/ab12cd/photo.png: could not read it.", "photo.png: could not read it."),
    ("C:\\Users\\me\\AppData\\x.pt: refused", "x.pt: refused"),
    ("box 1/2 of 'coin' has no area", "box 1/2 of 'coin' has no area"),  # not a path
])
def test_error_messages_lose_server_paths(message, shown):
    assert user_message(ValueError(message)) == shown
