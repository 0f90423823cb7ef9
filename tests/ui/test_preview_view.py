"""The browser-side preview (`ui.preview_view`) on its own page: it draws the detections it is
sent, and the confidence slider and the labels toggle redraw it in the browser without a single
server request; a thumbnail click selects that image and tells the server."""

from __future__ import annotations

import gradio as gr
import pytest
from conftest import ASSETS, free_port

from ui.preview_view import (
    PreviewImage,
    PreviewPage,
    box_rows,
    picture_url,
    preview_value,
    preview_view,
    visible,
)

CHELSEA = ASSETS / "images" / "chelsea.png"  # 451 x 300
COINS = ASSETS / "images" / "coins.png"  # 384 x 303
#: (x0, y0, x1, y1, class id, score), best first
CHELSEA_BOXES = [(20, 20, 120, 120, 0, 0.95), (160, 20, 260, 120, 1, 0.85),
                 (300, 20, 420, 140, 0, 0.55), (40, 180, 160, 280, 0, 0.30)]
COINS_BOXES = [(131, 28, 180, 74, 0, 0.9), (185, 104, 227, 145, 0, 0.6)]


def test_box_rows_rounds_and_keeps_the_order():
    import numpy as np

    rows = box_rows(np.array([[1.234, 2.0, 3.0, 4.56]]), np.array([2]), np.array([0.123456]))
    assert rows == [[1.2, 2.0, 3.0, 4.6, 2, 0.1235]]


def test_visible_keeps_the_boxes_at_or_above_the_confidence():
    value = {"images": [{"boxes": [list(b) for b in CHELSEA_BOXES]}]}
    assert [b[5] for b in visible(value, 0.55)[0]] == [0.95, 0.85, 0.55]
    assert visible(value, 0.99) == [[]]


@pytest.fixture(scope="module")
def view_app():
    """A page with the view, a confidence slider, a labels toggle and a button that sends a
    new page of detections; `selects` collects the select events the server got."""
    selects: list[int] = []
    with gr.Blocks() as demo:
        confidence = gr.Slider(0, 1, value=0.5, step=0.01, label="Confidence",
                               elem_id="confidence")
        gr.Checkbox(True, label="Show labels and scores", interactive=True,
                    elem_id="show-labels")
        view = preview_view(elem_id="preview")
        send = gr.Button("send", elem_id="send")
        picked = gr.Textbox(elem_id="picked")

        def on_send() -> dict:
            images = [PreviewImage("chelsea.png", picture_url(view, str(CHELSEA)), (451, 300),
                                   CHELSEA_BOXES),
                      PreviewImage("coins.png", picture_url(view, str(COINS)), (384, 303),
                                   COINS_BOXES, prompts=[(10, 10, 60, 60, 0, True)])]
            return preview_value(PreviewPage(images, ["coin", "cat"], ["#1E88E5", "#43A047"],
                                             confidence=0.5, rev="r1"))

        def on_select(evt: gr.SelectData) -> str:
            selects.append(int(evt.index))
            return f"{evt.index}:{evt.value}"

        send.click(on_send, None, view)
        view.select(on_select, None, picked)
        confidence.release(lambda v: None, confidence, None)  # the release may ask the server
    demo.queue()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                quiet=True)
    try:
        yield demo.local_url.rstrip("/"), selects
    finally:
        demo.close()


def _state(page) -> dict:
    return page.evaluate("""() => { const r = document.querySelector('#preview .owl-pv');
      return {rev: Number(r.dataset.rev), conf: Number(r.dataset.confidence),
              shown: Number(r.dataset.shown), labels: r.querySelectorAll('.stage text').length,
              counts: Array.from(r.querySelectorAll('.page-counts .count'))
                      .map(c => c.innerText)}; }""")


def _drag_slider(page, value: float) -> None:
    """Drag the confidence slider's thumb to `value` with the mouse, in small steps."""
    rng = page.locator("#confidence input[type=range]")
    box = rng.bounding_box()
    now = float(rng.input_value())
    y = box["y"] + box["height"] / 2

    def x(v: float) -> float:
        thumb = min(16.0, box["height"])
        return box["x"] + thumb / 2 + (box["width"] - thumb) * v

    page.mouse.move(x(now), y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(x(now + (value - now) * k / 8), y)


def test_the_slider_and_the_labels_toggle_redraw_in_the_browser_without_a_request(
        browser, view_app, artifacts):
    url, selects = view_app
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        page.wait_for_selector("#preview .owl-pv")
        page.click("#send")
        page.wait_for_function(
            "() => Number(document.querySelector('#preview .owl-pv').dataset.shown) === 3")
        page.wait_for_function("() => Array.from(document.querySelectorAll('#preview img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        first = _state(page)
        # at 0.5: chelsea's 0.95, 0.85, 0.55 drawn (the 0.30 is not); page counts 4 coin, 1 cat
        assert first["labels"] == 3
        assert first["counts"] == ["coin 4", "cat 1"]
        page.screenshot(path=str(artifacts / "preview_view_0.50.png"))

        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        _drag_slider(page, 0.9)
        # redrawn while the mouse is still down: nothing was asked of the server
        page.wait_for_function(
            "() => Number(document.querySelector('#preview .owl-pv').dataset.shown) === 1")
        during = _state(page)
        assert during["rev"] > first["rev"]
        assert during["counts"] == ["coin 2", "cat 0"]
        assert requests == [], f"the slider moves asked the server: {requests}"
        page.mouse.up()  # the release is the one moment the server hears of it
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / "preview_view_0.90.png"))

        before = len(requests)
        page.locator("#show-labels input[type=checkbox]").click()
        page.wait_for_function(
            "() => document.querySelectorAll('#preview .stage text').length === 0")
        assert _state(page)["shown"] == 1  # boxes stay, their labels go
        page.wait_for_timeout(300)
        assert requests[before:] == [], f"the labels toggle asked the server: {requests}"

        page.locator("#preview .thumb").nth(1).click()  # the coins thumbnail
        page.wait_for_function(
            "() => document.querySelector('#preview .owl-pv').dataset.selected === '1'")
        page.wait_for_function("() => (document.querySelector('#picked textarea')?.value || '')"
                               " === '1:coins.png'")
        assert selects[-1] == 1
        # the example's negative box is drawn dashed, in red
        assert page.locator("#preview .stage rect.neg").count() == 1
        page.screenshot(path=str(artifacts / "preview_view_coins.png"))
        assert not errors, errors
    finally:
        context.close()
