"""Command line: predict with examples, a project or an exported `.pt`; export `.pt`; and the
subcommands other modules add (make-random-model, label, evaluate).

    owl-studio predict --model MODEL --training-data train.json IMAGE...
    owl-studio predict --project DIR [IMAGE...]      # default images: the project's queries
    owl-studio predict --weights exported.pt IMAGE...
    owl-studio export --model MODEL (--training-data train.json | --project DIR) --out FILE.pt
    owl-studio predict --model MODEL --text coin --text "cup=a coffee cup" IMAGE...  # zero-shot
    owl-studio make-random-model --preset tiny OUT_DIR

``--text CLASS[=PHRASE]`` (repeatable) adds a text prompt to any prompt source, or is the
prompt alone (zero-shot); ``--combine max|fused`` says how a class's phrases and boxes combine
(the prompt flags: `owl_core.project.prompt_sources`).
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
from owl_core.params import SCORE_MODES, DetectParams
from owl_core.project.prompt_sources import Prompts, add_prompt_arguments, read_prompts

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
    add_prompt_arguments(pred, ("training_data", "project", "weights"))
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
    _add_common(pred)
    pred.set_defaults(handler=_run_predict)
    return pred


def _add_export(sub: Any) -> argparse.ArgumentParser:
    exp = sub.add_parser("export", help="write the class embeddings as a .pt")
    add_prompt_arguments(exp, ("training_data", "project"), model_default=DEFAULT_MODEL_ID)
    exp.add_argument("--out", required=True, help="destination .pt")
    exp.add_argument("--previous", default=None, help="an earlier .pt whose exemplars to keep")
    exp.add_argument("--small", action="store_true", help="leave out the image embeddings")
    exp.add_argument("--roboflow-id", default="")
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
def _predictor(args: argparse.Namespace, prompts: Prompts, params: DetectParams,
               previous: str | None = None):
    """The predictor of `prompts`, with them applied (unmatched boxes reported on stderr);
    the image embeddings of a `previous` .pt enter its cache first (its images are not
    embedded again)."""
    from owl_core.engine.predictor import OwlPredictor

    predictor = OwlPredictor(prompts.model, device=args.device, dtype=args.dtype,
                             top_k=prompts.top_k, match_threshold=params.match_threshold,
                             disk_cache_dir=args.cache_dir, preprocessing=args.preprocessing)
    if previous:
        predictor.preload_embeddings(previous)
    prompts.apply(predictor, lambda line: print(line, file=sys.stderr))
    return predictor


def _check_images(images: Sequence[str]) -> None:
    """Raise the usual ImageError for a missing image file before the model is loaded."""
    from owl_core.images import resolve_image

    for image in images:
        if not image.startswith("data:") and not os.path.exists(image):
            resolve_image(image)  # raises "no such image file" (or decodes base64 text)


def _run_predict(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)  # validated before the model is loaded
    images = list(args.images) or [str(p) for p in prompts.queries]
    if not images:
        raise SettingsError("predict: give the image files to detect on"
                            + (" (the project has no query images)." if args.project else "."))
    _check_images(images)
    params = prompts.params(args)
    predictor = _predictor(args, prompts, params)
    for image in images:
        result = predictor.detect(image, params)
        print(json.dumps(result.to_json()), flush=True)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    if args.previous:
        from owl_core.engine.prompt_file import load_pt

        load_pt(args.previous)  # validated before the model is loaded
    params = prompts.params(args)
    predictor = _predictor(args, prompts, params, previous=args.previous)
    # the settings (combine mode included) travel with the prompt: predict/label --weights
    # start from them
    out = predictor.export(args.out, small=args.small, previous=args.previous,
                           roboflow_id=args.roboflow_id, settings=params.to_dict())
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
