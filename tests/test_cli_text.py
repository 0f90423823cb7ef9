"""``--text CLASS[=PHRASE]`` on predict, export, label and evaluate (issue 18 item 5): alone
(zero-shot) or with --training-data / --project / --weights; the label store embeds no image
again when only a phrase changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owl_core.batch import job as label_job
from owl_core.cli.main import main
from owl_core.engine import embedding
from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.prompt_file import load_pt
from owl_core.phrases import PromptPhrase, text_flag, with_text_flags
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import save_project

FLAGS = ["--device", "cpu", "--dtype", "fp32", "--top-k", "1024"]


def picture(seed: int, size=(128, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 200, np.uint8)
    for _ in range(3):
        x, y = int(rng.integers(0, size[0] - 24)), int(rng.integers(0, size[1] - 24))
        img[y:y + 24, x:x + 24] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray(picture(i)).save(folder / f"p{i}.png")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("value, phrase", [
    # the class name is the phrase
    ("coin", PromptPhrase("coin", "coin")),
    # an explicit phrase
    ("coin=a round coin", PromptPhrase("coin", "a round coin")),
    # an '=' inside the phrase stays
    ("sign=a=b", PromptPhrase("sign", "a=b")),
])
def test_text_flag(value, phrase):
    assert text_flag(value) == phrase


def test_text_flags_add_classes_and_are_validated():
    assert with_text_flags(["cup"], {"cup": ["a mug"]}, ["coin", "cup=a cup"]) == (
        ["cup", "coin"], {"cup": ["a mug", "a cup"], "coin": ["coin"]})
    with pytest.raises(ValueError, match="the phrase is empty"):
        with_text_flags(None, None, ["coin="])


def test_predict_zero_shot_equals_the_python_api(capsys, tiny_model_dir, photos):
    image = photos / "p0.png"
    code, out, err = run(capsys, "predict", "--model", tiny_model_dir, "--text", "coin",
                         "--text", "cup=a mug", "--confidence", "0.5", *FLAGS, image)
    assert code == 0, err
    got = json.loads(out)
    pred = OwlPredictor(str(tiny_model_dir), device="cpu", dtype="fp32", top_k=1024)
    pred.set_examples(phrases={"coin": ["coin"], "cup": ["a mug"]})
    want = pred.detect(str(image), confidence=0.5).to_json()
    assert got == json.loads(json.dumps(want)) and got["predictions"]


def test_predict_with_training_data_and_text(capsys, tiny_model_dir, photos, tmp_path):
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"image": str(photos / "p1.png"), "boxes": [
        {"x": 40, "y": 40, "w": 24, "h": 24, "cls": "square", "negative": False}]}]))
    code, out, err = run(capsys, "predict", "--model", tiny_model_dir, "--training-data", train,
                         "--text", "coin", "--confidence", "0.0", "--max-detections", "1000",
                         *FLAGS, photos / "p2.png")
    assert code == 0, err
    assert {p["class"] for p in json.loads(out)["predictions"]} == {"square", "coin"}


def test_export_text_only_then_predict_with_weights_and_more_text(capsys, tiny_model_dir,
                                                                   photos, tmp_path):
    pt = tmp_path / "coin.pt"
    code, out, err = run(capsys, "export", "--model", tiny_model_dir, "--text", "coin",
                         "--out", pt, *FLAGS)
    assert code == 0, err
    assert load_pt(pt).exemplars.phrases() == (PromptPhrase("coin", "coin"),)
    code, out, err = run(capsys, "predict", "--weights", pt, "--model", tiny_model_dir,
                         "--text", "cup=a mug", "--confidence", "0.0", "--max-detections",
                         "1000", *FLAGS, photos / "p3.png")
    assert code == 0, err
    assert {p["class"] for p in json.loads(out)["predictions"]} == {"coin", "cup"}


def test_no_prompt_source_is_a_clear_error(capsys, tiny_model_dir, photos):
    code, _, err = run(capsys, "predict", "--model", tiny_model_dir, *FLAGS, photos / "p0.png")
    assert code == 2 and "--text CLASS[=PHRASE]" in err


def test_label_zero_shot_and_a_second_phrase_embeds_no_image_again(
        capsys, tiny_model_dir, photos, tmp_path, monkeypatch):
    """`label --model M --text car --text person photos/ --out out/ --format coco`, then
    another phrase on the same store: the tower never runs again (spy on the embedder)."""
    calls: list[int] = []
    real = embedding.compute_embeddings

    def spy(owl, pixel_values, *args, **kwargs):
        calls.append(int(pixel_values.shape[0]))
        return real(owl, pixel_values, *args, **kwargs)

    monkeypatch.setattr(embedding, "compute_embeddings", spy)
    store = tmp_path / "store"
    argv = ["--model", tiny_model_dir, "--out", tmp_path / "out", "--format", "coco",
            "--store", store, "--confidence", "0.5", "--no-progress", *FLAGS]
    assert label_job.main([str(a) for a in [photos, "--text", "car", "--text", "person",
                                            *argv]]) == 0
    assert sum(calls) == 4
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    argv[3] = tmp_path / "out2"
    assert label_job.main([str(a) for a in [photos, "--text", "car=a red car", *argv]]) == 0
    assert sum(calls) == 4  # the second run embedded nothing
    _, err = capsys.readouterr()
    assert "(0 embedded, 4 from the store)" in err
    assert {c["name"] for c in coco["categories"]} == {"car", "person"}


def test_evaluate_with_the_projects_phrases_and_text(capsys, tiny_model_dir, photos,
                                                     tmp_path):
    library = ProjectLibrary(tmp_path / "projects")
    project = library.create("p", classes=["coin", "cup"])
    record = project.add_image(photos / "p0.png", "p0.png")
    project.set_role(record.id, "query")
    project.set_labels(record.id, [{"xyxy": [10, 10, 40, 40], "cls": "coin"}])
    project.set_status(record.id, "done")
    project.set_phrases("coin", ["coin"])
    save_project(project)
    code, out, err = run(capsys, "evaluate", "--project", project.folder, "--model",
                         tiny_model_dir, "--text", "CUP=a mug", "--device", "cpu", "--dtype",
                         "fp32", "--json")
    assert code == 0, err
    assert {"coin", "cup"} <= set(json.dumps(json.loads(out)).split('"'))
    code, _, err = run(capsys, "evaluate", "--project", project.folder, "--model",
                       tiny_model_dir, "--text", "dog", "--device", "cpu")
    assert code == 2 and "no class 'dog'" in err


def test_export_of_a_project_writes_its_combine_mode_and_negative_phrases(capsys,
                                                                          tiny_model_dir,
                                                                          tmp_path):
    """Issue 18 gap: `export --project` writes the project's combine mode (and the flag's) to
    the .pt's settings, and its negative phrases as negative rows."""
    library = ProjectLibrary(tmp_path / "projects")
    project = library.create("p", classes=["coin"])
    project.set_phrases("coin", ["coin"])
    project.set_phrases("coin", ["cup"], negative=True)
    project.set_settings(project.settings.replace(combine="fused"))
    save_project(project)
    pt = tmp_path / "p.pt"
    code, _, err = run(capsys, "export", "--model", tiny_model_dir, "--project",
                       project.folder, "--out", pt, *FLAGS)
    assert code == 0, err
    loaded = load_pt(pt)
    assert loaded.settings is not None and loaded.settings.combine == "fused"
    assert loaded.exemplars.phrases() == (PromptPhrase("coin", "coin"),
                                          PromptPhrase("coin", "cup", negative=True))
    code, _, err = run(capsys, "export", "--model", tiny_model_dir, "--project",
                       project.folder, "--combine", "max", "--out", pt, *FLAGS)
    assert code == 0, err
    assert load_pt(pt).settings.combine == "max"
