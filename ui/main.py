"""OWLv2 few-shot studio: draw a few examples in the browser, watch the detections update.

The body of `app.py` (kept as a thin wrapper) lives here so an installed package (`owl-studio
app`) ships it too.

    python app.py                                  # google/owlv2-base-patch16-ensemble
    python app.py --model /path/to/owlv2-folder    # weights already on disk
    python app.py --random-weights tiny            # try the UI on an untrained model
    OWL_PROFILE=1 python app.py ...                # log where each preview refresh's time goes

One model is loaded and shared; every browser session gets its own `OwlPredictor` (its own
embedding caches). The page itself lives in `ui/`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Random-weight checkpoints: models/ in a checkout (next to app.py), else the user's cache.
RANDOM_WEIGHTS_DIR = (ROOT / "models" if (ROOT / "app.py").is_file()
                      else Path.home() / ".cache" / "owl_studio" / "models")
DEFAULT_MODEL_ID = "google/owlv2-base-patch16-ensemble"
RANDOM_PRESETS = ("tiny", "base")
MB = 1024 ** 2


#: Seconds a stopping server waits for open connections (tabs) before closing them.
GRACEFUL_STOP_S = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def data_folder(text: str) -> str:
    """A ``--data-dir``: an existing folder, resolved (refused at start, not at first use)."""
    from owl_core.errors import DataDirError
    from owl_core.project.data_dir import data_roots

    try:
        return str(data_roots([text])[0])
    except DataDirError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--data-dir ")) from None


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="OWLv2 few-shot object detection studio (Gradio).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL_ID,
                       help="Hugging Face hub id or local folder with OWLv2 weights.")
    model.add_argument("--random-weights", choices=RANDOM_PRESETS, default=None,
                       help="Ignore --model and use a randomly initialised checkpoint of this "
                            "size (created on first use); detections are meaningless.")
    model.add_argument("--random-weights-dir", default=str(RANDOM_WEIGHTS_DIR),
                       help="Where --random-weights checkpoints are created and reused.")
    model.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:1, ... (default: $OWL_DEVICE, else cuda if "
                            "available, else cpu).")
    model.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                       help="Compute precision (default: fp16 on CUDA, fp32 on CPU).")
    cache = parser.add_argument_group(
        "projects and caches (one embedding cache for the whole server, shared by sessions)")
    cache.add_argument("--projects-dir", default=None,
                       help="Where projects are saved (default: the user's data folder, "
                            "~/.local/share/owl-studio/projects on Linux).")
    cache.add_argument("--data-dir", dest="data_dirs", action="append", type=data_folder,
                       default=None, metavar="DIR",
                       help="A folder on this server the page may add images from by typing "
                            "its path (repeatable; nothing outside it is read). Without it, "
                            "images come in by upload only.")
    cache.add_argument("--cache-mb", "--host-cache-mb", dest="cache_mb", type=int,
                       default=None,
                       help="RAM budget of the embedding cache, MiB (default: a quarter of "
                            "the machine's RAM).")
    cache.add_argument("--device-cache-mb", type=int, default=1024,
                       help="GPU-memory budget of the embedding cache, MiB (CUDA only).")
    cache.add_argument("--disk-cache-dir", default=None,
                       help="Folder of the persistent embedding cache, so a restart embeds "
                            "nothing again (default: <projects-dir>/../embeddings).")
    cache.add_argument("--no-disk-cache", action="store_true",
                       help="Keep embeddings in memory only.")
    cache.add_argument("--disk-cache-mb", type=int, default=None,
                       help="Size bound of the disk cache, MiB.")
    cache.add_argument("--max-sessions", type=int, default=8,
                       help="Live browser sessions kept (least recently used dropped first).")
    engine = parser.add_argument_group("detection")
    engine.add_argument("--top-k", type=int, default=300,
                        help="Candidate boxes kept per image (by objectness).")
    engine.add_argument("--match-threshold", type=float, default=0.3,
                        help="IoU a drawn box needs with a predicted box to become an example.")
    engine.add_argument("--embed-batch-size", type=positive_int, default=None,
                        help="Images per vision-tower pass when uploads are embedded (default: "
                             "4 on a GPU, 1 on a CPU, where batching measured no faster).")
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (0.0.0.0 for every interface).")
    server.add_argument("--port", type=int, default=7860)
    server.add_argument("--share", action="store_true",
                        help="Also open a public *.gradio.live link (off by default; the REST "
                             "API is then not served).")
    server.add_argument("--users", default=None, metavar="FILE",
                        help="Logins for the page: a file of 'name:password' lines (keep it "
                             "private); each user sees only their own projects. Open to a "
                             "network (--share or a non-loopback --host) without it, one user "
                             "'owl' gets a password made at start (printed).")
    server.add_argument("--insecure-no-login", action="store_true",
                        help="Open to a network WITHOUT login or REST key: anyone who reaches "
                             "the address can open, change and delete every project.")
    from owl_core.rest.server import add_rest_arguments

    add_rest_arguments(parser)  # --weights, --allow-url-images, ... (owl_core.rest)
    return parser.parse_args(argv)


def load_owl_model(args: argparse.Namespace):
    """The shared `OwlModel`; raises `owl_core.ModelLoadError` (or OSError/ValueError) when the
    weights can't be loaded."""
    from owl_core import load_model, make_random_model

    model_ref = args.model
    if args.random_weights:
        folder = Path(args.random_weights_dir) / f"random-{args.random_weights}"
        if not (folder / "config.json").is_file():
            print(f"Creating a random-weights '{args.random_weights}' checkpoint in {folder} ...",
                  flush=True)
            make_random_model(args.random_weights, folder)
        model_ref = str(folder)
    return load_model(model_ref, device=args.device, dtype=args.dtype)


def random_preset(args: argparse.Namespace) -> str | None:
    """The random-weights preset in use (the page's banner): ``--random-weights``, or the one
    a ``--model`` folder made by ``make-random-model`` names in its marker file."""
    from owl_core.engine.random_model import random_preset_of

    return args.random_weights or random_preset_of(args.model)


def cannot_load_message(args: argparse.Namespace, error: BaseException) -> str:
    reason = getattr(error, "problem", None) or str(error).strip() or type(error).__name__
    return (
        f"\nCould not load the OWLv2 model {args.model!r}:\n  {reason}\n\n"
        "How to continue:\n"
        "  * weights already on disk (a folder with config.json and model.safetensors):\n"
        "        python app.py --model /path/to/owlv2-base-patch16-ensemble\n"
        "  * download them once where there is internet access, e.g.\n"
        "        hf download google/owlv2-base-patch16-ensemble "
        "--local-dir models/owlv2-base\n"
        "    then: python app.py --model models/owlv2-base\n"
        "  * just try the interface on an untrained model (detections are meaningless):\n"
        "        python app.py --random-weights tiny\n")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    from owl_core import ModelLoadError

    name = f"random-{args.random_weights}" if args.random_weights else args.model
    print(f"Loading model {name} ...", flush=True)
    try:
        model = load_owl_model(args)
    except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
        print(cannot_load_message(args, exc), file=sys.stderr)
        return 2

    from ui import StudioConfig, build_demo, launch_kwargs
    from ui.profiling import profiling_enabled

    if profiling_enabled():  # one line per refresh: set_examples, detect, draw, encode, ...
        logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("ui.profile").setLevel(logging.INFO)

    from ui.runtime import default_cache_bytes, default_embeddings_dir, default_projects_dir

    projects_dir = Path(args.projects_dir or default_projects_dir()).expanduser()
    disk_dir = None if args.no_disk_cache else (
        args.disk_cache_dir or default_embeddings_dir(projects_dir))
    cache_bytes = default_cache_bytes() if args.cache_mb is None else args.cache_mb * MB
    print(f"Projects: {projects_dir}\nEmbedding cache: {cache_bytes // MB} MiB of RAM"
          + (f", on disk in {disk_dir}" if disk_dir else ""), flush=True)
    if args.data_dirs:
        print(f"Images may be added from: {', '.join(args.data_dirs)}", flush=True)
    config = StudioConfig(
        predictor_kwargs={"top_k": args.top_k, "match_threshold": args.match_threshold},
        random_preset=random_preset(args),
        max_sessions=args.max_sessions,
        embed_batch_size=args.embed_batch_size,
        projects_dir=str(projects_dir),
        cache_bytes=cache_bytes,
        device_cache_bytes=args.device_cache_mb * MB,
        disk_cache_dir=None if disk_dir is None else str(disk_dir),
        disk_cache_bytes=None if args.disk_cache_mb is None else args.disk_cache_mb * MB,
        data_dirs=tuple(dict.fromkeys(args.data_dirs or ())),
    )
    from ui.access import AccessError, plan_access, summary

    try:
        access = plan_access(args.host, args.share, args.users, args.rest_key,
                             args.insecure_no_login)
    except AccessError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 2
    args.rest_key = access.rest_key
    demo = build_demo(model, config)
    demo.queue(default_concurrency_limit=4)
    if args.share:  # a gradio.live link needs Gradio's own launcher: studio only, no REST API
        print(summary(access, f"http://{args.host}:{args.port}/ and a *.gradio.live link",
                      rest=False), flush=True)
        demo.launch(**launch_kwargs(server_name=args.host, server_port=args.port, share=True,
                                    **login_kwargs(access)))
        return 0
    import uvicorn

    from owl_core.errors import OwlError

    try:
        app = build_server_app(model, demo, args, access)
    except OwlError as exc:  # e.g. a --weights file that can't be loaded
        print(f"Cannot start the server: {exc}", file=sys.stderr)
        return 2
    print(summary(access, f"http://{args.host}:{args.port}/", rest=True)
          + f"\n  API docs: http://{args.host}:{args.port}/docs", flush=True)
    # an open tab holds a server-sent-events stream that never ends by itself: without a bound
    # a stop waited for every tab to go (about 30 s and more); projects are saved at exit
    uvicorn.run(app, host=args.host, port=args.port,
                timeout_graceful_shutdown=GRACEFUL_STOP_S)
    stop_now(demo)
    return 0


def stop_now(demo) -> None:
    """Save every open project, then end the process at once. After the server stopped, the
    interpreter's exit waited about 20 s more (worker threads of the web stack joined at exit,
    measured with two tabs open); the projects are on disk by then, so nothing is lost."""
    studio = getattr(demo, "studio", None)
    if studio is not None:
        studio.close()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_server_app(model, demo, args: argparse.Namespace, access=None):
    """One FastAPI app for the whole server: the REST routes of `owl_core.rest` (with
    ``args.rest_key``, a key), with the studio (`demo`, already queued) mounted at "/" next
    to them (behind a login when `access`, an `ui.access.Access`, has users)."""
    import inspect

    import gradio as gr

    from owl_core.rest import create_app
    from owl_core.rest.server import rest_config_from_args
    from ui import launch_kwargs

    config = rest_config_from_args(args, {"top_k": args.top_k,
                                          "match_threshold": args.match_threshold})
    # REST requests share the studio's embedding cache (a .pt's own embeddings never enter it)
    config.shared_cache = getattr(getattr(demo, "studio", None), "cache", None)
    rest = create_app(model, config)
    accepted = inspect.signature(gr.mount_gradio_app).parameters
    kwargs = {k: v for k, v in launch_kwargs(server_name=args.host, server_port=args.port,
                                             **login_kwargs(access)).items() if k in accepted}
    return gr.mount_gradio_app(rest, demo, path="/", **kwargs)


def login_kwargs(access) -> dict:
    """Gradio's login arguments for an `ui.access.Access` (none without users)."""
    auth = None if access is None else access.auth()
    if auth is None:
        return {}
    return {"auth": auth, "auth_message": "OWL Studio: log in (each user sees only their own "
                                          "projects)."}
