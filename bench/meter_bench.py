"""Quality-meter timing: measuring a project's reviewed images once, then reading the meter at
many confidences, against detecting again at every confidence.

    python bench/meter_bench.py                     # tiny model, 40 reviewed images, top-K 300
    python bench/meter_bench.py --images 100 --top-k 1024

A random-weight tiny checkpoint (``owl_core.make_random_model``) in a temporary folder: timings
of the meter's own work are real, the detections mean nothing. Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.random_model import make_random_model
from owl_core.project.evaluate import evaluate, measure_project
from owl_core.project.model import Project

CLASSES = ["red", "blue"]
COLOURS = [(220, 30, 30), (30, 30, 220)]


def picture(path: Path, rng: np.random.Generator) -> list[tuple[list[int], str]]:
    """A 128x96 picture with 4 coloured squares; returns their boxes and classes."""
    img = np.full((96, 128, 3), 200, np.uint8)
    boxes = []
    for _ in range(4):
        x, y, c = int(rng.integers(0, 100)), int(rng.integers(0, 70)), int(rng.integers(0, 2))
        img[y:y + 24, x:x + 24] = COLOURS[c]
        boxes.append(([x, y, x + 24, y + 24], CLASSES[c]))
    Image.fromarray(img).save(path)
    return boxes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=40, help="reviewed query images")
    ap.add_argument("--top-k", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="meter_bench-"))
    model = make_random_model("tiny", root / "tiny", seed=0)
    project = Project(name="bench", classes=CLASSES, folder=root / "project")
    boxes = picture(root / "example.png", rng)
    example = project.add_image(root / "example.png", role="example")
    project.set_prompt_boxes(example.id, [{"xyxy": b, "cls": c, "negative": False}
                                          for b, c in boxes])
    for i in range(args.images):
        boxes = picture(root / f"{i}.png", rng)
        record = project.add_image(root / f"{i}.png", role="query")
        project.set_labels(record.id, [{"xyxy": b, "cls": c} for b, c in boxes], status="done")
    predictor = OwlPredictor(str(model), device="cpu", dtype="fp32", top_k=args.top_k)
    predictor.set_examples(project.training_data(), project.classes)

    t = time.perf_counter()
    measure_project(project, predictor)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    meter = measure_project(project, predictor)
    warm = time.perf_counter() - t
    detections = sum(len(p) for p in meter.predictions if p is not None)
    t = time.perf_counter()
    meter.at(0.5)
    first = time.perf_counter() - t
    confidences = np.linspace(0.05, 0.95, 19).tolist()
    t = time.perf_counter()
    for c in confidences:
        meter.at(c)
    each = (time.perf_counter() - t) / len(confidences)
    images = [project.image_path(r) for r in project.images if r.status == "done"]
    t = time.perf_counter()
    for c in confidences:
        evaluate(list(meter.ground_truth),
                 predictor.detect_many(images, project.settings.replace(confidence=c)),
                 project.classes, c)
    again = (time.perf_counter() - t) / len(confidences)
    print(f"{args.images} reviewed images, {detections} detections at confidence 0, "
          f"top-K {predictor.top_k}, tiny model, CPU")
    print(f"measure_project: cold (embeds) {cold * 1000:.0f} ms, warm (cached embeddings) "
          f"{warm * 1000:.0f} ms")
    print(f"first reading (mAP + suggestion, once per measurement) {first * 1000:.0f} ms; "
          f"each further confidence {each * 1000:.1f} ms")
    print(f"detecting again + evaluate, per confidence: {again * 1000:.0f} ms")


if __name__ == "__main__":
    main()
