"""The studio's handlers called directly (no browser) on the tiny random model: the embedding
step (batches, progress, no session lock held while the vision tower runs) and the preview
refresh (never embeds, skips what did not change)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from owl_core.engine.prompt_file import load_pt
from ui import labels as L

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "images"
SETTINGS = (0.5, 0.3, 300, "reference", False)  # confidence, NMS IoU, max, mode, show examples
COIN = {"xmin": 131, "ymin": 28, "xmax": 180, "ymax": 74, "label": "object",
        "color": "rgb(30, 136, 229)"}


@pytest.fixture()
def studio(spy_studio):
    return spy_studio


def _copies(tmp_path: Path, *names: str, prefix: str = "up") -> list[str]:
    """Copies of bundled images to upload (under new names, as a user's files would be)."""
    out = []
    for i, name in enumerate(names):
        target = tmp_path / f"{prefix}{i}-{name}"
        shutil.copyfile(ASSETS / name, target)
        out.append(str(target))
    return out


def _payload(s, record, *boxes) -> dict:
    """What the example annotator sends for `record` showing `boxes`."""
    return {"image": {"path": s.path(record)}, "boxes": [dict(b) for b in boxes]}


def _value(out: dict, component):
    """What a handler sent to a component (a plain value or a gr.update's value)."""
    sent = out[component]
    return sent["value"] if isinstance(sent, dict) and sent.get("__type__") == "update" else sent


def _shift(box: dict, dx: float) -> dict:
    return {**box, "xmin": box["xmin"] + dx, "xmax": box["xmax"] + dx}


def test_embedding_runs_in_batches_examples_first_with_progress(studio, tmp_path):
    request = SimpleNamespace(session_hash="batches")
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png", "chelsea.png",
                                             "coffee.png"), request)
    studio.images.on_upload_queries(_copies(tmp_path, "rocket.jpg", "astronaut.jpg"), request)
    steps = []
    out = studio.embedding.on_embed(request, progress=lambda value, **kw: steps.append(value))
    s = studio.session(request)
    # batch size 2: examples (all patches kept) in batches of their own, then the queries
    assert s.predictor.calls == [(2, 2, True), (1, 2, True), (2, 2, False)]
    assert steps == [(0, 5), (2, 5), (3, 5), (5, 5)]
    assert all(s.embedded(r) for r in s.examples() + s.queries())
    assert "all embedded" in out[studio.c.status]


def test_the_embedding_step_leaves_the_session_free_while_the_tower_runs(studio, tmp_path):
    request = SimpleNamespace(session_hash="responsive")
    s = studio.session(request)
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)
    studio.images.on_upload_queries(_copies(tmp_path, "chelsea.png"), request)
    s.predictor.gate = threading.Event()
    worker = threading.Thread(target=studio.embedding.on_embed, args=(request,),
                              kwargs={"progress": lambda *a, **k: None})
    worker.start()
    try:
        assert s.predictor.waiting.wait(30)  # the example is done; the query is "embedding"
        assert s.lock.acquire(timeout=1), "the embedding step holds the session lock"
        s.lock.release()
        # a box drawn meanwhile is answered at once, from the example's embedding
        example = s.examples()[0]
        start = time.perf_counter()
        out = studio.boxes.on_boxes_edited(_payload(s, example, COIN), *SETTINGS, request)
        assert time.perf_counter() - start < 5
        assert _value(out, studio.c.diag_table)[0][6] == "matched"
        shown, = _value(out, studio.c.preview)["images"]  # the query waits for its turn
        assert shown["note"] == "embedding…" and shown["boxes"] == []
        assert worker.is_alive()
    finally:
        s.predictor.gate.set()
        worker.join(30)
    out = studio.preview.on_settings(*SETTINGS, request)
    shown, = _value(out, studio.c.preview)["images"]
    assert (shown["name"], shown["note"]) == ("up0-chelsea.png", "")


def test_the_preview_never_embeds_an_image_again(studio, tmp_path):
    request = SimpleNamespace(session_hash="misses")
    # chelsea twice (as an example and as a query): one embedding, with all patches
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png", "chelsea.png"), request)
    studio.images.on_upload_queries(_copies(tmp_path, "chelsea.png", "rocket.jpg", prefix="q"),
                                    request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    s = studio.session(request)
    assert s.predictor.cache_stats().misses == 3
    example = s.examples()[0]
    for n in range(6):  # move the box, slide the confidence, toggle example previews
        box = _shift(COIN, 4 * n)
        studio.boxes.on_boxes_edited(_payload(s, example, box), *SETTINGS, request)
        studio.preview.on_settings(0.4 + n / 20, 0.3, 300, "reference", n % 2 == 1, request)
    stats = s.predictor.cache_stats()
    assert stats.misses == 3 and stats.hits > 10
    assert s.predictor.calls == [(2, 2, True), (2, 2, False)]


def test_a_box_on_an_image_not_embedded_yet_waits_instead_of_embedding(studio, tmp_path):
    request = SimpleNamespace(session_hash="waiting")
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)
    s = studio.session(request)
    out = studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN), *SETTINGS,
                                       request)
    assert "still being embedded" in out[studio.c.diag_warning]
    assert s.predictor.cache_stats().misses == 0  # the edit did not run the vision tower
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    out = studio.preview.on_settings(*SETTINGS, request)
    assert out[studio.c.diag_warning] == "✓ The box snapped to a predicted box."


def test_unchanged_outputs_and_pictures_are_not_sent_again(studio, tmp_path):
    request = SimpleNamespace(session_hash="skips")
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)
    studio.images.on_upload_queries(_copies(tmp_path, "chelsea.png", "rocket.jpg"), request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    s = studio.session(request)
    first = studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN), *SETTINGS,
                                         request)
    value = _value(first, studio.c.preview)
    pictures = [im["url"].split("=", 1)[1] for im in value["images"]]
    assert all(Path(p).suffix == ".jpg" and Path(p).is_file() for p in pictures)
    # the same state again: nothing to send
    assert studio.preview.on_settings(*SETTINGS, request) == gr.skip()
    # a setting that changes no detection (max detections above their number, down to the
    # preview's floor) changes nothing on screen either: nothing is sent
    n = max(len(im["boxes"]) for im in value["images"])
    out = studio.preview.on_settings(0.5, 0.3, n + 1, "reference", False, request)
    assert out == gr.skip()
    # another confidence: the same detections (the page cuts them itself) and the confidence
    # for the page to start from; the diagnostics (same boxes) are not resent, unless the
    # "wins" column (shown detections each box wins, at the confidence) changed
    out = studio.preview.on_settings(0.95, 0.3, n + 1, "reference", False, request)
    assert studio.c.preview in out and studio.c.diag_image not in out
    assert studio.c.diag_table not in out or out[studio.c.diag_table] != first[
        studio.c.diag_table]
    again = _value(out, studio.c.preview)
    assert again["confidence"] == 0.95 and again["images"] == value["images"]
    # as plain values: a gr.update would make Gradio rebuild the component (~5-10 ms)
    assert isinstance(out[studio.c.preview], dict) and "__type__" not in out[studio.c.preview]


def test_embed_batch_size_follows_the_device(tiny_model, tmp_path):
    from ui import Studio, StudioConfig
    from ui.handlers.studio import default_embed_batch_size

    assert default_embed_batch_size(SimpleNamespace(device=SimpleNamespace(type="cuda"))) == 4
    assert Studio(tiny_model, StudioConfig(work_dir=str(tmp_path))).config.embed_batch_size == 1
    chosen = StudioConfig(work_dir=str(tmp_path), embed_batch_size=3)
    assert Studio(tiny_model, chosen).config.embed_batch_size == 3


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims `width` x `height` pixels (a decompression bomb's
    header, without the bomb)."""
    import struct
    import zlib

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("width, height", [
    (13000, 13000),   # over the 80 MP limit, under PIL's own bomb guard
    (30000, 30000),   # PIL's DecompressionBombError territory
])
def test_a_huge_image_is_refused_from_its_header_with_a_clear_message(studio, tmp_path, width,
                                                                      height):
    request = SimpleNamespace(session_hash=f"bomb{width}")
    bomb = _bomb_png(tmp_path / "huge.png", width, height)
    # between PIL's own limit and twice it, PIL opens the file with a warning; ours refuses it
    warned = (pytest.warns(Image.DecompressionBombWarning)
              if Image.MAX_IMAGE_PIXELS < width * height <= 2 * Image.MAX_IMAGE_PIXELS
              else contextlib.nullcontext())
    with warned, pytest.raises(gr.Error) as info:
        studio.images.on_upload_examples([str(bomb)], request)
    message = str(info.value)
    assert "huge.png" in message and "too large" in message
    assert str(tmp_path) not in message  # no server paths
    s = studio.session(request)
    assert s.examples() == [] and not list((s.core.folder / "images").glob("*"))


def test_a_tab_dropped_from_memory_comes_back_from_disk(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), projects_dir=str(tmp_path / "p"),
                          max_sessions=2, cache_bytes=256 * 2**20)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)
    try:
        tab = SimpleNamespace(session_hash="first", query_params={})
        studio.on_load(None, tab)
        studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), tab)
        studio.images.on_upload_queries(_copies(tmp_path, "chelsea.png", prefix="q"), tab)
        studio.embedding.on_embed(tab, progress=lambda *a, **k: None)
        s = studio.session(tab)
        studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN), 0.5, 0.4, 123,
                                     "calibrated", False, tab)
        for other in ("second", "third"):  # two more tabs: "first" is dropped (LRU, bound 2)
            studio.on_load(None, SimpleNamespace(session_hash=other, query_params={}))
        assert "first" not in studio.store.ids()
        # its next event finds the project on disk: boxes, classes, settings, embeddings
        out = studio.preview.on_settings(0.5, 0.4, 123, "calibrated", False, tab)
        again = studio.session(tab)
        assert again is not s and studio.store.restored == 1
        assert again.project_id == s.project_id
        assert [p.cls for p in again.examples()[0].prompts] == ["object"]
        assert (again.settings.confidence, again.settings.max_detections,
                again.settings.score_mode) == (0.5, 123, "calibrated")
        assert _value(out, studio.c.diag_table)[0][6] == "matched"
        shown, = _value(out, studio.c.preview)["images"]
        assert (shown["name"], shown["note"]) == ("q0-chelsea.png", "")  # from the cache
    finally:
        studio.close()


def test_api_calls_take_no_session_slot(tiny_model, tmp_path):
    import json

    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), max_sessions=1,
                          cache_bytes=256 * 2**20)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)
    try:
        tab = SimpleNamespace(session_hash="person", query_params={})
        studio.on_load(None, tab)
        person = studio.session(tab)
        training = json.dumps([{"image": 0, "boxes": [
            {"x": 155.5, "y": 51.0, "w": 49, "h": 46, "cls": "coin", "negative": False}]}])
        coins = _copies(tmp_path, "coins.png")
        for n in range(8):
            api = SimpleNamespace(session_hash=f"client{n}")
            out = studio.api.api_infer(training, coins, coins, 0.5, 0.3, 300, "reference", api)
            assert out["classes"] == ["coin"]
            exported = studio.api.api_export(training, coins, "coins", True, api)
            # a download names the model by its folder's name, never the server's folders
            assert load_pt(exported).huggingface_id == Path(tiny_model.model_id).name
        assert studio.store.ids() == ["person"] and studio.session(tab) is person
        assert studio.store.restored == 0
        # each export's folder goes once Gradio has had time to copy the file
        assert len(studio.exports) == 8
        assert studio.exports.sweep(now=time.time() + studio.exports.ttl + 1) == 8
        assert len(studio.exports) == 0
    finally:
        studio.close()


def test_api_training_data_may_be_a_project_file_read_by_the_project_reader(studio, tmp_path):
    import json

    from owl_core.project.library import ProjectLibrary
    from owl_core.project.model import save_project

    core = ProjectLibrary(tmp_path / "projects").create("coins", classes=["coin"])
    record = core.add_image(ASSETS / "coins.png", "coins.png")
    core.set_prompt_boxes(record.id, [{"xyxy": [131, 28, 180, 74], "cls": "coin",
                                       "negative": True}])
    save_project(core)
    upload = tmp_path / "uploads" / "coins.png"
    upload.parent.mkdir()
    shutil.copyfile(ASSETS / "coins.png", upload)
    text = json.dumps(core.to_dict())
    (entry,), phrases = studio.api._api_training(text, [str(upload)])
    assert phrases == {}
    assert entry["image"] == str(upload)
    assert entry["boxes"] == [{"x": 155.5, "y": 51.0, "w": 49.0, "h": 46.0, "cls": "coin",
                               "negative": True}]
    broken = core.to_dict()
    broken["classes"] = ["cup"]  # a prompt of a class the project does not have
    with pytest.raises(gr.Error, match="coin"):
        studio.api.api_infer(json.dumps(broken), [str(upload)], [str(upload)], 0.5, 0.3, 300,
                             "reference", SimpleNamespace(session_hash="api"))


def test_two_tabs_on_one_project_never_overwrite_each_other(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), cache_bytes=64 * 2**20)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)
    try:
        one = SimpleNamespace(session_hash="one", query_params={})
        studio.on_load(None, one)
        pid = studio.session(one).project_id
        two = SimpleNamespace(session_hash="two", query_params={"project": pid})
        studio.on_load(None, two)
        assert studio.session(two).project_id == pid
        studio.classes.on_add_class("coin", one)
        studio.store.saver.flush(studio.session(one))
        studio.classes.on_add_class("cup", two)  # tab two still shows the project without coin
        studio.store.saver.flush(studio.session(two))
        assert studio.projects.open(pid).classes == ["coin"]  # tab one's work kept
        assert "another tab" in studio.session(two).save_error
        # a reload (a new page, same project in the URL) continues from the saved project
        reloaded = SimpleNamespace(session_hash="two-reloaded", query_params={"project": pid})
        studio.on_load(None, reloaded)
        assert studio.session(reloaded).core.classes == ["coin"]
        studio.classes.on_add_class("cup", reloaded)
        studio.store.saver.flush(studio.session(reloaded))
        assert studio.projects.open(pid).classes == ["coin", "cup"]
    finally:
        studio.close()


def test_the_placeholder_class_goes_once_a_real_class_is_named_unless_boxes_use_it(studio,
                                                                                  tmp_path):
    request = SimpleNamespace(session_hash="classes", query_params={})
    studio.on_load(None, request)
    s = studio.session(request)
    assert s.core.classes == ["object"]
    out = studio.classes.on_add_class("coin", request)
    assert s.core.classes == ["coin"] and s.active_class == "coin"
    assert out[studio.c.class_pick]["choices"] == ["coin"]
    assert "object" not in out[studio.c.legend]
    # a box drawn with the placeholder keeps it, through an add and a rename
    studio.classes.on_add_class("object", request)
    studio.classes.on_class_pick("object", request)
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)  # a real image
    studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN), *SETTINGS, request)
    studio.classes.on_add_class("cup", request)
    assert s.core.classes == ["coin", "object", "cup"]
    studio.classes.on_remove_class("coin", request)  # nothing of it: goes at once
    studio.classes.on_rename_class("cup", "mug", request)
    assert s.core.classes == ["object", "mug"]
    # once no box uses it, the next rename drops it and the boxes are recoloured
    mug = L.box_for_label((131, 28, 180, 74), "mug", False, s.core.classes)
    studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], mug), *SETTINGS, request)
    out = studio.classes.on_rename_class("mug", "cup", request)
    assert s.core.classes == ["cup"] and s.active_class == "cup"
    (box,) = out[studio.c.annotator]["value"]["boxes"]
    assert box["label"] == "cup" and box["color"] == L.hex_to_rgb(L.class_color(0))


def test_the_match_threshold_slider_applies_to_the_predictor_is_saved_and_named_in_warnings(
        studio, tmp_path):
    request = SimpleNamespace(session_hash="match", query_params={})
    studio.on_load(None, request)
    s = studio.session(request)
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN), *SETTINGS, request)
    iou = float(s.report.boxes[0].iou)
    assert s.report.boxes[0].matched and iou < 0.85
    above = round(iou + 0.05, 2)
    out = studio.preview.on_match_threshold(above, *SETTINGS, request)
    assert s.predictor.match_threshold == above and not s.report.boxes[0].matched
    assert (f"Lower **Match threshold** (now {above:.2f}; under **Preview options**"
            in out[studio.c.diag_warning])
    assert "--match-threshold" not in out[studio.c.diag_warning]
    # another slider's event keeps it; a value out of range changes nothing
    studio.preview.on_settings(0.4, 0.3, 300, "reference", False, request)
    assert s.predictor.match_threshold == above
    with pytest.raises(gr.Error, match="between 0.05 and 0.9"):
        studio.preview.on_match_threshold(0.95, *SETTINGS, request)
    assert s.predictor.match_threshold == above
    out = studio.preview.on_match_threshold(0.05, *SETTINGS, request)
    assert out[studio.c.diag_warning] == "✓ The box snapped to a predicted box."
    # saved with the project and shown again when it opens
    studio.store.saver.flush(s)
    assert studio.projects.open(s.project_id).settings.match_threshold == 0.05
    reopened = SimpleNamespace(session_hash="match-again", query_params={"project": s.project_id})
    out = studio.on_load(None, reopened)
    assert _value(out, studio.c.match_threshold) == 0.05
    studio.preview.on_settings(*SETTINGS, reopened)  # the page's first refresh applies it
    assert studio.session(reopened).predictor.match_threshold == 0.05


def test_the_preview_sends_every_detection_down_to_the_floor_and_they_cut_exactly(studio,
                                                                                 tmp_path):
    """The page cuts the preview's detections at the slider's confidence itself; cut there they
    are exactly the detections made at that confidence (NMS and a negative box included), and
    the server's own detections at the confidence (counts, review, meter) are the same."""
    from ui.preview_view import PREVIEW_FLOOR, visible

    request = SimpleNamespace(session_hash="floor", query_params={})
    studio.images.on_upload_examples(_copies(tmp_path, "coins.png"), request)
    studio.images.on_upload_queries(_copies(tmp_path, "coins.png", "chelsea.png", prefix="q"),
                                    request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    s = studio.session(request)
    negative = {"xmin": 185, "ymin": 104, "xmax": 227, "ymax": 145,
                "label": L.negative_label("object")}
    out = studio.boxes.on_boxes_edited(_payload(s, s.examples()[0], COIN, negative),
                                       *SETTINGS, request)
    value = _value(out, studio.c.preview)
    scores = [b[5] for im in value["images"] for b in im["boxes"]]
    assert value["floor"] == PREVIEW_FLOOR and min(scores) >= PREVIEW_FLOOR
    assert min(scores) < SETTINGS[0] < max(scores)  # the slider has something to show both ways
    paths = [s.path(q) for q in s.queries()]
    for confidence in (0.3, 0.5, 0.62, 0.8):
        direct = s.predictor.detect_many(paths, confidence=confidence, iou_threshold=0.3,
                                         max_detections=300, score_mode="reference")
        cut = visible(value, confidence)
        assert [[[round(float(v), 1) for v in xyxy] for xyxy in d.xyxy] for d in direct] == \
            [[b[:4] for b in im] for im in cut]
        assert [[round(float(c), 4) for c in d.confidence] for d in direct] == \
            [[b[5] for b in im] for im in cut]
    server = [s.results[p] for p in paths]  # at the settings' confidence, 0.5
    direct = s.predictor.detect_many(paths, confidence=0.5, iou_threshold=0.3,
                                     max_detections=300, score_mode="reference")
    for mine, theirs in zip(server, direct, strict=True):
        assert mine.xyxy.tolist() == theirs.xyxy.tolist()
        assert mine.confidence.tolist() == theirs.confidence.tolist()


def test_a_huge_project_id_in_the_url_is_logged_short_once(studio, caplog):
    hostile = "x" * 5000
    with caplog.at_level("DEBUG"):
        studio.on_load(None, SimpleNamespace(session_hash="h", query_params={"project": hostile}))
    logged = [r.getMessage() for r in caplog.records if r.name.startswith(("ui", "owl"))]
    refused = [line for line in logged if "not a project id" in line]
    assert len(refused) == 1 and len(refused[0]) < 300, refused
    assert not any("x" * 100 in line for line in logged)
    assert studio.session(SimpleNamespace(session_hash="h")).project_id != hostile
    studio.close()


def test_a_user_mistake_is_one_log_line_and_no_traceback(studio, caplog):
    """An empty "Add folder" click: the page says what to do; the server log gets one line
    (Gradio prints a gr.Error's traceback unless told not to)."""
    import logging

    request = SimpleNamespace(session_hash="mistake", query_params={})
    studio.on_load(None, request)
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as raised:
        studio.images.on_folder_queries("", request)
    assert raised.value.print_exception is False
    lines = [r for r in caplog.records if r.name.startswith("ui")]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert "on_folder_queries" in lines[0].getMessage()
