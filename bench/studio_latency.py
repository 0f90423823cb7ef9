"""Latency of the studio page as a person feels it: headless Chromium, real mouse and keys.

    python bench/studio_latency.py                      # quick: 1 and 12 query images, 1 example
    python bench/studio_latency.py --all                # 1, 12, 300, 1000 queries; 10, 100 examples
    python bench/studio_latency.py --sizes q12e1,q12e100 --preset base --repeats 5

A size ``qNeM`` is a project of N query images and M example images (one "coin" box on each
example), written with `owl_core`'s project library and opened in a fresh tab
(``?project=<id>``) at 1280x720, on a random-weights model made by our own maker (``tiny``, or
``base``: the architecture of google/owlv2-base-patch16). Once every image is embedded, it times:

* ``box_edit``: mouse-up of a box drawn on the example canvas (the label dialog confirmed with
  Enter) -> new detections on screen (the preview's first change after the mouse-up);
* ``slider``: a mouse drag of the confidence slider -> the preview redrawn for the value it was
  released at (last `input` event -> the last preview change before 1 s of quiet); the server
  requests the drag caused are counted (``requests``: Gradio events and files fetched);
* ``undo``: a click on the examples' Undo -> the previous state on screen;
* ``review_accept``: a grey box on the review canvas double-clicked, its class confirmed with
  Enter -> the review panel's text says it is a label (one grey box fewer).
* ``phrase_edit``: a new phrase typed into the picked class's "describe it" field, Enter -> new
  detections on screen (the phrase is embedded by the text tower on this edit: a new phrase
  each time, the worst case; `phrase_edits`).

"On screen" is read from the DOM: the preview's ``data-rev`` attribute when the page has one (a
counter the browser-side preview raises on every redraw), else the preview pictures' ``src``.
An action whose picture never changed within ``--timeout`` counts under ``unchanged`` and not in
the percentiles. Prints p50 / p95 / max per action and size and writes
``bench/results/studio_latency.json`` (per size and action: p50_ms, p95_ms, max_ms, n, plus the
machine's load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS_UI = ROOT / "tests" / "ui"
for folder in (ROOT, TESTS_UI):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from browser_helpers import ASSETS, COINS, COINS_WIDTH  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

QUICK_SIZES = "q1e1,q12e1"
ALL_SIZES = "q1e1,q12e1,q300e1,q1000e1,q12e10,q12e100"
QUERY_POOL = ["chelsea.png", "rocket.jpg", "astronaut.jpg", "coffee.png", "coins.png"]
#: one "coin" box per example image (coins.png pixels, XYXY); the boxes the edits draw
PROMPT_BOX = (131.0, 28.0, 180.0, 74.0)
EDIT_BOXES = [(185, 104, 227, 145), (188, 170, 237, 217), (18, 232, 75, 289),
              (180, 230, 240, 290), (250, 25, 300, 75), (60, 120, 110, 170), (300, 200, 350, 250),
              (100, 200, 150, 250)]
VIEWPORT = {"width": 1280, "height": 720}

#: Installed in the page: the preview's signature, every change of it (performance.now()), and
#: the times of the person's pointer-ups, key-downs and the confidence slider's input events.
WATCH_JS = """() => {
  if (window.__lat) return;
  const sig = () => {
    const v = document.querySelector('#preview [data-rev]');
    if (v) return 'rev:' + v.getAttribute('data-rev');
    return Array.from(document.querySelectorAll('#preview img')).map(i => i.src).join('|');
  };
  const lat = window.__lat = {sig: sig(), changes: [], ups: [], keys: [], slider: []};
  const root = document.querySelector('#preview');
  const seen = () => {
    const s = sig();
    if (s !== lat.sig) { lat.sig = s; lat.changes.push(performance.now()); }
  };
  new MutationObserver(seen).observe(root, {subtree: true, childList: true, attributes: true,
                                            attributeFilter: ['src', 'data-rev']});
  // e.timeStamp: when the event happened (a listener of the page may run before this one)
  window.addEventListener('pointerup', (e) => lat.ups.push(e.timeStamp), true);
  window.addEventListener('keydown', (e) => lat.keys.push(e.timeStamp), true);
  window.addEventListener('input', (e) => {
    if (e.target && e.target.closest && e.target.closest('#confidence'))
      lat.slider.push(e.timeStamp); }, true);
}"""


# ---------------------------------------------------------------------------- the projects
def _stamped(source: Path, i: int, target: Path, max_side: int = 640) -> Path:
    """`source` with a 4-pixel stamp coding `i` (every image its own content hash, so each
    one is embedded, as distinct photos would be)."""
    from PIL import Image

    with Image.open(source) as img:
        img = img.convert("RGB")
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side))
        for k in range(4):
            img.putpixel((k, 0), ((i >> (8 * k)) & 255, 17 * k, 255 - k))
        img.save(target, format="PNG")
    return target


def make_project(library: Any, queries: int, examples: int, confidence: float,
                 work: Path) -> str:
    """A saved project of `queries` query images and `examples` example images (coins.png
    variants, one coin box each); returns its id."""
    from owl_core.params import DetectParams

    project = library.create(f"latency q{queries} e{examples}", classes=["coin"],
                             settings=DetectParams(confidence=confidence))
    scratch = work / f"q{queries}e{examples}"
    scratch.mkdir(parents=True, exist_ok=True)
    for i in range(examples):
        path = _stamped(COINS, i, scratch / f"example-{i:03d}.png")
        record = project.add_image(path, role="example")
        project.set_prompt_boxes(record.id, [{"xyxy": PROMPT_BOX, "cls": "coin",
                                              "negative": False}])
    for i in range(queries):
        source = ASSETS / "images" / QUERY_POOL[i % len(QUERY_POOL)]
        path = _stamped(source, 1000 + i, scratch / f"q{i:04d}-{source.stem}.png")
        project.add_image(path, role="query")
    library.save(project)
    return project.folder.name


# ---------------------------------------------------------------------------- the page
class Page:
    """One tab on a project, with the watcher installed and its requests counted."""

    def __init__(self, page: Any, timeout_s: float) -> None:
        self.page = page
        self.timeout_s = timeout_s
        self.requests: list[tuple[float, str]] = []
        page.on("request", lambda r: self.requests.append((time.monotonic(), r.url)))
        page.evaluate(WATCH_JS)

    def js(self, expr: str) -> Any:
        return self.page.evaluate(expr)

    def count(self, key: str) -> int:
        return self.js(f"() => window.__lat.{key}.length")

    def last(self, key: str) -> float | None:
        return self.js(f"() => window.__lat.{key}.length ? window.__lat.{key}.at(-1) : null")

    def first_change_after(self, t0: float) -> float | None:
        """performance.now() of the first preview change after `t0` (None after the
        timeout)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            t = self.js(f"() => window.__lat.changes.find(t => t > {t0}) ?? null")
            if t is not None:
                return t
            self.page.wait_for_timeout(20)
        return None

    def settle(self, quiet_ms: float = 800, since: float | None = None) -> float | None:
        """Wait until the preview has not changed for `quiet_ms`; returns the time of the last
        change after `since` (None: none)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            now, last = self.js("() => [performance.now(), window.__lat.changes.at(-1) ?? -1]")
            if now - last >= quiet_ms and (since is None or now - since >= quiet_ms):
                break
            self.page.wait_for_timeout(50)
        if since is None:
            return None
        return self.js(f"() => window.__lat.changes.filter(t => t > {since}).at(-1) ?? null")

    def requests_since(self, t_wall: float) -> dict:
        """Requests the page made since `t_wall` (time.monotonic()), heartbeats left out."""
        urls = [u for t, u in self.requests if t >= t_wall and "heartbeat" not in u]
        return {"events": sum("/queue/join" in u for u in urls),
                "files": sum("/file=" in u for u in urls), "all": len(urls)}


def wait_embedded(page: Any, timeout_s: float) -> None:
    page.wait_for_function(
        "() => (document.querySelector('#status')?.innerText || '').includes('all embedded')",
        timeout=timeout_s * 1000)


def box_edit(p: Page, box: tuple) -> float | None:
    """Draw `box` on the example canvas, confirm the dialog's class with Enter."""
    from browser_helpers import draw_box

    dialog = p.page.locator("#model-box-edit")
    for attempt in range(2):  # under load the canvas may still be redrawing: draw again
        draw_box(p.page, box, COINS_WIDTH)
        t0 = p.last("ups")
        try:
            dialog.wait_for(timeout=10_000)
            break
        except Exception:  # noqa: BLE001
            if attempt:
                raise
            p.page.keyboard.press("Escape")
            p.settle()
    p.page.keyboard.press("Enter")
    try:
        dialog.wait_for(state="detached", timeout=2_000)
    except Exception:  # noqa: BLE001 - Enter did not confirm: the OK button does
        dialog.locator("button", has_text="OK").click()
    t1 = p.first_change_after(t0)
    p.settle()
    return None if t1 is None else t1 - t0


def undo(p: Page) -> float | None:
    p.page.locator("#undo-examples").click()
    t0 = p.last("ups")
    t1 = p.first_change_after(t0)
    p.settle()
    return None if t1 is None else t1 - t0


def slider(p: Page, value: float) -> tuple[float | None, dict]:
    """Drag the confidence slider's thumb to `value` with the mouse."""
    rng = p.page.locator("#confidence input[type=range]")
    rng.scroll_into_view_if_needed()
    box = rng.bounding_box()
    lo, hi, now = (float(rng.get_attribute("min") or 0), float(rng.get_attribute("max") or 1),
                   float(rng.input_value()))
    y = box["y"] + box["height"] / 2

    def x_of(v: float) -> float:  # the thumb's centre travels the track minus its width
        thumb = min(16.0, box["height"])
        return box["x"] + thumb / 2 + (box["width"] - thumb) * (v - lo) / (hi - lo)

    wall = time.monotonic()
    p.page.mouse.move(x_of(now), y)
    p.page.mouse.down()
    for k in range(1, 6):
        p.page.mouse.move(x_of(now + (value - now) * k / 5), y)
        p.page.wait_for_timeout(30)
    p.page.mouse.up()
    t0 = p.last("slider")
    t1 = p.settle(quiet_ms=1000, since=t0) if t0 is not None else None
    requests = p.requests_since(wall)
    return (None if t1 is None else max(0.0, t1 - t0)), requests


def review_accept(p: Page, demo: Any) -> float | None:
    """Double-click the best grey box of the image under review, Enter; -> the review text
    counts one grey box fewer."""
    from urllib.parse import parse_qs, urlparse

    from browser_helpers import image_origin

    project = parse_qs(urlparse(p.page.url).query).get("project", [None])[0]
    session = next(s for s in demo.studio.store.live() if s.project_id == project)
    with session.lock:
        shown = demo.studio.review.shown(session)
        if shown is None:
            return None
        _, item, _ = shown
        proposals = demo.studio.review.proposals(session, item)
        width = item.size[0]
    if not proposals:
        return None
    xyxy = proposals[0].xyxy
    page = p.page
    page.locator("#review-annotator button[aria-label='Drag boxes']").click()
    ox, oy, scale = image_origin(page, width, "#review-annotator")
    before = page.locator("#review-info").inner_text()
    page.mouse.dblclick(ox + (xyxy[0] + xyxy[2]) / 2 * scale, oy + (xyxy[1] + xyxy[3]) / 2 * scale)
    dialog = page.locator("#model-box-edit")
    dialog.wait_for(timeout=10_000)
    page.keyboard.press("Enter")
    t0 = p.last("keys")
    try:
        page.wait_for_function(
            "(b) => (document.querySelector('#review-info')?.innerText || '') !== b", arg=before,
            timeout=p.timeout_s * 1000)
    except Exception:  # noqa: BLE001 - nothing changed on screen
        return None
    t1 = p.js("() => performance.now()")
    if dialog.count():
        dialog.locator("button", has_text="OK").click()
    page.wait_for_timeout(300)
    return t1 - t0


#: Phrases typed by ``phrase_edit``, each new to the text cache (at most 14 characters: the
#: tiny random model's tokenizer reads no more)
EDIT_PHRASES = ["a coin", "a round coin", "a disc", "a metal coin", "a penny", "a token",
                "a medal", "a button"]


def phrase_edit(p: Page, phrase: str) -> float | None:
    """Type `phrase` as the only phrase of the picked class, Enter -> the preview's first
    change after the key press."""
    field = p.page.locator("#describe-phrases textarea, #describe-phrases input").first
    field.click()
    p.page.keyboard.press("Control+A")
    p.page.keyboard.type(phrase)
    t0 = p.js("() => performance.now()")
    p.page.keyboard.press("Enter")
    t1 = p.first_change_after(t0)
    p.settle()
    return None if t1 is None else t1 - t0


def phrase_edits(p: Page, repeats: int, log: Any) -> list[float | None]:
    """`phrase_edit` `repeats` times, each with a phrase not typed before."""
    out = []
    for k in range(repeats):
        out.append(attempt(log, "phrase_edit", phrase_edit, p,
                           EDIT_PHRASES[k % len(EDIT_PHRASES)]))
        log(f"  phrase_edit {k + 1}: {out[-1]}")
    return out


def attempt(log: Any, what: str, fn: Any, *args: Any) -> Any:
    """`fn(*args)`, or None when it failed (the page changed under the bench: say so, go on;
    a failure counts as "unchanged")."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        log(f"  {what} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None


# ---------------------------------------------------------------------------- numbers
def summary(values: list[float | None], extra: dict | None = None) -> dict:
    done = sorted(v for v in values if v is not None)
    out: dict[str, Any] = {"n": len(done), "unchanged": len(values) - len(done)}
    if done:
        q = statistics.quantiles(done, n=20, method="inclusive") if len(done) > 1 else done * 19
        out.update(p50_ms=round(statistics.median(done), 1), p95_ms=round(q[18], 1),
                   max_ms=round(done[-1], 1))
    if extra:
        out.update(extra)
    return out


def run_size(browser: Any, url: str, demo: Any, project_id: str, args: argparse.Namespace,
             log: Any) -> dict:
    load_before = os.getloadavg()
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t_open = time.monotonic()
    page.goto(f"{url}/?project={project_id}")
    page.wait_for_selector("#preview", timeout=60_000)
    wait_embedded(page, args.embed_timeout)
    embed_s = time.monotonic() - t_open
    page.wait_for_timeout(1000)
    p = Page(page, args.timeout)
    p.settle()
    results: dict[str, list] = {"box_edit": [], "undo": [], "slider": [], "review_accept": [],
                                "phrase_edit": []}
    requests: list[dict] = []
    actions = set(args.actions.split(","))
    if "box_edit" in actions or "undo" in actions:
        edits = 0
        for k in range(args.repeats):
            results["box_edit"].append(attempt(log, "box_edit", box_edit, p,
                                               EDIT_BOXES[k % len(EDIT_BOXES)]))
            edits += results["box_edit"][-1] is not None
            log(f"  box_edit {k + 1}: {results['box_edit'][-1]}")
        if "undo" in actions:
            for k in range(max(1, edits)):
                results["undo"].append(attempt(log, "undo", undo, p))
                log(f"  undo {k + 1}: {results['undo'][-1]}")
    if "slider" in actions:
        start = float(page.locator("#confidence input[type=range]").input_value())
        for k in range(args.repeats):
            value = start + (args.slider_step if k % 2 == 0 else 0.0)
            ms, req = attempt(log, "slider", slider, p, value) or (None, None)
            results["slider"].append(ms)
            if req is not None:
                requests.append(req)
            log(f"  slider -> {value:.2f}: {ms} ms, requests {req}")
    if "review_accept" in actions:
        for k in range(args.repeats):
            results["review_accept"].append(attempt(log, "review_accept", review_accept, p,
                                                    demo))
            log(f"  review_accept {k + 1}: {results['review_accept'][-1]}")
    if "phrase_edit" in actions:
        results["phrase_edit"] = phrase_edits(p, args.repeats, log)
    shot = ROOT / "test-artifacts" / f"studio_latency_{project_id}.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    columns = page.locator("#studio-columns")
    columns.scroll_into_view_if_needed()
    columns.screenshot(path=str(shot.with_name(shot.stem + "_studio.png")))
    context.close()
    out = {}
    for action, values in results.items():
        if not values:
            continue
        extra = None
        if action == "slider" and requests:
            extra = {"requests_per_drag": {k: round(statistics.mean(r[k] for r in requests), 2)
                                           for k in requests[0]}}
        out[action] = summary(values, extra)
    out["embedded_after_s"] = round(embed_s, 1)
    out["load_average_before"] = [round(v, 2) for v in load_before]
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    out["page_errors"] = errors[:5]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--model-dir", default=str(ROOT / "models"),
                        help="where random-<preset> is made or reused")
    parser.add_argument("--sizes", default=QUICK_SIZES,
                        help=f"comma-separated qNeM sizes (default {QUICK_SIZES})")
    parser.add_argument("--all", action="store_true", help=f"--sizes {ALL_SIZES}")
    parser.add_argument("--actions", default="box_edit,undo,slider,review_accept,phrase_edit")
    parser.add_argument("--repeats", type=int, default=6, help="times each action is done")
    parser.add_argument("--confidence", type=float, default=0.5,
                        help="the project's confidence (random weights score low)")
    parser.add_argument("--slider-step", type=float, default=0.1,
                        help="the slider drags go this far up and back")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds an action may take before it counts as unchanged")
    parser.add_argument("--embed-timeout", type=float, default=1800.0)
    parser.add_argument("--label", default="", help="stored with the numbers (e.g. baseline)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" /
                                              "studio_latency.json"))
    args = parser.parse_args(argv)
    sizes = (ALL_SIZES if args.all else args.sizes).split(",")

    import logging

    from playwright.sync_api import sync_playwright

    from owl_core import load_model, make_random_model
    from owl_core.project.library import ProjectLibrary
    from ui import StudioConfig, build_demo, launch_kwargs

    logging.basicConfig(level=logging.WARNING)

    def log(msg: str) -> None:
        print(msg, flush=True)

    folder = Path(args.model_dir) / f"random-{args.preset}"
    if not (folder / "config.json").is_file():
        make_random_model(args.preset, folder)
    model = load_model(str(folder), device="cpu")
    work = Path(tempfile.mkdtemp(prefix="owl-latency-"))
    library = ProjectLibrary(work / "projects")
    demo = build_demo(model, StudioConfig(random_preset=args.preset, work_dir=str(work / "s"),
                                          projects_dir=str(work / "projects"),
                                          default_confidence=args.confidence))
    demo.queue(default_concurrency_limit=4)
    def write(report: dict) -> Path:
        target = Path(args.json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1) + "\n")
        return target

    report: dict[str, Any] = {
        "command": " ".join(["python", "bench/studio_latency.py", *(argv or sys.argv[1:])]),
        "label": args.label, "preset": args.preset, "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "viewport": VIEWPORT, "sizes": {}}
    try:
        demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                    server_port=free_port(), quiet=True))
        url = demo.local_url.rstrip("/")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            for size in sizes:
                q, e = size.strip().lstrip("q").split("e")
                log(f"{size}: writing the project ({q} query, {e} example images)")
                project_id = make_project(library, int(q), int(e), args.confidence, work)
                report["sizes"][size] = run_size(browser, url, demo, project_id, args, log)
                log(f"{size}: {json.dumps(report['sizes'][size])}")
                write(report)  # after each size: a long run stopped early keeps its numbers
            browser.close()
    finally:
        demo.close()
        demo.studio.close()
    target = write(report)
    print(f"\n{'size':<10}{'action':<15}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'n':>4}"
          f"{'unch.':>6}  requests/drag")
    for size, data in report["sizes"].items():
        for action in ("box_edit", "slider", "undo", "review_accept", "phrase_edit"):
            row = data.get(action)
            if not row:
                continue
            print(f"{size:<10}{action:<15}{row.get('p50_ms', '-'):>9}{row.get('p95_ms', '-'):>9}"
                  f"{row.get('max_ms', '-'):>9}{row['n']:>4}{row['unchanged']:>6}  "
                  f"{row.get('requests_per_drag', '')}")
        print(f"{'':<10}load average {data['load_average_before']} -> "
              f"{data['load_average_after']}; embedded after {data['embedded_after_s']} s")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
