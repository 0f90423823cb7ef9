"""The studio's first screen in a real browser: at 1280x720 the example canvas, the preview and
the confidence slider are on screen without scrolling (on a fresh page and after loading the
example project), with one primary button (the first step) above the fold; a narrow window
stacks the two columns, examples above the preview.

Screenshots: test-artifacts/first_screen_*.png."""

from __future__ import annotations

import pytest
from browser_helpers import wait_ready
from conftest import open_tab
from playwright.sync_api import expect

WIDE = {"width": 1280, "height": 720}
NARROW = {"width": 700, "height": 900}
#: How much of the canvas and of the preview must be on the first screen (px, from their top).
TOP_IN_VIEW = 200


@pytest.fixture()
def small_page(browser, studio_app):
    """A fresh tab at 1280x720 (the page loads at that size; no errors on it)."""
    with open_tab(browser, studio_app[0], WIDE) as page:
        yield page


def box_of(page, selector: str) -> dict:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    return box


def assert_on_first_screen(page, selector: str, top_px: float | None = None) -> None:
    """`selector` lies inside the viewport horizontally, starts inside it, and shows at least
    `top_px` of its height (all of it when None) without scrolling."""
    view = page.viewport_size
    box = box_of(page, selector)
    assert box["x"] >= 0 and box["x"] + box["width"] <= view["width"] + 0.5, (selector, box)
    assert 0 <= box["y"], (selector, box)
    shown = min(box["y"] + box["height"], view["height"]) - box["y"]
    need = box["height"] if top_px is None else min(top_px, box["height"])
    assert shown >= need - 0.5, f"{selector}: {shown:.0f} of {need:.0f} px on screen ({box})"


def assert_first_screen(page, canvas: str) -> None:
    assert page.evaluate("() => window.scrollY") == 0
    assert_on_first_screen(page, canvas, TOP_IN_VIEW)
    assert_on_first_screen(page, "#preview", TOP_IN_VIEW)
    assert_on_first_screen(page, "#confidence")
    assert_on_first_screen(page, "#confidence input[type=range]")


def primary_buttons_on_screen(page) -> list[str]:
    """Ids (or texts) of the visible primary buttons whose top is above the fold."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('button.primary'))
        .filter(b => { const r = b.getBoundingClientRect();
                       return r.width > 0 && r.height > 0 && r.top < window.innerHeight; })
        .map(b => b.id || b.innerText.trim())""")


def test_canvas_preview_and_confidence_fit_1280x720(small_page, artifacts):
    page = small_page
    # fresh page: the empty annotator (its upload area) stands where the canvas will be
    assert_first_screen(page, "#annotator")
    assert primary_buttons_on_screen(page) == ["load-example-project"]
    # what is not the first step waits in closed accordions
    for accordion in ("#samples-accordion", "#pt-accordion", "#preview-options"):
        expect(page.locator(f"{accordion} [data-testid=accordion-content]")).to_be_hidden()
    # "Correct selected image" is folded into the review panel (its to-examples buttons)
    expect(page.locator("#correct")).to_have_count(0)
    page.screenshot(path=str(artifacts / "first_screen_1280x720_fresh.png"))

    page.click("#load-example-project")
    wait_ready(page)
    expect(page.locator("#annotator canvas")).to_be_visible()
    page.wait_for_timeout(300)  # the canvas takes its size once the image is in
    assert_first_screen(page, "#annotator canvas")
    assert primary_buttons_on_screen(page) == ["load-example-project"]
    page.screenshot(path=str(artifacts / "first_screen_1280x720_example.png"))


def test_columns_side_by_side_when_wide_stacked_when_narrow(small_page, artifacts):
    page = small_page
    examples, preview = box_of(page, "#examples-column"), box_of(page, "#preview-column")
    assert examples["x"] + examples["width"] <= preview["x"]  # side by side at 1280
    assert abs(examples["y"] - preview["y"]) < 1

    page.set_viewport_size(NARROW)
    expect(page.locator("#preview-column")).to_be_visible()
    page.wait_for_timeout(300)  # the layout settles at the new width
    examples, preview = box_of(page, "#examples-column"), box_of(page, "#preview-column")
    assert examples["y"] + examples["height"] <= preview["y"] + 0.5  # examples above
    assert abs(examples["x"] - preview["x"]) < 1 and preview["width"] > 0.8 * NARROW["width"]
    # nothing wider than the window: no sideways scrolling
    assert page.evaluate("() => document.documentElement.scrollWidth") <= NARROW["width"]
    page.screenshot(path=str(artifacts / "first_screen_700_wide.png"), full_page=True)
