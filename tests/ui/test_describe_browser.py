"""'Describe it' in a real browser (issue 18 deliverable 3): in a new project, with query images
only, one click on "Use the class names as phrases", then a phrase typed for the class, show
detections in the preview without any box drawn; the box diagnostics list the phrase with the
detections it wins; a phrase the model can't read is refused with the engine's message, shown
as text; a reload shows the project's phrases again. Driven with the mouse and keys at
1280x720.

Screenshots: test-artifacts/describe_*.png."""

from __future__ import annotations

from browser_helpers import ASSETS, poll, preview_sig, upload, wait_counts, wait_preview_change
from browser_helpers import table_rows as rows_of
from conftest import open_tab
from playwright.sync_api import expect

WIDE = {"width": 1280, "height": 720}
PHRASES = "#describe-phrases textarea, #describe-phrases input"


def _object_total(rows: list[list[str]]) -> int:
    return int(rows[-1][1]) if rows else 0  # "all query images" row, column "object"


def test_a_typed_phrase_previews_without_a_box(browser, studio_app, artifacts):
    with open_tab(browser, studio_app[0], WIDE) as page:
        upload(page, "#upload-queries", ASSETS / "images" / "chelsea.png",
               ASSETS / "images" / "rocket.jpg")
        page.wait_for_function(
            "() => (document.querySelector('#status')?.innerText || '').includes('all "
            "embedded') && document.querySelectorAll('#preview img').length > 0",
            timeout=60_000)
        # a low confidence, with the mouse: the random model's phrase scores are low
        slider = page.locator("#confidence input[type=range]")
        box = slider.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
        poll(lambda: float(page.locator("#confidence input[type=number]").input_value()),
             lambda v: v < 0.4, "the confidence moved")
        wait_counts(page, lambda rows: _object_total(rows) == 0)  # nothing without a prompt

        # one click: the class name becomes its phrase, detections appear
        sig = preview_sig(page)
        page.click("#use-class-names")
        expect(page.locator(PHRASES).first).to_have_value("object", timeout=30_000)
        wait_preview_change(page, sig)
        wait_counts(page, lambda rows: _object_total(rows) > 0)

        # type a phrase of our own for the class (replacing it), Enter
        sig = preview_sig(page)
        field = page.locator(PHRASES).first
        field.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("a cat")
        page.keyboard.press("Enter")
        wait_preview_change(page, sig)
        diag = poll(lambda: rows_of(page, "#diag-table"),
                    lambda rows: any("“a cat”" in r for r in rows), "the phrase in diagnostics")
        row = next(r for r in diag if "“a cat”" in r)
        assert row[:4] == ["(words)", "1", "object", "phrase"] and int(row[-1]) > 0
        wait_counts(page, lambda rows: _object_total(rows) > 0)
        expect(page.locator("#annotator canvas")).to_have_count(0)  # no example, no box
        page.screenshot(path=str(artifacts / "describe_phrase_preview.png"))

        # a phrase the model can't read: the engine's message, markup shown as text
        field.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("<b>a very long phrase</b>")
        page.keyboard.press("Enter")
        toast = page.locator(".toast-body").filter(has_text="tokens long")
        expect(toast.first).to_be_visible(timeout=30_000)
        assert "<b>a very long phrase</b>" in toast.first.inner_text()
        page.screenshot(path=str(artifacts / "describe_bad_phrase.png"))
        assert any("“a cat”" in r for r in rows_of(page, "#diag-table"))  # nothing changed

        # a reload opens the project again with its phrases in the field
        page.reload()
        expect(page.locator(PHRASES).first).to_have_value("a cat", timeout=60_000)
