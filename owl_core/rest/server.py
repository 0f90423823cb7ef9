"""Command line: serve the REST API alone (``python -m owl_core.rest --model DIR``), and the
flags the studio's server shares (`add_rest_arguments`, `rest_config_from_args`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from owl_core.rest.app import RestConfig
from owl_core.rest.work import WorkLimits


def _weights_arg(text: str) -> tuple[str, str]:
    """``NAME=PATH`` or ``PATH`` (the name is then the file's stem)."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = Path(text).stem, text
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH or PATH, got {text!r}")
    return name, path


def add_rest_arguments(parser: argparse.ArgumentParser) -> None:
    """The REST API's flags (also on the studio's command line)."""
    rest = parser.add_argument_group("REST API (POST /owlv2/infer, POST /infer)")
    rest.add_argument("--weights", type=_weights_arg, action="append", default=[],
                      metavar="NAME=PATH",
                      help="A .pt prompt file served by POST /infer under NAME (or its file "
                           "name without .pt); repeatable.")
    rest.add_argument("--allow-url-images", action="store_true",
                      help="Fetch images given as URLs (public hosts only: private, loopback "
                           "and link-local addresses are refused). Off by default.")
    rest.add_argument("--request-time-budget", type=float, default=WorkLimits.time_budget_s,
                      help="Seconds one REST request may run before it is stopped.")
    rest.add_argument("--rest-workers", type=int, default=WorkLimits.light_workers,
                      help="Small REST requests run at once (large ones have their own lane).")
    rest.add_argument("--rest-key", default=os.environ.get("OWL_REST_KEY") or None,
                      help="Key every REST request must carry (X-API-Key header); default "
                           "$OWL_REST_KEY. A studio open to a network makes one when none "
                           "is given.")


def rest_config_from_args(args: argparse.Namespace,
                          predictor_kwargs: dict[str, Any] | None = None) -> RestConfig:
    """A `RestConfig` from parsed `add_rest_arguments` flags."""
    names = [name for name, _ in args.weights]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"--weights: the name(s) {duplicates} are given twice.")
    work = WorkLimits(time_budget_s=args.request_time_budget,
                      light_workers=max(1, args.rest_workers))
    return RestConfig(weights=dict(args.weights), allow_url_images=args.allow_url_images,
                      predictor_kwargs=dict(predictor_kwargs or {}), work=work,
                      api_key=getattr(args, "rest_key", None) or None)


_DESCRIPTION = "OWLv2 few-shot detection REST API (Roboflow Inference's /owlv2/infer)."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m owl_core.rest", description=_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_serve_arguments(parser)
    return parser.parse_args(argv)


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``serve`` (the REST API alone) to the ``owl-studio`` / ``python -m owl_core`` CLI."""
    parser = subparsers.add_parser(
        "serve", help="serve the REST API alone (POST /owlv2/infer, POST /infer)",
        description=_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_serve_arguments(parser)
    parser.set_defaults(handler=_serve)
    return parser


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="google/owlv2-base-patch16-ensemble",
                        help="Hugging Face hub id or local folder with OWLv2 weights.")
    parser.add_argument("--random-weights", choices=("tiny", "base"), default=None,
                        help="Use an untrained checkpoint made in --random-weights-dir "
                             "(detections are meaningless).")
    parser.add_argument("--random-weights-dir", default="models")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    parser.add_argument("--top-k", type=int, default=300,
                        help="Candidate boxes kept per image (by objectness).")
    parser.add_argument("--match-threshold", type=float, default=0.3,
                        help="IoU a drawn box needs with a predicted box to become an example.")
    parser.add_argument("--preprocessing", choices=("hf", "roboflow"), default=None,
                        help="Image preprocessing of /owlv2/infer requests that don't say "
                             "(hf: transformers'; roboflow: Roboflow Inference's own, for its "
                             "detections). /infer uses the .pt's own unless the request says.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (0.0.0.0 for every interface).")
    parser.add_argument("--port", type=int, default=9001)
    add_rest_arguments(parser)


def serve_main(argv: Sequence[str] | None = None) -> int:
    """Load the model and serve the REST API with uvicorn until interrupted; 2 when the model
    or a --weights file can't be loaded."""
    return _serve(parse_args(argv))


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from owl_core.engine.loading import load_model
    from owl_core.errors import OwlError
    from owl_core.rest.app import create_app

    try:
        model_ref = args.model
        if args.random_weights:
            from owl_core.engine.random_model import make_random_model

            folder = Path(args.random_weights_dir) / f"random-{args.random_weights}"
            if not (folder / "config.json").is_file():
                make_random_model(args.random_weights, folder)
            model_ref = str(folder)
        model = load_model(model_ref, device=args.device, dtype=args.dtype)
        config = rest_config_from_args(args, {"top_k": args.top_k,
                                              "match_threshold": args.match_threshold,
                                              "preprocessing": args.preprocessing})
        app = create_app(model, config)
    except (OwlError, OSError) as exc:
        print(f"Cannot start the REST API: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port)
    return 0
