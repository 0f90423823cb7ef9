"""Reliability bench, project sections (issue 19 items 2, 3, 7, 9): hostile project zips and
the kill -9 loss window. Run by ``bench/reliability.py`` (sections ``projects`` and
``journal``); kept apart from the server sections so each area adds its own rows.

projects: every hostile zip is imported by `ProjectLibrary.import_zip` (what the studio's "Open
a project zip" runs) in a fresh Python process, which reports the outcome, the first line of
the message, the time and its peak RSS (``VmHWM``) over its RSS before the import. A row is ok
when the zip is refused with a `ProjectError` (or, for the control, accepted).

journal: a child process holds a project of N labels and edits one label every 20 ms (each
edit's time printed). In the "studio" mode it is the studio's own saving path: a
`ui.session.TabSessions` opens the project for a tab, each edit is made under the session's
lock as a handler makes it, and the studio's `Saver` saves it (0.3 s after the last change, at
most 1 s after the first; `Session.save`, the journal). The "full rewrite" mode is the old way
for comparison: the same saver timing around `save_project`. The parent kills the child with
SIGKILL at a random moment, reopens the project and measures the loss window: how old the
oldest edit not on disk was at the kill.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_zip import patch_headers, project_zip  # noqa: E402  (one home, tests use it)

ROOT = Path(__file__).resolve().parent.parent
MB = 1024**2


@dataclass
class ProjectRow:
    name: str
    zip_bytes: int
    outcome: str         # "refused" / "accepted" / "crashed"
    error: str           # exception class
    message: str
    wall_s: float
    rss_before_mb: float
    peak_rss_mb: float
    verdict: str


def _png(colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "PNG")
    return buf.getvalue()


def _valid_project(root: Path) -> tuple[Path, dict]:
    """A small saved project and its project.json content (the base of the hostile zips)."""
    sys.path.insert(0, str(ROOT))
    from owl_core.project.library import ProjectLibrary
    from owl_core.project.model import Label, save_project

    project = ProjectLibrary(root / "source").create("bench", classes=["coin"])
    record = project.add_image(_png(), "a.png")
    project.set_labels(record.id, [Label((1, 1, 20, 20), "coin")])
    save_project(project)
    return project.folder, json.loads((project.folder / "project.json").read_text())


def _zip(path: Path, folder: Path, meta: bytes | None = None, extra=()) -> Path:
    """The project zip, its bytes deflated (a huge project.json stays a small zip)."""
    return project_zip(path, folder, meta, extra=extra, compression=zipfile.ZIP_DEFLATED)


def hostile_zips(work: Path, quick: bool) -> list[tuple[str, Path, bool]]:
    """(name, zip, accepted?) for every case: issue 19's zips, smaller in --quick."""
    folder, meta = _valid_project(work)
    image = sorted((folder / "images").iterdir())[0]
    out: list[tuple[str, Path, bool]] = [("valid project (control)", _zip(work / "ok.zip", folder),
                                          True)]
    gib = 64 if quick else 1024  # MiB of the inflating image
    big = work / "big-image.zip"
    hashed = dict(meta)
    with zipfile.ZipFile(big, "w") as zf:
        zf.writestr("project.json", json.dumps(hashed))
        with zf.open(f"images/{image.name}", "w", force_zip64=True) as fh:
            chunk = b"\0" * MB
            for _ in range(gib):
                fh.write(chunk)
    out.append((f"{gib} MiB image member (ratio ~1000)", big, False))
    values = b"{}," * ((4 if quick else 32) * MB // 3)
    out.append((f"project.json of {len(values) // MB} MiB of {{}},",
                _zip(work / "values.zip", folder,
                     b'{"version": 3, "images": [' + values + b"{}]}"), False))
    spaces = b" " * ((40 if quick else 255) * MB)
    out.append((f"project.json of {len(spaces) // MB} MiB", _zip(
        work / "json-bytes.zip", folder, b'{"version": 3, "images": []' + spaces + b"}"), False))
    boxes = dict(meta)
    boxes["images"] = [dict(meta["images"][0],
                            labels=[{"xyxy": [1, 1, 5, 5], "cls": "coin"}]
                            * (10**5 if quick else 10**6))]
    count = len(boxes["images"][0]["labels"])
    out.append((f"{count:,} boxes in one image",
                _zip(work / "boxes.zip", folder, json.dumps(boxes).encode()), False))
    many = 2_000 if quick else 99_998
    out.append((f"{many:,} unreferenced members", _zip(
        work / "many.zip", folder, extra=[(f"junk/{i:06d}", b"") for i in range(many)]), False))
    out.append(("directory declaring 1.3 M entries (zip64 end record)",
                _forged_directory(_zip(work / "directory.zip", folder), 1_300_000), False))
    out.append(("member named 'images' (a file)", _zip(work / "images-file.zip", folder,
                                                        extra=[("images", b"x")]), True))
    deep = "/".join(["d"] * 2000) + "/x"
    out.append(("2,000-level nesting", _zip(work / "deep.zip", folder, extra=[(deep, b"x")]),
                False))
    out.append(("unsupported compression method (99)", patch_headers(
        _zip(work / "method.zip", folder), f"images/{image.name}", method=99), False))
    out.append(("encrypted member", patch_headers(
        _zip(work / "encrypted.zip", folder), f"images/{image.name}", flags=1), False))
    out.append(("path traversal member", _zip(work / "slip.zip", folder,
                                              extra=[("../evil.txt", b"x")]), False))
    return out


def _forged_directory(path: Path, entries: int) -> Path:
    """The zip with a zip64 end record declaring ``entries`` members (46 bytes each, the least a
    central-directory entry takes): what a 1.3 M-entry directory looks like from its end."""
    import struct

    data = path.read_bytes()
    end = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[end + 12:end + 20])
    zip64_at = end
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                         entries * 46, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, zip64_at, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                       0xFFFFFFFF, 0)
    path.write_bytes(data[:end] + record + locator + eocd)
    return path


_IMPORT = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[3])
    from owl_core.errors import OwlError
    from owl_core.project.library import ProjectLibrary

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return 0.0

    library = ProjectLibrary(sys.argv[2])
    before, start = status("VmRSS:"), time.monotonic()
    try:
        library.import_zip(sys.argv[1])
        outcome, error, message = "accepted", "", ""
    except OwlError as exc:
        outcome, error, message = "refused", type(exc).__name__, str(exc)
    except Exception as exc:  # noqa: BLE001 -- the finding: not one of ours
        outcome, error, message = "crashed", type(exc).__name__, str(exc)
    print(json.dumps({"outcome": outcome, "error": error, "message": message,
                      "wall_s": time.monotonic() - start, "rss_before_mb": before,
                      "peak_rss_mb": status("VmHWM:")}))
""")


def run_projects(quick: bool, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="owl-bench-projects-") as tmp:
        work = Path(tmp)
        for name, path, accepted in hostile_zips(work, quick):
            library = work / "library"
            try:
                proc = subprocess.run([sys.executable, "-c", _IMPORT, str(path), str(library),
                                       str(ROOT)], capture_output=True, text=True,
                                      timeout=timeout_s, cwd=ROOT)
                found = json.loads(proc.stdout.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
                found = {"outcome": "crashed", "error": type(exc).__name__,
                         "message": str(exc)[:200], "wall_s": timeout_s, "rss_before_mb": 0.0,
                         "peak_rss_mb": 0.0}
            ok = found["outcome"] == ("accepted" if accepted else "refused")
            leftovers = [p.name for p in library.glob(".tmp-*")] if library.is_dir() else []
            rows.append(asdict(ProjectRow(
                name=name, zip_bytes=path.stat().st_size, outcome=found["outcome"],
                error=found["error"], message=found["message"].split("\n")[0][:110],
                wall_s=round(found["wall_s"], 2), rss_before_mb=round(found["rss_before_mb"], 1),
                peak_rss_mb=round(found["peak_rss_mb"], 1),
                verdict="ok" if ok and not leftovers else "FAIL")))
            print(f"  project zip: {name}: {found['outcome']} in {found['wall_s']:.2f} s",
                  flush=True)
    return rows


# ---------------------------------------------------------------------------- kill -9
_EDITOR = textwrap.dedent("""
    import random, sys, threading, time
    sys.path.insert(0, sys.argv[3])
    from owl_core.project.model import Label, load_project, save_changes, save_project

    project = load_project(sys.argv[1])
    save = save_changes if sys.argv[2] == "journal" else save_project
    lock, changed = threading.Lock(), threading.Event()
    ids = [r.id for r in project.images]

    def saver():  # the studio's Saver: 0.3 s after the last change, at most 1 s after the first
        while True:
            changed.wait()
            first = last = time.monotonic()
            while time.monotonic() - last < 0.3 and time.monotonic() - first < 1.0:
                time.sleep(0.02)
                last = LAST[0]
            with lock:
                changed.clear()
                save(project)

    LAST = [time.monotonic()]
    threading.Thread(target=saver, daemon=True).start()
    print("ready", flush=True)
    k = 0
    rng = random.Random(0)
    while True:
        time.sleep(0.02)
        k += 1
        image = ids[k % len(ids)]
        # the person's click, said before it waits for the lock a save may hold
        print(k, time.monotonic(), flush=True)
        with lock:
            labels = list(project.image(image).labels)
            labels[0] = Label(labels[0].xyxy, labels[0].cls, "accepted", k / 1e7)
            project.set_labels(image, labels)
            LAST[0] = time.monotonic()
            changed.set()
""")


_STUDIO_EDITOR = textwrap.dedent("""
    import sys, tempfile, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from owl_core.project.library import ProjectLibrary
    from owl_core.project.model import Label
    from ui.session import TabSessions

    folder = Path(sys.argv[1])
    tabs = TabSessions(lambda: None, tempfile.mkdtemp(prefix="owl-bench-tabs-"),
                       ProjectLibrary(folder.parent))  # the studio's saver timing (defaults)
    session = tabs.open_tab("bench-tab", folder.name)
    ids = [r.id for r in session.core.images]
    print("ready", flush=True)
    k = 0
    while True:
        time.sleep(0.02)
        k += 1
        image = ids[k % len(ids)]
        print(k, time.monotonic(), flush=True)  # the click, before it waits for the lock
        with session.lock:  # as a handler: leaving the lock schedules the studio's save
            labels = list(session.core.image(image).labels)
            labels[0] = Label(labels[0].xyxy, labels[0].cls, "accepted", k / 1e7)
            session.core.set_labels(image, labels)
        if session.save_error:
            print("error", session.save_error, file=sys.stderr, flush=True)
""")


def _labelled_project(root: Path, labels: int, images: int = 200) -> Path:
    sys.path.insert(0, str(ROOT))
    from owl_core.project.library import ProjectLibrary
    from owl_core.project.model import Label, save_project

    project = ProjectLibrary(root).create(f"{labels} labels", classes=["coin", "cup"])
    data = _png()
    per = labels // images
    for i in range(images):
        record = project.add_image(data, f"img{i:04d}.png")
        project.set_labels(record.id, [Label((j % 40, j % 30, j % 40 + 20, j % 30 + 15),
                                             "coin" if j % 2 else "cup", "drawn", 0.5)
                                       for j in range(per)])
    save_project(project)
    return project.folder


def _loss_window(folder: Path, mode: str, rng: random.Random) -> dict[str, Any]:
    from owl_core.project.model import load_project, save_project

    save_project(load_project(folder))  # every trial starts from a compacted file
    script = _STUDIO_EDITOR if mode == "studio" else _EDITOR
    child = subprocess.Popen([sys.executable, "-c", script, str(folder), mode, str(ROOT)],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout.readline().strip() == "ready"
    times: dict[int, float] = {}

    def read() -> None:  # on its own thread: the kill never waits for a line
        for line in child.stdout:
            k, t = line.split()
            times[int(k)] = float(t)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(rng.uniform(3.0, 6.0))
    os.kill(child.pid, signal.SIGKILL)
    killed = time.monotonic()
    reader.join(timeout=30)
    child.wait()
    project = load_project(folder)
    ids = [r.id for r in project.images]
    on_disk = {i: round(project.image(i).labels[0].confidence * 1e7)
               if project.image(i).labels[0].source == "accepted" else 0 for i in ids}
    lost = [k for k in sorted(times) if times[k] < killed and on_disk[ids[k % len(ids)]] < k]
    return {"edits": len(times), "lost": len(lost),
            "window_s": round(killed - times[lost[0]], 2) if lost else 0.0}


#: The saving paths the kill -9 trials compare: the old full rewrite, the studio's own.
MODES = ("full rewrite (save_project)", "studio (Session.save: the journal)")


def run_journal(quick: bool) -> list[dict[str, Any]]:
    sizes = (300, 3_000) if quick else (3_000, 50_000)
    trials = 1 if quick else 5
    rng = random.Random(19)
    rows = []
    with tempfile.TemporaryDirectory(prefix="owl-bench-journal-") as tmp:
        for labels in sizes:
            folder = _labelled_project(Path(tmp) / str(labels), labels)
            size_mb = (folder / "project.json").stat().st_size / MB
            for mode in MODES:
                key = "studio" if mode.startswith("studio") else "full"
                found = [_loss_window(folder, key, rng) for _ in range(trials)]
                windows = [f["window_s"] for f in found]
                rows.append({"labels": labels, "file_mb": round(size_mb, 2), "mode": mode,
                             "trials": trials, "max_s": max(windows),
                             "median_s": round(statistics.median(windows), 2),
                             "lost_edits": [f["lost"] for f in found],
                             "edits": [f["edits"] for f in found]})
                print(f"  kill -9: {labels} labels, {mode}: windows {windows}", flush=True)
    return rows


def tables(result: dict[str, Any]) -> list[str]:
    out = []
    rows = result.get("projects")
    if rows:
        worst = max(rows, key=lambda r: r["peak_rss_mb"] - r["rss_before_mb"])
        growth = worst["peak_rss_mb"] - worst["rss_before_mb"]
        out.append("Hostile project zips, each imported by `ProjectLibrary.import_zip` (what the "
                   "studio's *Open a project zip* runs) in a fresh process; RSS is that "
                   f"process's (Python + owl_core ~{worst['rss_before_mb']:.0f} MiB before the "
                   f"import). Worst import: {worst['name']}, peak RSS "
                   f"{worst['peak_rss_mb']:.0f} MiB (+{growth:.0f} MiB).\n")
        out.append("| project zip | zip bytes | outcome | message (first line) | s | peak RSS "
                   "(growth) MiB | verdict |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            message = r["message"].replace("|", "\\|") or "-"
            out.append(f"| {r['name']} | {r['zip_bytes']:,} | {r['outcome']} | {message} | "
                       f"{r['wall_s']} | {r['peak_rss_mb']:.0f} "
                       f"(+{r['peak_rss_mb'] - r['rss_before_mb']:.0f}) | {r['verdict']} |")
        out.append("")
    rows = result.get("journal")
    if rows:
        out.append("Kill -9 loss window: a process edits one label every 20 ms; *studio* is "
                   "the studio's own saving path (a `TabSessions` tab, each edit under the "
                   "session lock, the studio's `Saver`: 0.3 s after the last change, at most "
                   "1 s after the first, `Session.save` appending to the journal), *full "
                   "rewrite* the old way with the same timing around `save_project`; SIGKILL "
                   "at a random moment 3-6 s in; the window is how old the oldest edit missing "
                   "on disk was at the kill.\n")
        out.append("| labels | project.json MiB | saving by | kills | loss window max s | "
                   "median s | edits lost per kill |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            out.append(f"| {r['labels']:,} | {r['file_mb']} | {r['mode']} | {r['trials']} | "
                       f"{r['max_s']} | {r['median_s']} | "
                       f"{', '.join(map(str, r['lost_edits']))} |")
        out.append("")
    return out


def failures(result: dict[str, Any]) -> list[str]:
    failed = [f"project zip {r['name']}: {r['outcome']}" for r in result.get("projects", [])
              if r["verdict"] != "ok"]
    for r in result.get("journal", []):
        if r["mode"].startswith("studio") and r["max_s"] > 1.5:
            failed.append(f"journal loss window {r['max_s']} s at {r['labels']} labels")
    return failed
