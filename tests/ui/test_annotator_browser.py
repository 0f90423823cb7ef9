"""The drawing surface in a real browser: the box label dialog opens on the class picked in the
page and number keys pick a class (`ui.labels.label_choices`, `ui.annotator_scripts`); tall and
wide images keep their aspect ratio in both annotators, and a box drawn on a tall image reaches
the server in the image pixels it was drawn over.

Screenshots: test-artifacts/annotator_label_dialog.png, annotator_tall_image.png,
annotator_review_tall_image.png."""

from __future__ import annotations

from pathlib import Path

from browser_helpers import draw_box, image_origin, poll, upload
from PIL import Image, ImageDraw
from playwright.sync_api import expect
from review_helpers import REVIEW, review_origin, session_of

from ui import labels as L
from ui.annotator_scripts import MAX_CANVAS_HEIGHT
from ui.handlers.views import example_boxes as shown_boxes

TALL, WIDE, SMALL = (300, 1200), (1200, 300), (400, 300)
DIALOG = "#model-box-edit"


def picture(folder: Path, name: str, size: tuple[int, int]) -> Path:
    """A PNG of `size` (a circle in the middle, lines every 100 px: a squashed view shows)."""
    w, h = size
    img = Image.new("RGB", size, (200, 220, 240))
    draw = ImageDraw.Draw(img)
    for y in range(0, h, 100):
        draw.line([(0, y), (w, y)], fill=(0, 0, 0), width=2)
    r = min(w, h) // 3
    draw.ellipse([w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r], outline=(255, 0, 0), width=5)
    path = folder / name
    img.save(path)
    return path


def add_classes(page, *names: str) -> None:
    field = page.locator("#class-name input, #class-name textarea").first
    for name in names:
        field.fill(name)
        field.press("Enter")
        expect(page.locator("#legend")).to_contain_text(f"NOT {name}")


def pick_class(page, demo, name: str) -> None:
    """Pick `name` in the Class dropdown, as a person would, and wait for the server."""
    page.locator("#class-pick input").click()
    page.locator(f"#class-pick li[aria-label='{name}']").click()
    session = session_of(page, demo)
    poll(lambda: session.active_class, lambda v: v == name, f"class {name} picked")
    page.wait_for_timeout(300)  # its answer (the annotators' label lists) reaches the page


def add_examples(page, *paths: Path) -> None:
    upload(page, "#upload-examples", *paths)
    page.wait_for_function(f"() => document.querySelectorAll('#examples-gallery img').length"
                           f" == {len(paths)}")


def wait_canvas(page, root: str, ratio: float) -> dict:
    """The annotator's canvas once it shows a picture of this aspect ratio (or the timeout's
    last reading): its CSS box and its bitmap size."""
    read = f"""() => {{
      const c = document.querySelector('{root} canvas');
      if (!c) return null;
      const r = c.getBoundingClientRect();
      return {{width: r.width, height: r.height, bitmap_width: c.width,
               bitmap_height: c.height}};
    }}"""
    try:
        return poll(lambda: page.evaluate(read),
                    lambda v: bool(v) and v["height"] > 0
                    and abs(v["width"] / v["height"] / ratio - 1) < 0.02, f"{root} ratio")
    except AssertionError:
        return page.evaluate(read)


def dialog_label(page) -> tuple[str, str]:
    """(label, colour) the open label dialog shows."""
    dialog = page.locator(DIALOG)
    dialog.wait_for()
    page.wait_for_timeout(200)
    return (dialog.locator("input[aria-label='Label']").input_value(),
            dialog.locator("input[type=color]").input_value().upper())


def example_boxes(page, demo, name: str, n: int) -> list[dict]:
    """The server's boxes of example `name` once there are `n` labelled ones."""
    session = session_of(page, demo)

    def read():
        with session.lock:
            item = next(i for i in session.examples() if i.name == name)
            return [b for b in shown_boxes(session, item) if b.get("label")]
    return poll(read, lambda boxes: len(boxes) == n, f"{n} labelled box(es) on {name}")


def review_labels(page, demo, name: str, n: int) -> list:
    """The review labels of image `name` once it has `n`."""
    session = session_of(page, demo)

    def read():
        with session.lock:
            recs = [r for r in (session.core.images if session.core else ()) if r.name == name]
            return list(recs[0].labels) if recs else []
    return poll(read, lambda labels: len(labels) == n, f"{n} review label(s) on {name}")


def review_drag(page, xyxy, natural_width: int) -> None:
    """Drag a new box over image pixels `xyxy` of the review annotator."""
    draw_box(page, xyxy, natural_width, root=REVIEW)


def assert_box_at(got, want, scale: float) -> None:
    """Image-pixel boxes equal to within 2 page pixels (the mouse's resolution)."""
    tolerance = 2 / scale
    assert all(abs(g - w) <= tolerance for g, w in zip(got, want, strict=True)), (got, want)


def test_label_dialog_opens_on_the_class_picked_in_the_page(page, studio_app, artifacts,
                                                             tmp_path):
    demo = studio_app[1]
    add_classes(page, "coin", "bolt", "nut")  # the last one added is the picked one
    add_examples(page, picture(tmp_path, "small.png", SMALL))
    pick_class(page, demo, "bolt")  # the second class

    draw_box(page, (40, 40, 160, 140), natural_width=SMALL[0])
    assert dialog_label(page) == ("bolt", L.class_color(1))
    page.screenshot(path=str(artifacts / "annotator_label_dialog.png"))
    page.keyboard.press("Enter")  # confirms the default
    expect(page.locator(DIALOG)).to_have_count(0)
    (box,) = example_boxes(page, demo, "small.png", 1)
    assert box["label"] == "bolt" and box["color"] == L.hex_to_rgb(L.class_color(1))

    # the review annotator (showing the query image): a new box opens on the picked class too
    upload(page, "#upload-queries", picture(tmp_path, "query.png", SMALL))
    expect(page.locator("#review-info")).to_contain_text("query.png", timeout=30_000)
    pick_class(page, demo, "nut")
    review_drag(page, (220, 60, 360, 200), SMALL[0])
    assert dialog_label(page) == ("nut", L.class_color(2))
    page.keyboard.press("Enter")
    expect(page.locator(DIALOG)).to_have_count(0)
    (label,) = review_labels(page, demo, "query.png", 1)
    assert label.cls == "nut"

    # relabelling a box (double-click) opens on the box's own class, not the picked one
    page.locator("#annotator button[aria-label='Drag boxes']").click()
    ox, oy, scale = image_origin(page, SMALL[0])
    page.mouse.dblclick(ox + 100 * scale, oy + 90 * scale)
    assert dialog_label(page) == ("bolt", L.class_color(1))
    page.keyboard.press("Escape")
    expect(page.locator(DIALOG)).to_have_count(0)


def test_number_keys_pick_the_nth_class_of_the_project(page, studio_app, tmp_path):
    demo = studio_app[1]
    add_classes(page, "coin", "bolt", "nut")
    expect(page.locator("#legend")).to_contain_text("1 coin")  # the legend shows the keys
    add_examples(page, picture(tmp_path, "small.png", SMALL))
    pick_class(page, demo, "bolt")  # the dialog lists bolt, coin, nut (and each NOT …)

    draw_box(page, (40, 40, 160, 140), natural_width=SMALL[0])
    assert dialog_label(page)[0] == "bolt"
    # keys follow the project's class order (the legend's), not the dialog's: stable numbers
    page.keyboard.press("1")
    assert dialog_label(page) == ("coin", L.class_color(0))
    page.keyboard.press("2")
    assert dialog_label(page) == ("bolt", L.class_color(1))
    page.keyboard.press("3")
    assert dialog_label(page) == ("nut", L.class_color(2))
    page.keyboard.press("9")  # no 9th class: nothing changes
    assert dialog_label(page) == ("nut", L.class_color(2))
    # a digit typed into a text field outside the dialog stays there
    class_field = page.locator("#class-name input, #class-name textarea").first
    class_field.focus()
    page.keyboard.type("x7")
    assert class_field.input_value() == "x7"
    assert dialog_label(page)[0] == "nut"
    class_field.fill("")
    page.locator(DIALOG).locator("button", has_text="OK").click()
    expect(page.locator(DIALOG)).to_have_count(0)
    (box,) = example_boxes(page, demo, "small.png", 1)
    assert box["label"] == "nut" and box["color"] == L.hex_to_rgb(L.class_color(2))

    # a label typed into the dialog keeps its digits
    draw_box(page, (220, 60, 360, 200), natural_width=SMALL[0])
    field = page.locator(f"{DIALOG} input[aria-label='Label']")
    field.fill("bolt ")
    field.press("2")
    assert field.input_value() == "bolt 2"
    page.keyboard.press("Escape")
    expect(page.locator(DIALOG)).to_have_count(0)


def test_tall_and_wide_images_keep_their_aspect_ratio_in_both_annotators(
        page, studio_app, artifacts, tmp_path):
    demo = studio_app[1]
    add_examples(page, picture(tmp_path, "tall.png", TALL), picture(tmp_path, "wide.png", WIDE))
    upload(page, "#upload-queries", picture(tmp_path, "tall-query.png", TALL))
    tall = wait_canvas(page, "#annotator", TALL[0] / TALL[1])
    assert abs(tall["width"] / tall["height"] / (TALL[0] / TALL[1]) - 1) < 0.02, tall
    assert tall["height"] <= MAX_CANVAS_HEIGHT + 1, tall
    # the bitmap is shown 1:1 (a CSS height cap alone squashed it)
    assert abs(tall["bitmap_height"] - tall["height"]) <= 1, tall
    page.locator("#annotator").screenshot(path=str(artifacts / "annotator_tall_image.png"))

    # a box drawn over the circle arrives in the image's pixels
    _, _, scale = image_origin(page, TALL[0])
    draw_box(page, (50, 500, 250, 700), natural_width=TALL[0])
    page.locator(DIALOG).wait_for()
    page.keyboard.press("Enter")
    (box,) = example_boxes(page, demo, "tall.png", 1)
    assert_box_at((box["xmin"], box["ymin"], box["xmax"], box["ymax"]), (50, 500, 250, 700),
                  scale)

    # the wide example, then the tall query image in the review annotator
    page.locator("#examples-gallery button.thumbnail-item").nth(1).click()
    wide = wait_canvas(page, "#annotator", WIDE[0] / WIDE[1])
    assert abs(wide["width"] / wide["height"] / (WIDE[0] / WIDE[1]) - 1) < 0.02, wide
    assert wide["height"] <= MAX_CANVAS_HEIGHT + 1, wide
    expect(page.locator("#review-info")).to_contain_text("tall-query.png", timeout=30_000)
    review = wait_canvas(page, "#review-annotator", TALL[0] / TALL[1])
    assert abs(review["width"] / review["height"] / (TALL[0] / TALL[1]) - 1) < 0.02, review
    assert review["height"] <= MAX_CANVAS_HEIGHT + 1, review
    page.locator("#review-annotator").screenshot(
        path=str(artifacts / "annotator_review_tall_image.png"))
    _, _, scale = review_origin(page, TALL[0])
    review_drag(page, (60, 900, 240, 1100), TALL[0])
    page.locator(DIALOG).wait_for()
    page.keyboard.press("Enter")
    (label,) = review_labels(page, demo, "tall-query.png", 1)
    assert_box_at(label.xyxy, (60, 900, 240, 1100), scale)
