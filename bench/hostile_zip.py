"""Project zips as another tool, or an attacker, may write them: one home for the reliability
bench's hostile zips (`bench/reliability_projects.py`) and the tests that must refuse them
(`tests/test_project_bounds.py`)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

Members = Mapping[str, bytes] | Iterable[tuple[str, bytes]]


def _items(members: Members) -> Iterable[tuple[str, bytes]]:
    return members.items() if isinstance(members, Mapping) else members


def project_zip(path: Path, folder: Path, meta: bytes | None = None, *, extra: Members = (),
                first: Members = (), method: int = zipfile.ZIP_STORED,
                compression: int = zipfile.ZIP_STORED) -> Path:
    """A zip of the saved project in ``folder`` as `ProjectLibrary.export_zip` lays it out:
    ``first`` members, project.json (or ``meta`` instead of its bytes), every file of
    ``images/`` (stored with ``method``), then ``extra`` members (a list may repeat a name).
    ``compression`` is for the members written from bytes (deflated keeps a zip of a huge
    project.json small)."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in _items(first):
            zf.writestr(name, data)
        zf.writestr("project.json", meta if meta is not None
                    else (folder / "project.json").read_bytes())
        for file in sorted((folder / "images").iterdir()):
            zf.write(file, f"images/{file.name}", method)
        for name, data in _items(extra):
            zf.writestr(name, data)
    return path


def patch_headers(path: Path, member: str, *, flags: int = 0, method: int | None = None) -> Path:
    """Set flag bits / the compression method of ``member`` in its local and central headers
    (what a zip from another tool may carry: encryption, AES, an unknown method)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, name_at, flags_at, method_at in ((b"PK\x03\x04", 30, 6, 8),
                                              (b"PK\x01\x02", 46, 8, 10)):
        pos = data.find(sig)
        while pos != -1:
            if data[pos + name_at:pos + name_at + len(name)] == name:
                old = int.from_bytes(data[pos + flags_at:pos + flags_at + 2], "little")
                data[pos + flags_at:pos + flags_at + 2] = (old | flags).to_bytes(2, "little")
                if method is not None:
                    data[pos + method_at:pos + method_at + 2] = method.to_bytes(2, "little")
            pos = data.find(sig, pos + 4)
    path.write_bytes(bytes(data))
    return path
