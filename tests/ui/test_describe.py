"""The studio's "describe it" (issue 18 deliverable 3 and its gaps), handlers called directly on
the tiny random model: phrases per class stored in the project and previewed before any box is
drawn; "use the class names as phrases"; bad phrases refused with the engine's messages
(escaped, nothing changed); a phrase edit embeds only that phrase; the combine mode stored,
used by the preview and written to the downloads; negative phrases; box diagnostics list the
phrases with the shown detections each wins."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from owl_core.engine import text as text_module
from owl_core.engine.prompt_file import load_pt
from owl_core.phrases import PromptPhrase
from ui.handlers.describe import split_phrases

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "images"
#: confidence, NMS IoU, max detections, score mode, show examples: a low confidence, so the
#: random model's phrase scores show detections
SETTINGS = (0.0, 0.3, 300, "reference", False)
COIN = {"xmin": 131, "ymin": 28, "xmax": 180, "ymax": 74, "label": "object",
        "color": "rgb(30, 136, 229)"}


@pytest.fixture()
def studio(spy_studio):
    return spy_studio


def _upload(studio, tmp_path, request, *, example: bool = False):
    queries = []
    for i, name in enumerate(("chelsea.png", "rocket.jpg")):
        target = tmp_path / f"q{i}-{name}"
        shutil.copyfile(ASSETS / name, target)
        queries.append(str(target))
    studio.images.on_upload_queries(queries, request)
    if example:
        target = tmp_path / "ex-coins.png"
        shutil.copyfile(ASSETS / "coins.png", target)
        studio.images.on_upload_examples([str(target)], request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    studio.preview.on_settings(*SETTINGS, request)
    return studio.session(request)


def _value(out: dict, component):
    sent = out[component]
    return sent["value"] if isinstance(sent, dict) and sent.get("__type__") == "update" else sent


def _shown_boxes(out: dict, studio) -> int:
    return sum(len(im["boxes"]) for im in _value(out, studio.c.preview)["images"])


@pytest.mark.parametrize("typed, phrases", [
    # one phrase
    ("a coin", ["a coin"]),
    # several, ';' separated, separators at the ends ignored
    ("; a coin;a disc ;", ["a coin", "a disc"]),
    # a line break separates too
    ("a coin\na disc", ["a coin", "a disc"]),
    # an empty phrase between two others is kept (the project refuses it)
    ("a;;b", ["a", "", "b"]),
    # nothing: no phrases
    ("  ", []),
])
def test_split_phrases(typed, phrases):
    assert split_phrases(typed) == phrases


def test_a_phrase_previews_before_any_box_and_is_stored(studio, tmp_path):
    request = SimpleNamespace(session_hash="words")
    s = _upload(studio, tmp_path, request)
    assert not any(r.prompts for r in s.core.images)
    out = studio.describe.on_phrases("a cat", request)
    assert s.core.phrases == {"object": ("a cat",)}
    assert _shown_boxes(out, studio) > 0  # detections without a drawn box
    assert _value(out, studio.c.phrases) == "a cat"
    # the diagnostics list the phrase, with the shown detections it wins (all of them here)
    rows = _value(out, studio.c.diag_table)
    shown = sum(len(r) for r in s.results.values())
    assert rows == [["(words)", 1, "object", "phrase", "", "“a cat”", "text prompt", shown]]
    assert s.save()
    from owl_core.project.model import load_project

    assert load_project(s.core.folder).phrases == {"object": ("a cat",)}
    # emptied: no phrases, nothing detected
    out = studio.describe.on_phrases("", request)
    assert s.core.phrases == {} and _shown_boxes(out, studio) == 0


def test_use_the_class_names_as_phrases_is_one_click(studio, tmp_path):
    request = SimpleNamespace(session_hash="names")
    s = _upload(studio, tmp_path, request)
    studio.classes.on_add_class("cat", request)
    studio.classes.on_add_class("rocket", request)
    s.core.set_phrases("rocket", ["a rocket"])  # a class with phrases keeps them
    out = studio.describe.on_use_class_names(request)
    assert s.core.phrases == {"cat": ("cat",), "rocket": ("a rocket",)}
    assert _shown_boxes(out, studio) > 0


@pytest.mark.parametrize("typed, message", [
    # control characters (and markup, shown as text)
    ("<b>a\x07cat</b>", "control characters"),
    # an empty phrase between two
    ("a;;b", "the phrase is empty"),
    # longer than the tiny model's tokenizer reads
    ("a very very long phrase", "tokens long"),
    # over the character limit
    ("x" * 400, "OWL_MAX_PHRASE_CHARS"),
])
def test_bad_phrases_are_refused_escaped_and_change_nothing(studio, tmp_path, typed, message):
    request = SimpleNamespace(session_hash="bad")
    s = _upload(studio, tmp_path, request)
    studio.describe.on_phrases("a cat", request)
    with pytest.raises(gr.Error) as info:
        studio.describe.on_phrases(typed, request)
    assert message in info.value.message and "<b>" not in info.value.message
    assert s.core.phrases == {"object": ("a cat",)}


def test_too_many_phrases_are_refused(studio, tmp_path, monkeypatch):
    monkeypatch.setenv("OWL_MAX_PHRASES_PER_CLASS", "2")
    request = SimpleNamespace(session_hash="many")
    s = _upload(studio, tmp_path, request)
    with pytest.raises(gr.Error, match="OWL_MAX_PHRASES_PER_CLASS"):
        studio.describe.on_phrases("a; b; c", request)
    assert s.core.phrases == {}


def test_a_phrase_edit_embeds_only_that_phrase(studio, tmp_path, monkeypatch):
    request = SimpleNamespace(session_hash="spy")
    _upload(studio, tmp_path, request)
    calls = []
    real = text_module.compute_text_embeddings

    def spy(owl, phrases):
        calls.append(list(phrases))
        return real(owl, phrases)

    monkeypatch.setattr(text_module, "compute_text_embeddings", spy)
    studio.describe.on_phrases("a cat", request)
    studio.describe.on_phrases("a cat; a dog", request)
    studio.describe.on_phrases("a dog", request)  # removing one embeds nothing
    assert calls == [["a cat"], ["a dog"]]


def test_combine_mode_is_stored_previewed_and_exported(studio, tmp_path):
    request = SimpleNamespace(session_hash="combine")
    s = _upload(studio, tmp_path, request, example=True)
    studio.describe.on_phrases("a coin", request)
    studio.boxes.on_boxes_edited({"image": {"path": s.path(s.examples()[0])}, "boxes": [COIN]},
                                 *SETTINGS, request)
    studio.describe.on_combine("fused", request)
    assert s.core.settings.combine == "fused"
    path = s.path(s.queries()[0])
    expected = s.predictor.detect_many([path], confidence=SETTINGS[0], combine="fused")[0]
    assert s.results[path].confidence.tolist() == pytest.approx(expected.confidence.tolist())
    fused = s.results[path].confidence.tolist()
    studio.describe.on_combine("max", request)
    assert s.results[path].confidence.tolist() != fused  # the mode changes the scores
    studio.describe.on_combine("fused", request)
    studio.project.on_downloads(*SETTINGS, request)
    assert load_pt(s.exports[0]).settings.combine == "fused"
    # the slider's settings event keeps the project's combine mode
    studio.preview.on_settings(0.3, 0.3, 300, "reference", False, request)
    assert s.core.settings.combine == "fused"
    assert studio.describe.on_show(request)[studio.c.combine] == "fused"


def test_negative_phrases_are_stored_and_used(studio, tmp_path):
    request = SimpleNamespace(session_hash="negative")
    s = _upload(studio, tmp_path, request)
    studio.describe.on_phrases("a cat", request)
    before = sum(len(r) for r in s.results.values())
    out = studio.describe.on_negative_phrases("a cat face", request)
    assert s.core.negative_phrases == {"object": ("a cat face",)}
    assert PromptPhrase("object", "a cat face", True) in s.report.phrases
    rows = _value(out, studio.c.diag_table)
    assert ["(words)", 2, "object", "negative phrase", "", "“a cat face”", "text prompt",
            "-"] in rows
    assert sum(len(r) for r in s.results.values()) <= before


def test_box_and_phrase_wins_add_up_to_the_shown_detections(studio, tmp_path):
    request = SimpleNamespace(session_hash="wins")
    s = _upload(studio, tmp_path, request, example=True)
    studio.describe.on_phrases("a coin", request)
    out = studio.boxes.on_boxes_edited(
        {"image": {"path": s.path(s.examples()[0])}, "boxes": [COIN]}, *SETTINGS, request)
    rows = _value(out, studio.c.diag_table)
    assert [r[3] for r in rows] == ["positive", "phrase"]
    shown = sum(len(s.results[s.path(r)]) for r in s.queries())
    assert sum(r[7] for r in rows) == shown > 0


def test_the_meter_compares_phrases_boxes_and_both(studio, tmp_path):
    """The quality meter shows, on the same reviewed images, the prompt's phrases alone, its
    boxes alone and both ('–' for a part the prompt lacks); it follows the combine mode and
    phrase edits."""
    request = SimpleNamespace(session_hash="meter")
    s = _upload(studio, tmp_path, request, example=True)
    query = s.queries()[0]
    s.core.set_labels(query.id, [{"xyxy": [20, 20, 120, 120], "cls": "object"}])
    s.core.set_status(query.id, "done")
    studio.describe.on_phrases("a cat", request)
    text = studio.meter.on_meter(*SETTINGS, request)[studio.c.meter_md]
    assert "| phrases only | " in text and "| boxes only | – | – | – | – |" in text
    phrases_row = next(line for line in text.splitlines() if line.startswith("| phrases only"))
    both_row = next(line for line in text.splitlines() if line.startswith("| both"))
    assert phrases_row.split("|")[2:] == both_row.split("|")[2:]  # the same prompt
    studio.boxes.on_boxes_edited({"image": {"path": s.path(s.examples()[0])},
                                  "boxes": [COIN]}, *SETTINGS, request)
    text = studio.meter.on_meter(*SETTINGS, request)[studio.c.meter_md]
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in text.splitlines()
            if line.startswith("| ") and "prompt" not in line}
    assert set(rows) == {"phrases only", "boxes only", "both"}
    assert all(cell.strip() != "–" for row in rows.values() for cell in row[:1])
    # the measurement follows the combine mode (it was left at "max" before)
    assert '"combine": "max"' in studio.meter._kept[s][0]
    studio.describe.on_combine("fused", request)
    studio.meter.on_meter(*SETTINGS, request)
    assert '"combine": "fused"' in studio.meter._kept[s][0]
