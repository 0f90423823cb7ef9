"""Fuzzed `/owlv2/infer` bodies (hypothesis): whatever arrives, the answer is a documented status
with a JSON message, never a 500 or a traceback."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from owl_core.rest import RestConfig, create_app

DOCUMENTED = {200, 400, 403, 413, 422, 503}


def _png(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


IMAGE_REFS = st.sampled_from([
    {"type": "base64", "value": _png((40, 30))},
    {"type": "base64", "value": _png((1, 1))},
    {"type": "base64", "value": "data:image/png;base64," + _png((24, 24))},
    {"type": "base64", "value": base64.b64encode(b"GIF89a" + b"\0" * 40).decode()},
    {"type": "base64", "value": ""},
    {"type": "numpy", "value": base64.b64encode(b"\x80\x04K\x01.").decode()},
    {"type": "file", "value": "../../etc/passwd"},
    {"type": "url", "value": "http://169.254.169.254/latest/meta-data"},
    {"type": "pil", "value": "x"},
    {"type": "base64"},
    {},
])
JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                      st.integers(), max_size=2))
NUMBER = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32), JUNK)
BOX = st.fixed_dictionaries(
    {"x": NUMBER, "y": NUMBER, "w": NUMBER, "h": NUMBER},
    optional={"cls": st.one_of(st.text(max_size=30), JUNK),
              "negative": st.one_of(st.booleans(), JUNK), "extra": JUNK})
TRAINING = st.lists(st.fixed_dictionaries({"image": IMAGE_REFS},
                                          optional={"boxes": st.lists(BOX, max_size=3)}),
                    max_size=2)
BODY = st.fixed_dictionaries(
    {"image": st.one_of(IMAGE_REFS, st.lists(IMAGE_REFS, max_size=2), JUNK),
     "training_data": st.one_of(TRAINING, JUNK)},
    optional={"confidence": NUMBER, "visualize_predictions": st.one_of(st.booleans(), JUNK),
              "visualization_labels": st.booleans(), "visualization_stroke_width": NUMBER,
              "iou_threshold": NUMBER, "max_detections": NUMBER,
              "score_mode": st.one_of(st.sampled_from(["reference", "calibrated"]), JUNK),
              "preprocessing": st.one_of(st.sampled_from(["hf", "roboflow"]), JUNK),
              "api_key": JUNK, "model_id": JUNK, "owlv2_version_id": JUNK, "id": JUNK})


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from owl_core.engine.loading import load_model

    model = load_model(str(tiny_model_dir), device="cpu", dtype="fp32", compile=False)
    return TestClient(create_app(model, RestConfig()), raise_server_exceptions=False)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODY)
def test_fuzzed_bodies_get_documented_answers(client, body):
    response = client.post("/owlv2/infer", content=json.dumps(body),
                           headers={"content-type": "application/json"})
    assert response.status_code in DOCUMENTED, (response.status_code, response.text[:500])
    payload = response.json()
    if response.status_code != 200:
        assert isinstance(payload["message"], str) and payload["message"]
        assert "Traceback" not in response.text
