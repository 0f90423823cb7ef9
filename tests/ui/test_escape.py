"""Outside strings are shown as text: the escaping helpers of `ui.escape`, the Markdown lines
built from names, and no pop-up that skips the helpers (issue 19 item 4). The real browser:
`test_hostile_names_browser.py`."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from markdown_it import MarkdownIt

from owl_core.project.evaluate import ClassScore, Evaluation
from ui.escape import html_text, md_text
from ui.handlers.meter import meter_text
from ui.handlers.views import imported_text, status_text

UI = Path(__file__).resolve().parents[2] / "ui"

HOSTILE = [
    '<img src=x onerror="alert(1)">',                      # a request and a script
    '<a href="https://evil.example">click</a>',            # a link
    "<form action=//evil><input type=password></form>",    # a password form
    "[click](https://evil.example)",                       # a Markdown link
    "![x](https://evil.example/t.png)",                    # a Markdown image: a request
    "<https://evil.example>",                              # an autolink
    "**bold** _it_ `code` # heading",                      # emphasis, code, heading
    "a\\<img src=x>",                                      # a backslash before markup
    "line one\n- list\n<img src=x>",                       # line breaks that start blocks
    "&lt;img src=x&gt; &amp;",                             # entities stay literal
]

#: CommonMark with raw HTML on, as Gradio's Markdown renders it
MARKDOWN = MarkdownIt("commonmark", {"html": True})


def rendered_tags(markdown: str) -> set[str]:
    return set(re.findall(r"<([a-z][a-z0-9]*)", MARKDOWN.render(markdown)))


@pytest.mark.parametrize("text", HOSTILE)
def test_md_text_renders_as_the_same_text(text):
    html = MARKDOWN.render(md_text(text))
    assert rendered_tags(md_text(text)) == {"p"}, html
    shown = re.sub(r"</?p>\n?", "", html)
    # the page shows exactly the name (line breaks become spaces)
    assert shown == html_text(" ".join(text.splitlines())).replace("&#x27;", "'")


@pytest.mark.parametrize("text", HOSTILE)
def test_html_text_has_no_markup(text):
    assert "<" not in html_text(text) and ">" not in html_text(text)
    assert "'" not in html_text(text) and '"' not in html_text(text)  # attribute values too


def _session() -> SimpleNamespace:
    return SimpleNamespace(examples=list, queries=list, embedded=lambda record: None,
                           core=SimpleNamespace(imported=[]), import_errors=[],
                           save_error=None, predictor=None)


@pytest.mark.parametrize("text", HOSTILE)
def test_status_line_shows_a_save_error_as_text(text):
    s = _session()
    s.save_error = text
    assert rendered_tags(status_text(s)) == {"p"}


@pytest.mark.parametrize("text", HOSTILE)
def test_imported_text_shows_class_and_file_names_as_text(text):
    exemplars = SimpleNamespace(class_names=[text], class_ids=torch.tensor([0]),
                                negative=torch.tensor([False]))
    s = _session()
    s.core.imported = [SimpleNamespace(name=text + ".pt")]
    s.import_errors = [f"{text}.pt: {text}"]
    s.predictor = SimpleNamespace(imported_exemplars=exemplars)
    assert rendered_tags(imported_text(s)) <= {"p", "strong"}


@pytest.mark.parametrize("text", HOSTILE)
def test_meter_text_shows_left_out_image_names_as_text(text):
    score = ClassScore("all", 0, 0, 0, 0.0, 0.0, 0.0, None)
    ev = Evaluation(0.5, (), score, None, 1, (text,))
    assert rendered_tags(meter_text(ev)) <= {"p", "strong"}


def test_every_popup_goes_through_the_escaping_helpers():
    """gr.Info / gr.Warning / gr.Error render their message as HTML: ui/ calls them only in
    `ui.escape`."""
    direct = [f"{path.relative_to(UI)}:{n}" for path in UI.rglob("*.py") if path.name != "escape.py"
              for n, line in enumerate(path.read_text().splitlines(), 1)
              if re.search(r"\bgr\.(Info|Warning|Error)\(", line)]
    assert direct == []
