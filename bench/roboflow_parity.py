"""Side by side with Roboflow Inference's own OwlV2 code: how many of its detections we reproduce.

Runs the reference's legacy ``inference/models/owlv2/owlv2.py`` (the module behind
``POST /owlv2/infer`` and ``SerializedOwlV2``) and ``OwlPredictor`` on the same random-weight
checkpoint, the same training data and the same query images, on CPU in fp32, and prints per
image and overall:

- reproduced: reference detections we also report (same class name, IoU >= 0.9 after clipping
  both to the image, confidence within 1e-3), as a fraction of the reference's detections;
- extra: our detections that reproduce none of the reference's, as a fraction of the same;
- the largest difference between our exemplar embeddings and the reference's.

The reference is not part of this project and never copied into it: get its file from a
checkout of https://github.com/roboflow/inference, e.g.

    git -C inference show HEAD:inference/models/owlv2/owlv2.py > /tmp/rf_owlv2.py
    python bench/roboflow_parity.py --reference /tmp/rf_owlv2.py --preset tiny

This script imports that file with small stand-ins (written here) for the parts of the
`inference` package it imports but does not use for inference (Roboflow API, environment,
response classes, usage tracking), and a `box_iou` for transformers 5 (removed from
`modeling_owlv2`; the reference was written against transformers 4). Its model is loaded
with `Owlv2ForObjectDetection.from_pretrained` from the same folder.

Scenario (on purpose): images with padding (landscape and portrait) and one square one; two
classes; positives and negatives on two example images; one drawn box that matches nothing,
placed LAST in its image's list, because the reference zips matched embeddings with the
unfiltered box list (its documented defect 1: an unmatched box earlier in the list shifts the
labels of the boxes after it; not measured). Drawn boxes are predicted top-K boxes of the
example image, jittered by a few percent (boxes around "objects").

Excluded from the reference's detections, reported separately: boxes wholly in the padding
(zero area once clipped; the reference reports them unclipped, its defect 7; we drop them).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import threading
import time
import types
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from owl_bench import ensure_model

from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.scoring import in_image
from owl_core.geometry import square_to_pixels_tensor

IOU_MIN = 0.9
CONF_TOL = 1e-3


# ------------------------------------------------------------------ the reference, importable
class _Record:
    """Stand-in for the reference's pydantic response classes: keeps the keyword arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class _ImageType(Enum):
    BASE64 = "base64"
    FILE = "file"
    NUMPY = "numpy"
    URL = "url"


def _usage_collector(*_args: Any, **_kwargs: Any):
    return lambda fn: fn


def _placeholder(attr: str) -> type:
    if attr.startswith("__"):  # __path__, __spec__...: a plain module, not a package
        raise AttributeError(attr)
    return _Record


def _stub_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__getattr__ = _placeholder  # anything else the import lists
    sys.modules[name] = module
    return module


def load_reference(path: Path, max_detections: int = 300) -> types.ModuleType:
    """Import the reference's owlv2.py with stand-ins for the Roboflow-platform imports."""
    env = {"DEVICE": "cpu", "HF_HUB_CACHE": None, "MAX_DETECTIONS": max_detections,
               "MODEL_CACHE_DIR": "/tmp/rf_parity_cache", "OFFLINE_MODE": True,
               "OWLV2_COMPILE_MODEL": False, "OWLV2_CPU_IMAGE_CACHE_SIZE": 1000,
               "OWLV2_IMAGE_CACHE_SIZE": 1000, "OWLV2_MODEL_CACHE_SIZE": 100,
               "OWLV2_VERSION_ID": "owlv2-base-patch16-ensemble", "PRELOAD_HF_IDS": None,
               "USE_INFERENCE_MODELS": False}
    packages = ["inference", "inference.core.cache", "inference.core.entities",
                "inference.core.entities.requests", "inference.core.entities.responses",
                "inference.core.models", "inference.core.utils", "inference.usage_tracking",
                "inference_models", "inference_models.models",
                "inference_models.models.owlv2"]
    for name in packages:
        _stub_module(name)
    _stub_module("inference.core", logger=logging.getLogger("rf_reference"))
    _stub_module("inference.core.env", **env)
    _stub_module("inference.core.cache.model_artifacts")
    _stub_module("inference.core.entities.requests.inference")
    _stub_module("inference.core.entities.responses.inference", InferenceResponseImage=_Record,
                 ObjectDetectionInferenceResponse=_Record, ObjectDetectionPrediction=_Record)
    _stub_module("inference.core.exceptions")
    _stub_module("inference.core.models.roboflow", RoboflowInferenceModel=object,
                 DEFAULT_COLOR_PALETTE=[])
    _stub_module("inference.core.roboflow_api")
    _stub_module("inference.core.utils.image_utils", ImageType=_ImageType,
                 extract_image_payload_and_type=lambda image: (image, _ImageType.NUMPY),
                 load_image_rgb=lambda image: image)  # the bench passes RGB arrays
    _stub_module("inference.usage_tracking.collector", usage_collector=_usage_collector)
    _stub_module("inference_models.models.owlv2.owlv2_hf")
    from transformers.models.owlv2 import modeling_owlv2

    if not hasattr(modeling_owlv2, "box_iou"):  # transformers 5 dropped it
        modeling_owlv2.box_iou = lambda a, b: (box_iou(a, b), None)
    spec = importlib.util.spec_from_file_location("rf_reference_owlv2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_detector(module: types.ModuleType, model_dir: Path, predictor: OwlPredictor):
    """The reference's `OwlV2` object on our checkpoint folder (its __init__ asks the Roboflow
    API and the hub, so the attributes it sets are set here from the same folder)."""
    from transformers import Owlv2ForObjectDetection

    ref = module.OwlV2.__new__(module.OwlV2)
    ref.owlv2_lock = threading.RLock()
    size = predictor.owl.input_size
    ref.image_size = (size, size)
    ref.image_mean = torch.tensor(predictor.owl.image_mean).view(1, 3, 1, 1)
    ref.image_std = torch.tensor(predictor.owl.image_std).view(1, 3, 1, 1)
    ref.model = Owlv2ForObjectDetection.from_pretrained(str(model_dir)).eval()
    ref.reset_cache()
    return ref


# ------------------------------------------------------------------ scenario
def scenario(predictor: OwlPredictor, seed: int) -> tuple[list[dict], list[np.ndarray], list[str]]:
    """Training data (two classes, positives, negatives, one unmatched box last) on two example
    images, and the query images (the examples too)."""
    rng = np.random.default_rng(seed)
    files = ["coffee.png", "coins.png", "rocket.jpg", "chelsea.png", "astronaut.jpg"]
    images = [np.asarray(Image.open(ROOT / "assets" / "images" / f).convert("RGB")) for f in files]
    portrait = np.ascontiguousarray(images[2][:, :300].transpose(1, 0, 2))  # 300 x 427, tall
    images.insert(3, portrait)
    names = [*files[:3], "rocket_portrait", *files[3:]]
    training = []
    for index, plan in ((0, ["cup", "cup", "spoon", "cup-", "spoon", "spoon-"]),
                        (1, ["cup", "spoon", "spoon", "cup-", "spoon-"])):
        image = images[index]
        height, width = image.shape[:2]
        emb = predictor.embeddings(image, keep_patches=True)
        pixels = square_to_pixels_tensor(emb.boxes, emb.image_size)
        areas = (pixels[:, 2] - pixels[:, 0]) * (pixels[:, 3] - pixels[:, 1])
        usable = torch.nonzero(areas > 0.002 * width * height).flatten().tolist()
        picks = rng.choice(usable, size=len(plan), replace=False)
        boxes = []
        for label, row in zip(plan, picks, strict=True):
            x0, y0, x1, y1 = pixels[row].tolist()
            w, h = (x1 - x0) * rng.uniform(0.95, 1.05), (y1 - y0) * rng.uniform(0.95, 1.05)
            cx = (x0 + x1) / 2 + rng.uniform(-0.03, 0.03) * w
            cy = (y0 + y1) / 2 + rng.uniform(-0.03, 0.03) * h
            boxes.append({"x": cx, "y": cy, "w": w, "h": h, "cls": label.rstrip("-"),
                          "negative": label.endswith("-")})
        if index == 0:  # a 3 px box matches no predicted box (IoU < 0.3): last in the list
            boxes.append({"x": width / 2, "y": height / 2, "w": 3, "h": 3, "cls": "cup",
                          "negative": False})
        training.append({"image": image, "boxes": boxes})
    return training, images, names


# ------------------------------------------------------------------ comparison
def reference_rows(response: Any, size: tuple[int, int]) -> tuple[list[tuple], int]:
    """(class, clipped XYXY, confidence) of a reference response; and how many of its boxes lie
    wholly in the padding (left out)."""
    width, height = size
    rows, padding = [], 0
    for p in response.predictions:
        p = p.__dict__
        x0 = min(max(p["x"] - p["width"] / 2, 0.0), width)
        x1 = min(max(p["x"] + p["width"] / 2, 0.0), width)
        y0 = min(max(p["y"] - p["height"] / 2, 0.0), height)
        y1 = min(max(p["y"] + p["height"] / 2, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            padding += 1
            continue
        rows.append((p["class"], (x0, y0, x1, y1), float(p["confidence"])))
    return rows, padding


def compare(ref_rows: list[tuple], ours: Any) -> tuple[int, int]:
    """(reproduced, extra): one-to-one, reference detections in descending confidence."""
    if not ref_rows:
        return 0, len(ours)
    ours_cls = [ours.class_names[i] for i in ours.class_id.tolist()]
    ious = box_iou(torch.tensor([r[1] for r in ref_rows], dtype=torch.float64),
                   torch.tensor(ours.xyxy, dtype=torch.float64).reshape(-1, 4))
    used: set[int] = set()
    hit = 0
    for i in sorted(range(len(ref_rows)), key=lambda i: -ref_rows[i][2]):
        cls, _, conf = ref_rows[i]
        for j in range(len(ours)):
            if (j not in used and ours_cls[j] == cls and ious[i, j] >= IOU_MIN
                    and abs(float(ours.confidence[j]) - conf) <= CONF_TOL):
                used.add(j)
                hit += 1
                break
    return hit, len(ours) - len(used)


def neutralise_padding_rows(ref: Any) -> None:
    """In the reference's image-embedding cache, zero the class embeddings of candidates wholly
    in the padding, so its own code scores them 0.5 (below any confidence > 0.5) and they take
    no part in its NMS: the reference with its unclipped-box defect corrected, run by its own
    functions."""
    for image_hash, embeds in list(ref.image_embed_cache.items()):
        objectness, boxes, class_embeds, shift, scale = embeds
        inside = in_image(boxes, ref.image_size_cache[image_hash])
        class_embeds = torch.where(inside[:, None], class_embeds, torch.zeros_like(class_embeds))
        ref.image_embed_cache[image_hash] = (objectness, boxes, class_embeds, shift, scale)


def exemplar_gap(ref_dict: dict, predictor: OwlPredictor) -> float:
    """Largest |difference| between each reference exemplar and our nearest one of the same
    class and sign (0.0 = identical)."""
    ex = predictor.exemplars
    worst = 0.0
    for cls, parts in ref_dict.items():
        for sign, rows in parts.items():
            if rows is None:
                continue
            negative = sign == "negative"
            mask = (ex.class_ids == ex.class_names.index(cls)) & (ex.negative == negative)
            ours = ex.embeds[mask].float()
            if len(ours) == 0:
                return float("inf")
            diff = (rows.float()[:, None, :] - ours[None]).abs().amax(-1).amin(1)
            worst = max(worst, float(diff.max()))
    return worst


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else (
        Path.home() / ".cache" / "owl_studio" / "bench_models" / args.preset)
    model_dir, _ = ensure_model(args.preset, model_dir)
    module = load_reference(Path(args.reference), args.max_detections)
    picker = OwlPredictor(str(model_dir), device="cpu", dtype="fp32", top_k=300,
                          match_threshold=args.iou_threshold, preprocessing="roboflow")
    ref = reference_detector(module, model_dir, picker)
    training, images, names = scenario(picker, args.seed)
    images, names = images[:max(2, args.max_images)], names[:max(2, args.max_images)]
    ref_dict = ref.make_class_embeddings_dict(training, args.iou_threshold)

    def reference_runs() -> dict[float, tuple[list, float]]:
        out = {}
        for confidence in args.confidence:
            start = time.perf_counter()
            responses = ref.infer(images, training, confidence=confidence,
                                  iou_threshold=args.iou_threshold,
                                  max_detections=args.max_detections)
            out[confidence] = (responses, time.perf_counter() - start)
        return out

    references = {"as is": reference_runs()}
    if min(args.confidence) > 0.5:
        neutralise_padding_rows(ref)
        references["padding dropped"] = reference_runs()
    report: dict = {"model": str(model_dir), "preset": args.preset, "runs": []}
    for mode in args.preprocessing:
        predictor = picker if mode == "roboflow" else OwlPredictor(  # reuse its embeddings
            picker.owl, top_k=300, match_threshold=args.iou_threshold, preprocessing=mode)
        match = predictor.set_examples(training)
        gap = exemplar_gap(ref_dict, predictor)
        for confidence in args.confidence:
            start = time.perf_counter()
            results = predictor.detect_many(images, confidence=confidence,
                                            iou_threshold=args.iou_threshold,
                                            max_detections=args.max_detections,
                                            score_mode="reference")
            ours_s = time.perf_counter() - start
            for variant, runs in references.items():
                responses, ref_s = runs[confidence]
                report["runs"].append(_compare_run(
                    names, responses, results, mode=mode, confidence=confidence,
                    reference=variant, unmatched=len(match.unmatched), gap=gap,
                    ref_s=ref_s, ours_s=ours_s, verbose=args.verbose))
    return report


def _compare_run(names: list[str], responses: list, results: list, *, mode: str,
                 confidence: float, reference: str, unmatched: int, gap: float, ref_s: float,
                 ours_s: float, verbose: bool) -> dict:
    totals = {"reference": 0, "reproduced": 0, "extra": 0, "padding": 0}
    per_image = []
    for name, response, result in zip(names, responses, results, strict=True):
        rows, padding = reference_rows(response, result.image_size)
        hit, extra = compare(rows, result)
        per_image.append({"image": name, "reference": len(rows), "ours": len(result),
                          "reproduced": hit, "extra": extra, "reference_in_padding": padding})
        for key, value in (("reference", len(rows)), ("reproduced", hit), ("extra", extra),
                           ("padding", padding)):
            totals[key] += value
    n = max(1, totals["reference"])
    out = {"preprocessing": mode, "confidence": confidence, "reference_variant": reference,
           "unmatched_drawn_boxes": unmatched, "exemplar_max_abs_diff": gap, **totals,
           "reproduced_fraction": totals["reproduced"] / n, "extra_fraction": totals["extra"] / n,
           "reference_s": round(ref_s, 2), "ours_s": round(ours_s, 2), "per_image": per_image}
    print(f"preprocessing={mode:8s} confidence={confidence:<5} reference {reference!r:17s} "
          f"{totals['reference']:4d} boxes (+{totals['padding']:3d} wholly in padding): "
          f"reproduced {out['reproduced_fraction']:.3f}, extra {out['extra_fraction']:.3f}; "
          f"exemplars max |diff| {gap:.1e}; unmatched drawn boxes {unmatched}", flush=True)
    if verbose:
        for row in per_image:
            print("   ", row, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True,
                        help="path to Roboflow Inference's inference/models/owlv2/owlv2.py")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base", "large"])
    parser.add_argument("--model-dir", default=None,
                        help="checkpoint folder (default ~/.cache/owl_studio/bench_models/PRESET)")
    parser.add_argument("--preprocessing", nargs="+", default=["roboflow", "hf"],
                        choices=["roboflow", "hf"])
    parser.add_argument("--confidence", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    parser.add_argument("--iou-threshold", type=float, default=0.3)
    parser.add_argument("--max-detections", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-images", type=int, default=6,
                        help="query images used, in the order coffee, coins (the two example "
                             "images), a landscape and a portrait with padding, chelsea, "
                             "astronaut (square); at least 2")
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--verbose", action="store_true", help="print per-image counts")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
