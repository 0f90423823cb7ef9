"""REST API (`owl_core.rest`): the reference's request shapes, refusals, limits, `.pt` inference.

Images travel as base64 of real files from `assets/images`; detections are compared with the
Python API on the same tiny random checkpoint, never with hard-coded numbers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from owl_core.engine.loading import OwlModel
from owl_core.engine.predictor import OwlPredictor
from owl_core.params import DetectParams
from owl_core.rest import RestConfig, WorkLimits, create_app
from owl_core.rest.work import BusyError, WorkScheduler, WorkSize

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "images"
#: keys of the reference's ObjectDetectionInferenceResponse / ObjectDetectionPrediction
RESPONSE_KEYS = {"inference_id", "frame_id", "time", "image", "predictions", "visualization"}
PREDICTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_confidence",
                   "class_id", "tracker_id", "detection_id", "parent_id"}


def _png(name: str, size: tuple[int, int] | None = None) -> bytes:
    img = Image.open(ASSETS / name).convert("RGB")
    if size:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _ref(data: bytes) -> dict:
    return {"type": "base64", "value": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    # small sizes keep the tiny model fast; non-square so the padding matters
    return {"coins": _png("coins.png", (192, 152)), "chelsea": _png("chelsea.png", (180, 120))}


@pytest.fixture
def client(tiny_model: OwlModel) -> TestClient:
    return TestClient(create_app(tiny_model, RestConfig()))


def _python_api(model: OwlModel, training: list[dict], image: bytes,
                params: DetectParams, **kwargs) -> dict:
    """What the Python API answers for the same examples (class ids over sorted names)."""
    pred = OwlPredictor(model, **kwargs)
    names = sorted({b["cls"] for t in training for b in t["boxes"]})
    pred.set_examples(training, class_names=names)
    return pred.detect(image, params).to_json()


def _boxes(predictions: list[dict]) -> list[tuple]:
    return [(round(p["x"], 3), round(p["y"], 3), round(p["width"], 3), round(p["height"], 3),
             round(p["confidence"], 5), p["class"], p["class_id"]) for p in predictions]


# The reference's own OwlV2 test requests (tests/inference/models_predictions_tests/
# test_owlv2.py in roboflow/inference), with base64 images instead of its URLs.
def _reference_requests(img: dict[str, bytes]) -> dict[str, dict]:
    a, b = _ref(img["coins"]), _ref(img["chelsea"])
    post = {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "post", "negative": False}
    return {
        "single_positive": {"image": a, "training_data": [{"image": a, "boxes": [post]}],
                            "visualize_predictions": True, "confidence": 0.9},
        "positive_and_negative": {"image": a, "training_data": [{"image": a, "boxes": [
            post, {"x": 100, "y": 70, "w": 25, "h": 60, "cls": "post", "negative": True},
            {"x": 140, "y": 100, "w": 21, "h": 30, "cls": "post", "negative": False}]}],
            "visualize_predictions": True, "confidence": 0.9},
        "image_without_prompts": {"image": a, "training_data": [
            {"image": a, "boxes": [post]}, {"image": a, "boxes": []}],
            "visualize_predictions": True, "confidence": 0.9},
        "bad_prompt": {"image": a, "training_data": [{"image": a, "boxes": [
            {"x": 1, "y": 1, "w": 1, "h": 1, "cls": "post", "negative": False}]}],
            "visualize_predictions": True, "confidence": 0.9},
        "bad_prompt_among_good": {"image": a, "training_data": [{"image": a, "boxes": [
            {"x": 1, "y": 1, "w": 1, "h": 1, "cls": "post", "negative": False}, post]}],
            "visualize_predictions": True, "confidence": 0.9},
        "no_training_data": {"image": a, "training_data": []},
        "two_training_images": {"image": a, "training_data": [
            {"image": a, "boxes": [post]},
            {"image": b, "boxes": [{"x": 90, "y": 60, "w": 50, "h": 70, "cls": "post",
                                    "negative": True}]}],
            "visualize_predictions": True, "confidence": 0.9},
    }


@pytest.mark.parametrize("name", ["single_positive", "positive_and_negative",
                                  "image_without_prompts", "bad_prompt",
                                  "bad_prompt_among_good", "no_training_data",
                                  "two_training_images"])
def test_reference_requests_get_reference_responses(client, tiny_model, images, name):
    body = _reference_requests(images)[name]
    response = client.post("/owlv2/infer", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert set(out) == RESPONSE_KEYS  # one image in, one response object out (not a list)
    assert out["image"] == {"width": 192, "height": 152}
    assert isinstance(out["time"], float) and out["time"] >= 0
    for p in out["predictions"]:
        assert set(p) == PREDICTION_KEYS
    assert len({p["detection_id"] for p in out["predictions"]}) == len(out["predictions"])
    if body.get("visualize_predictions"):
        drawn = Image.open(io.BytesIO(base64.b64decode(out["visualization"])))
        assert drawn.format == "JPEG" and drawn.size == (192, 152)
    else:
        assert out["visualization"] is None
    training = [{"image": base64.b64decode(t["image"]["value"]), "boxes": t["boxes"]}
                for t in body["training_data"]]
    expected = _python_api(tiny_model, training, images["coins"],
                           DetectParams(confidence=body.get("confidence", 0.99)))
    assert _boxes(out["predictions"]) == _boxes(expected["predictions"])


def test_confidence_zero_finds_boxes_so_the_comparison_means_something(client, tiny_model,
                                                                       images):
    body = {**_reference_requests(images)["single_positive"], "confidence": 0.0}
    out = client.post("/owlv2/infer", json=body).json()
    assert len(out["predictions"]) > 0
    expected = _python_api(tiny_model, [{"image": images["coins"], "boxes":
                                         body["training_data"][0]["boxes"]}],
                           images["coins"], DetectParams(confidence=0.0))
    assert _boxes(out["predictions"]) == _boxes(expected["predictions"])


def test_roboflow_preprocessing_is_chosen_per_request(client, tiny_model, images):
    body = {**_reference_requests(images)["single_positive"], "confidence": 0.0,
            "visualize_predictions": False}
    training = [{"image": images["coins"], "boxes": body["training_data"][0]["boxes"]}]
    answers = {}
    for mode in ("hf", "roboflow"):
        out = client.post("/owlv2/infer", json={**body, "preprocessing": mode}).json()
        expected = _python_api(tiny_model, training, images["coins"],
                               DetectParams(confidence=0.0), preprocessing=mode)
        assert _boxes(out["predictions"]) == _boxes(expected["predictions"])
        answers[mode] = _boxes(out["predictions"])
    assert answers["hf"] != answers["roboflow"]  # the choice reached the engine
    default = client.post("/owlv2/infer", json=body).json()
    assert _boxes(default["predictions"]) == answers["hf"]


def test_class_ids_number_the_sorted_class_names_not_their_first_seen_order(client, images):
    # Roboflow's responses number classes by their sorted names: "zebra" is drawn first here,
    # yet "apple" is class 0 and "zebra" class 1
    a = _ref(images["coins"])
    body = {"image": a, "confidence": 0.0, "training_data": [{"image": a, "boxes": [
        {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "zebra", "negative": False},
        {"x": 140, "y": 100, "w": 21, "h": 30, "cls": "apple", "negative": False}]}]}
    out = client.post("/owlv2/infer", json=body).json()
    assert out["predictions"]
    assert {(p["class"], p["class_id"]) for p in out["predictions"]} <= {("apple", 0),
                                                                         ("zebra", 1)}


def test_a_list_of_images_gives_a_list_of_responses(client, images):
    body = _reference_requests(images)["single_positive"]
    one = client.post("/owlv2/infer", json={**body, "image": [body["image"]]}).json()
    two = client.post("/owlv2/infer",
                      json={**body, "image": [body["image"], _ref(images["chelsea"])]}).json()
    assert isinstance(one, list) and len(one) == 1 and set(one[0]) == RESPONSE_KEYS
    assert [r["image"] for r in two] == [{"width": 192, "height": 152},
                                        {"width": 180, "height": 120}]


def test_ints_floats_and_unknown_reference_fields_are_accepted(client, images):
    body = {**_reference_requests(images)["single_positive"], "confidence": 0.0,
            "visualize_predictions": False}
    as_floats = {**body, "training_data": [{"image": body["image"], "boxes": [
        {"x": 60.0, "y": 50.0, "w": 30.0, "h": 40.0, "cls": "post", "negative": False}]}]}
    extras = {**body, "api_key": "k", "model_id": "owlv2/x", "owlv2_version_id": "v",
              "disable_preproc_auto_orient": True, "id": "req-1", "something_new": [1, 2]}
    outs = [client.post("/owlv2/infer", json=b, params={"api_key": "k"} if b is extras else None)
            for b in (body, as_floats, extras)]  # the reference also takes ?api_key=
    assert [o.status_code for o in outs] == [200, 200, 200]
    boxes = [_boxes(o.json()["predictions"]) for o in outs]
    assert boxes[0] == boxes[1] == boxes[2] and boxes[0]
    assert outs[2].json()["inference_id"] == "req-1"


def _bad_bodies(img: bytes) -> list[tuple[str, object, int]]:
    ref = _ref(img)
    box = {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "post"}

    def with_box(**change):
        return {"image": ref, "training_data": [{"image": ref, "boxes": [{**box, **change}]}]}

    return [
        ("no image", {"training_data": []}, 422),
        ("no training_data", {"image": ref}, 422),
        ("body is a list", [ref], 422),
        ("unknown image type", {"image": {"type": "ftp", "value": "x"}, "training_data": []}, 422),
        ("image without value", {"image": {"type": "base64"}, "training_data": []}, 422),
        ("zero width", with_box(w=0), 422),
        ("negative height", with_box(h=-3), 422),
        ("no class", {"image": ref, "training_data": [{"image": ref, "boxes": [
            {"x": 1, "y": 1, "w": 2, "h": 2}]}]}, 422),
        ("blank class", with_box(cls="   "), 422),
        ("class name too long", with_box(cls="c" * 201), 422),
        ("x is text", with_box(x="left"), 422),
        ("400-digit width", with_box(w=10 ** 400), 422),
        ("negative is text", with_box(negative="maybe"), 422),
        ("confidence above 1", {"image": ref, "training_data": [], "confidence": 1.5}, 422),
        ("stroke width 0", {"image": ref, "training_data": [],
                            "visualization_stroke_width": 0}, 422),
        ("score mode unknown", {"image": ref, "training_data": [], "score_mode": "x"}, 422),
        ("base64 that is not base64", {"image": {"type": "base64", "value": "%%%"},
                                       "training_data": []}, 400),
        ("base64 of text, not an image", {"image": {"type": "base64", "value": base64.
                                          b64encode(b"hello world" * 9).decode()},
                                          "training_data": []}, 400),
    ]


@pytest.mark.parametrize("case", range(18))
def test_bad_bodies_get_a_4xx_that_says_why(client, images, case):
    name, body, status = _bad_bodies(images["coins"])[case]
    response = client.post("/owlv2/infer", json=body)
    assert response.status_code == status, (name, response.text)
    message = response.json()["message"]
    assert isinstance(message, str) and len(message) > 15 and "Traceback" not in message


def test_nan_and_infinity_are_refused(client, images):
    ref = _ref(images["coins"])
    box = '{"x": NaN, "y": 1, "w": Infinity, "h": 2, "cls": "a"}'
    raw = (f'{{"image": {json.dumps(ref)}, "training_data": [{{"image": {json.dumps(ref)}, '
           f'"boxes": [{box}]}}]}}')
    response = client.post("/owlv2/infer", content=raw,
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "x" in response.json()["message"] and "w" in response.json()["message"]


@pytest.mark.parametrize("kind,value", [("file", "/etc/passwd"), ("file", "assets/images/x.png"),
                                        ("url", "http://example.com/a.png")])
@pytest.mark.parametrize("where", ["image", "training"])
def test_file_and_url_images_are_refused_by_default(client, images, kind, value, where):
    ref = _ref(images["coins"])
    bad = {"type": kind, "value": value}
    body = ({"image": bad, "training_data": []} if where == "image" else
            {"image": ref, "training_data": [{"image": bad, "boxes": []}]})
    response = client.post("/owlv2/infer", json=body)
    assert response.status_code == 403
    message = response.json()["message"]
    assert ("file" in message if kind == "file" else "URL" in message)
    assert "root:" not in message  # nothing of the file was read


def test_numpy_images_are_read_as_bgr_data_only(client, images, tmp_path):
    rgb = np.asarray(Image.open(io.BytesIO(images["coins"])).convert("RGB"))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    body = {**_reference_requests(images)["single_positive"], "confidence": 0.0,
            "visualize_predictions": False}
    as_numpy = {**body, "image": {"type": "numpy",
                                  "value": base64.b64encode(pickle.dumps(bgr)).decode()}}
    a = client.post("/owlv2/infer", json=body).json()
    b = client.post("/owlv2/infer", json=as_numpy).json()
    assert _boxes(a["predictions"]) == _boxes(b["predictions"]) and a["predictions"]

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = {**body, "image": {"type": "numpy",
                              "value": base64.b64encode(pickle.dumps(Evil())).decode()}}
    response = client.post("/owlv2/infer", json=evil)
    assert response.status_code == 403 and "refused" in response.json()["message"]
    assert not marker.exists()


class _Unfilled:
    """Pickles as numpy's array constructor without the state step that carries the pixels."""

    def __init__(self, factory, *args):
        self.factory, self.args = factory, args

    def __reduce__(self):
        return (self.factory, self.args)


@pytest.mark.parametrize("payload", [
    # _reconstruct(ndarray, shape, dtype) and no state step: memory nobody wrote
    _Unfilled(np._core.multiarray._reconstruct, np.ndarray, (960, 960, 3), b"B"),
    # ndarray(shape, dtype) called directly: also unwritten memory
    _Unfilled(np.ndarray, (960, 960, 3), "B"),
], ids=["reconstruct-without-state", "ndarray-call"])
def test_numpy_array_without_its_bytes_is_refused_and_nothing_is_sent_back(client, images,
                                                                            payload):
    raw = pickle.dumps(payload, protocol=4)
    assert len(raw) < 200  # a few bytes that declare 2.7 MB of pixels
    body = {**_reference_requests(images)["single_positive"], "visualize_predictions": True,
            "image": {"type": "numpy", "value": base64.b64encode(raw).decode()}}
    response = client.post("/owlv2/infer", json=body)
    assert 400 <= response.status_code < 500
    assert "visualization" not in response.text and len(response.content) < 2000


def test_numpy_array_whose_bytes_do_not_match_its_shape_is_refused(client, images):
    state = (1, (960, 960, 3), np.dtype("u1"), False, b"\x01" * 12)

    class Short:
        def __reduce__(self):
            return (np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), state)

    body = {**_reference_requests(images)["single_positive"], "visualize_predictions": True,
            "image": {"type": "numpy", "value": base64.b64encode(pickle.dumps(Short())).decode()}}
    response = client.post("/owlv2/infer", json=body)
    assert 400 <= response.status_code < 500 and "numpy" in response.json()["message"]


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_pictures_sent_back_come_only_from_the_request_bytes(client, images, protocol):
    black = np.zeros((96, 128, 3), np.uint8)  # every pixel the request carries is 0
    body = {**_reference_requests(images)["single_positive"], "visualize_predictions": True,
            "confidence": 1.0,  # nothing drawn over it
            "image": {"type": "numpy",
                      "value": base64.b64encode(pickle.dumps(black, protocol=protocol)).decode()}}
    response = client.post("/owlv2/infer", json=body)
    assert response.status_code == 200, response.text
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(
        response.json()["visualization"]))).convert("RGB"))
    assert picture.shape == (96, 128, 3) and int(picture.max()) <= 8  # JPEG noise at most


def test_body_over_the_limit_is_refused_with_413(client, images, monkeypatch):
    monkeypatch.setenv("OWL_MAX_REQUEST_BYTES", "20000")
    body = _reference_requests(images)["single_positive"]  # > 20 kB of base64
    declared = client.post("/owlv2/infer", json=body)
    assert declared.status_code == 413 and "max_request_bytes" in declared.json()["message"]

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(50):
            yield b" " * 1000

    streamed = client.post("/owlv2/infer", content=chunks(),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    small = client.post("/owlv2/infer", json={"image": {"type": "base64", "value": "x"},
                                              "training_data": []})
    assert small.status_code != 413


def test_too_many_images_per_request_is_refused(client, images, monkeypatch):
    monkeypatch.setenv("OWL_MAX_IMAGES_PER_REQUEST", "2")
    body = _reference_requests(images)["single_positive"]
    response = client.post("/owlv2/infer", json={**body, "image": [body["image"]] * 3})
    assert response.status_code == 413
    assert "max_images_per_request" in response.json()["message"]


def test_work_over_the_cap_is_refused_before_running(tiny_model, images):
    app = create_app(tiny_model, RestConfig(work=WorkLimits(max_work_units=100)))
    body = _reference_requests(images)["single_positive"]
    response = TestClient(app).post("/owlv2/infer", json=body)
    assert response.status_code == 413 and "split it" in response.json()["message"]


def test_time_budget_stops_a_request(tiny_model, images):
    app = create_app(tiny_model, RestConfig(work=WorkLimits(time_budget_s=0.0)))
    body = _reference_requests(images)["single_positive"]
    response = TestClient(app).post("/owlv2/infer", json=body)
    assert response.status_code == 413 and "time budget" in response.json()["message"]


def test_unexpected_errors_are_500_without_details(tiny_model, images, monkeypatch):
    app = create_app(tiny_model, RestConfig())

    def crash(*args):
        raise RuntimeError("boom at /srv/secret/path.py")

    monkeypatch.setattr(app.state.owl_rest, "owlv2", crash)
    response = TestClient(app, raise_server_exceptions=False).post(
        "/owlv2/infer", json=_reference_requests(images)["single_positive"])
    assert response.status_code == 500
    assert "/srv" not in response.text and "boom" not in response.text


# ---------------------------------------------------------------------------- .pt over HTTP
@pytest.fixture
def exported_pt(tiny_model, images, tmp_path) -> Path:
    pred = OwlPredictor(tiny_model)
    pred.set_examples([{"image": images["coins"], "boxes": [
        {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "post"},
        {"x": 140, "y": 100, "w": 21, "h": 30, "cls": "coin"},
        {"x": 100, "y": 70, "w": 25, "h": 60, "cls": "post", "negative": True}]}])
    return pred.export(tmp_path / "prompts.pt")


def _files(images: dict[str, bytes]) -> list:
    return [("images", ("coins.png", images["coins"], "image/png")),
            ("images", ("chelsea.png", images["chelsea"], "image/png"))]


@pytest.mark.parametrize("how", ["by_name", "uploaded"])
def test_pt_inference_over_http_equals_the_python_api(tiny_model, images, exported_pt, how):
    app = create_app(tiny_model, RestConfig(weights={"mine": str(exported_pt)}))
    client = TestClient(app)
    form = {"confidence": "0.2", "iou_threshold": "0.5", "max_detections": "50"}
    if how == "by_name":
        response = client.post("/infer", data={**form, "weights": "mine"}, files=_files(images))
    else:
        response = client.post("/infer", data=form, files=[
            *_files(images), ("weights_file", ("p.pt", exported_pt.read_bytes(), "x/y"))])
    assert response.status_code == 200, response.text
    out = response.json()
    python = OwlPredictor.from_pt(exported_pt, model=tiny_model)
    params = DetectParams(confidence=0.2, iou_threshold=0.5, max_detections=50)
    expected = [python.detect(images[k], params).to_json() for k in ("coins", "chelsea")]
    assert [r["image"] for r in out] == [e["image"] for e in expected]
    assert [_boxes(r["predictions"]) for r in out] == [_boxes(e["predictions"])
                                                       for e in expected]
    assert any(r["predictions"] for r in out)
    listed = client.get("/weights").json()
    # a local model is named by its folder's name: the server's folders are not shown
    assert listed == [{"name": "mine", "class_names": list(python.class_names),
                       "huggingface_id": Path(tiny_model.model_id).name}]
    assert str(Path(tiny_model.model_id).parent) not in client.get("/weights").text


@pytest.mark.parametrize("data,upload,needle", [
    ({"weights": "nope"}, None, "no .pt named"),          # unknown name
    ({}, None, "no prompts"),                              # neither name nor upload
    ({"weights": "mine"}, b"x", "either"),                 # both
    ({}, b"not a pickle at all", "not a readable .pt"),    # corrupt upload
])
def test_pt_requests_that_cannot_work_get_400_without_server_paths(
        tiny_model, images, exported_pt, data, upload, needle):
    client = TestClient(create_app(tiny_model, RestConfig(weights={"mine": str(exported_pt)})))
    files = _files(images)
    if upload is not None:
        files.append(("weights_file", ("p.pt", upload, "application/octet-stream")))
    response = client.post("/infer", data=data, files=files)
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert needle in message
    assert "/tmp" not in message and str(exported_pt.parent) not in message


@pytest.mark.parametrize("shared_cache", [False, True])
def test_uploaded_pt_embeddings_never_reach_other_requests(tiny_model, images, exported_pt,
                                                           tmp_path, shared_cache):
    import torch

    from owl_core.engine.cache import EmbeddingCache
    from owl_core.engine.embedding import ImageEmbeddings

    payload = torch.load(exported_pt, weights_only=True)
    assert payload["image_embeds"], "the export must carry image embeddings for this test"
    for key, (obj, boxes, embeds, shift, scale) in list(payload["image_embeds"].items()):
        payload["image_embeds"][key] = (obj, torch.full_like(boxes, 0.25), embeds, shift, scale)
    poisoned = tmp_path / "poisoned.pt"
    torch.save(payload, poisoned)
    cache = EmbeddingCache(device="cpu", device_bytes=2**26, host_bytes=2**26,
                           value_type=ImageEmbeddings) if shared_cache else None
    app = create_app(tiny_model, RestConfig(shared_cache=cache))
    client = TestClient(app)
    uploaded = client.post("/infer", data={"confidence": "0"}, files=[
        ("images", ("coins.png", images["coins"], "image/png")),
        ("weights_file", ("p.pt", poisoned.read_bytes(), "x/y"))])
    assert uploaded.status_code == 200
    planted = uploaded.json()[0]["predictions"]  # the file's own request does use them
    assert planted and all(round(p["width"]) == round(p["height"]) == 48 for p in planted)
    body = {**_reference_requests(images)["single_positive"], "confidence": 0.0,
            "visualize_predictions": False}
    after = client.post("/owlv2/infer", json=body).json()
    clean = _python_api(tiny_model, [{"image": images["coins"],
                                      "boxes": body["training_data"][0]["boxes"]}],
                        images["coins"], DetectParams(confidence=0.0))
    assert _boxes(after["predictions"]) == _boxes(clean["predictions"])


# ---------------------------------------------------------------------------- lanes
def test_cheap_requests_do_not_wait_behind_an_expensive_one():
    scheduler = WorkScheduler(WorkLimits(heavy_images=1, light_workers=1, heavy_workers=1,
                                         max_waiting=0))
    release = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(30)
        return "heavy"

    async def scenario() -> tuple[str, bool, str]:
        heavy = asyncio.ensure_future(scheduler.run(WorkSize(5, 10), slow))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        light = await scheduler.run(WorkSize(1, 10), lambda: "light")
        still_running = not heavy.done()
        try:
            await scheduler.run(WorkSize(5, 10), lambda: "second heavy")
            busy = "admitted"
        except BusyError:
            busy = "busy"
        release.set()
        assert await heavy == "heavy"
        return light, still_running, busy

    try:
        light, still_running, busy = asyncio.run(scenario())
    finally:
        release.set()
        scheduler.shutdown()
    assert light == "light" and still_running  # answered while the heavy one was running
    assert busy == "busy"                      # a full lane says so instead of queueing


def test_busy_lane_answers_503_with_retry_after(tiny_model, images, monkeypatch):
    app = create_app(tiny_model, RestConfig())

    async def busy(*args):
        raise BusyError("the server is busy; retry in a few seconds.")

    monkeypatch.setattr(app.state.owl_rest.scheduler, "run", busy)
    response = TestClient(app).post("/owlv2/infer",
                                    json=_reference_requests(images)["single_positive"])
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_requests_beyond_the_in_flight_bound_get_503(tiny_model, images, monkeypatch):
    app = create_app(tiny_model, RestConfig(work=WorkLimits(max_in_flight=1)))
    release, entered = threading.Event(), threading.Event()

    def held(*args):
        entered.set()
        release.wait(30)
        return []

    monkeypatch.setattr(app.state.owl_rest, "owlv2", held)
    body = {**_reference_requests(images)["single_positive"], "image": []}
    with TestClient(app) as client:
        first: dict = {}
        thread = threading.Thread(
            target=lambda: first.update(r=client.post("/owlv2/infer", json=body)))
        thread.start()
        try:
            assert entered.wait(30)
            second = client.post("/owlv2/infer", json=body)
            docs = client.get("/openapi.json")  # outside the REST routes: not counted
        finally:
            release.set()
            thread.join(30)
        third = client.post("/owlv2/infer", json=body)
    assert second.status_code == 503 and second.headers["retry-after"] == "5"
    assert docs.status_code == 200
    assert first["r"].status_code == 200 and third.status_code == 200


def test_a_stalled_body_is_cut_off_with_408(tiny_model):
    from owl_core.rest.body_limit import BodyLimitMiddleware

    calls: list[str] = []

    async def app(scope, receive, send):  # reads the body like FastAPI would, then answers
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        calls.append("answered")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario(stall: bool) -> list[dict]:
        parts = [{"type": "http.request", "body": b"{", "more_body": True}]
        if not stall:
            parts.append({"type": "http.request", "body": b"}", "more_body": False})

        async def receive():
            if parts:
                return parts.pop(0)
            await asyncio.sleep(3600)  # the client went quiet

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        guard = BodyLimitMiddleware(app, ("/owlv2/",), lambda: 1000, receive_timeout_s=0.2)
        await guard({"type": "http", "path": "/owlv2/infer", "headers": []}, receive, send)
        return sent

    stalled = asyncio.run(scenario(stall=True))
    assert stalled[0]["status"] == 408 and b"stopped arriving" in stalled[1]["body"]
    assert calls == []
    whole = asyncio.run(scenario(stall=False))
    assert whole[0]["status"] == 200 and calls == ["answered"]


def test_a_damaged_png_is_a_4xx_not_detections_on_black(client, images):
    damaged = bytearray(images["coins"])
    start = damaged.index(b"IDAT") + 44  # inside the zlib stream: the header stays readable
    damaged[start:start + 4] = bytes(b ^ 0xFF for b in damaged[start:start + 4])
    box = {"x": 60, "y": 50, "w": 30, "h": 40, "cls": "coin"}
    response = client.post("/owlv2/infer", json={
        "image": _ref(bytes(damaged)), "confidence": 0.0,
        "training_data": [{"image": _ref(images["coins"]), "boxes": [box]}]})
    assert response.status_code == 400, response.text[:300]
    assert "could not read the image" in response.json()["message"]
