"""Browser helpers shared by the Playwright tests and the edit->preview profiler: upload,
draw a box with the mouse, pick its label, read tables, wait for the preview."""

from __future__ import annotations

import time
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

ASSETS = Path(__file__).resolve().parents[2] / "assets"
COINS = ASSETS / "images" / "coins.png"
COINS_WIDTH = 384
#: JS: what the preview shows, as a string that changes with every redraw (the browser-side
#: preview, `ui.preview_view`, counts its redraws in ``data-rev``)
PREVIEW_SIG = "() => document.querySelector('#preview .owl-pv')?.dataset.rev || ''"
# records performance.now() at every pointerup (and the wall clock, to find the server's trace of
# the event it sent) and at the first preview change after it
WATCH_PREVIEW = """() => {
  const sig = """ + PREVIEW_SIG + """;
  window.__edit = {up: null, upWall: null, change: null, sig: sig()};
  document.addEventListener('pointerup', () => {
    window.__edit.up = performance.now(); window.__edit.upWall = Date.now();
    window.__edit.change = null; }, true);
  new MutationObserver(() => {
    const s = sig();
    if (s !== window.__edit.sig) {
      window.__edit.sig = s;
      if (window.__edit.up !== null && window.__edit.change === null)
        window.__edit.change = performance.now();
    }
  }).observe(document.querySelector('#preview'),
             {subtree: true, childList: true, attributes: true, attributeFilter: ['data-rev']});
}"""


def preview_sig(page) -> str:
    return page.evaluate(PREVIEW_SIG)


def wait_preview_change(page, old: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sig = preview_sig(page)
        if sig and sig != old:
            return sig
        page.wait_for_timeout(50)
    raise AssertionError("the preview was not redrawn")


def wait_ready(page, timeout: float = 60_000) -> None:
    """All images embedded and shown in the preview, none of them waiting."""
    page.wait_for_function(
        "() => (document.querySelector('#status')?.innerText || '').includes('all embedded')"
        " && document.querySelectorAll('#preview img').length > 0"
        " && document.querySelector('#preview .owl-pv')?.dataset.waiting === '0'",
        timeout=timeout)
    page.wait_for_timeout(300)


def upload(page, button: str, *paths: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(button)
    chooser.value.set_files([str(p) for p in paths])


def image_origin(page, natural_width: int, root: str = "#annotator") -> tuple[float, float, float]:
    """Page position of the top-left image pixel of the annotator `root` (``#annotator`` or
    ``#review-annotator``), and page pixels per image pixel (the component centres an image
    narrower than the canvas and shrinks a wider one)."""
    canvas = page.locator(f"{root} canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = min(1.0, box["width"] / natural_width)
    return box["x"] + (box["width"] - natural_width * scale) / 2, box["y"], scale


def draw_box(page, xyxy, natural_width: int = COINS_WIDTH, root: str = "#annotator") -> None:
    """Drag a box with the mouse over image pixels `xyxy` of the annotator `root`, in
    box-creation mode."""
    page.locator(f"{root} button[aria-label='Create box']").click()
    ox, oy, scale = image_origin(page, natural_width, root)
    x0, y0, x1, y1 = (v * scale for v in xyxy)
    page.mouse.move(ox + x0, oy + y0)
    page.mouse.down()
    page.mouse.move(ox + (x0 + x1) / 2, oy + (y0 + y1) / 2, steps=6)
    page.mouse.move(ox + x1, oy + y1, steps=6)
    page.mouse.up()


def pick_label(page, label: str) -> None:
    """In the box label dialog, type `label`, pick it from the filtered list and confirm.

    The component's list sometimes comes up empty when the dialog opens within milliseconds of
    a value update (a race inside gradio_image_annotation); Enter then confirms the typed text.
    """
    dialog = page.locator("#model-box-edit")
    dialog.wait_for()
    field = dialog.locator("input[aria-label='Label']")
    field.fill(label)
    option = dialog.locator(f"li[aria-label='{label}']")
    try:
        option.click(timeout=3000)
    except PlaywrightTimeout:
        field.press("Enter")
    if dialog.count():
        dialog.locator("button", has_text="OK").click()
    dialog.wait_for(state="detached")


def table_rows(page, selector: str) -> list[list[str]]:
    """Body cells of a gr.Dataframe, row by row."""
    return page.evaluate(
        """(sel) => Array.from(document.querySelectorAll(sel + ' [role=row].virtual-row'))
             .map(r => Array.from(r.querySelectorAll('[role=gridcell]'))
                       .map(c => c.innerText.trim()))""",
        selector)


def table_header(page, selector: str) -> list[str]:
    return page.evaluate(
        """(sel) => Array.from(document.querySelectorAll(sel + ' th[role=columnheader]')).map(
             th => th.getAttribute('title'))""", selector)


def poll(read, accept, what: str, timeout: float = 30.0, interval: float = 0.05):
    """`read()` once `accept` holds for it (the server answers the page asynchronously);
    AssertionError naming `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never happened; last seen {value!r}")
        time.sleep(interval)


def wait_rows(page, selector: str, predicate, timeout: float = 30.0) -> list[list[str]]:
    return poll(lambda: table_rows(page, selector), lambda rows: bool(rows) and predicate(rows),
                f"{selector}: rows satisfying the check", timeout, 0.1)


def open_accordion(page, elem_id: str) -> None:
    """Open the accordion ``#elem_id`` unless it is open: a closed accordion's content is not
    in the page at all (Gradio mounts it on the first opening), so a test that reads or clicks
    something inside one (the sample images, the `.pt` files, the preview options) opens it
    first, as a person would."""
    accordion = page.locator(f"#{elem_id}")
    content = accordion.locator("[data-testid=accordion-content]").first
    if not content.is_visible():
        accordion.locator("button.label-wrap").first.click()
    content.wait_for(state="visible")


def wait_header(page, selector: str, predicate, timeout: float = 30.0) -> list[str]:
    """The column titles of a gr.Dataframe once `predicate(titles)` holds (the per-class counts
    follow the preview in their own event, a moment after it)."""
    return poll(lambda: table_header(page, selector),
                lambda header: bool(header) and predicate(header),
                f"{selector}: a header satisfying the check", timeout, 0.1)


def wait_counts(page, predicate=lambda rows: True, timeout: float = 30.0) -> list[list[str]]:
    """Rows of the per-class counts (``#counts``) once every count is in (a cell reads "…"
    while its image is still being counted) and `predicate(rows)` holds."""
    return wait_rows(page, "#counts", lambda rows: all(
        cell != "…" for row in rows for cell in row) and predicate(rows), timeout)
