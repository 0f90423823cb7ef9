"""The whole review loop as a person does it, at 1280x720 with the mouse and keys (issue 16):
click a grey box (the canvas starts in select mode), E, Enter (accepts it as its proposed
class); click another, Del (rejects it); draw a missed object; Done; Apply suggested (the meter
then reads exactly what it promised); export COCO; rename the class; reload; export again: the
second export is the first with the new class name.

The detections on chelsea.png are scripted (`review_helpers.SCRIPT`: A .95, B .85, C .75)."""

from __future__ import annotations

import json
import re
import zipfile

from browser_helpers import draw_box, poll, wait_ready, wait_rows
from conftest import DOWNLOADS_READY, open_tab
from playwright.sync_api import expect
from review_helpers import CHELSEA_SIZE, REVIEW, SCRIPT, session_of
from test_review_accept_browser import accept_with_e_enter, center, click_image
from test_review_browser import (  # noqa: F401 -- scripted_app is a fixture
    choose_label,
    open_chelsea_for_review,
    scripted_app,
    wait_labels,
)

VIEWPORT = {"width": 1280, "height": 720}
(A, _, _), (B, _, _), (C, _, _) = SCRIPT
MISSED = (40.0, 180.0, 160.0, 280.0)


def export_coco(page) -> dict:
    """Click "Export dataset" (COCO) and read the downloaded annotations."""
    page.locator("#export-dataset").scroll_into_view_if_needed()
    page.click("#export-dataset")
    link = page.locator("#dataset-file a[download$='coco.zip']")
    expect(link).to_be_visible(timeout=60_000)
    with page.expect_download() as download:
        link.click()
    with zipfile.ZipFile(download.value.path()) as zf:
        return json.loads(zf.read("annotations.json"))


def boxes_by_class(coco: dict) -> list[tuple]:
    """(image file, width, height, class name, bbox) of every annotation, sorted."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    return sorted((images[a["image_id"]]["file_name"], images[a["image_id"]]["width"],
                   images[a["image_id"]]["height"], names[a["category_id"]],
                   tuple(round(v, 3) for v in a["bbox"])) for a in coco["annotations"])


def meter_numbers(text: str) -> tuple[str, str, str, str]:
    """(confidence, F1, P, R) of the meter's "Suggested confidence" line."""
    m = re.search(r"Suggested confidence (\S+) \(best F1 (\S+): P (\S+), R ([0-9.]+)\)", text)
    assert m, f"no suggestion in {text!r}"
    return m.group(1), m.group(2), m.group(3), m.group(4)


def test_the_review_loop_as_a_person_does_it(browser, scripted_app, artifacts):  # noqa: F811
    url, demo = scripted_app
    with open_tab(browser, url, VIEWPORT, downloads=True) as page:
        open_chelsea_for_review(page)
        session = session_of(page, demo)
        status = page.locator("#review-status input[value='not_reviewed']")
        # the canvas starts in select mode; a click on nothing changes nothing
        expect(page.locator(f"{REVIEW} button[aria-label='Drag boxes']")).to_have_class(
            re.compile("selected"))
        click_image(page, 440, 290)
        page.wait_for_timeout(500)
        expect(status).to_be_checked()
        page.screenshot(path=str(artifacts / "loop_01_opened.png"))

        # accept A: click it, E, Enter (the dialog shows its proposed class)
        labels = accept_with_e_enter(page, session, A, 1)
        assert [(x.cls, x.source) for x in labels] == [("coin", "accepted")]
        expect(page.locator("#review-status input[value='in_review']")).to_be_checked()

        # reject B: click it, Del; the button says how many it adds
        click_image(page, *center(B))
        page.keyboard.press("Delete")
        expect(page.locator("#review-info")).to_contain_text("1 rejected")
        expect(page.locator("#review-to-negatives")).to_contain_text("1 rejected")

        # draw the missed object
        draw_box(page, MISSED, CHELSEA_SIZE[0], root=REVIEW)
        choose_label(page, "coin")
        labels = wait_labels(session, "chelsea.png", 2)
        assert sorted(x.source for x in labels) == ["accepted", "drawn"]
        page.screenshot(path=str(artifacts / "loop_03_reviewed.png"))

        # done: the next image not done is shown
        page.click("#review-done")
        expect(page.locator("#review-info")).to_contain_text("coins.png")

        # the meter suggests 0.95 (A only: P 1, R 1/2); Apply reads exactly that
        info = page.locator("#meter-info")
        expect(info).to_contain_text("Suggested confidence", timeout=60_000)
        conf, f1, p, r = meter_numbers(info.inner_text())
        assert (conf, f1, p, r) == ("0.95", "0.667", "1.000", "0.500")
        page.locator("#apply-suggested").scroll_into_view_if_needed()
        page.click("#apply-suggested")
        expect(page.locator("#confidence input[type=number]")).to_have_value(conf)
        expect(info).to_contain_text(f"confidence {conf}")
        rows = wait_rows(page, "#meter-table", lambda rows: rows[-1][0] == "all"
                         and rows[-1][3] == f1)
        assert rows[-1][1:4] == [p, r, f1]
        page.locator("#meter-table").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / "loop_04_applied.png"))

        first = export_coco(page)
        assert [c["name"] for c in first["categories"]] == ["coin", "cat"]
        assert len(first["annotations"]) == 2

        # rename coin -> penny, reload, export again
        page.locator("#class-pick input").click()
        page.locator("#class-pick li[aria-label='coin']").click()
        page.fill("#class-name textarea, #class-name input", "penny")
        page.click("#rename-class")
        expect(page.locator("#legend")).to_contain_text("NOT penny")
        poll(lambda: "penny" in (session.core.classes if session.core else []), bool,
             "the rename reached the server")
        page.reload()
        page.wait_for_function(DOWNLOADS_READY)
        wait_ready(page)
        again = export_coco(page)
        page.screenshot(path=str(artifacts / "loop_05_after_reload.png"))
        assert [c["name"] for c in again["categories"]] == ["penny", "cat"]
        renamed = [(f, w, h, "penny" if c == "coin" else c, b)
                   for f, w, h, c, b in boxes_by_class(first)]
        assert boxes_by_class(again) == renamed
