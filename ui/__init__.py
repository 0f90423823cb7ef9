"""The Gradio studio: layout (`build_demo`), handlers (`Studio`), sessions, drawing.

Names are resolved on first use, so `ui.cli` / `ui.main` (``owl-studio --help``, ``python app.py
--help``) don't pay for importing gradio.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {"Studio": "ui.handlers", "StudioConfig": "ui.handlers",
            "build_demo": "ui.layout", "launch_kwargs": "ui.layout"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ui' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
