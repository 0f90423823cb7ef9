"""Does a cheap REST request wait behind an expensive one? (issue 11, item 4)

Starts the REST API on 127.0.0.1 (ephemeral port) over a random-weight checkpoint, sends one
expensive `/owlv2/infer` request (many classes x several images at confidence 0) and, while it
runs, cheap one-box requests one after another; prints the cheap requests' latency alone and
during the expensive one, with the light/heavy lanes and with everything in one queue.

    python bench/rest_lanes.py                      # tiny checkpoint (seconds)
    python bench/rest_lanes.py --preset base        # real architecture, random weights
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from owl_core.engine.loading import load_model
from owl_core.engine.random_model import make_random_model
from owl_core.rest import RestConfig, WorkLimits, create_app


def _image(seed: int, size: tuple[int, int]) -> dict:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return {"type": "base64", "value": base64.b64encode(buf.getvalue()).decode()}


def _serve(app) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def run(model, work: WorkLimits, classes: int, images: int, cheap_n: int) -> dict:
    app = create_app(model, RestConfig(work=work, predictor_kwargs={"match_threshold": 0.01}))
    server, url = _serve(app)
    size = (320, 240)
    train = _image(0, size)
    boxes = [{"x": 20 + (i * 37) % 280, "y": 20 + (i * 53) % 200, "w": 30, "h": 30,
              "cls": f"class{i}"} for i in range(classes)]
    heavy = {"image": [_image(10 + i, size) for i in range(images)], "confidence": 0.0,
             "training_data": [{"image": train, "boxes": boxes}]}
    cheap = {"image": train, "confidence": 0.5,
             "training_data": [{"image": train, "boxes": boxes[:1]}]}
    out: dict = {}
    with httpx.Client(timeout=600) as client:
        client.post(f"{url}/owlv2/infer", json=cheap).raise_for_status()  # warm up
        alone = []
        for _ in range(cheap_n):
            t = time.perf_counter()
            client.post(f"{url}/owlv2/infer", json=cheap).raise_for_status()
            alone.append(time.perf_counter() - t)
        result: dict = {}

        def send_heavy() -> None:
            t = time.perf_counter()
            with httpx.Client(timeout=600) as other:
                response = other.post(f"{url}/owlv2/infer", json=heavy)
            result["status"], result["s"] = response.status_code, time.perf_counter() - t

        thread = threading.Thread(target=send_heavy)
        thread.start()
        time.sleep(0.2)
        during = []
        while thread.is_alive() and len(during) < 50:
            t = time.perf_counter()
            client.post(f"{url}/owlv2/infer", json=cheap).raise_for_status()
            during.append(time.perf_counter() - t)
        thread.join()
    server.should_exit = True
    out.update(heavy_status=result["status"], heavy_s=round(result["s"], 2),
               cheap_alone_p50_ms=round(1000 * statistics.median(alone)),
               cheap_during_heavy_p50_ms=round(1000 * statistics.median(during)) if during
               else None,
               cheap_during_heavy_max_ms=round(1000 * max(during)) if during else None,
               cheap_answered_during_heavy=len(during))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--cheap", type=int, default=5, help="cheap requests timed alone")
    parser.add_argument("--only", choices=("lanes", "one-queue"), default=None)
    args = parser.parse_args()
    folder = Path(tempfile.gettempdir()) / f"owl-bench-{args.preset}"
    if not (folder / "config.json").is_file():
        make_random_model(args.preset, folder)
    model = load_model(str(folder), device="cpu", dtype="fp32")
    lanes = WorkLimits(heavy_images=args.images - 1)
    one_queue = WorkLimits(light_workers=1, heavy_images=10**9, heavy_units=10**18)
    for name, work in (("one-queue", one_queue), ("lanes", lanes)):
        if args.only not in (None, name):
            continue
        print(f"{name:18s}", run(model, work, args.classes, args.images, args.cheap), flush=True)


if __name__ == "__main__":
    main()
