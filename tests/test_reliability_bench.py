"""Smoke test of bench/reliability.py on the tiny model: it starts the real server, runs a
handful of requests of every kind, pushes a few images through, sends every hostile input and
prints the table. No timing asserts (shared machines); counts, structure and the checks that
must never fail: no cross-session leak, no 5xx, no crash, no code run by a payload, no
poisoned shared cache.

Plus the bench's own judges on hand-made answers, so a leak check that stopped looking would
be caught here rather than silently report zero leaks."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "reliability.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("owl_reliability", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _bench_module()


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("reliability") / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out), "--model-dir",
         str(tiny_model_dir)],
        check=False, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    # 0: every check passed; 1: some hostile row was judged FAIL (a finding, not a crash)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["_stdout"] = proc.stdout
    return result


def test_load_runs_every_kind_without_failures_or_leaks(run):
    load = run["load"]
    assert load["done"] == load["planned"] == load["clients"] * load["requests_per_client"]
    assert load["failures"] == 0 and load["leaks"] == 0, load["problems"]
    assert load["server_alive"] is True
    assert set(load["per_kind"]) == set(bench.KINDS)
    for kind, row in load["per_kind"].items():
        assert row["requests"] >= 1, kind
        assert row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"], (kind, row)
    assert load["requests_per_s"] > 0


def test_memory_phase_pushes_every_image_and_samples_rss(run):
    memory = run["memory"]
    assert memory["images"] == run["plan"]["images"] and memory["failures"] == 0, memory
    per, half = run["plan"]["images_per_request"], (memory["images"] + 1) // 2
    assert memory["requests"] == -(-half // per) - (-(memory["images"] - half) // per)
    assert memory["growth_rest_half_mb"] is not None  # sampled where REST hands over
    assert memory["growth_gradio_half_mb"] is not None
    assert memory["samples"] and memory["samples"][-1][0] == memory["images"]
    assert memory["max_rss_mb"] >= memory["baseline_rss_mb"] > 0
    assert memory["cache_mb"] == 16  # the app has the global budget flag and got it


def test_every_hostile_input_is_answered_without_crash_or_side_effect(run):
    rows = run["hostile"]
    names = {r["name"] for r in rows}
    for wanted in ("pickle payload .pt", "malformed JSON", "400-digit box size",
                   "path-traversal export name", "file image ref /etc/passwd"):
        assert wanted in names, wanted
    for wanted in ("zip-bomb", "PNG bomb", "poisoned .pt", "class name", "Content-Length"):
        assert any(wanted in n for n in names), wanted
    for r in rows:
        assert r["status"] not in ("not run", "no answer", "timeout", "uncaught"), r
        assert "5xx" not in r["verdict"] and "died" not in r["verdict"], r
        for side_effect in ("ran code", "outside the", "cache poisoned"):
            assert side_effect not in r["message"], r
        assert r["message"], r


def test_every_hostile_project_zip_is_refused_and_the_control_accepted(run):
    rows = run["projects"]
    names = " ".join(r["name"] for r in rows)
    for wanted in ("control", "image member", "{},", "boxes", "unreferenced", "1.3 M",
                   "images", "nesting", "compression method", "encrypted", "traversal"):
        assert wanted in names, wanted
    for r in rows:
        assert r["outcome"] != "crashed" and r["verdict"] == "ok", r


def test_table_is_printed(run):
    table = run["table_markdown"]
    assert table in run["_stdout"]
    assert "| kind | requests | failures | leaks | p50 ms | p95 ms |" in table
    assert "| hostile input | sent to | status |" in table
    assert table.count("\n| ") >= len(bench.KINDS) + len(run["hostile"])
    assert ("Verdict: PASS" in table) == run["ok"]


# ---------------------------------------------------------------------------- the judges
OWN = bench.Expect(frozenset({"client1-cat", "client1-dog"}), ((100, 70), (101, 71)),
                   ("q0.png", "q1.png"))


def _rest(classes, sizes):
    return [{"image": {"width": w, "height": h},
             "predictions": [{"class": c} for c in classes]} for w, h in sizes]


@pytest.mark.parametrize("kind, answer, leak", [
    # this client's own classes and sizes: clean
    ("rest_owlv2", _rest(["client1-cat"], OWN.sizes), False),
    # another client's class in a prediction
    ("rest_owlv2", _rest(["client2-cat"], OWN.sizes), True),
    # another client's image (its size) answered
    ("rest_infer_pt", _rest(["client1-dog"], [(100, 70), (116, 66)]), True),
    # gradio: own files, classes, sizes
    ("gr_infer", {"classes": ["client1-cat"], "results": [
        {"file": f, **r}
        for f, r in zip(OWN.files, _rest(["client1-cat"], OWN.sizes), strict=True)]}, False),
    # gradio: another session's file name
    ("gr_infer_pt", {"classes": ["client1-cat"], "results": [
        {"file": f, **r} for f, r in zip(("q0.png", "other.png"),
                                          _rest([], OWN.sizes), strict=True)]}, True),
    # gradio: another session's class in the class list
    ("gr_infer", {"classes": ["client3-dog"], "results": [
        {"file": f, **r} for f, r in zip(OWN.files, _rest([], OWN.sizes), strict=True)]}, True),
    # an exported .pt holding another client's class
    ("gr_export", ["client1-cat", "client0-dog"], True),
    ("gr_export", ["client1-cat", "client1-dog"], False),
])
def test_check_answer_flags_cross_session_leaks(kind, answer, leak):
    problems = bench.check_answer(kind, answer, OWN)
    assert any(p.startswith("leak:") for p in problems) == leak, problems
    if not leak:
        assert problems == []


@pytest.mark.parametrize("status, expect, alive, side_effect, verdict", [
    ("413", "refuse", True, "", "ok"),
    ("gr.Error", "refuse", True, "", "ok"),
    ("500", "refuse", True, "", "FAIL (5xx)"),          # a crash inside the handler
    ("200", "refuse", True, "", "FAIL"),                # hostile input accepted
    ("timeout", "refuse", True, "", "FAIL"),
    ("413", "refuse", False, "", "FAIL (server died)"),
    ("403", "refuse", True, "code ran", "FAIL"),        # refused, but the payload ran
    ("200", "accept", True, "", "ok"),
    ("422", "accept", True, "", "FAIL"),
    ("200", "either", True, "", "ok"),
    ("uncaught", "either", True, "", "FAIL"),
])
def test_judge(status, expect, alive, side_effect, verdict):
    assert bench.judge(status, expect, alive, side_effect) == verdict


def test_png_bomb_is_tiny_but_declares_its_size():
    data = bench.png_bomb(20000)
    assert len(data) < 200_000
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (20000, 20000)
    with pytest.raises(Image.DecompressionBombError):  # Pillow's own guard sees the bomb
        Image.open(io.BytesIO(data))
    small = Image.open(io.BytesIO(bench.png_bomb(300)))
    small.load()  # a valid PNG all the way through
    assert small.size == (300, 300) and small.getextrema() == (0, 0)


def test_zip_bomb_pt_inflates_far_beyond_its_size(tmp_path):
    path = bench.zip_bomb_pt(tmp_path, 8)
    with zipfile.ZipFile(path) as archive:
        declared = sum(i.file_size for i in archive.infolist())
    assert declared >= 8 * bench.MB
    assert declared / path.stat().st_size > 200  # over owl_core's compression-ratio bound


@pytest.mark.parametrize("before, after", [
    # the section exists: only its body changes
    ("# T\n\n## Reliability\n\nold\n\n## Example assets\n\ne\n",
     "# T\n\n## Reliability\n\nBODY\n\n## Example assets\n\ne\n"),
    # no section yet: inserted before Example assets
    ("# T\n\n## A\n\na\n\n## Example assets\n\ne\n",
     "# T\n\n## A\n\na\n\n## Reliability\n\nBODY\n\n## Example assets\n\ne\n"),
    # neither: appended
    ("# T\n\n## A\n\na\n", "# T\n\n## A\n\na\n\n## Reliability\n\nBODY\n"),
])
def test_update_readme_touches_only_the_reliability_section(tmp_path, before, after):
    readme = tmp_path / "README.md"
    readme.write_text(before)
    bench.update_readme(readme, "BODY\n")
    assert readme.read_text() == after
