"""The meter's comparison of a prompt's parts (issue 18 deliverable 3): "phrases only",
"boxes only" and "both" measured on the same reviewed images; undefined parts are None."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from owl_core.engine.predictor import OwlPredictor
from owl_core.errors import SettingsError
from owl_core.project.evaluate import compare_prompt_parts, measure_project, prompt_part
from owl_core.project.library import ProjectLibrary


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = np.full((96, 128, 3), 200, np.uint8)
    img[20:60, 30:70] = rng.integers(0, 256, 3)
    return Image.fromarray(img)


@pytest.fixture()
def project(tmp_path):
    library = ProjectLibrary(tmp_path / "projects")
    project = library.create("p", classes=["square"])
    for i in range(3):
        _picture(i).save(tmp_path / f"p{i}.png")
        record = project.add_image(tmp_path / f"p{i}.png", f"p{i}.png")
        if i == 0:
            project.set_prompt_boxes(record.id, [{"xyxy": [30, 20, 70, 60], "cls": "square"}])
        else:
            project.set_role(record.id, "query")
            project.set_labels(record.id, [{"xyxy": [30, 20, 70, 60], "cls": "square"}])
            project.set_status(record.id, "done")
    return project


def test_parts_of_a_prompt_are_measured_apart(tiny_model, project):
    predictor = OwlPredictor(tiny_model, top_k=1024)
    predictor.set_examples(project.training_data(), project.classes,
                           phrases={"square": ["a square", {"text": "a dot",
                                                            "negative": True}]})
    rows = predictor.exemplars
    assert len(prompt_part(rows, "phrases only")) == 2  # the negative phrase goes with it
    assert len(prompt_part(rows, "boxes only")) == len(rows) - 2
    with pytest.raises(SettingsError, match="unknown prompt part"):
        prompt_part(rows, "words")
    parts = compare_prompt_parts(project, predictor, project.settings)
    both = measure_project(project, predictor, project.settings)
    assert set(parts) == {"phrases only", "boxes only", "both"}
    for name in parts:
        assert parts[name].image_names == both.image_names  # the same reviewed images
    assert [len(p) for p in parts["both"].predictions] == [len(p) for p in both.predictions]
    # phrases alone: what a predictor given only the phrase detects
    alone = OwlPredictor(tiny_model, top_k=1024)
    alone.set_examples([], project.classes, phrases={"square": ["a square", {
        "text": "a dot", "negative": True}]})
    expected = alone.detect_many([project.image_path(r) for r in project.images[1:]],
                                 project.settings.replace(confidence=0.0))
    got = parts["phrases only"].predictions
    assert [r.confidence.tolist() for r in got] == [r.confidence.tolist() for r in expected]


def test_a_part_the_prompt_lacks_is_undefined(tiny_model, project):
    predictor = OwlPredictor(tiny_model, top_k=1024)
    predictor.set_examples(project.training_data(), project.classes)
    parts = compare_prompt_parts(project, predictor)
    assert parts["phrases only"] is None and parts["boxes only"] is not None
