"""Undo / redo of box edits in a real browser: Ctrl+Z takes the last drawn box away (the
project and the preview follow), Ctrl+Shift+Z puts it back; the buttons do the same; the keys
work with a slider focused. And the history's answer to a record that arrives late."""

from __future__ import annotations

import time

from browser_helpers import draw_box, pick_label, upload
from playwright.sync_api import expect
from review_helpers import session_of

from ui import labels as L
from ui.handlers.history import BoxHistory
from ui.handlers.views import example_boxes as shown_boxes

FIRST, SECOND = (131, 28, 180, 74), (185, 104, 227, 145)


def example_boxes(session, n: int, timeout: float = 30.0) -> list:
    """The current example's labelled boxes once there are `n` of them."""
    deadline = time.monotonic() + timeout
    while True:
        with session.lock:
            item = session.current_example()
            boxes = [b for b in (shown_boxes(session, item) if item else []) if b.get("label")]
        if len(boxes) == n or time.monotonic() > deadline:
            return boxes
        time.sleep(0.05)


def test_ctrl_z_undoes_and_ctrl_shift_z_redoes_a_box(page, studio_app, coins_copy, artifacts):
    page.fill("#class-name input, #class-name textarea", "coin")
    page.click("#add-class")
    expect(page.locator("#legend")).to_contain_text("NOT coin")
    upload(page, "#upload-examples", coins_copy)
    page.wait_for_selector("#examples-gallery img")
    expect(page.locator("#status")).to_contain_text("all embedded", timeout=60_000)
    session = session_of(page, studio_app[1])
    draw_box(page, FIRST)
    pick_label(page, "coin")
    assert len(example_boxes(session, 1)) == 1
    draw_box(page, SECOND)
    pick_label(page, "coin")
    assert len(example_boxes(session, 2)) == 2
    expect(page.locator("#diag-warning")).to_contain_text("2 boxes")

    page.keyboard.press("Control+z")
    boxes = example_boxes(session, 1)
    assert len(boxes) == 1 and round(boxes[0]["xmin"]) in range(129, 134)
    expect(page.locator("#diag-warning")).not_to_contain_text("2 boxes")
    page.screenshot(path=str(artifacts / "undo_01.png"), full_page=True)

    page.keyboard.press("Control+Shift+z")
    assert len(example_boxes(session, 2)) == 2
    expect(page.locator("#diag-warning")).to_contain_text("2 boxes")

    page.click("#undo-examples")
    assert len(example_boxes(session, 1)) == 1
    page.click("#redo-examples")
    assert len(example_boxes(session, 2)) == 2
    # a focused slider is no text field: the shortcut still acts
    page.locator("#confidence input[type=range]").focus()
    page.keyboard.press("Control+z")
    assert len(example_boxes(session, 1)) == 1


def coin(xyxy, label="coin") -> dict:
    return L.annotator_box(xyxy, label, L.class_color(0))


def test_a_record_queued_before_an_undo_does_not_wipe_the_redo_step():
    """The label step of the last box reaches the history after Ctrl+Z (the page's change
    events have their own queue): it is stale, and redo still works."""
    h = BoxHistory()
    first, drawing = [coin(FIRST)], [coin(SECOND, ""), coin(FIRST)]
    both = [coin(SECOND), coin(FIRST)]
    for state in ([], first, drawing):
        h.record(state)                                # `both` is still queued
    assert h.step(both, back=True) == first            # the page showed `both` at Ctrl+Z
    assert h.record(both) is False                     # the late record: ignored
    assert h.record(first) is False and h.pending is None  # the undo's echo
    assert h.step(first, back=False) == both
    assert h.record(both) is False                     # the redo's echo
    assert h.step(both, back=True) == first
    h.record(first)
    h.record([coin(FIRST, "cat")])                     # a real edit after the echo
    assert h.step([coin(FIRST, "cat")], back=False) is None
