"""`owl-studio`: the console script. owl_core's commands (predict, export, make-random-model,
label, evaluate, ...) plus ``app``, the studio in the browser.

``app`` lives here, not in owl_core, because owl_core never imports the UI; it hands its
arguments to `ui.main.main` untouched, so ``owl-studio app ARGS`` is ``python app.py ARGS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PROG = "owl-studio"


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Register ``app`` (listed in --help; its own flags: ``owl-studio app --help``)."""
    parser = subparsers.add_parser(
        "app", add_help=False,
        help="start the studio in the browser (flags: 'owl-studio app --help')")
    parser.set_defaults(handler=lambda args: run_app([]))
    return parser


def run_app(argv: Sequence[str]) -> int:
    from ui.main import main as app_main

    return app_main(list(argv), prog=f"{PROG} app")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``owl-studio`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "app":  # everything after it belongs to the studio's own parser
        return run_app(argv[1:])
    from owl_core.cli.main import main as core_main

    return core_main(argv, prog=PROG, extra=[add_subcommand])


if __name__ == "__main__":
    raise SystemExit(main())
