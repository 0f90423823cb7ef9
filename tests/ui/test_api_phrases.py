"""Phrases through the studio's named API (issue 18 item 6): ``training_data`` may be an
object with "phrases" per class (or a project file's content, which carries them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "images"


@pytest.fixture()
def studio(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), embed_batch_size=2)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)
    yield studio
    studio.close()


def test_api_infer_takes_phrases_beside_boxes_and_alone(studio, tmp_path):
    upload = tmp_path / "coins.png"
    shutil.copyfile(ASSETS / "coins.png", upload)
    api = SimpleNamespace(session_hash="client")
    both = json.dumps({"training_data": [{"image": 0, "boxes": [
        {"x": 155.5, "y": 51.0, "w": 49, "h": 46, "cls": "coin", "negative": False}]}],
        "phrases": {"cup": ["a cup"]}})
    out = studio.api.api_infer(both, [str(upload)], [str(upload)], 0.5, 0.3, 300, "reference",
                               api)
    assert out["classes"] == ["coin", "cup"]
    assert out["phrases"] == [{"cls": "cup", "text": "a cup", "negative": False}]
    alone = json.dumps({"phrases": {"coin": ["coin"]}})
    out = studio.api.api_infer(alone, [], [str(upload)], 0.5, 0.3, 300, "reference", api)
    assert out["classes"] == ["coin"] and out["results"][0]["predictions"]
    assert {p["class"] for p in out["results"][0]["predictions"]} == {"coin"}
