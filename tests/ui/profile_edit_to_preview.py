"""Profile the edit -> preview path in a real browser, stage by stage.

    python tests/ui/profile_edit_to_preview.py --preset base --queries 3 --edits 6

Starts the studio on a random-weights model (made by our own maker), uploads coins.png as an
example and `--queries` query images, then draws `--edits` boxes with the mouse. For each box
it records:

* browser: mouse-up -> the preview picture's new ``src`` (Playwright, ``performance.now()``);
* gradio: Gradio's own trace of that event (``GRADIO_PROFILING=1``): queue wait, preprocess,
  the handler call, postprocess (picture files into Gradio's cache);
* handler: our stages inside the handler (``OWL_PROFILE=1``, `ui.profiling`): set_examples,
  detect, draw, encode, diagnostics, downloads;
* transport = browser - gradio total (websocket/SSE round trip, the page's own update).

Prints medians and writes JSON (``--json``, default test-artifacts/edit_to_preview_profile.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_PROFILING", "1")  # before gradio is imported
os.environ.setdefault("OWL_PROFILE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for folder in (ROOT, HERE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from browser_helpers import (
    ASSETS,
    COINS,
    WATCH_PREVIEW,
    draw_box,
    pick_label,
    upload,
    wait_ready,
)
from conftest import CHROMIUM, CHROMIUM_ARGS, DOWNLOADS_READY, free_port

QUERY_POOL = ["chelsea.png", "rocket.jpg", "astronaut.jpg", "coffee.png", "coins.png"]
# coins on coins.png (XYXY image pixels), one box per edit
BOXES = [(131, 28, 180, 74), (185, 104, 227, 145), (188, 170, 237, 217), (18, 232, 75, 289),
         (180, 230, 240, 290), (250, 25, 300, 75), (60, 120, 110, 170), (300, 200, 350, 250)]


def _queries(n: int, scale: float, folder: Path) -> list[Path]:
    """`n` query images from the bundled ones, upscaled by `scale` (phone-photo sizes)."""
    from PIL import Image

    out = []
    for i in range(n):
        source = ASSETS / "images" / QUERY_POOL[i % len(QUERY_POOL)]
        target = folder / f"q{i}-{source.stem}.jpg"
        with Image.open(source) as img:
            img = img.convert("RGB")
            if scale != 1.0:
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.Resampling.BICUBIC)
            img.save(target, quality=92)
        out.append(target)
    return out


def _traces(url: str) -> list[dict]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/gradio_api/profiling/traces") as response:
        data = json.load(response)
    return data if isinstance(data, list) else data.get("traces", [])


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 1) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--model-dir", default=str(ROOT / "models"),
                        help="where random-<preset> is made or reused")
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="upscale the query images by this factor (e.g. 6 for ~3000 px)")
    parser.add_argument("--edits", type=int, default=6)
    parser.add_argument("--confidence", type=float, default=0.5,
                        help="the confidence slider's start value (random weights score low; "
                             "at 0.9 the base one finds nothing and the pictures never change)")
    parser.add_argument("--json", default=str(ROOT / "test-artifacts" /
                                              "edit_to_preview_profile.json"))
    args = parser.parse_args(argv)

    import logging

    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from owl_core import load_model, make_random_model
    from ui import StudioConfig, build_demo, launch_kwargs
    from ui.profiling import PROFILE_LOG

    logging.basicConfig(level=logging.WARNING)
    folder = Path(args.model_dir) / f"random-{args.preset}"
    if not (folder / "config.json").is_file():
        make_random_model(args.preset, folder)
    model = load_model(str(folder), device="cpu")
    work = Path(tempfile.mkdtemp(prefix="owl-profile-"))
    demo = build_demo(model, StudioConfig(random_preset=args.preset, work_dir=str(work / "s"),
                                          default_confidence=args.confidence))
    demo.queue(default_concurrency_limit=4)
    queries = _queries(args.queries, args.scale, work)
    rows = []
    try:
        demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                    server_port=free_port(), quiet=True))
        url = demo.local_url.rstrip("/")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(url)
            page.wait_for_function(DOWNLOADS_READY, timeout=120_000)
            example = work / "coins-example.png"
            example.write_bytes(COINS.read_bytes())
            upload(page, "#upload-examples", example)
            page.wait_for_selector("#examples-gallery img")
            upload(page, "#upload-queries", *queries)
            t0 = time.monotonic()
            wait_ready(page, timeout=600_000)
            print(f"embedded {1 + len(queries)} images in {time.monotonic() - t0:.1f} s "
                  "(browser view)", flush=True)
            for n in range(args.edits):
                page.evaluate(WATCH_PREVIEW)
                PROFILE_LOG.clear()
                draw_box(page, BOXES[n % len(BOXES)])
                try:
                    page.wait_for_function("() => window.__edit.change !== null",
                                           timeout=15_000)
                except PlaywrightTimeout:  # this box changed no detection: nothing to time
                    print(f"edit {n + 1}: the preview did not change", flush=True)
                    pick_label(page, "coin")
                    continue
                timing = page.evaluate("() => window.__edit")
                browser_ms = timing["change"] - timing["up"]
                up_wall = timing["upWall"] / 1e3
                handler = max((r for r in PROFILE_LOG if "set_examples_ms" in r),
                              key=lambda r: r["total_ms"], default=None)
                trace = min((t for t in _traces(url) if t.get("fn_name") == "on_boxes_edited"
                             and t.get("timestamp", 0) >= up_wall - 0.05),
                            key=lambda t: t["timestamp"], default=None)
                pick_label(page, "coin")
                page.wait_for_timeout(400)
                row = {"edit": n + 1, "browser_ms": round(browser_ms, 1),
                       "gradio": trace, "handler": handler}
                if trace:
                    row["transport_ms"] = round(browser_ms - trace["total_ms"], 1)
                rows.append(row)
                print(f"edit {n + 1}: browser {browser_ms:.0f} ms; gradio "
                      f"{trace and round(trace['total_ms'], 1)} ms "
                      f"(fn {trace and round(trace['fn_call_ms'], 1)}, post "
                      f"{trace and round(trace['postprocess_ms'], 1)}); handler {handler}",
                      flush=True)
            page.screenshot(path=str(ROOT / "test-artifacts" / f"profile_{args.preset}.png"),
                            full_page=True)
            browser.close()
    finally:
        demo.close()

    def col(key, sub=None):
        return [(r[key] or {}).get(sub) if sub else r.get(key) for r in rows]

    stages = sorted({k for r in rows for k in (r["handler"] or {}) if k.endswith("_ms")})
    summary = {
        "preset": args.preset, "queries": args.queries, "scale": args.scale,
        "confidence": args.confidence,
        "edits": len(rows),
        "median_browser_ms": _median(col("browser_ms")),
        "median_gradio_total_ms": _median(col("gradio", "total_ms")),
        "median_gradio_queue_wait_ms": _median(col("gradio", "queue_wait_ms")),
        "median_gradio_preprocess_ms": _median(col("gradio", "preprocess_ms")),
        "median_gradio_fn_call_ms": _median(col("gradio", "fn_call_ms")),
        "median_gradio_postprocess_ms": _median(col("gradio", "postprocess_ms")),
        "median_transport_ms": _median(col("transport_ms")),
        "median_handler_ms": {s: _median(col("handler", s)) for s in stages},
        "edits_detail": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "edits_detail"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
