"""bench/gpu_check.py in its short CPU mode, so the GPU check (`bash bench/gpu_check.sh`) cannot
rot while no GPU runs it: the tiny checkpoint, every section (torch.compile at one batch size,
~30 s; `label --ray` on a local Ray cluster with one num_gpus=0 actor, ~45 s). Structure and
finite numbers only, no timings."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_mode_on_cpu_writes_one_table_and_its_numbers(tiny_model_dir, tmp_path, capsys):
    gpu_check = _gpu_check()
    out = tmp_path / "gpu_check"
    code = gpu_check.main(["--device", "cpu", "--short", "--model-dir", str(tiny_model_dir),
                           "--sections", "parity,embed,warm_preview", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.with_suffix(".json").read_text())
    assert code == 0 and result["errors"] == {}, result["errors"]
    table = out.with_suffix(".md").read_text()
    assert table in printed and "| check | setting | result |" in table
    assert {row[0] for row in result["rows"]} == {"parity", "embed", "warm_preview"}
    for dtype in ("fp16", "bf16"):
        parity = result["parity"][dtype]
        assert -1.0 <= parity["cosine_min"] <= parity["cosine_mean"] <= 1.0 + 1e-6
        assert 0 <= parity["detections_found"] <= parity["detections_fp32"] > 0
    for dtype in ("fp32", "fp16", "bf16"):
        for batch in (1, 2):  # short mode (full: 1 and 8)
            value = result["embed"][dtype][f"batch_{batch}_ms_per_image"]
            assert math.isfinite(value) and value > 0
    assert result["warm_preview"]["median_ms"] > 0


@pytest.mark.slow
def test_short_mode_on_cpu_compiles_and_labels_with_ray(tiny_model_dir, tmp_path):
    gpu_check = _gpu_check()
    out = tmp_path / "gpu_check"
    code = gpu_check.main(["--device", "cpu", "--short", "--model-dir", str(tiny_model_dir),
                           "--sections", "compile,ray", "--out", str(out)])
    result = json.loads(out.with_suffix(".json").read_text())
    assert code == 0 and result["errors"] == {}, result["errors"]
    assert [row[0] for row in result["rows"]][-1] == "compile"  # compile runs last
    compile = result["compile"]
    if shutil.which("g++") or shutil.which("c++"):  # inductor needs a C++ compiler on a CPU
        assert compile["compiled"], "torch.compile fell back to eager (see the warning)"
        for key in ("batch_1_ms_per_image", "batch_1_eager_ms_per_image"):
            assert math.isfinite(compile[key]) and compile[key] > 0
        assert "batch_2_ms_per_image" not in compile  # short mode: one shape, one compile
    ray = result["ray"]
    assert "skipped" not in ray, ray  # requirements-dev.txt installs Ray
    assert ray["gpus"] == 0 and ray["images"] == 8
    assert ray["same_annotations"] is True
    assert ray["ray"]["images_per_s"] > 0 and ray["local"]["images_per_s"] > 0


def test_outputs_are_written_after_every_section(tiny_model_dir, tmp_path, monkeypatch):
    """A GPU machine's timeout (gpu_check.sh: 8 min) keeps the sections that finished."""
    gpu_check = _gpu_check()
    out = tmp_path / "gpu_check"

    def killed(self):
        assert json.loads(out.with_suffix(".json").read_text())["rows"][0][0] == "warm_preview"
        raise KeyboardInterrupt  # what the timeout's SIGTERM amounts to: nothing after it runs

    monkeypatch.setattr(gpu_check.GpuCheck, "ray", killed)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--device", "cpu", "--short", "--model-dir", str(tiny_model_dir),
                        "--sections", "warm_preview,ray", "--out", str(out)])
    assert "| warm_preview |" in out.with_suffix(".md").read_text()


def test_defaults_follow_the_device():
    gpu_check = _gpu_check()
    cpu = gpu_check.parse_args(["--device", "cpu"])
    assert cpu.short and cpu.preset == "tiny"
    cuda = gpu_check.parse_args(["--device", "cuda"])
    assert not cuda.short and cuda.preset == "base"
