"""The named API endpoints (infer, infer_pt, export), called with gradio_client against the
studio running in-process on the tiny random model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

ASSETS = Path(__file__).resolve().parents[2] / "assets"

COINS = ASSETS / "images" / "coins.png"
CHELSEA = ASSETS / "images" / "chelsea.png"
# one coin (row 1, 3rd) and one negative on the background (from the bundled example project)
TRAINING = [{"image": "coins.png", "boxes": [
    {"x": 155.5, "y": 51.0, "w": 49, "h": 46, "cls": "coin", "negative": False},
    {"x": 155.0, "y": 91.5, "w": 60, "h": 27, "cls": "coin", "negative": True},
]}]
SETTINGS = {"confidence": 0.9, "iou_threshold": 0.3, "max_detections": 300,
            "score_mode": "reference"}


@pytest.fixture(scope="module")
def client(studio_app, tmp_path_factory):
    return Client(studio_app[0], verbose=False,
                  download_files=str(tmp_path_factory.mktemp("client-downloads")))


def _xyxy(pred: dict) -> list[float]:
    return [pred["x"] - pred["width"] / 2, pred["y"] - pred["height"] / 2,
            pred["x"] + pred["width"] / 2, pred["y"] + pred["height"] / 2]


def _infer(client, training=TRAINING, examples=(COINS,), queries=(COINS, CHELSEA), **kw):
    return client.predict(
        training_data=json.dumps(training),
        example_images=[handle_file(str(p)) for p in examples],
        query_images=[handle_file(str(p)) for p in queries],
        **{**SETTINGS, **kw}, api_name="/infer")


def test_only_the_documented_endpoints_are_public(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/infer", "/infer_pt", "/export"}


def test_infer_detects_the_drawn_object_where_it_snapped(client):
    out = _infer(client)
    assert out["classes"] == ["coin"]
    positive, negative = out["match_report"]
    assert positive["matched"] and positive["cls"] == "coin" and not positive["negative"]
    assert negative["negative"] is True
    by_file = {r["file"]: r for r in out["results"]}
    assert set(by_file) == {"coins.png", "chelsea.png"}
    coins = by_file["coins.png"]
    assert coins["image"] == {"width": 384, "height": 303}
    # the exemplar's own predicted box scores ~1.0 on its own image (cosine 1 -> (1+1)/2)
    snapped = np.array(positive["snapped_xyxy"])
    best = max(coins["predictions"], key=lambda p: p["confidence"])
    assert best["class"] == "coin" and best["confidence"] > 0.99
    assert np.abs(np.array(_xyxy(best)) - snapped).max() < 1.0
    for pred in coins["predictions"]:
        assert pred["confidence"] >= SETTINGS["confidence"]


def test_infer_thresholds_change_the_answer(client):
    loose = _infer(client, queries=(COINS,), confidence=0.5)["results"][0]["predictions"]
    strict = _infer(client, queries=(COINS,), confidence=0.95)["results"][0]["predictions"]
    capped = _infer(client, queries=(COINS,), confidence=0.5, max_detections=3)
    assert len(loose) > len(strict) >= 1
    assert len(capped["results"][0]["predictions"]) == 3


def test_infer_accepts_image_index_and_base64(client):
    import base64

    by_index = [{**TRAINING[0], "image": 0}]
    b64 = [{**TRAINING[0], "image": {"type": "base64",
                                     "value": base64.b64encode(COINS.read_bytes()).decode()}}]
    a = _infer(client, training=by_index, queries=(COINS,))
    b = _infer(client, training=b64, examples=(), queries=(COINS,))
    assert a["results"][0]["predictions"] == b["results"][0]["predictions"]


@pytest.mark.parametrize("training, message", [
    # not JSON at all
    ("{oops", "not valid JSON"),
    # refers to a file that was not uploaded (and must never be read from the server's disk)
    ([{"image": "/etc/hostname", "boxes": []}], "neither the name or index"),
    # index out of range
    ([{"image": 3, "boxes": []}], "only 1 example image"),
    # engine validation: negative width
    ([{"image": 0, "boxes": [{"x": 5, "y": 5, "w": -1, "h": 4, "cls": "coin"}]}],
     "width and height must be positive"),
])
def test_infer_rejects_bad_training_data_with_a_clear_message(client, training, message):
    from gradio_client.exceptions import AppError

    payload = training if isinstance(training, str) else json.dumps(training)
    with pytest.raises(AppError, match=message):
        client.predict(training_data=payload, example_images=[handle_file(str(COINS))],
                       query_images=[handle_file(str(COINS))], **SETTINGS, api_name="/infer")


def test_export_then_infer_pt_gives_the_same_detections(client, tmp_path):
    from owl_core import load_pt

    path = client.predict(training_data=json.dumps(TRAINING),
                          example_images=[handle_file(str(COINS))], name="my coins",
                          small=False, api_name="/export")
    assert path.endswith("my-coins.pt")
    full = load_pt(path)
    assert list(full.exemplars.class_names) == ["coin"]
    assert int(full.exemplars.negative.sum()) == 1 and len(full.exemplars) == 2
    assert len(full.image_embeds) == 1
    small_path = client.predict(training_data=json.dumps(TRAINING),
                                example_images=[handle_file(str(COINS))], name="my coins",
                                small=True, api_name="/export")
    assert small_path.endswith("my-coins-small.pt") and load_pt(small_path).image_embeds == {}

    local = tmp_path / "coins.pt"
    shutil.copyfile(path, local)
    from_pt = client.predict(pt_file=handle_file(str(local)),
                             query_images=[handle_file(str(COINS))], **SETTINGS,
                             api_name="/infer_pt")
    direct = _infer(client, queries=(COINS,))
    assert from_pt["classes"] == ["coin"]
    got = from_pt["results"][0]["predictions"]
    want = direct["results"][0]["predictions"]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert a["class"] == b["class"]
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
        assert _xyxy(a) == pytest.approx(_xyxy(b), abs=1e-3)


def test_infer_pt_refuses_a_file_that_is_not_a_prompt_export(client, tmp_path):
    from gradio_client.exceptions import AppError

    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"definitely not a torch file")
    with pytest.raises(AppError, match="not a readable .pt"):
        client.predict(pt_file=handle_file(str(bogus)), query_images=[handle_file(str(COINS))],
                       **SETTINGS, api_name="/infer_pt")
