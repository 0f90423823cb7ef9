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
