"""The Gradio studio: layout (`build_demo`), handlers (`Studio`), sessions, drawing."""

from ui.handlers import Studio, StudioConfig
from ui.layout import build_demo, launch_kwargs

__all__ = ["Studio", "StudioConfig", "build_demo", "launch_kwargs"]
