"""Review traps 2, 3 and 7 of issue 16 in a real browser at 1280x720, with the mouse and keys:
the review canvas starts in select mode (a click on a grey box selects it; a click on nothing
changes nothing, not even the status); E then Enter on the proposed class turns the grey box
into a label (the dialog already shows that class); the meter's columns all fit.

The detections on chelsea.png are scripted (`review_helpers.SCRIPT`: A .95, B .85, C .75)."""

from __future__ import annotations

import re

from conftest import open_tab
from playwright.sync_api import expect
from review_helpers import CHELSEA_SIZE, REVIEW, SCRIPT, review_origin, session_of
from test_review_browser import (  # noqa: F401 -- scripted_app is a fixture
    open_chelsea_for_review,
    scripted_app,
    wait_labels,
)

VIEWPORT = {"width": 1280, "height": 720}
(A, _, _), (B, _, _), (C, _, _) = SCRIPT


#: Problems of a table at the current width: its last column cut off, a cell's text cut (an
#: ellipsis), or a word split across lines.
FITS = """(sel) => {
  const root = document.querySelector(sel);
  const out = [];
  const last = Array.from(root.querySelectorAll('th')).pop().getBoundingClientRect();
  if (last.right > root.getBoundingClientRect().right + 1) out.push('last column cut off');
  const cells = Array.from(root.querySelectorAll('[role=gridcell], th'));
  if (!root.querySelector('[role=gridcell]')) out.push('no cells');
  for (const cell of cells) {
    for (const el of [cell, ...cell.querySelectorAll('*')])
      if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0)
        out.push(`cut: ${cell.innerText.trim()}`);
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const words = /\\S+/g;
      let m;
      while ((m = words.exec(n.data))) {
        const r = document.createRange();
        r.setStart(n, m.index);
        r.setEnd(n, m.index + m[0].length);
        const lines = new Set(Array.from(r.getClientRects()).map((x) => Math.round(x.top)));
        if (lines.size > 1) out.push(`split: ${m[0]}`);
      }
    }
  }
  return [...new Set(out)];
}"""


def click_image(page, x: float, y: float) -> None:
    """A plain click on image pixel (x, y) of the review canvas, whatever mode it is in."""
    ox, oy, scale = review_origin(page, CHELSEA_SIZE[0])
    page.mouse.click(ox + x * scale, oy + y * scale)


def center(xyxy) -> tuple[float, float]:
    return (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2


def status_of(session, name: str) -> str:
    with session.lock:
        return next(r.status for r in session.core.images if r.name == name)


def accept_with_e_enter(page, session, xyxy, n_labels: int) -> list:
    """Click the grey box at `xyxy`, press E, then Enter in the dialog (which shows the
    proposed class): the labels once there are `n_labels`."""
    click_image(page, *center(xyxy))
    page.keyboard.press("e")
    page.locator("#model-box-edit").wait_for()
    page.keyboard.press("Enter")
    page.locator("#model-box-edit").wait_for(state="detached")
    return wait_labels(session, "chelsea.png", n_labels)


def test_select_mode_and_e_enter_accept_the_proposed_class(browser, scripted_app, artifacts):  # noqa: F811
    url, demo = scripted_app
    with open_tab(browser, url, VIEWPORT, downloads=True) as page:
        open_chelsea_for_review(page)
        session = session_of(page, demo)
        expect(page.locator(f"{REVIEW} button[aria-label='Drag boxes']")).to_have_class(
            re.compile("selected"))
        click_image(page, 440, 290)  # nothing there
        page.wait_for_timeout(1000)  # what the click sent has been handled
        assert status_of(session, "chelsea.png") == "not_reviewed"
        expect(page.locator("#review-status input[value='not_reviewed']")).to_be_checked()

        labels = accept_with_e_enter(page, session, A, 1)
        assert [(x.cls, x.source, x.xyxy) for x in labels] == [("coin", "accepted", A)]
        expect(page.locator("#review-status input[value='in_review']")).to_be_checked()
        expect(page.locator("#review-info")).to_contain_text("2 detection(s) still grey")
        # the OK button does the same
        click_image(page, *center(B))
        page.keyboard.press("e")
        dialog = page.locator("#model-box-edit")
        dialog.wait_for()
        dialog.locator("button", has_text="OK").click()
        dialog.wait_for(state="detached")
        assert len(wait_labels(session, "chelsea.png", 2)) == 2
        page.locator(REVIEW).scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "review_accept_1280.png"))

        # the meter's last column is inside its table at 1280 px; the box diagnostics too
        page.click("#review-done")
        page.locator("#meter-table").scroll_into_view_if_needed()
        expect(page.locator("#meter-table")).to_contain_text("FN", timeout=60_000)
        page.screenshot(path=str(artifacts / "review_meter_1280.png"))
        for table in ("#meter-table", "#diag-table"):
            assert page.evaluate(FITS, table) == [], f"{table} does not fit at 1280 px"
        page.locator("#diag-table").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "review_diag_1280.png"))
