"""The review traps of issue 16, driven through the handlers as the page drives them (a real
`gr.Request`): what the meter promises is what Apply gives, undefined metrics read "–", a click
or an echo never changes an image's status, "Rejected -> negatives" adds exactly what the person
deleted."""

from __future__ import annotations

import gradio as gr
import pytest
import review_helpers
import test_saving
from test_saving import SETTINGS, open_chelsea, studio  # noqa: F401 -- the fixture

from owl_core.params import CONFIDENCE_STEP
from owl_core.project.model import Label

A, B, C = (box for box, _, _ in review_helpers.SCRIPT)


def _value(sent):
    return sent["value"] if isinstance(sent, dict) and sent.get("__type__") == "update" else sent


def _meter(app, request, confidence: float) -> tuple[dict, str]:
    out = app.meter.on_meter(confidence, *SETTINGS[1:], request)
    rows = _value(out[app.c.meter_table]) or []
    return {r[0]: r for r in rows}, out[app.c.meter_md]


def test_apply_suggested_reads_exactly_what_the_meter_promised(studio, tmp_path, monkeypatch):  # noqa: F811
    """The hit scores 0.9452: the suggestion rounded to the slider (0.95) dropped it (F1 0
    after Apply, 1.0 promised). The suggestion is a slider value now."""
    script = [(A, "coin", 0.9452), (B, "coin", 0.80)]
    monkeypatch.setattr(review_helpers, "SCRIPT", script)
    monkeypatch.setattr(test_saving, "SCRIPT", script)
    request = gr.Request(session_hash="apply-suggested")
    s, item = open_chelsea(studio, request, tmp_path)
    with s.lock:
        s.core.set_labels(item.id, [Label(A, "coin", "accepted", 0.9452)], "done")
    _, text = _meter(studio, request, 0.2)
    promised = text.split("Suggested confidence")[1]
    applied = studio.meter.on_apply_suggested(request)
    assert applied == pytest.approx(round(applied / CONFIDENCE_STEP) * CONFIDENCE_STEP)
    rows, text = _meter(studio, request, applied)
    overall = rows["all"]
    assert f"**{applied:.2f}** (best F1 {overall[3]}: P {overall[1]}, R {overall[2]})" \
        in promised
    assert overall[3] == "1.000" and overall[5:] == [1, 0, 0]


def test_a_class_with_nothing_to_measure_reads_dashes(studio, tmp_path):  # noqa: F811
    request = gr.Request(session_hash="dashes")
    s, item = open_chelsea(studio, request, tmp_path)
    with s.lock:
        s.core.set_labels(item.id, [Label(A, "coin", "accepted", 0.95)], "done")
    rows, _ = _meter(studio, request, 0.9)
    assert rows["cat"][1:4] == ["–", "–", "–"]  # no cat label, no cat detection
    assert rows["coin"][1:4] == ["1.000", "1.000", "1.000"]


def _status(s, item) -> str:
    with s.lock:
        return s.core.image(item.id).status


def _payload(item, boxes) -> dict:
    """What the review annotator sends (its image is recognised by the file name)."""
    return {"image": {"path": item.file}, "boxes": [dict(b) for b in boxes]}


def test_a_late_echo_of_an_earlier_view_never_puts_an_image_in_review(studio, tmp_path):  # noqa: F811
    """New detections (a confidence move) re-show an image nobody touched; the echo of the
    value shown before arrives after that: no edit, the image stays "not reviewed"."""
    request = gr.Request(session_hash="stale-echo")
    s, item = open_chelsea(studio, request, tmp_path)
    st = studio.review.state(s)
    first = [dict(b) for b in st.boxes]  # A, B, C grey
    studio.preview.on_settings(0.8, *SETTINGS[1:], request)
    studio.review.on_sync(request)
    assert len(st.boxes) == 2  # A, B
    studio.review.on_edited(_payload(item, first), request)  # the late echo of A, B, C
    assert _status(s, item) == "not_reviewed"
    assert "rejected" not in studio.review.info(s, item)


def test_a_click_alone_never_changes_the_status(studio, tmp_path):  # noqa: F811
    """A click on the canvas in box-creation mode makes a box without area, which the
    component removes again: the page sends the boxes with and without it."""
    request = gr.Request(session_hash="click")
    s, item = open_chelsea(studio, request, tmp_path)
    shown = [dict(b) for b in studio.review.state(s).boxes]
    dot = {"xmin": 200, "ymin": 200, "xmax": 200, "ymax": 200, "label": "",
           "color": "rgb(255, 168, 77)"}
    studio.review.on_edited(_payload(item, [dot, *shown]), request)
    studio.review.on_edited(_payload(item, shown), request)
    assert _status(s, item) == "not_reviewed"


def test_rejected_to_negatives_adds_exactly_the_deleted_detections(studio, tmp_path):  # noqa: F811
    """Accept A, delete B (1 rejected), C left grey; Done; back to the image: "1 rejected",
    said on the button before the click, and exactly B becomes a negative example."""
    request = gr.Request(session_hash="rejected")
    s, item = open_chelsea(studio, request, tmp_path)
    c = studio.c
    a, b, grey_c = (dict(x) for x in studio.review.state(s).boxes)
    accepted = {**a, "color": "rgb(30, 136, 229)"}  # the class colour: a label
    studio.review.on_edited(_payload(item, [accepted, b, grey_c]), request)
    out = studio.review.on_edited(_payload(item, [accepted, grey_c]), request)  # Del on B
    assert "1 rejected" in out[c.review_info]
    assert "1 rejected" in _value(out[c.review_to_negatives])
    assert _status(s, item) == "in_review"
    studio.review.on_done_next(request)
    out = studio.review.on_pick(item.id, request)
    assert "1 rejected" in out[c.review_info]
    assert "1 rejected" in _value(out[c.review_to_negatives])
    studio.review.on_to_negatives(request)
    with s.lock:
        example = next(e for e in s.examples() if e.name == "chelsea.png")
        negatives = [p for p in example.prompts if p.negative]
    assert [(p.cls, p.xyxy) for p in negatives] == [("coin", B)]


def test_undo_back_to_the_shown_boxes_is_an_edit_not_an_echo(studio, tmp_path):  # noqa: F811
    """Ctrl+Z after accepting a grey box sends back the very boxes the server first showed:
    that is the person's edit (the label goes), though it equals a value the server sent."""
    request = gr.Request(session_hash="undo-shown")
    s, item = open_chelsea(studio, request, tmp_path)
    shown = [dict(x) for x in studio.review.state(s).boxes]
    accepted = [{**shown[0], "color": "rgb(30, 136, 229)"}, *shown[1:]]
    for boxes in (shown, accepted):  # the history records the echo, then the edit
        studio.history.on_review_changed(_payload(item, boxes), request)
        studio.review.on_edited(_payload(item, boxes), request)
    with s.lock:
        assert len(s.core.image(item.id).labels) == 1
    back = studio.history.on_undo_review(_payload(item, accepted), request)
    value = back[studio.c.review_annotator]
    studio.history.on_review_changed(_payload(item, value["boxes"]), request)
    studio.review.on_edited(_payload(item, value["boxes"]), request)
    with s.lock:
        assert s.core.image(item.id).labels == ()


def test_rejected_survive_a_restart_and_become_exactly_the_negatives(studio, tiny_model,  # noqa: F811
                                                                    tmp_path):
    """Delete B in review, the server stops (the tab's memory is gone), a new server opens the
    project: the image still says "1 rejected" and "Rejected -> negatives" adds exactly B."""
    from ui import Studio, build_demo

    request = gr.Request(session_hash="before")
    s, item = open_chelsea(studio, request, tmp_path)
    a, b, grey_c = (dict(x) for x in studio.review.state(s).boxes)
    studio.review.on_edited(_payload(item, [a, b, grey_c]), request)  # the echo
    studio.review.on_edited(_payload(item, [a, grey_c]), request)  # Del on B
    project_id = s.project_id
    studio.close()  # the server stops: only the disk is left

    again = Studio(tiny_model, studio.config,
                   make_predictor=lambda: review_helpers.ScriptedPredictor(tiny_model))
    build_demo(tiny_model, studio.config, studio=again)
    try:
        request = gr.Request(session_hash="after")
        s = again.store.open_tab("after", project_id)
        again.embedding.on_embed(request, progress=lambda *a, **k: None)
        again.preview.on_settings(*SETTINGS, request)
        out = again.review.on_pick(item.id, request)
        assert "1 rejected" in out[again.c.review_info]
        assert "1 rejected" in _value(out[again.c.review_to_negatives])
        assert len(again.review.state(s).boxes) == 2  # B stays deleted
        again.review.on_to_negatives(request)
        with s.lock:
            example = next(e for e in s.examples() if e.name == "chelsea.png")
            negatives = [p for p in example.prompts if p.negative]
        assert [(p.cls, p.xyxy) for p in negatives] == [("coin", B)]
    finally:
        again.close()
