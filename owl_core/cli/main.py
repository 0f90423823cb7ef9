"""Command line: predict with examples, a project or an exported `.pt`; export `.pt`; and the
subcommands other modules add (make-random-model, label, evaluate).

    owl-studio predict --model MODEL --training-data train.json IMAGE...
    owl-studio predict --project DIR [IMAGE...]      # default images: the project's queries
    owl-studio predict --weights exported.pt IMAGE...
    owl-studio predict --model MODEL --text coin --text "cup=a coffee cup" IMAGE...  # zero-shot
    owl-studio export --model MODEL (--training-data train.json | --project DIR) --out FILE.pt

``--text CLASS[=PHRASE]`` (repeatable) adds a text prompt to any prompt source, or is the
prompt alone (zero-shot); ``--combine max|fused`` says how a class's phrases and boxes combine.
    owl-studio make-random-model --preset tiny OUT_DIR

(``python -m owl_core`` is the same without the studio's ``app`` subcommand.) Detection
settings come from the flags, else from the project (``--project``), else the defaults. Bad
input exits with status 2 and a one-line ``error: ...`` on stderr.

Adding a subcommand: write ``add_subcommand(subparsers) -> argparse.ArgumentParser`` in your
module (register the parser with ``set_defaults(handler=fn)``, ``fn(args) -> int`` the exit
status; raise `OwlError` on bad input) and list the module in `SUBCOMMAND_MODULES`. The studio
adds ``app`` the same way from `ui.cli` (owl_core never imports ui).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from owl_core.engine.loading import DEFAULT_MODEL_ID
from owl_core.engine.predictor import DEFAULT_TOP_K
from owl_core.errors import OwlError, SettingsError
from owl_core.params import COMBINE_MODES, SCORE_MODES, DetectParams
from owl_core.phrases import add_text_argument, with_text_flags
from owl_core.project.model import read_training_file  # the one reader (also used by label)

#: Modules with an ``add_subcommand(subparsers)`` hook, in --help order. A module that is not
#: there (an optional part) is left out.
SUBCOMMAND_MODULES: list[str] = ["owl_core.cli.project", "owl_core.engine.random_model",
                                 "owl_core.batch.job", "owl_core.project.evaluate",
                                 "owl_core.project.dataset_export", "owl_core.rest.server"]

AddSubcommand = Callable[[Any], argparse.ArgumentParser]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: auto / OWL_DEVICE)")
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                   help="autocast dtype (default: fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--top-k", type=int, default=None,
                   help=f"candidates kept per image (default: {DEFAULT_TOP_K}, or the value the "
                        ".pt given with --weights was exported with)")
    p.add_argument("--match-threshold", type=float, default=None,
                   help="IoU a drawn box needs with a predicted box (default: the project's, "
                        "else 0.3)")
    p.add_argument("--cache-dir", default=None, help="persistent embedding cache folder")
    p.add_argument("--preprocessing", default=None, choices=["hf", "roboflow"],
                   help="image preprocessing: hf (transformers, the default) or roboflow "
                        "(Roboflow Inference's, to reproduce its detections); default: hf, or "
                        "the mode of the .pt given with --weights (roboflow for a file written "
                        "by Roboflow)")


def _add_predict(sub: Any) -> argparse.ArgumentParser:
    pred = sub.add_parser("predict", help="print one JSON response per image")
    src = pred.add_mutually_exclusive_group()
    src.add_argument("--training-data", help="train.json in the reference schema, or a project "
                                             "file")
    src.add_argument("--project", help="a project folder (its examples and settings)")
    src.add_argument("--weights", help="an exported .pt")
    pred.add_argument("--model", default=None,
                      help=f"hub id or folder (default: {DEFAULT_MODEL_ID}, or the .pt's model)")
    pred.add_argument("images", nargs="*",
                      help="image files (with --project, default: its query images)")
    pred.add_argument("--confidence", type=float, default=None, help="default: 0.9 or the "
                                                                     "project's")
    pred.add_argument("--iou-threshold", type=float, default=None, help="default: 0.3 or the "
                                                                        "project's")
    pred.add_argument("--max-detections", type=int, default=None, help="default: 300 or the "
                                                                       "project's")
    pred.add_argument("--score-mode", default=None, choices=SCORE_MODES,
                      help="default: reference or the project's")
    pred.add_argument("--combine", default=None, choices=COMBINE_MODES,
                      help="how a class's phrases and boxes combine (default: max or the "
                           "project's)")
    add_text_argument(pred)
    _add_common(pred)
    pred.set_defaults(handler=_run_predict)
    return pred


def _add_export(sub: Any) -> argparse.ArgumentParser:
    exp = sub.add_parser("export", help="write the class embeddings as a .pt")
    exp.add_argument("--model", default=DEFAULT_MODEL_ID, help="hub id or local folder")
    src = exp.add_mutually_exclusive_group()
    src.add_argument("--training-data", help="train.json in the reference schema, or a project "
                                             "file")
    src.add_argument("--project", help="a project folder (its examples and settings)")
    exp.add_argument("--out", required=True, help="destination .pt")
    exp.add_argument("--previous", default=None, help="an earlier .pt whose exemplars to keep")
    exp.add_argument("--small", action="store_true", help="leave out the image embeddings")
    exp.add_argument("--roboflow-id", default="")
    add_text_argument(exp)
    _add_common(exp)
    exp.set_defaults(handler=_run_export)
    return exp


def build_parser(prog: str = "python -m owl_core",
                 extra: Sequence[AddSubcommand] = ()) -> argparse.ArgumentParser:
    """The parser of every subcommand: predict, export, those of `SUBCOMMAND_MODULES`, then
    ``extra`` hooks (how `ui.cli` adds ``app``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="OWLv2 few-shot object detection: predict, export prompt sets, "
                               "label folders, evaluate (see 'COMMAND --help').")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in extra:
        add(sub)
    _add_predict(sub)
    _add_export(sub)
    for name in SUBCOMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_subcommand(sub)
    return parser


# ------------------------------------------------------------------------------- handlers
def _predictor(args: argparse.Namespace, model: str, params: DetectParams,
               top_k: int | None = None):
    from owl_core.engine.predictor import OwlPredictor

    top_k = args.top_k if args.top_k is not None else (top_k or DEFAULT_TOP_K)
    return OwlPredictor(model, device=args.device, dtype=args.dtype, top_k=top_k,
                        match_threshold=params.match_threshold, disk_cache_dir=args.cache_dir,
                        preprocessing=args.preprocessing)


def _report_unmatched(report) -> None:
    for box in report.unmatched:
        print(f"warning: training_data[{box.image_index}].boxes[{box.box_index}] ({box.cls}"
              f"{', negative' if box.negative else ''}) matched nothing: {box.reason}",
              file=sys.stderr)


def _examples(args: argparse.Namespace) -> tuple[
        list[dict[str, Any]], list[str] | None, dict[str, list[str]], DetectParams, list[str]]:
    """Training data, classes, phrases (the project's and ``--text``), settings (flags over
    the project's) and the project's query images, read and validated before any model is
    loaded (fail fast)."""
    from owl_core.engine.training_data import parse_training_data

    queries: list[str] = []
    phrases: dict[str, list[str]] = {}
    if args.project:
        from owl_core.project.model import load_project

        project = load_project(args.project, allow_external=True)
        data, classes, base = project.training_data(), list(project.classes), project.settings
        phrases = project.prompt_phrases()
        if not data and not phrases and not args.text:
            raise SettingsError(f"{args.project}: the project has no example boxes or phrases "
                                "yet; draw some first (or add --text CLASS).")
        queries = [str(p) for p in project.query_images()]
    elif args.training_data:
        data, classes = read_training_file(args.training_data)
        base = DetectParams()
    elif args.text:
        data, classes, base = [], None, DetectParams()
    else:
        raise SettingsError(f"{args.command}: give the prompts: --training-data, --project"
                            f"{', --weights' if args.command == 'predict' else ''} and/or "
                            "--text CLASS[=PHRASE].")
    parse_training_data(data)
    classes, phrases = with_text_flags(classes, phrases, args.text)
    return data, classes, phrases, _params(args, base), queries


def _params(args: argparse.Namespace, base: DetectParams) -> DetectParams:
    return base.replace(confidence=getattr(args, "confidence", None),
                        iou_threshold=getattr(args, "iou_threshold", None),
                        max_detections=getattr(args, "max_detections", None),
                        score_mode=getattr(args, "score_mode", None),
                        match_threshold=args.match_threshold,
                        combine=getattr(args, "combine", None))


def _check_images(images: Sequence[str]) -> None:
    """Raise the usual ImageError for a missing image file before the model is loaded."""
    from owl_core.images import resolve_image

    for image in images:
        if not image.startswith("data:") and not os.path.exists(image):
            resolve_image(image)  # raises "no such image file" (or decodes base64 text)


def _run_predict(args: argparse.Namespace) -> int:
    images = list(args.images)
    if args.weights:
        if not images:
            raise SettingsError("predict: give the image files to detect on.")
        _check_images(images)
        from owl_core.engine.prompt_file import load_pt

        params = _params(args, DetectParams())
        prompts = load_pt(args.weights)  # validated before the model is loaded
        _, phrases = with_text_flags(None, None, args.text)
        exported_top_k = prompts.meta.get("top_k")
        predictor = _predictor(args, args.model or prompts.huggingface_id, params,
                               exported_top_k if isinstance(exported_top_k, int) else None)
        predictor.load_pt(args.weights)
        if phrases:  # beside the file's prompts
            predictor.set_examples([], phrases=phrases)
    else:
        data, classes, phrases, params, queries = _examples(args)
        images = images or queries
        if not images:
            raise SettingsError("predict: give the image files to detect on (the project has no "
                                "query images).")
        _check_images(images)
        predictor = _predictor(args, args.model or DEFAULT_MODEL_ID, params)
        _report_unmatched(predictor.set_examples(data, classes, phrases=phrases))
    for image in images:
        result = predictor.detect(image, params)
        print(json.dumps(result.to_json()), flush=True)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    data, classes, phrases, params, _ = _examples(args)
    if args.previous:
        from owl_core.engine.prompt_file import load_pt

        load_pt(args.previous)  # validated before the model is loaded
    predictor = _predictor(args, args.model, params)
    if args.previous:  # its image embeddings enter the cache: its images are not embedded again
        predictor.preload_embeddings(args.previous)
    _report_unmatched(predictor.set_examples(data, classes, phrases=phrases))
    out = predictor.export(args.out, small=args.small, previous=args.previous,
                           roboflow_id=args.roboflow_id)
    print(out)
    return 0


def run(argv: Sequence[str] | None = None, prog: str = "python -m owl_core",
        extra: Sequence[AddSubcommand] = ()) -> int:
    """Parse and run one command; errors propagate."""
    args = build_parser(prog, extra).parse_args(argv)
    return args.handler(args)


def main(argv: Sequence[str] | None = None, prog: str = "python -m owl_core",
         extra: Sequence[AddSubcommand] = ()) -> int:
    """Entry point: one-line errors (status 2) on bad input, 130 on Ctrl-C."""
    try:
        return run(argv, prog, extra)
    except (OwlError, ValueError, RuntimeError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
