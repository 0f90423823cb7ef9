"""Tests for the command line (`python -m owl_core ...`) on the tiny random checkpoint.

Most cases call `owl_core.cli.main.main` in-process (fast: the model is loaded once per process);
two run the real entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from owl_core.cli.main import main
from owl_core.engine.prompt_file import load_pt

REPO = Path(__file__).resolve().parents[1]
# 128x96 images: the tiny model (256 px input, 8 px patches) sees each image pixel as 2x2 model
# pixels, so a 24 px rectangle spans 6 patches a side.
WIDTH, HEIGHT = 128, 96
BACKGROUND = (200, 200, 200)
# (x0, y0, x1, y1, colour, class, negative) in pixels
TRAIN_RECTS = [
    (10, 10, 34, 34, (220, 30, 30), "red", False),
    (60, 12, 84, 36, (220, 30, 30), "red", False),
    (20, 55, 44, 79, (30, 30, 220), "blue", False),
    (80, 50, 110, 80, (30, 200, 30), "red", True),  # "not a red thing": the green one
]
OTHER_RECTS = [
    (70, 8, 100, 38, (230, 200, 20), "yellow", False),
    (8, 40, 40, 70, (220, 30, 30), "red", False),
]
# keep every patch (32 x 32) as a candidate: a drawn box's own patch then scores 1.0
FLAGS = ["--device", "cpu", "--dtype", "fp32", "--top-k", "1024", "--confidence", "0.9"]
PREDICTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_id"}


def draw(rects) -> np.ndarray:
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[:] = BACKGROUND
    for x0, y0, x1, y1, colour, _, _ in rects:
        img[y0:y1, x0:x1] = colour
    return img


def boxes(rects) -> list[dict]:
    return [{"x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "w": x1 - x0, "h": y1 - y0, "cls": cls,
             "negative": negative} for x0, y0, x1, y1, _, cls, negative in rects]


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Images, training files and the tiny model path, shared by the module's tests."""
    root = tmp_path_factory.mktemp("cli")
    Image.fromarray(draw(TRAIN_RECTS)).save(root / "train.png")
    Image.fromarray(draw(OTHER_RECTS)).save(root / "other.png")
    # relative image paths are resolved from the JSON's folder
    (root / "train.json").write_text(json.dumps([{"image": "train.png",
                                                  "boxes": boxes(TRAIN_RECTS)}]))
    (root / "other.json").write_text(json.dumps({"training_data": [
        {"image": str(root / "other.png"), "boxes": boxes(OTHER_RECTS)}]}))
    return {"root": root, "model": tiny_model_dir, "train_png": root / "train.png",
            "other_png": root / "other.png", "train_json": root / "train.json",
            "other_json": root / "other.json"}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def export(capsys, work, out: Path, *extra, training: str = "train_json") -> Path:
    code, stdout, err = run_main(capsys, "export", "--model", work["model"], "--training-data",
                                 work[training], "--out", out, *FLAGS[:6], *extra)
    assert code == 0, err
    assert stdout.strip() == str(out)
    return out


def check_response(response: dict) -> None:
    """The reference response shape, with sane values."""
    assert set(response) == {"image", "predictions"}
    assert response["image"] == {"width": WIDTH, "height": HEIGHT}
    confidences = [p["confidence"] for p in response["predictions"]]
    assert confidences == sorted(confidences, reverse=True)
    for p in response["predictions"]:
        assert set(p) == PREDICTION_KEYS
        assert isinstance(p["class"], str) and isinstance(p["class_id"], int)
        assert 0.9 <= p["confidence"] <= 1.0 + 1e-6
        # centre/size in pixels, inside the image
        assert p["width"] >= 0 and p["height"] >= 0
        assert -1e-3 <= p["x"] - p["width"] / 2 and p["x"] + p["width"] / 2 <= WIDTH + 1e-3
        assert -1e-3 <= p["y"] - p["height"] / 2 and p["y"] + p["height"] / 2 <= HEIGHT + 1e-3


def single_error(err: str, pattern: str) -> None:
    """Exactly one `error: ...` line, last, matching `pattern`; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    assert "Traceback" not in err
    assert re.search(pattern, errors[0]), (pattern, errors[0])


# ---------------------------------------------------------------------------- predict
def test_predict_with_training_data_prints_one_response_per_image(capsys, work):
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--training-data",
                              work["train_json"], *FLAGS, work["train_png"], work["other_png"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    responses = [json.loads(line) for line in lines]
    for response in responses:
        check_response(response)
    classes = {(p["class"], p["class_id"]) for r in responses for p in r["predictions"]}
    assert classes <= {("red", 0), ("blue", 1)}
    # each positive example's own patch is a candidate scoring (1 + 1) / 2 = 1 for its class
    top = {p["class"] for p in responses[0]["predictions"] if p["confidence"] > 0.99}
    assert top == {"red", "blue"}
    assert "matched nothing" not in err


def test_predict_with_weights_matches_predict_with_training_data(capsys, work, tmp_path):
    images = [work["train_png"], work["other_png"]]
    code, direct, err = run_main(capsys, "predict", "--model", work["model"], "--training-data",
                                 work["train_json"], *FLAGS, *images)
    assert code == 0, err
    pt = export(capsys, work, tmp_path / "prompts.pt")
    # no --model (the .pt names it) and no --top-k (the .pt's own is the default)
    code, via_pt, err = run_main(capsys, "predict", "--weights", pt, "--confidence", "0.9",
                                 *images)
    assert code == 0, err
    assert [json.loads(x) for x in via_pt.splitlines()] == [json.loads(x)
                                                             for x in direct.splitlines()]
    assert any(json.loads(x)["predictions"] for x in direct.splitlines())


def test_project_file_with_classes_sets_the_class_order(capsys, work, tmp_path):
    project = tmp_path / "project.json"
    project.write_text(json.dumps({"classes": ["blue", "red", "unused"], "training_data": [
        {"image": str(work["train_png"]), "boxes": boxes(TRAIN_RECTS)}]}))
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--training-data",
                              project, *FLAGS, work["train_png"])
    assert code == 0, err
    predictions = json.loads(out)["predictions"]
    assert predictions
    assert {(p["class"], p["class_id"]) for p in predictions} <= {("blue", 0), ("red", 1)}


@pytest.fixture(scope="module")
def project_dir(work, tmp_path_factory) -> Path:
    """A saved project: train.png with TRAIN_RECTS as prompts, other.png as its query image,
    settings confidence 0.9 and max_detections 1."""
    from owl_core.params import DetectParams
    from owl_core.project.model import Project, Prompt, save_project

    folder = tmp_path_factory.mktemp("project") / "p"
    folder.mkdir()
    project = Project(name="cli", classes=["red", "blue"], folder=folder,
                      settings=DetectParams(confidence=0.9, max_detections=1))
    example = project.add_image(work["train_png"], role="example")
    project.set_prompt_boxes(example.id, [Prompt((x0, y0, x1, y1), cls, negative)
                                          for x0, y0, x1, y1, _, cls, negative in TRAIN_RECTS])
    project.add_image(work["other_png"], role="query")
    save_project(project)
    return folder


def test_predict_with_project_takes_its_examples_settings_and_query_images(capsys, work,
                                                                          project_dir):
    images = [work["train_png"], work["other_png"]]
    code, direct, err = run_main(capsys, "predict", "--model", work["model"], "--training-data",
                                 work["train_json"], *FLAGS, *images)
    assert code == 0, err
    direct = [json.loads(line) for line in direct.splitlines()]
    assert direct[1]["predictions"]
    # no images given: the project's query image (other.png); its max_detections=1 applies
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--project",
                              project_dir, *FLAGS[:6])
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {**direct[1], "predictions": direct[1]["predictions"][:1]}]
    # flags win over the project's settings; images given win over its query images
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--project",
                              project_dir, *FLAGS, "--max-detections", "300", *images)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == direct


def test_export_with_project(capsys, work, project_dir, tmp_path):
    code, out, err = run_main(capsys, "export", "--model", work["model"], "--project",
                              project_dir, "--out", tmp_path / "p.pt", *FLAGS[:6])
    assert code == 0, err
    assert list(load_pt(tmp_path / "p.pt").exemplars.class_names) == ["red", "blue"]


def test_project_without_examples_is_an_error(capsys, work, tmp_path):
    from owl_core.project.model import Project, save_project

    save_project(Project(name="empty", classes=["red"]), tmp_path / "empty")
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--project",
                              tmp_path / "empty", work["train_png"])
    assert code == 2 and out == ""
    single_error(err, r"^error: .*empty: the project has no example boxes or phrases yet")


def test_subcommand_hooks_are_collected(capsys):
    from owl_core.cli.main import SUBCOMMAND_MODULES, build_parser

    def add_hello(sub):
        p = sub.add_parser("hello", help="say hello")
        p.set_defaults(handler=lambda args: print("hello") or 0)
        return p

    with pytest.raises(SystemExit):  # argparse: unknown without the hook
        main(["hello"])
    assert "invalid choice: 'hello'" in capsys.readouterr().err
    from owl_core.cli.main import run

    assert run(["hello"], extra=[add_hello]) == 0
    assert capsys.readouterr().out == "hello\n"
    helptext = build_parser(extra=[add_hello]).format_help()
    for command in ("hello", "predict", "export", "make-random-model"):
        assert command in helptext
    assert "owl_core.engine.random_model" in SUBCOMMAND_MODULES


def test_unmatched_box_is_a_warning(capsys, work, tmp_path):
    data = [{"image": str(work["train_png"]), "boxes": boxes(TRAIN_RECTS) + [
        # a box wholly outside the image matches nothing
        {"x": 500, "y": 500, "w": 10, "h": 10, "cls": "red", "negative": False}]}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    code, out, err = run_main(capsys, "predict", "--model", work["model"], "--training-data",
                              path, *FLAGS, work["train_png"])
    assert code == 0
    assert "warning: training_data[0].boxes[4] (red) matched nothing" in err
    check_response(json.loads(out))


# ---------------------------------------------------------------------------- export
def test_export_full_and_small(capsys, work, tmp_path):
    full = load_pt(export(capsys, work, tmp_path / "full.pt"))
    small_path = export(capsys, work, tmp_path / "small.pt", "--small", "--roboflow-id", "w/p/3")
    small = load_pt(small_path)
    assert full.exemplars.class_names == small.exemplars.class_names == ("red", "blue")
    assert torch.equal(full.exemplars.embeds, small.exemplars.embeds)
    # 2 red positives, 1 red negative, 1 blue positive
    names = full.exemplars.class_names
    kinds = sorted((names[int(c)], bool(n)) for c, n in zip(full.exemplars.class_ids,
                                                             full.exemplars.negative, strict=True))
    assert kinds == [("blue", False), ("red", False), ("red", False), ("red", True)]
    assert len(full.image_embeds) == 1
    (emb,) = full.image_embeds.values()
    assert emb.image_size == (WIDTH, HEIGHT) and emb.num_boxes == 1024  # --top-k 1024 = 32 x 32
    raw = torch.load(small_path, weights_only=True)
    assert raw["image_embeds"] == {} and small.image_embeds == {}
    assert raw["roboflow_id"] == "w/p/3"
    assert raw["huggingface_id"] == str(work["model"])


def test_export_with_previous_keeps_old_and_new_exemplars(capsys, work, tmp_path):
    first = export(capsys, work, tmp_path / "first.pt")
    second = export(capsys, work, tmp_path / "second.pt", "--previous", first,
                    training="other_json")
    old, new = load_pt(first), load_pt(second)
    assert new.exemplars.class_names == ("red", "blue", "yellow")
    assert len(new.exemplars) == len(old.exemplars) + len(OTHER_RECTS)
    assert {s.image_hash for s in new.exemplars.sources} == set(new.image_embeds)
    assert len(new.image_embeds) == 2 and set(old.image_embeds) < set(new.image_embeds)
    # the old rows are all still there
    for row in old.exemplars.embeds:
        assert any(torch.equal(row, r) for r in new.exemplars.embeds)
    # exporting the same examples on top of their own export adds nothing twice
    again = load_pt(export(capsys, work, tmp_path / "again.pt", "--previous", first))
    assert len(again.exemplars) == len(old.exemplars)


# ---------------------------------------------------------------------------- bad input
def hostile_pt(root: Path) -> tuple[Path, Path]:
    marker = root / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    path = root / "hostile.pt"
    torch.save({"huggingface_id": "x", "class_names": [], "train_data_dict": {},
                "payload": Evil()}, path)
    return path, marker


def bad_json(root: Path) -> Path:
    path = root / "bad.json"
    path.write_text('[{"image": "train.png", "boxes": [}]')
    return path


def zero_width_box(root: Path) -> Path:
    path = root / "zero.json"
    path.write_text(json.dumps([{"image": "train.png", "boxes": [
        {"x": 20, "y": 20, "w": 0, "h": 5, "cls": "red", "negative": False}]}]))
    return path


def missing_training_image(root: Path) -> Path:
    path = root / "missing_image.json"
    path.write_text(json.dumps([{"image": str(root / "gone.png"), "boxes": boxes(TRAIN_RECTS)}]))
    return path


@pytest.mark.parametrize("make_args, pattern", [
    # the image to predict on does not exist
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", w["train_json"],
                   r / "nope.png"], r"^error: .*nope\.png: no such image file\. Check the path"),
    # the training data file does not exist
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", r / "nope.json",
                   w["train_png"]],
     r"^error: .*nope\.json: cannot read the training data \(No such file or directory\); check"),
    # the training data is not JSON
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", bad_json(r),
                   w["train_png"]], r"^error: .*bad\.json: not valid JSON \(.*\); fix the file"),
    # a box with zero width
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", zero_width_box(r),
                   w["train_png"]],
     r"^error: training_data\[0\]\.boxes\[0\]: width and height must be positive, got w=0\.0"),
    # a training image that does not exist
    (lambda w, r: ["predict", "--model", w["model"], "--training-data",
                   missing_training_image(r), w["train_png"]],
     r"^error: .*gone\.png: no such image file"),
    # export with bad training data
    (lambda w, r: ["export", "--model", w["model"], "--training-data", zero_width_box(r),
                   "--out", r / "x.pt"], r"^error: training_data\[0\]\.boxes\[0\]: width and"),
    # the .pt does not exist
    (lambda w, r: ["predict", "--weights", r / "nope.pt", w["train_png"]],
     r"^error: .*nope\.pt: no such file\."),
    # a .pt that is not a .pt
    (lambda w, r: ["predict", "--weights", w["train_json"], w["train_png"]],
     r"^error: .*train\.json: not a readable \.pt file \(.*\)\. "
     r"Export it again\.$"),
    # top-k out of range
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", w["train_json"],
                   "--top-k", "0", w["train_png"]], r"^error: top_k must be >= 1, got 0\."),
    # confidence out of range
    (lambda w, r: ["predict", "--model", w["model"], "--training-data", w["train_json"],
                   "--confidence", "1.5", w["train_png"]],
     r"^error: confidence must be in \[0, 1\], got 1\.5\."),
    # a model folder that does not exist
    (lambda w, r: ["predict", "--model", r / "no-model-here", "--training-data", w["train_json"],
                   w["train_png"]], r"^error: Cannot load the OWLv2 model .*no-model-here"),
])
def test_bad_input_exits_with_one_error_line(make_args, pattern, capsys, work, tmp_path):
    code, out, err = run_main(capsys, *make_args(work, tmp_path))
    assert code == 2
    assert out == ""
    single_error(err, pattern)


def test_unknown_model_id_offline(capsys, work, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_main(capsys, "predict", "--model", "no-such-org/no-such-owl",
                              "--training-data", work["train_json"], work["train_png"])
    assert code == 2 and out == ""
    single_error(err, r"^error: Cannot load the OWLv2 model 'no-such-org/no-such-owl': "
                      r"offline mode is on")


@pytest.mark.parametrize("command", [
    # predict from a hostile file
    lambda w, pt: ["predict", "--weights", pt, w["train_png"]],
    # predict from a hostile file, with the model given
    lambda w, pt: ["predict", "--model", w["model"], "--weights", pt, w["train_png"]],
    # export on top of a hostile file
    lambda w, pt: ["export", "--model", w["model"], "--training-data", w["train_json"],
                   "--previous", pt, "--out", pt.parent / "out.pt"],
])
def test_hostile_pt_is_refused(command, capsys, work, tmp_path):
    pt, marker = hostile_pt(tmp_path)
    code, out, err = run_main(capsys, *command(work, pt))
    assert code == 2 and out == ""
    single_error(err, r"^error: .*hostile\.pt: refused to load: the file needs code or classes "
                      r"\(exec\) .*nothing in it ran")
    assert "weights_only" not in err  # never suggest the unsafe load
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


def test_make_random_model_writes_a_loadable_folder(capsys, tmp_path):
    out_dir = tmp_path / "random"
    code, out, err = run_main(capsys, "make-random-model", "--preset", "tiny", "--seed", "3",
                              out_dir)
    assert code == 0, err
    assert out.strip() == str(out_dir)
    marker = json.loads((out_dir / "owl_random_model.json").read_text())
    assert (marker["preset"], marker["seed"]) == ("tiny", 3)
    assert (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file()


def test_make_random_model_goes_through_the_cli(capsys, tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    code, out, err = run_main(capsys, "make-random-model", "--preset", "tiny", not_a_folder)
    assert code == 2 and out == ""
    single_error(err, r"^error: .*file\.txt is a file; make_random_model needs a folder path")


# ---------------------------------------------------------------------------- real entry point
def python_m(*argv, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "owl_core", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_same_response(a: dict, b: dict, tol: float = 1e-4) -> None:
    """Equal responses, numbers to `tol`; a box whose score is within `tol` of the 0.9
    threshold may be in one and not the other."""
    assert a["image"] == b["image"]

    def kept(response):
        preds = [p for p in response["predictions"] if abs(p["confidence"] - 0.9) > tol]
        return sorted(preds, key=lambda p: (p["class"], round(p["x"]), round(p["y"]),
                                            round(p["width"]), round(p["height"])))

    left, right = kept(a), kept(b)
    assert len(left) == len(right) and left
    for p, q in zip(left, right, strict=True):
        assert (p["class"], p["class_id"]) == (q["class"], q["class_id"])
        for key in ("x", "y", "width", "height", "confidence"):
            assert p[key] == pytest.approx(q[key], abs=tol), (key, p, q)


def test_entry_point_predict(capsys, work):
    args = ["predict", "--model", work["model"], "--training-data", work["train_json"], *FLAGS,
            work["train_png"]]
    proc = python_m(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    code, out, _ = run_main(capsys, *args)
    assert code == 0
    # same answer in and out of process, up to float rounding (thread counts differ)
    assert_same_response(json.loads(proc.stdout), json.loads(out))
    check_response(json.loads(proc.stdout))


def test_entry_point_unknown_model_offline(work, tmp_path):
    proc = python_m("predict", "--model", "no-such-org/no-such-owl", "--training-data",
                    work["train_json"], work["train_png"],
                    env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2
    assert proc.stdout == ""
    single_error(proc.stderr, r"^error: Cannot load the OWLv2 model 'no-such-org/no-such-owl'")
