"""The studio in a real browser (Debian's headless Chromium driven by Playwright).

Screenshots land in test-artifacts/; the time from mouse-up on a new box to the new preview
picture is written to test-artifacts/edit_to_preview.json.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from browser_helpers import (
    ASSETS,
    COINS,
    WATCH_PREVIEW,
    draw_box,
    open_accordion,
    pick_label,
    preview_sig,
    table_header,
    upload,
    wait_counts,
    wait_header,
    wait_preview_change,
    wait_ready,
    wait_rows,
)
from conftest import DOWNLOADS_READY, free_port
from playwright.sync_api import expect
from spies import SpyPredictor

from owl_core import load_pt


def test_page_opens_ready(page, artifacts):
    banner = page.locator("#random-banner")
    assert banner.is_visible() and "meaningless" in banner.inner_text()
    open_accordion(page, "samples-accordion")  # closed on the first screen
    expect(page.locator("#samples img")).to_have_count(5)
    assert page.locator("#project-choice input").input_value() == "coins"
    page.click("#load-example-project")
    wait_ready(page)
    assert page.locator("#examples-gallery img").count() == 1
    rows = wait_rows(page, "#diag-table", lambda rows: len(rows) == 5)
    assert [r[3] for r in rows] == ["positive"] * 4 + ["negative"]
    counts = wait_counts(page)
    assert counts[-1][0] == "all query images" and int(counts[-1][1]) > 0
    page.screenshot(path=str(artifacts / "01_example_project.png"), full_page=True)
    # one way out for detections: the review section's "Export dataset" (the old "Export
    # detections" accordion is gone)
    expect(page.get_by_text("Export detections (COCO / YOLO / Pascal VOC)")).to_have_count(0)
    assert page.locator("#export-detections").count() == 0
    expect(page.locator("#export-dataset")).to_have_count(1)


def test_draw_preview_slider_export_import(page, browser, studio_app, artifacts, coins_copy,
                                           tmp_path):
    # a new class, then an example image and a query image
    page.fill("#class-name input, #class-name textarea", "coin")
    page.click("#add-class")
    page.wait_for_function("() => document.querySelector('#legend').innerText.includes('NOT coin')")
    upload(page, "#upload-examples", coins_copy)
    page.wait_for_selector("#examples-gallery img")
    upload(page, "#upload-queries", COINS)
    wait_ready(page)
    page.screenshot(path=str(artifacts / "02_uploaded.png"), full_page=True)

    # draw a box around a coin: the preview changes on mouse-up, before the label is picked
    page.evaluate(WATCH_PREVIEW)
    draw_box(page, (131, 28, 180, 74))
    page.wait_for_function("() => window.__edit.change !== null", timeout=30_000)
    timing = page.evaluate("() => window.__edit")
    edit_ms = timing["change"] - timing["up"]
    page.screenshot(path=str(artifacts / "03_label_dialog.png"), full_page=True)
    pick_label(page, "coin")
    rows = wait_rows(page, "#diag-table", lambda rows: rows[0][2] == "coin")
    assert len(rows) == 1 and rows[0][2:4] == ["coin", "positive"] and rows[0][6] == "matched"
    # no "object" any more
    assert wait_header(page, "#counts", lambda h: "object" not in h) == ["image", "coin", "total"]
    counts = wait_counts(page)
    assert counts[0][0] == "coins.png" and int(counts[0][2]) >= 1
    page.screenshot(path=str(artifacts / "04_box_drawn.png"), full_page=True)

    # a second box, timed again (warm path)
    page.evaluate(WATCH_PREVIEW)
    draw_box(page, (180, 230, 240, 290))
    page.wait_for_function("() => window.__edit.change !== null", timeout=30_000)
    timing2 = page.evaluate("() => window.__edit")
    pick_label(page, "coin")
    (artifacts / "edit_to_preview.json").write_text(json.dumps(
        {"first_box_ms": round(edit_ms, 1),
         "second_box_ms": round(timing2["change"] - timing2["up"], 1)}, indent=1))
    assert edit_ms < 5000

    # move the confidence slider with the mouse: lower threshold, more detections
    before = int(wait_counts(page)[0][2])
    sig = preview_sig(page)
    slider = page.locator("#confidence input[type=range]")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    wait_preview_change(page, sig)
    value = float(page.locator("#confidence input[type=number]").input_value())
    assert 0.4 < value < 0.6
    wait_counts(page, lambda rows: int(rows[0][2]) > before)
    page.screenshot(path=str(artifacts / "05_slider_moved.png"), full_page=True)

    # export: the project is named, the download holds the drawn class
    page.fill("#project-name input, #project-name textarea", "Coin counter")
    page.press("#project-name input, #project-name textarea", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#export-info').innerText.includes('Coin-counter.pt')")
    open_accordion(page, "pt-accordion")  # closed on the first screen
    with page.expect_download() as download:
        page.click("#download-full")
    assert download.value.suggested_filename == "Coin-counter.pt"
    full = tmp_path / "Coin-counter.pt"
    download.value.save_as(full)
    prompts = load_pt(full)
    assert "coin" in prompts.exemplars.class_names
    coin = prompts.exemplars.class_names.index("coin")
    assert int(((prompts.exemplars.class_ids == coin) & ~prompts.exemplars.negative).sum()) == 2
    assert len(prompts.image_embeds) == 1
    with page.expect_download() as small_download:
        page.click("#download-small")
    assert small_download.value.suggested_filename == "Coin-counter-small.pt"
    small = tmp_path / "small.pt"
    small_download.value.save_as(small)
    assert load_pt(small).image_embeds == {}

    # import it back in a new session: that session starts empty, then has the class back
    store = studio_app[1].studio.store
    before = set(store.ids())
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        other = context.new_page()
        other.goto(studio_app[0])
        other.wait_for_function(
            "() => (document.querySelector('#export-info')?.innerText || '')"
            ".includes('Downloads ready')")
        assert other.locator("#examples-gallery img").count() == 0
        new_sessions = set(store.ids()) - before
        assert len(new_sessions) == 1
        open_accordion(other, "pt-accordion")
        upload(other, "#import-pt", full)
        other.wait_for_function(
            "() => document.querySelector('#imported').innerText.includes('coin')")
        assert "2 positive" in other.locator("#imported").inner_text()
        assert other.locator("#project-name input, #project-name textarea").input_value() \
            == "Coin counter"
        upload(other, "#upload-queries", COINS)
        wait_ready(other)
        header = table_header(other, "#counts")
        assert "coin" in header
        wait_counts(other, lambda rows: int(rows[0][header.index("coin")]) >= 1)
        other.screenshot(path=str(artifacts / "06_imported.png"), full_page=True)
    finally:
        context.close()
    # closing the tab frees that session (demo.unload), the first one lives on
    deadline = time.monotonic() + 20
    while new_sessions & set(store.ids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not new_sessions & set(store.ids()), "closed session was not freed"
    assert len(set(store.ids()) & before) >= 1


def test_several_examples_queries_and_class_edits(page, artifacts, studio_app):
    chelsea, rocket = ASSETS / "images" / "chelsea.png", ASSETS / "images" / "rocket.jpg"
    misses_before = studio_app[1].studio.cache.stats().misses
    page.fill("#class-name textarea", "cat")
    page.press("#class-name textarea", "Enter")
    page.wait_for_function("() => document.querySelector('#legend').innerText.includes('NOT cat')")
    upload(page, "#upload-examples", chelsea, COINS)
    page.wait_for_function("() => document.querySelectorAll('#examples-gallery img').length == 2")
    upload(page, "#upload-queries", chelsea, rocket)
    wait_ready(page)

    # a positive on the first example (the cat), a negative on the second (the coins)
    draw_box(page, (150, 40, 320, 260), natural_width=451)
    pick_label(page, "cat")
    wait_rows(page, "#diag-table", lambda rows: len(rows) == 1 and rows[0][2] == "cat")
    shown = page.evaluate("() => document.getElementById('annotator').dataset.owlFitImage")
    page.locator("#examples-gallery button.thumbnail-item").nth(1).click()
    page.wait_for_function(  # the annotator now shows the 384 px wide coins photo
        "(before) => document.getElementById('annotator').dataset.owlFitImage !== before",
        arg=shown)
    page.wait_for_timeout(500)
    draw_box(page, (131, 28, 180, 74))
    pick_label(page, "NOT cat")
    rows = wait_rows(page, "#diag-table",
                     lambda rows: len(rows) == 2 and rows[1][3] == "negative")
    assert [(r[0], r[2], r[3]) for r in rows] == [("chelsea.png", "cat", "positive"),
                                                 ("coins.png", "cat", "negative")]
    counts = wait_rows(page, "#counts", lambda rows: len(rows) == 3)
    assert [r[0] for r in counts] == ["chelsea.png", "rocket.jpg", "all query images"]
    captions = page.evaluate("() => Array.from(document.querySelectorAll('#preview img'))"
                             ".map(i => i.alt)")
    assert {c.split(" · ")[0] for c in captions if c} == {"chelsea.png", "rocket.jpg"}
    page.screenshot(path=str(artifacts / "09_two_examples_two_queries.png"), full_page=True)

    # a sliver of a box snaps to nothing: the page says so, and the box is left out
    draw_box(page, (300, 20, 309, 160))
    pick_label(page, "cat")
    page.wait_for_function(
        "() => document.querySelector('#diag-warning').innerText.includes('matched no')")
    rows = wait_rows(page, "#diag-table", lambda rows: len(rows) == 3)
    assert rows[2][:4] == ["coins.png", "2", "cat", "positive"]
    assert rows[2][6] == "⚠ no match (ignored)"
    warning = page.locator("#diag-warning").inner_text()
    assert "coins.png box 2 (cat)" in warning and "match threshold" in warning
    page.screenshot(path=str(artifacts / "10_unmatched_box_warning.png"), full_page=True)
    page.keyboard.press("Delete")  # the new box is still selected: delete it
    wait_rows(page, "#diag-table", lambda rows: len(rows) == 2)

    # rename the class: boxes, legend, counts follow
    page.fill("#class-name textarea", "kitty")
    page.click("#rename-class")
    page.wait_for_function(
        "() => document.querySelector('#legend').innerText.includes('NOT kitty')")
    rows = wait_rows(page, "#diag-table", lambda rows: rows[0][2] == "kitty")
    assert [r[2] for r in rows] == ["kitty", "kitty"]
    wait_header(page, "#counts", lambda h: "kitty" in h and "cat" not in h)
    page.screenshot(path=str(artifacts / "11_class_renamed.png"), full_page=True)

    # remove it: the first click says what goes and asks again; the second removes its boxes too
    page.click("#remove-class")
    page.wait_for_function(
        "() => document.querySelector('#remove-class').innerText.includes('Confirm remove')")
    assert "kitty" in page.inner_text("#legend")  # nothing removed by the first click
    page.click("#remove-class")
    page.wait_for_function(
        "() => !document.querySelector('#legend').innerText.includes('kitty')")
    page.wait_for_function(
        "() => document.querySelector('#diag-warning').innerText.includes('No boxes yet')")
    wait_header(page, "#counts", lambda h: "kitty" not in h)

    # all those edits were answered from the embeddings made at most once per distinct image
    # (chelsea is both an example and a query: one embedding; the server's cache is shared, so
    # images other tests embedded may cost nothing here)
    assert studio_app[1].studio.cache.stats().misses - misses_before <= 3


@pytest.fixture()
def gated_app(tiny_model, tmp_path):
    """(url, gate, predictors): the studio whose query images stay "in the vision tower" until
    the test sets `gate` (example images are embedded at once)."""
    from ui import Studio, StudioConfig, build_demo, launch_kwargs

    gate, predictors = threading.Event(), []

    def make_predictor():
        predictors.append(SpyPredictor(tiny_model))
        predictors[-1].gate = gate
        return predictors[-1]

    config = StudioConfig(random_preset="tiny", work_dir=str(tmp_path / "studio"),
                          cache_bytes=256 * 2**20)
    demo = build_demo(tiny_model, config,
                      studio=Studio(tiny_model, config, make_predictor=make_predictor))
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                    server_port=free_port(), quiet=True))
        yield demo.local_url.rstrip("/"), gate, predictors
    finally:
        gate.set()
        demo.close()
        demo.studio.close()


def test_boxes_are_answered_while_images_are_being_embedded(browser, gated_app, coins_copy,
                                                            artifacts):
    url, gate, predictors = gated_app
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(DOWNLOADS_READY)
        upload(page, "#upload-examples", coins_copy)
        page.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('all embedded')")
        upload(page, "#upload-queries", COINS)
        assert predictors[-1].waiting.wait(30)  # the query image is in the "vision tower"
        # wait for the page to draw what the upload answered (not the example's old status)
        expect(page.locator("#status")).not_to_contain_text("all embedded", timeout=30_000)

        # the embedding step holds neither the page nor the session: a box is answered
        draw_box(page, (131, 28, 180, 74))
        pick_label(page, "object")
        rows = wait_rows(page, "#diag-table", lambda rows: len(rows) == 1)
        assert rows[0][6] == "matched"
        waiting = page.locator("#preview img[alt$='embedding…']")
        expect(waiting.first).to_be_attached(timeout=30_000)
        assert not gate.is_set()
        expect(page.locator("#status")).not_to_contain_text("all embedded")
        page.screenshot(path=str(artifacts / "12_box_while_embedding.png"), full_page=True)

        gate.set()  # the tower "finishes": the preview fills in by itself
        wait_ready(page)
        wait_rows(page, "#counts", lambda rows: rows[0][0] == "coins.png")
    finally:
        context.close()
