"""`owl-studio label` on the tiny random checkpoint and a folder of generated images.

Most cases call `owl_core.batch.job.main` in-process (the model is loaded once per process); the
resume cases run the real entry point in a subprocess and stop it mid-run (SIGKILL, SIGINT).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from owl_core.batch.job import LabelConfig, default_dtype, describe_error, list_inputs, main
from owl_core.engine.predictor import OwlPredictor
from owl_core.errors import LimitError, SettingsError

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 128, 96
COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 200, 20)]
# fp32 on CPU, every patch a candidate; a confidence that keeps a handful of boxes per image
FLAGS = ["--device", "cpu", "--dtype", "fp32", "--top-k", "1024", "--no-progress"]


def picture(seed: int) -> np.ndarray:
    """A grey picture with three coloured squares at seeded places."""
    rng = np.random.default_rng(seed)
    img = np.full((HEIGHT, WIDTH, 3), 200, np.uint8)
    for k in range(3):
        x, y = int(rng.integers(0, WIDTH - 24)), int(rng.integers(0, HEIGHT - 24))
        img[y:y + 24, x:x + 24] = COLOURS[(seed + k) % len(COLOURS)]
    return img


def make_folder(folder: Path, count: int, nested: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sub = folder / "sub" if nested and i % 4 == 0 else folder
        sub.mkdir(exist_ok=True)
        ext = ".jpg" if i % 3 == 0 else ".png"
        Image.fromarray(picture(i)).save(sub / f"img{i:03d}{ext}")


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    return build_work(tmp_path_factory.mktemp("label"), tiny_model_dir)


def build_work(root: Path, tiny_model_dir: Path) -> dict[str, Path]:
    """A nested folder with a corrupt image, a flat folder, and two prompt files."""
    make_folder(root / "data", 10)
    (root / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    make_folder(root / "flat", 6, nested=False)
    Image.fromarray(picture(100)).save(root / "train.png")
    predictor = OwlPredictor(str(tiny_model_dir), device="cpu", dtype="fp32", top_k=1024)
    # squares of picture(100): red at its first place, blue at its second
    rng = np.random.default_rng(100)
    places = [(int(rng.integers(0, WIDTH - 24)), int(rng.integers(0, HEIGHT - 24)))
              for _ in range(3)]
    boxes = [{"x": x + 12, "y": y + 12, "w": 24, "h": 24, "cls": cls, "negative": False}
             for (x, y), cls in zip(places, ["red", "blue", "green"], strict=True)]
    predictor.set_examples([{"image": str(root / "train.png"), "boxes": boxes}])
    predictor.export(root / "a.pt")
    predictor.set_examples([{"image": str(root / "train.png"), "boxes": boxes[:1]}])
    predictor.export(root / "b.pt")
    return {"root": root, "model": tiny_model_dir, "data": root / "data", "flat": root / "flat",
            "a": root / "a.pt", "b": root / "b.pt"}


def label(capsys, work, out: Path, *extra, data: str = "data", weights: str = "a") -> tuple:
    code = main([str(work[data]), "--weights", str(work[weights]), "--model", str(work["model"]),
                 "--out", str(out), *FLAGS, *[str(e) for e in extra]])
    _, err = capsys.readouterr()
    return code, err


def files(folder: Path) -> dict[str, bytes]:
    """Every output file under `folder` (the job folder and the store excluded)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".owl_label" not in p.parts and "embeddings" not in p.parts}


def jsonl(out: Path) -> dict[str, dict]:
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return {row["file"]: row for row in map(json.loads, lines)}


# ---------------------------------------------------------------------------- formats
def test_every_format_parses_with_supervision_and_agrees_with_jsonl(capsys, work, tmp_path):
    outs = {}
    for fmt in ("jsonl", "coco", "yolo", "voc"):
        outs[fmt] = tmp_path / fmt
        code, err = label(capsys, work, outs[fmt], "--format", fmt, "--confidence", "0.95",
                          data="flat")
        assert code == 0, err
    reference = jsonl(outs["jsonl"])
    assert len(reference) == 6
    coco = json.loads((outs["coco"] / "annotations.json").read_text())
    assert [(i["width"], i["height"]) for i in coco["images"]] == [(WIDTH, HEIGHT)] * 6
    assert sum(len(r["predictions"]) for r in reference.values()) > 0
    images = str(work["flat"])
    loaded = {
        "coco": sv.DetectionDataset.from_coco(images, str(outs["coco"] / "annotations.json")),
        "yolo": sv.DetectionDataset.from_yolo(images, str(outs["yolo"] / "labels"),
                                              str(outs["yolo"] / "data.yaml")),
        "voc": sv.DetectionDataset.from_pascal_voc(images, str(outs["voc"] / "annotations")),
    }
    for fmt, dataset in loaded.items():
        assert len(dataset) == 6, fmt
        for path, _, det in dataset:
            preds = reference[Path(path).name]["predictions"]
            assert len(det) == len(preds), (fmt, path)
            want = np.array([[p["x"] - p["width"] / 2, p["y"] - p["height"] / 2,
                              p["x"] + p["width"] / 2, p["y"] + p["height"] / 2]
                             for p in preds]).reshape(-1, 4)
            # every box read back has its twin in the jsonl and vice versa (YOLO keeps 5
            # decimals of the normalised box, VOC whole pixels)
            gap = np.abs(det.xyxy[:, None, :] - want[None, :, :]).max(axis=2)
            assert gap.min(axis=1).max(initial=0) <= 1.01, (fmt, path)
            assert gap.min(axis=0).max(initial=0) <= 1.01, (fmt, path)
            names = sorted(dataset.classes[c] for c in det.class_id)
            assert names == sorted(p["class"] for p in preds), (fmt, path)


def test_nested_images_keep_their_relative_paths(capsys, work, tmp_path):
    code, err = label(capsys, work, tmp_path / "out", "--format", "yolo", "--confidence", "0.95")
    assert code == 0, err
    labels = sorted(p.relative_to(tmp_path / "out" / "labels").as_posix()
                    for p in (tmp_path / "out" / "labels").rglob("*.txt"))
    assert "sub/img000.txt" in labels and "img001.txt" in labels
    assert len(labels) == 10  # broken.png gets none


def test_corrupt_image_is_skipped_reported_and_listed(capsys, work, tmp_path):
    code, err = label(capsys, work, tmp_path / "out", "--format", "jsonl")
    assert code == 0
    assert "broken.png" in err and "failed" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [f["file"] for f in summary["failures"]] == ["broken.png"]
    assert summary["images"] == 11 and summary["labelled"] == 10
    assert "broken.png" not in jsonl(tmp_path / "out")
    assert summary["boxes"] == sum(summary["boxes_per_class"].values())


def test_annotated_pictures_are_drawn(capsys, work, tmp_path):
    code, err = label(capsys, work, tmp_path / "out", "--format", "jsonl", "--confidence", "0.95",
                      "--annotated", tmp_path / "drawn", data="flat")
    assert code == 0, err
    drawn = sorted(p.name for p in (tmp_path / "drawn").glob("*.jpg"))
    assert len(drawn) == 6
    rows = jsonl(tmp_path / "out")
    name = next(n for n, r in rows.items() if r["predictions"])
    picture_drawn = np.asarray(Image.open(tmp_path / "drawn" / Path(name).with_suffix(".jpg")))
    original = np.asarray(Image.open(work["flat"] / name).convert("RGB"))
    assert np.abs(picture_drawn.astype(int) - original.astype(int)).max() > 100


# ---------------------------------------------------------------------------- store
def test_relabel_from_the_store_embeds_nothing_and_equals_a_fresh_run(capsys, work, tmp_path):
    code, err = label(capsys, work, tmp_path / "first", "--format", "coco", weights="a")
    assert code == 0, err
    store = tmp_path / "first" / "embeddings"
    code, err = label(capsys, work, tmp_path / "again", "--format", "coco", "--store", store,
                      "--confidence", "0.97", weights="b")
    assert code == 0, err
    assert "(0 embedded, 10 from the store)" in err  # nothing went through the tower
    code, err = label(capsys, work, tmp_path / "fresh", "--format", "coco", "--confidence",
                      "0.97", weights="b")
    assert code == 0, err
    assert re.search(r"\(10 embedded", err), err
    assert files(tmp_path / "again") == files(tmp_path / "fresh")
    assert files(tmp_path / "first") != files(tmp_path / "fresh")  # other prompts, other boxes


def test_rerun_of_a_finished_job_reads_the_journal_and_rewrites_the_same_bytes(
        capsys, work, tmp_path, monkeypatch):
    import owl_core.images

    out = tmp_path / "out"
    assert label(capsys, work, out, "--format", "voc")[0] == 0
    before = files(out)
    opened = []  # images read and hashed again (the store alone would catch the repeats)
    real = owl_core.images.resolve_image
    monkeypatch.setattr(owl_core.images, "resolve_image",
                        lambda image: opened.append(image) or real(image))
    code, err = label(capsys, work, out, "--format", "voc")
    assert code == 0
    assert "(0 embedded, 10 from the store)" in err
    # the journal says the 10 are done: only the one that failed is tried again
    assert [Path(str(image)).name for image in opened] == ["broken.png"]
    assert files(out) == before


def test_an_unfinished_job_refuses_other_settings_unless_restart(capsys, work, tmp_path):
    out = tmp_path / "out"
    assert label(capsys, work, out, "--format", "jsonl")[0] == 0
    manifest = out / ".owl_label" / "manifest.json"
    state = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**state, "state": "running"}))  # as after a crash
    code, err = label(capsys, work, out, "--format", "jsonl", "--confidence", "0.97")
    assert code == 2
    assert "unfinished job" in err and "params" in err and "--restart" in err
    code, err = label(capsys, work, out, "--format", "jsonl", "--confidence", "0.97",
                      "--restart")
    assert code == 0, err
    assert json.loads(manifest.read_text())["settings"]["params"]["confidence"] == 0.97


def test_an_edited_image_is_embedded_again(capsys, work, tmp_path):
    data = tmp_path / "data"
    make_folder(data, 3, nested=False)
    work = {**work, "mine": data}
    assert label(capsys, work, tmp_path / "out", "--format", "jsonl", data="mine")[0] == 0
    Image.fromarray(picture(50)).save(data / "img001.png")
    os.utime(data / "img001.png", ns=(1, 1))  # even with an old mtime: the size differs
    code, err = label(capsys, work, tmp_path / "out", "--format", "jsonl", data="mine")
    assert code == 0
    assert "(1 embedded, 2 from the store)" in err


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT])  # a crash; Ctrl-C
def test_resume_after_a_stop_gives_the_same_files_as_an_uninterrupted_run(
        capsys, work, tmp_path, monkeypatch, stop):
    data = tmp_path / "many"
    make_folder(data, 48)
    (data / "broken.png").write_bytes(b"garbage")
    args = [str(data), "--weights", str(work["a"]), "--model", str(work["model"]), *FLAGS,
            "--format", "coco", "--confidence", "0.95", "--flush-seconds", "0.02", "--annotated"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "owl_core.batch.job", *args,
                             str(tmp_path / "kd"),
                             "--out", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".owl_label" / "journal.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 8:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(stop)
        code = proc.wait(timeout=120)
    assert not (out / "annotations.json").exists(), "the run ended before it was stopped"
    assert code == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    lines = [json.loads(line) for line in journal.read_bytes().splitlines()
             if line.endswith(b"}")]  # a line torn by SIGKILL is ignored on resume too
    done_before = len({e["path"] for e in lines if "hash" in e})  # a Ctrl-C may repeat a line
    assert 7 <= done_before < 48

    import owl_core.engine.embedding

    towered = []  # images that go through the vision tower in the rerun
    real = owl_core.engine.embedding.compute_embeddings
    monkeypatch.setattr(owl_core.engine.embedding, "compute_embeddings",
                        lambda owl, pixels, *a, **k: towered.append(len(pixels))
                        or real(owl, pixels, *a, **k))
    code = main([*args, str(tmp_path / "kd"), "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    embedded = int(re.search(r"\((\d+) embedded", err).group(1))
    assert sum(towered) == embedded <= 48 - done_before  # journalled ones not embedded again
    monkeypatch.undo()

    code = main([*args, str(tmp_path / "ud"), "--out", str(tmp_path / "whole")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert files(out) == files(tmp_path / "whole")
    killed_pictures = files(tmp_path / "kd")
    assert killed_pictures == files(tmp_path / "ud") and len(killed_pictures) == 48


# ---------------------------------------------------------------------------- inputs, settings
def test_list_file_names_are_relative_to_their_common_folder(work, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{work['data'] / 'img001.png'}\n\n"
                       f"{os.path.relpath(work['data'] / 'sub' / 'img000.jpg', tmp_path)}\n")
    names = [im.name for im in list_inputs(listing)]
    assert names == ["img001.png", "sub/img000.jpg"]


def test_input_folder_skips_hidden_and_output_folders(work, tmp_path):
    make_folder(tmp_path / "d", 2, nested=False)
    make_folder(tmp_path / "d" / "out", 2, nested=False)
    make_folder(tmp_path / "d" / ".cache", 2, nested=False)
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    names = [im.name for im in list_inputs(tmp_path / "d", exclude=[tmp_path / "d" / "out"])]
    assert names == ["img000.jpg", "img001.png"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such folder"),        # neither a folder nor a file
    (lambda p: p.mkdir() or p, "no images found"),      # an empty folder
])
def test_bad_input_is_a_settings_error(tmp_path, make, message):
    with pytest.raises(SettingsError, match=message):
        list_inputs(make(tmp_path / "x"))


def test_too_many_images_is_a_limit_error(work, monkeypatch):
    monkeypatch.setenv("OWL_MAX_LABEL_IMAGES", "3")
    with pytest.raises(LimitError, match="OWL_MAX_LABEL_IMAGES"):
        list_inputs(work["data"])


@pytest.mark.parametrize("field, value", [
    ("fmt", "csv"),          # unknown format
    ("batch_size", 0),       # no images per pass
    ("workers", 10_000),     # unbounded threads
    ("flush_seconds", 0),    # never flushing
])
def test_label_config_refuses_bad_settings(tmp_path, field, value):
    with pytest.raises(SettingsError):
        LabelConfig(out=tmp_path, **{field: value})


def test_bf16_is_chosen_only_where_the_cpu_has_native_bf16(tmp_path, monkeypatch):
    monkeypatch.delenv("OWL_DTYPE", raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert default_dtype(torch.device("cpu"), info) == "bf16"
    info.write_text("processor: 0\nflags\t\t: fpu sse amx_bf16 amx_tile\n")
    assert default_dtype(torch.device("cpu"), info) == "bf16"
    info.write_text("processor: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert default_dtype(torch.device("cpu"), info) is None
    monkeypatch.setenv("OWL_DTYPE", "fp32")  # the user's choice wins
    info.write_text("flags\t\t: avx512_bf16\n")
    assert default_dtype(torch.device("cpu"), info) is None


def test_error_messages_carry_no_memory_addresses():
    exc = OSError("cannot identify image file <_io.BytesIO object at 0x7fe34c83e200>")
    assert describe_error(exc) == "cannot identify image file <_io.BytesIO object>"


def test_training_data_and_project_sources_label_too(capsys, work, tmp_path):
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"image": str(work["root"] / "train.png"), "boxes": [
        {"x": 40, "y": 40, "w": 24, "h": 24, "cls": "thing", "negative": False}]}]))
    code = main([str(work["flat"]), "--training-data", str(train), "--model", str(work["model"]),
                 "--out", str(tmp_path / "out"), "--format", "jsonl", *FLAGS])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert len(jsonl(tmp_path / "out")) == 6


def test_owl_core_cli_runs_label_with_a_project_and_stores_in_it(capsys, work, tmp_path):
    from owl_core.cli.main import main as cli_main

    project = tmp_path / "proj"
    project.mkdir()
    Image.fromarray(picture(100)).save(project / "train.png")
    (project / "project.json").write_text(json.dumps({"classes": ["thing"], "training_data": [
        {"image": "train.png", "boxes": [
            {"x": 40, "y": 40, "w": 24, "h": 24, "cls": "thing", "negative": False}]}]}))
    code = cli_main(["label", str(work["flat"]), "--project", str(project), "--model",
                     str(work["model"]), "--out", str(tmp_path / "out"), "--format", "jsonl",
                     *FLAGS])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert len(jsonl(tmp_path / "out")) == 6
    assert list((project / "embeddings" / "label-store").glob("*/shard-*.safetensors"))
    assert not (tmp_path / "out" / "embeddings").exists()


def test_a_second_job_on_the_same_out_is_refused_while_one_runs(capsys, work, tmp_path):
    from filelock import FileLock

    (tmp_path / "out" / ".owl_label").mkdir(parents=True)
    with FileLock(tmp_path / "out" / ".owl_label" / "job.lock"):  # as a running job holds it
        code, err = label(capsys, work, tmp_path / "out", "--format", "jsonl")
    assert code == 2 and "another label job is running" in err
    assert label(capsys, work, tmp_path / "out", "--format", "jsonl")[0] == 0


def test_a_damaged_png_and_a_file_over_the_byte_cap_are_failures(capsys, work, tmp_path,
                                                                  monkeypatch):
    data = tmp_path / "data"
    make_folder(data, 2, nested=False)
    good = (data / "img001.png").read_bytes()
    ramp = np.linspace(0, 255, 96).astype(np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (96, 1))] * 3, -1)).save(data / "damaged.png")
    damaged = bytearray((data / "damaged.png").read_bytes())
    start = damaged.index(b"IDAT") + 44  # inside the zlib stream: the header stays readable
    damaged[start:start + 4] = bytes(b ^ 0xFF for b in damaged[start:start + 4])
    (data / "damaged.png").write_bytes(bytes(damaged))
    with (data / "huge.png").open("wb") as fh:  # sparse: a valid header, then 'gigabytes'
        fh.write(good)
        fh.truncate(len(good) * 50)
    monkeypatch.setenv("OWL_MAX_IMAGE_FILE_BYTES", str(len(good) * 10))
    code = main([str(data), "--weights", str(work["a"]), "--model", str(work["model"]),
                 "--out", str(tmp_path / "out"), "--format", "jsonl", *FLAGS])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    failures = {f["file"]: f for f in summary["failures"]}
    assert sorted(failures) == ["damaged.png", "huge.png"], summary
    assert "max_image_file_bytes" in json.dumps(failures["huge.png"])
    assert summary["labelled"] == 2
