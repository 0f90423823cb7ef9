"""Text prompts over REST (issue 18 item 6): the `phrases` / `combine` extension of
``POST /owlv2/infer``, in the OpenAPI schema, equal to the Python API, refused when bad."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from owl_core.engine.loading import OwlModel
from owl_core.engine.predictor import OwlPredictor
from owl_core.params import DetectParams
from owl_core.rest import RestConfig, create_app

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "images"


def _ref(name: str, size: tuple[int, int]) -> dict:
    buf = io.BytesIO()
    Image.open(ASSETS / name).convert("RGB").resize(size).save(buf, format="PNG")
    return {"type": "base64", "value": base64.b64encode(buf.getvalue()).decode()}


@pytest.fixture
def client(tiny_model: OwlModel) -> TestClient:
    return TestClient(create_app(tiny_model, RestConfig()))


@pytest.mark.parametrize("combine", ["max", "fused"])
def test_phrases_with_boxes_equal_the_python_api(client, tiny_model, combine):
    image = _ref("coins.png", (192, 152))
    box = {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "post", "negative": False}
    body = {"image": image, "training_data": [{"image": image, "boxes": [box]}],
            "phrases": {"coin": ["coin"], "post": ["a post"]}, "confidence": 0.5,
            "combine": combine}
    response = client.post("/owlv2/infer", json=body)
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    pred = OwlPredictor(tiny_model)
    raw = base64.b64decode(image["value"])
    pred.set_examples([{"image": raw, "boxes": [box]}], class_names=["coin", "post"],
                      phrases={"coin": ["coin"], "post": ["a post"]})
    want = pred.detect(raw, DetectParams(confidence=0.5, combine=combine)).to_json()
    assert len(got) == len(want["predictions"]) > 0
    assert [(p["class"], p["class_id"], round(p["confidence"], 5)) for p in got] == [
        (p["class"], p["class_id"], round(p["confidence"], 5)) for p in want["predictions"]]
    assert {p["class"] for p in got} == {"coin", "post"}


def test_a_text_only_request_detects_zero_shot(client):
    image = _ref("chelsea.png", (180, 120))
    body = {"image": image, "training_data": [], "phrases": {"cat": ["cat"]},
            "confidence": 0.5}
    out = client.post("/owlv2/infer", json=body).json()
    assert out["predictions"] and {p["class"] for p in out["predictions"]} == {"cat"}


def test_the_extension_is_in_the_openapi_schema(client):
    raw = client.get("/openapi.json").json()
    body = raw["paths"]["/owlv2/infer"]["post"]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    fields = raw["components"]["schemas"][name]["properties"]
    assert "phrases" in fields and "Roboflow clients never send it" in fields["phrases"][
        "description"]
    assert "fused" in str(fields["combine"])
    assert "phrases" not in raw["components"]["schemas"][name].get("required", [])


@pytest.mark.parametrize("phrases, status, words", [
    # an empty phrase
    ({"coin": [""]}, 422, "the phrase is empty"),
    # control characters
    ({"coin": ["co\u0007in"]}, 422, "control characters"),
    # thousands of phrases
    ({"coin": [f"c{i}" for i in range(3000)]}, 422, "max_phrases_total"),
    # longer than the text tower reads (tiny tokenizer: one token per character)
    ({"coin": ["a very long phrase"]}, 400, "tokens long"),
    # not a list of strings
    ({"coin": [3]}, 422, "string"),
])
def test_bad_phrases_get_a_4xx_that_says_why(client, phrases, status, words):
    image = _ref("coins.png", (64, 48))
    response = client.post("/owlv2/infer", json={"image": image, "training_data": [],
                                                "phrases": phrases})
    assert response.status_code == status, response.text
    assert words in response.json()["message"]
