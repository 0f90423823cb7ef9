"""The review annotator echoes every value the server sets back as a change event, sometimes
late (a loaded server, chained events). An echo is not an edit: it must never overwrite labels
the server changed after showing the image ("Accept all", a review handler, another event)."""

from __future__ import annotations

import gradio as gr
from test_saving import SETTINGS, open_chelsea, studio  # noqa: F401 -- the fixture

from owl_core.project.model import Label
from ui import labels as L


def test_a_late_echo_of_the_shown_boxes_keeps_labels_set_on_the_server(studio, tmp_path):  # noqa: F811
    request = gr.Request(session_hash="late-echo")
    s, item = open_chelsea(studio, request, tmp_path)
    st = studio.review.state(s)
    shown = [dict(b) for b in st.boxes]  # the value the page got (grey detections only)
    with s.lock:  # the server changes the labels (as "Accept all" does) after showing them
        s.core.set_labels(item.id, [Label((20, 20, 120, 120), "coin", "accepted", 0.95)],
                          "done")
    # the annotator's echo of the value it was shown arrives now
    studio.review.on_edited({"image": {"path": s.path(item)}, "boxes": shown}, request)
    with s.lock:
        rec = s.core.image(item.id)
        assert [b.cls for b in rec.labels] == ["coin"] and rec.status == "done"
    # a real edit is still stored: the person deletes one grey box (rejects it) and
    # accepts another as "cat"
    a, _, c = shown
    studio.review.on_edited({"image": {"path": s.path(item)},
                             "boxes": [a, {**c, "label": "cat", "color": L.class_color(1)}]},
                            request)
    with s.lock:
        rec = s.core.image(item.id)
        assert "cat" in [b.cls for b in rec.labels]
