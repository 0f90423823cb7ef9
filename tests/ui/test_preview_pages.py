"""A studio that holds hundreds of images: the preview shows one page of query images, so an
edit detects, draws and sends that page only (its cost does not grow with the project); the
per-class counts of every image follow in their own event, the pager moves through the pages.

The browser test opens projects of 10 and of 300 query images on the tiny model, draws a box
and reports mouse-up -> new preview (printed and written to
test-artifacts/preview_pages_latency.json; reported, never asserted: CI machines are shared).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from browser_helpers import COINS, WATCH_PREVIEW, draw_box, pick_label, wait_ready
from conftest import open_tab
from PIL import Image
from review_helpers import session_of

from owl_core import OwlPredictor
from owl_core.project.library import ProjectLibrary
from ui.handlers.preview import PREVIEW_PAGE_SIZE, pager_text
from ui.handlers.views import example_boxes

SETTINGS = (0.3, 0.3, 300, "reference", False)  # confidence, NMS IoU, max, mode, show examples
COIN = (131, 28, 180, 74)


class CountingPredictor(OwlPredictor):
    """The real predictor, recording how many images each `detect_many` call scores."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.detected: list[int] = []

    def detect_many(self, images, params=None, **overrides):
        images = list(images)
        self.detected.append(len(images))
        return super().detect_many(images, params, **overrides)


def make_project(store: ProjectLibrary, folder: Path, queries: int, boxes: bool = True) -> str:
    """A saved project: coins.png as the example (one coin box unless not `boxes`) and
    `queries` distinct small query pictures named query-001.png, ..."""
    project = store.create(f"many-{queries}", classes=["coin"])
    example = project.add_image(COINS, role="example")
    if boxes:
        project.set_prompt_boxes(example.id, [{"xyxy": COIN, "cls": "coin"}])
    rng = np.random.default_rng(queries)
    base = np.asarray(Image.open(COINS).convert("RGB").resize((160, 120)))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(queries):
        noisy = np.clip(base.astype(np.int16) + rng.integers(-12, 13, base.shape), 0, 255)
        path = folder / f"query-{i + 1:03d}.png"
        Image.fromarray(noisy.astype(np.uint8)).save(path)
        project.add_image(path, role="query")
    store.save(project)
    return project.folder.name


# ------------------------------------------------------------------ handlers (no browser)
@pytest.fixture()
def counting_studio(tiny_model, tmp_path):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), projects_dir=str(tmp_path / "p"))
    studio = Studio(tiny_model, config, make_predictor=lambda: CountingPredictor(tiny_model))
    build_demo(tiny_model, config, studio=studio)
    return studio


def _open(studio, project_id: str, tab: str):
    request = SimpleNamespace(session_hash=tab, query_params={"project": project_id})
    studio.on_load(None, request)
    studio.embedding.on_embed(request, progress=lambda *a, **k: None)
    return request, studio.session(request)


def test_an_edit_detects_and_draws_one_page_whatever_the_number_of_images(counting_studio,
                                                                         tmp_path):
    studio = counting_studio
    pid = make_project(studio.projects, tmp_path / "q", 40)
    request, s = _open(studio, pid, "pages")
    first = studio.preview.on_settings(*SETTINGS, request)
    assert first[studio.c.preview_page] == "Images 1–12 of 40"
    s.predictor.detected.clear()
    # an edit: a second coin box on the example
    example = s.examples()[0]
    boxes = example_boxes(s, example) + [
        {"xmin": 185, "ymin": 104, "xmax": 227, "ymax": 145, "label": "coin",
         "color": "rgb(30, 136, 229)"}]
    out = studio.boxes.on_boxes_edited({"image": {"path": s.path(example)}, "boxes": boxes},
                                       *SETTINGS, request)
    assert s.predictor.detected == [PREVIEW_PAGE_SIZE]  # the page only, not 40 images
    assert [im["name"] for im in out[studio.c.preview]["images"]] == [
        f"query-{i:03d}.png" for i in range(1, PREVIEW_PAGE_SIZE + 1)]
    # the counts follow: every other image once, in chunks; nothing again when asked again
    counts = studio.preview.on_counts(request)
    assert sum(s.predictor.detected) == 40 and len(s.results) == 40
    rows = counts[studio.c.counts]["value"]
    assert len(rows) == 41 and rows[-1][0] == "all query images"
    assert rows[-1][-1] == sum(r[-1] for r in rows[:-1])
    studio.preview.on_counts(request)
    assert sum(s.predictor.detected) == 40


def test_the_pager_moves_through_the_pages_and_stays_inside_them(counting_studio, tmp_path):
    studio = counting_studio
    pid = make_project(studio.projects, tmp_path / "q", 30)
    request, s = _open(studio, pid, "pager")
    studio.preview.on_settings(*SETTINGS, request)

    def names(out):
        return [im["name"] for im in out[studio.c.preview]["images"]]

    out = studio.preview.on_next_page(*SETTINGS, request)
    assert names(out) == [f"query-{i:03d}.png" for i in range(13, 25)]
    assert out[studio.c.preview_page] == "Images 13–24 of 30"
    out = studio.preview.on_next_page(*SETTINGS, request)
    assert names(out) == [f"query-{i:03d}.png" for i in range(25, 31)]
    assert out[studio.c.preview_page] == "Images 25–30 of 30"
    # past the last page: nothing changes
    assert studio.preview.on_next_page(*SETTINGS, request) == gr.skip()
    assert s.view.preview_page == 2
    # the selected preview image is the page's (what Remove / review pick act on)
    assert studio.preview.selected_item(s).name == "query-025.png"
    out = studio.preview.on_prev_page(*SETTINGS, request)
    assert names(out)[0] == "query-013.png"


def test_a_prompt_state_seen_before_is_not_detected_again(counting_studio, tmp_path):
    """Undo / redo bring back boxes the preview has shown: their detections are kept per prompt
    state, so going back detects nothing (and the value sent is the one shown before)."""
    studio = counting_studio
    pid = make_project(studio.projects, tmp_path / "q", 3)
    request, s = _open(studio, pid, "states")
    example = s.examples()[0]
    one = example_boxes(s, example)
    two = one + [{"xmin": 185, "ymin": 104, "xmax": 227, "ymax": 145, "label": "coin",
                  "color": "rgb(30, 136, 229)"}]

    def edit(boxes):
        return studio.boxes.on_boxes_edited({"image": {"path": s.path(example)},
                                             "boxes": boxes}, *SETTINGS, request)

    edit(one)
    shown_one = s.shown["preview"]  # the value the page has
    edit(two)
    s.predictor.detected.clear()
    back = edit(one)  # as an undo would
    assert s.predictor.detected == []
    assert back[studio.c.preview] == shown_one
    edit(two)  # and a redo
    assert s.predictor.detected == []


# ------------------------------------------------------------------ real browser
@pytest.mark.parametrize("queries", [10, 300])
def test_an_edit_is_answered_with_many_query_images_and_its_latency_is_reported(
        browser, studio_app, tmp_path, artifacts, queries):
    url, demo = studio_app
    pid = make_project(demo.studio.projects, tmp_path / "q", queries, boxes=False)
    with open_tab(browser, f"{url}/?project={pid}", ready=False) as page:
        wait_ready(page, timeout=600_000)
        expect_pager = pager_text(0, min(queries, PREVIEW_PAGE_SIZE), queries)
        page.wait_for_function("(t) => document.querySelector('#preview-page').innerText"
                               ".includes(t)", arg=expect_pager)
        captions = page.locator("#preview").inner_text()
        assert "draw a box on an example to start" in captions
        page.evaluate(WATCH_PREVIEW)
        # the new preview: its captions count the detections (the first box's answer; a
        # picture may look the same when nothing is found on it)
        page.evaluate("""() => {
          const root = document.querySelector('#preview');
          new MutationObserver(() => {
            if (window.__edit.up !== null && window.__edit.change === null
                && !root.innerText.includes('draw a box on an example to start'))
              window.__edit.change = performance.now();
          }).observe(root, {subtree: true, childList: true, characterData: true,
                            attributes: true});
        }""")
        draw_box(page, COIN)
        pick_label(page, "coin")
        page.wait_for_function("() => window.__edit.change !== null", timeout=120_000)
        latency = page.evaluate("() => window.__edit.change - window.__edit.up")
        assert "draw a box on an example to start" not in page.locator("#preview").inner_text()
        # every query image gets its counts (after the preview), the table names the class
        s = session_of(page, demo)
        deadline = time.monotonic() + 120
        while len(s.results) < queries and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(s.results) == queries
        assert len(s.preview_items) == min(queries, PREVIEW_PAGE_SIZE)
        if queries > PREVIEW_PAGE_SIZE:
            page.click("#next-page")
            page.wait_for_function("() => document.querySelector('#preview-page').innerText"
                                   ".includes('Images 13–24')")
            assert re.search(r"query-013\.png", page.locator("#preview").inner_text())
        record = artifacts / "preview_pages_latency.json"
        data = json.loads(record.read_text()) if record.is_file() else {}
        data[str(queries)] = round(latency, 1)
        record.write_text(json.dumps(data, indent=1))
        print(f"\nmouse-up -> new preview with {queries} query images: {latency:.0f} ms")


class GatedPredictor(CountingPredictor):
    """`CountingPredictor` whose `detect_many` waits at `gate` while one is set (a slow
    detection: the edits that come meanwhile are a burst)."""

    gate = None

    def detect_many(self, images, params=None, **overrides):
        images = list(images)
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        return super().detect_many(images, params, **overrides)


@pytest.fixture(scope="module")
def gated_app(tiny_model, tmp_path_factory):
    from conftest import serve

    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(random_preset="tiny", work_dir=str(tmp_path_factory.mktemp("gw")),
                          projects_dir=str(tmp_path_factory.mktemp("gp")),
                          default_confidence=0.3, cache_bytes=256 * 2**20)
    demo = build_demo(tiny_model, config, studio=Studio(
        tiny_model, config, make_predictor=lambda: GatedPredictor(tiny_model)))
    with serve(demo) as url:
        yield url, demo


def test_a_burst_of_five_edits_detects_at_most_twice(browser, gated_app, tmp_path, artifacts):
    """Five boxes drawn while the first edit's detection is still running: the edits between
    are never computed (the annotator's event is `always_last`), only the first and the last."""
    import threading

    from browser_helpers import wait_rows

    url, demo = gated_app
    pid = make_project(demo.studio.projects, tmp_path / "q", 1)
    with open_tab(browser, f"{url}/?project={pid}", ready=False) as page:
        wait_ready(page, timeout=300_000)
        s = session_of(page, demo)
        query = s.path(s.queries()[0])
        wait_rows(page, "#diag-table", lambda rows: len(rows) == 1)
        page.wait_for_timeout(1000)  # the page's own follow-up events are done
        calls: list[list[str]] = []
        real = s.predictor.detect_many

        def spy(images, params=None, **overrides):
            images = list(images)
            calls.append(images)
            return real(images, params, **overrides)

        s.predictor.detect_many = spy
        s.predictor.gate = threading.Event()  # the first edit's detection waits here
        for box in [(185, 104, 227, 145), (188, 170, 237, 217), (18, 232, 75, 289),
                    (180, 230, 240, 290), (250, 25, 300, 75)]:
            draw_box(page, box)
            pick_label(page, "coin")
        page.wait_for_timeout(500)
        s.predictor.gate.set()
        rows = wait_rows(page, "#diag-table", lambda rows: len(rows) == 6, timeout=60)
        assert len(rows) == 6  # the last edit's boxes are the ones shown
        page.wait_for_timeout(1500)  # anything still queued would run now
        detected = [c for c in calls if query in c]
        assert 1 <= len(detected) <= 2, f"{len(detected)} detections of the query image"
        page.screenshot(path=str(artifacts / "burst_of_edits.png"))
