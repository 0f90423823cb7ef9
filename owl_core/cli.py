"""Command line: predict with examples or an exported `.pt`, export `.pt`, make random models.

    python -m owl_core predict --model MODEL --training-data train.json IMAGE...
    python -m owl_core predict --weights exported.pt IMAGE...
    python -m owl_core export --model MODEL --training-data train.json --out FILE.pt
    python -m owl_core make-random-model --preset tiny OUT_DIR

Bad input exits non-zero with a one-line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from owl_core.model_loading import DEFAULT_MODEL_ID
from owl_core.predictor import DEFAULT_TOP_K
from owl_core.scoring import (DEFAULT_CONFIDENCE, DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_DETECTIONS,
                              SCORE_MODES)


def read_training_file(path: str | Path) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Read a train.json (a list in the reference schema, or a project with "training_data"
    and "classes"); relative image paths are resolved from the file's folder."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the training data ({exc.strerror or exc}); "
                         "check the --training-data path.") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc}); save the JSON as UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); fix the file or export it "
                         "again.") from exc
    classes = None
    if isinstance(data, dict):
        classes = data.get("classes")
        data = data.get("training_data")
        if classes is not None and (not isinstance(classes, list)
                                    or not all(isinstance(c, str) for c in classes)):
            raise ValueError(f"{path}: \"classes\" must be a list of class names, got "
                             f"{classes!r}.")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of {{\"image\", \"boxes\"}} entries or a "
                         "project with \"training_data\".")
    out = []
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("image"), str):
            image = entry["image"]
            candidate = path.parent / image
            if not os.path.isabs(image) and not image.startswith("data:") and candidate.exists():
                entry = {**entry, "image": str(candidate)}
        out.append(entry)
    return out, classes


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto / OWL_DEVICE)")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                   help="autocast dtype (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--top-k", type=int, default=None,
                   help=f"candidates kept per image (default: {DEFAULT_TOP_K}, or the value the "
                        ".pt given with --weights was exported with)")
    p.add_argument("--match-threshold", type=float, default=0.3,
                   help="IoU a drawn box needs with a predicted box")
    p.add_argument("--cache-dir", default=None, help="persistent embedding cache folder")
    p.add_argument("--preprocessing", default=None, choices=["hf", "roboflow"],
                   help="image preprocessing: hf (transformers, the default) or roboflow "
                        "(Roboflow Inference's, to reproduce its detections); default: hf, or "
                        "the mode of the .pt given with --weights (roboflow for a file written "
                        "by Roboflow)")


def build_parser() -> argparse.ArgumentParser:
    from owl_core.random_model import add_subcommand as add_random_model_subcommand

    parser = argparse.ArgumentParser(prog="python -m owl_core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    pred = sub.add_parser("predict", help="print one JSON response per image")
    src = pred.add_mutually_exclusive_group(required=True)
    src.add_argument("--training-data", help="train.json in the reference schema")
    src.add_argument("--weights", help="an exported .pt")
    pred.add_argument("--model", default=None,
                      help=f"hub id or folder (default: {DEFAULT_MODEL_ID}, or the .pt's model)")
    pred.add_argument("images", nargs="+", help="image files")
    pred.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE)
    pred.add_argument("--iou-threshold", type=float, default=DEFAULT_IOU_THRESHOLD)
    pred.add_argument("--max-detections", type=int, default=DEFAULT_MAX_DETECTIONS)
    pred.add_argument("--score-mode", default="reference", choices=SCORE_MODES)
    _add_common(pred)

    exp = sub.add_parser("export", help="write the class embeddings as a .pt")
    exp.add_argument("--model", default=DEFAULT_MODEL_ID, help="hub id or local folder")
    exp.add_argument("--training-data", required=True)
    exp.add_argument("--out", required=True, help="destination .pt")
    exp.add_argument("--previous", default=None, help="an earlier .pt whose exemplars to keep")
    exp.add_argument("--small", action="store_true", help="leave out the image embeddings")
    exp.add_argument("--roboflow-id", default="")
    _add_common(exp)

    add_random_model_subcommand(sub)  # make-random-model: owned by owl_core.random_model
    return parser


def _predictor(args: argparse.Namespace, model: str, top_k: int | None = None):
    from owl_core.predictor import OwlPredictor

    top_k = args.top_k if args.top_k is not None else (top_k or DEFAULT_TOP_K)
    return OwlPredictor(model, device=args.device, dtype=args.dtype, top_k=top_k,
                        match_threshold=args.match_threshold, disk_cache_dir=args.cache_dir,
                        preprocessing=args.preprocessing)


def _report_unmatched(report) -> None:
    for box in report.unmatched:
        print(f"warning: training_data[{box.image_index}].boxes[{box.box_index}] ({box.cls}"
              f"{', negative' if box.negative else ''}) matched nothing: {box.reason}",
              file=sys.stderr)


def _training_data(path: str) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Read and validate the training data (before any model is loaded: fail fast)."""
    from owl_core.training_data import parse_training_data

    data, classes = read_training_file(path)
    parse_training_data(data)
    return data, classes


def _check_images(images: Sequence[str]) -> None:
    """Raise the usual ImageError for a missing image file before the model is loaded."""
    from owl_core.images import resolve_image

    for image in images:
        if not image.startswith("data:") and not os.path.exists(image):
            resolve_image(image)  # raises "no such image file" (or decodes base64 text)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "make-random-model":
        return args.handler(args)
    if args.command == "predict":
        _check_images(args.images)
        if args.weights:
            from owl_core.serialization import load_pt

            prompts = load_pt(args.weights)  # validated before the model is loaded
            exported_top_k = prompts.meta.get("top_k")
            predictor = _predictor(args, args.model or prompts.huggingface_id,
                                   exported_top_k if isinstance(exported_top_k, int) else None)
            predictor.load_pt(args.weights)
        else:
            data, classes = _training_data(args.training_data)
            predictor = _predictor(args, args.model or DEFAULT_MODEL_ID)
            _report_unmatched(predictor.set_examples(data, classes))
        for image in args.images:
            result = predictor.detect(image, confidence=args.confidence,
                                      iou_threshold=args.iou_threshold,
                                      max_detections=args.max_detections,
                                      score_mode=args.score_mode)
            print(json.dumps(result.to_json()), flush=True)
        return 0
    data, classes = _training_data(args.training_data)
    if args.previous:
        from owl_core.serialization import load_pt

        load_pt(args.previous)  # validated before the model is loaded
    predictor = _predictor(args, args.model)
    if args.previous:  # its image embeddings enter the cache: its images are not embedded again
        predictor.preload_embeddings(args.previous)
    _report_unmatched(predictor.set_examples(data, classes))
    out = predictor.export(args.out, small=args.small, previous=args.previous,
                           roboflow_id=args.roboflow_id)
    print(out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors, non-zero exit on bad input."""
    try:
        return run(argv)
    except (ValueError, RuntimeError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
