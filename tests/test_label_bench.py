"""Smoke test of bench/label_bench.py: the tiny preset, a few images, every section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import label_bench  # noqa: E402


def test_label_bench_quick_reports_every_section(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "bench.json"
    code = label_bench.main(["--quick", "--images", "2", "--store-images", "40", "--model-dir",
                             str(tiny_model_dir), "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    t, b, s = result["throughput"], result["bf16"], result["store"]
    assert t["images"] == 2 and t["job_over_tower"] > 0 and t["job_over_in_job_compute"] >= 1
    assert 0.99 < b["cosine_mean"] <= 1.0 + 1e-6 and b["speedup"] > 0
    assert s["images"] == 40 and s["store_bytes"] > 40 * 300 * 512 * 2  # fp16 class embeds
    assert s["relabel_s"] > 0 and s["boxes"] >= 0
    table = capsys.readouterr().out
    assert "| re-label 40 stored images" in table and "label job / vision tower" in table
