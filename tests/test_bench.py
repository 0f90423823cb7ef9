"""Smoke test of bench/owl_bench.py: the tiny preset, --quick, every section in the JSON with
numbers. No timing assertions (CI machines are shared); sizes, counts and structure only."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "owl_bench.py"

# section -> fields that must hold finite numbers (dotted paths into the section)
NUMBERS = {
    "model": ["load_s", "gflop_per_image", "input_size"],
    "embedding": ["ours_ms_median", "naive_ms_median", "floor_ms_median", "ratio_ours_naive",
                  "ratio_ours_floor", "ratio_ours_floor_paired", "ratio_ours_floor_min",
                  "ratio_ours_floor_from_overhead", "gflop_per_image",
                  "floor_gflops", "ours_gflops"],
    "preprocess": ["speedup_median"],
    "throughput": ["best_batch_size", "best_images_per_s"],
    "warm_preview": ["median_ms", "ms_per_extra_exemplar", "growth_1_to_100_x"],
    "cold_warm": ["cold_ms", "warm_ms", "speedup"],
    "memory": ["bytes_per_query_image_tensors", "bytes_per_query_image_storage",
               "bytes_per_example_image_tensors", "storage_over_tensors",
               "cache_bytes_over_tensors", "host_tier_over_tensors", "peak_rss_mb",
               "model_load_s"],
    "session": ["ours_total_s", "ours_wait_per_edit_ms", "naive_preview_s", "naive_total_s",
                "speedup_total_compute", "speedup_wait_per_edit"],
    "bf16": ["fp32_floor_ms", "bf16_floor_ms", "bf16_speedup", "bf16_speedup_best_of_each",
             "patch_class_embed_cosine_mean", "patch_class_embed_cosine_min", "topk_overlap"],
}


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def bench_result(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    # one intra-op thread: the tiny model's ops are tiny, and two OpenMP threads competing with
    # other processes on a shared CI box slow them ~30x (the numbers aren't asserted anyway)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--preset", "tiny", "--quick", "--device", "cpu",
         "--json", str(out), "--model-dir", str(tiny_model_dir)],
        check=False, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["_stdout"] = proc.stdout
    return result


@pytest.mark.parametrize("section", sorted(NUMBERS))
def test_every_section_has_its_numbers(bench_result, section):
    assert section in bench_result, f"missing section {section!r}"
    data = bench_result[section]
    for field in NUMBERS[section]:
        assert _finite_number(data.get(field)), f"{section}.{field} = {data.get(field)!r}"


def test_per_image_rows_cover_every_image(bench_result):
    rows = bench_result["embedding"]["per_image"]
    assert len(rows) == bench_result["settings"]["images"] >= 6  # 5 bundled + 1 synthetic (quick)
    for row in rows:
        for field in ("ours_ms", "naive_ms", "ours_over_floor", "ours_over_naive"):
            assert _finite_number(row[field]) and row[field] > 0, (row["image"], field)
    steps = bench_result["embedding"]["overhead_ms_median_by_step"]
    assert set(steps) == {"read_hash", "decode", "preprocess", "heads", "cache_write"}
    prep = bench_result["preprocess"]["per_image"]
    assert len(prep) == len(rows)
    for row in prep:  # ours vs transformers' processor, on the same image sizes
        assert all(_finite_number(row[k]) and row[k] > 0 for k in ("ours_ms", "hf_ms")), row


def test_warm_preview_growth_uses_the_exemplars_asked_for(bench_result):
    preview = bench_result["warm_preview"]
    assert preview["images"] == 20 and preview["classes"] == 5
    growth = preview["growth"]
    assert sorted(growth, key=int) == ["1", "3", "10", "100"]
    for per_class, row in growth.items():
        # drawn boxes are jittered predicted boxes: all of them must become exemplars
        assert row["exemplars"] == 5 * int(per_class), (per_class, row)
        assert _finite_number(row["median_ms"]) and row["median_ms"] > 0


def test_throughput_reports_each_batch_size(bench_result):
    per_batch = bench_result["throughput"]["per_batch_size"]
    assert sorted(per_batch, key=int) == ["1", "2", "4", "8"]
    for b, row in per_batch.items():
        assert row["images"] == int(b) and row["images_per_s"] > 0
    assert str(bench_result["throughput"]["best_batch_size"]) in per_batch


def test_cached_bytes_are_the_tensors_own(bench_result):
    memory = bench_result["memory"]
    # no hidden copies: storages held and cache accounting within 10% of the tensor bytes
    assert 1.0 <= memory["storage_over_tensors"] <= 1.1
    assert 0.9 <= memory["cache_bytes_over_tensors"] <= 1.1
    assert 0.9 <= memory["host_tier_over_tensors"] <= 1.1
    assert all(n > 0 for n in memory["two_tier_entries"])  # both tiers were exercised
    assert memory["bytes_per_example_image_tensors"] > memory["bytes_per_query_image_tensors"]


def test_session_and_bf16_are_consistent(bench_result):
    session = bench_result["session"]
    assert session["edits"] == 10 and session["query_images"] == 5
    # 10 previews of the plain path (values rounded to ms)
    assert session["naive_total_s"] == pytest.approx(10 * session["naive_preview_s"], abs=0.006)
    bf16 = bench_result["bf16"]
    assert 0.9 < bf16["patch_class_embed_cosine_mean"] <= 1.0 + 1e-6
    assert bf16["patch_class_embed_cosine_min"] <= bf16["patch_class_embed_cosine_mean"] + 1e-6


def test_table_is_printed_with_the_machine(bench_result):
    table = bench_result["table_markdown"]
    assert table in bench_result["_stdout"]
    assert "| measure | result |" in table and "torch" in table
    assert bench_result["machine"]["cores"] >= 1


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("owl_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("before, after", [
    # the section exists between two others: only its body changes
    ("# T\n\n## A\n\na\n\n## Benchmarks\n\nTODO\n\n## B\n\nb\n",
     "# T\n\n## A\n\na\n\n## Benchmarks\n\nBODY\n\n## B\n\nb\n"),
    # the section is last
    ("# T\n\n## Benchmarks\n\nold\ntable\n", "# T\n\n## Benchmarks\n\nBODY\n"),
    # no section yet: appended at the end
    ("# T\n\n## A\n\na\n", "# T\n\n## A\n\na\n\n## Benchmarks\n\nBODY\n"),
])
def test_update_readme_touches_only_the_benchmarks_section(tmp_path, before, after):
    readme = tmp_path / "README.md"
    readme.write_text(before)
    _bench_module().update_readme(readme, "BODY\n")
    assert readme.read_text() == after
