"""A `.pt` with a phrase-only class, read by Roboflow Inference's own loaders (issue 18 item 4).

Writes a prompt file with `OwlPredictor.export` (one class prompted by a drawn box, one by a
phrase only, "roboflow" preprocessing so both sides embed the same pixels), then:

1. legacy loader: the reference's ``SerializedOwlV2.load_model_artifacts_from_cache`` (the
   `.pt` loader behind Roboflow's ``/owlv2/infer`` serialized models) reads the file and its
   ``infer`` detects on a query image; compared with ours (max combine mode, reference scores):
   same detections per class, same boxes (IoU >= 0.9), confidences within 1e-3;
2. newer loader: as ``RoboflowInstantHF.from_pretrained`` does, ``torch.load(weights_only=True)``
   then ``ReferenceExamplesEmbeddings.from_class_embeddings_dict`` of ``inference_models``.

Roboflow's code is never copied here: pass its files from a checkout of
https://github.com/roboflow/inference, e.g.

    git -C inference show HEAD:inference/models/owlv2/owlv2.py > /tmp/rf_owlv2.py
    git -C inference show HEAD:inference_models/inference_models/models/owlv2/entities.py \
        > /tmp/rf_owlv2_entities.py
    python bench/roboflow_text_pt.py --reference /tmp/rf_owlv2.py \
        --entities /tmp/rf_owlv2_entities.py

Prints one JSON object; exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from owl_bench import ensure_model
from roboflow_parity import _stub_module, load_reference, reference_detector, reference_rows

from owl_core.engine.predictor import OwlPredictor


def scene(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(70, 140, (size, size, 3)).astype(np.uint8)
    for _ in range(12):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 20, size // 3, 2)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return img


def legacy_check(module, model_dir: Path, predictor: OwlPredictor, pt: Path,
                 query: np.ndarray, confidence: float) -> dict:
    """Load the file with the reference's SerializedOwlV2 and compare its detections."""
    serialized = module.SerializedOwlV2.__new__(module.SerializedOwlV2)
    serialized.cache_file = lambda _name: str(pt)
    raw = torch.load(pt, map_location="cpu", weights_only=True)
    ref = reference_detector(module, model_dir, predictor)
    module.SerializedOwlV2._base_owlv2_instances[raw["roboflow_id"]] = ref
    serialized.load_model_artifacts_from_cache()
    response = serialized.infer(query, confidence=confidence, iou_threshold=0.3)
    size = query.shape[1], query.shape[0]
    rows, _ = reference_rows(response[0] if isinstance(response, list) else response, size)
    ours = predictor.detect(query, confidence=confidence, iou_threshold=0.3,
                            score_mode="reference", combine="max")
    reproduced = 0
    for cls, box, conf in rows:
        clipped = torch.tensor([box])
        for o_box, o_conf, o_cls in zip(ours.xyxy, ours.confidence, ours.class_id, strict=True):
            if ours.class_names[o_cls] == cls and abs(o_conf - conf) <= 1e-3 and \
                    float(box_iou(clipped, torch.tensor(o_box[None]))[0, 0]) >= 0.9:
                reproduced += 1
                break
    per_class = {name: sum(1 for r in rows if r[0] == name) for name in serialized.class_names}
    return {"classes": list(serialized.class_names), "reference_detections": per_class,
            "our_detections": ours.counts(), "reproduced": reproduced, "of": len(rows),
            "ok": bool(rows) and per_class.get("coin", 0) > 0 and reproduced == len(rows)}


def newer_check(entities: Path, pt: Path, phrase_row: torch.Tensor) -> dict:
    """What RoboflowInstantHF.from_pretrained does with weights.pt."""
    _stub_module("inference_models.models.owlv2.reference_dataset", LazyImageWrapper=object)
    spec = importlib.util.spec_from_file_location("rf_owlv2_entities", entities)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = torch.load(pt, map_location="cpu", weights_only=True)
    embeddings = module.ReferenceExamplesEmbeddings.from_class_embeddings_dict(
        class_embeddings=weights["train_data_dict"], device=torch.device("cpu"))
    coin = embeddings.class_embeddings["coin"]
    same = coin.positive is not None and torch.allclose(coin.positive, phrase_row)
    return {"classes": sorted(embeddings.class_embeddings), "coin_positive_rows":
            None if coin.positive is None else int(coin.positive.shape[0]),
            "coin_positive_is_the_phrase": bool(same), "ok": bool(same)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="Roboflow's owlv2.py (legacy)")
    parser.add_argument("--entities", default=None,
                        help="inference_models' owlv2/entities.py (newer loader)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--confidence", type=float, default=0.55)
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else (
        Path.home() / ".cache" / "owl_studio" / "bench_models" / args.preset)
    model_dir, _ = ensure_model(args.preset, model_dir)
    torch.manual_seed(0)
    module = load_reference(Path(args.reference))
    predictor = OwlPredictor(str(model_dir), device="cpu", dtype="fp32", top_k=300,
                             preprocessing="roboflow")
    size = predictor.owl.input_size
    example, query = scene(0, size), scene(1, size)
    emb = predictor.embeddings(example)
    cx, cy, w, h = (emb.boxes[0] * size).tolist()  # a predicted box: it matches
    predictor.set_examples([{"image": example, "boxes": [
        {"x": cx, "y": cy, "w": w, "h": h, "cls": "cup", "negative": False}]}],
        phrases={"coin": ["coin"]})
    report: dict = {"model": str(model_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, small in (("full", False), ("small", True)):
            pt = predictor.export(Path(tmp) / f"{variant}.pt", small=small)
            report[f"legacy_{variant}"] = legacy_check(module, model_dir, predictor, pt, query,
                                                       args.confidence)
            if args.entities:
                report[f"newer_{variant}"] = newer_check(Path(args.entities), pt,
                                                         predictor.embed_phrases(["coin"]))
    print(json.dumps(report, indent=1))
    return 0 if all(v["ok"] for k, v in report.items() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
