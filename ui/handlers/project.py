"""The project as files: the project name, the `.pt` downloads and imports, and the query
images' detections as COCO / YOLO / Pascal VOC. (Opening projects, the bundled examples and
project zips: `ui.handlers.library`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

from owl_core.errors import OwlError
from owl_core.naming import class_key, clean_class_name
from owl_core.params import DetectParams
from ui.escape import info
from ui.handlers.common import Area, engine_errors, file_path, read_settings, size_text
from ui.handlers.preview import embedded_training_data
from ui.handlers.views import (
    class_updates,
    imported_text,
)
from ui.profiling import StageTimer
from ui.session import Session, safe_file_name


class ProjectHandlers(Area):
    """Project name, `.pt` export/import, detection export."""

    @engine_errors
    def on_project_name(self, name: str, request: gr.Request) -> None:
        """The project's name (saved with it; the downloads are called after it)."""
        s = self.session(request)
        cleaned = " ".join(str(name or "").split())[:200] or "my-project"
        with s.lock:
            s.core.set_name("".join(ch for ch in cleaned if ch.isprintable()) or "my-project")

    # ------------------------------------------------------------------ .pt out
    @engine_errors
    def on_downloads(self, confidence, iou_threshold, max_detections, score_mode,
                     show_examples, request: gr.Request) -> dict:
        """(Re)write the full and small `.pt` behind the download buttons when their content
        changed. Chained after each refresh, so the preview never waits for the file writes
        (the full `.pt` carries the examples' embeddings: megabytes on the base model)."""
        s = self.session(request)
        with s.lock:
            settings = read_settings(confidence, iou_threshold, max_detections, score_mode,
                                     s.settings)
            timer = StageTimer("downloads")
            with timer.stage("export"):
                out = self._downloads(s, settings)
            if out:
                timer.report()
            return out

    def _downloads(self, s: Session, settings: DetectParams) -> dict:
        # the exemplars are the last refresh's; export only what that refresh showed
        training, _, _ = embedded_training_data(s)
        meta = self._export_settings(s, settings, training)
        key = json.dumps([meta, s.imported_version, s.detect_key], default=str)
        if key == s.export_key and s.exports:
            return {}
        stem = safe_file_name(s.core.name, "owl-project")
        folder = s.work_dir("export")
        full = s.predictor.export(folder / f"{stem}.pt", settings=meta, public=True)
        small = s.predictor.export(folder / f"{stem}-small.pt", small=True, settings=meta,
                                   public=True)
        s.exports = (str(full), str(small))
        s.export_key = key
        n = len(s.predictor.exemplars)
        info = (f"Downloads ready: `{Path(full).name}` ({size_text(full)}) and "
                f"`{Path(small).name}` ({size_text(small)}), {n} exemplar{'s' if n != 1 else ''}.")
        return {self.c.download_full: gr.update(value=str(full), interactive=True),
                self.c.download_small: gr.update(value=str(small), interactive=True),
                self.c.export_info: info}

    @staticmethod
    def _export_settings(s: Session, settings: DetectParams, training: list[dict]) -> dict:
        hashes = {s.path(r): s.embedded(r) for r in s.examples()}
        return {
            "project": s.core.name, "classes": list(s.core.classes),
            "confidence": settings.confidence, "iou_threshold": settings.iou_threshold,
            "max_detections": settings.max_detections, "score_mode": settings.score_mode,
            "combine": settings.combine,
            "examples": [{"name": Path(t["image"]).name.split("-", 1)[-1],
                          "image_hash": hashes.get(t["image"]) or "", "boxes": t["boxes"]}
                         for t in training],
        }

    # ------------------------------------------------------------------ .pt in
    @engine_errors
    def on_import_pt(self, file: Any, request: gr.Request) -> dict:
        """Load a `.pt`: its exemplars stay active (merged with drawn boxes) and are saved with
        the project (a reload or restart loads them again), its classes join the class list,
        its embeddings serve this tab, its saved settings move the sliders. It replaces the
        `.pt` imported before (the predictor holds one imported set)."""
        path = file_path(file)
        if not path:
            return {}
        s = self.session(request)
        with s.lock:
            prompts = s.predictor.load_pt(path)  # refused files change nothing
            try:
                known = {class_key(c) for c in s.core.classes}
                new = [clean_class_name(c, "class in the .pt")
                       for c in prompts.exemplars.class_names if class_key(c) not in known]
            except OwlError:
                s.load_imported()  # the project's own imports again
                raise
            name = Path(path).name
            replaced = [e.name for e in s.core.clear_imported()]  # one imported file at a time
            s.core.add_imported(path, name)  # part of the project: back after a reload
            for cls in new:
                s.core.add_class(cls)
            s.load_imported()
            if replaced and replaced != [name]:
                info(f"{name} replaces the exemplars imported from {', '.join(replaced)}.")
            saved = dict((prompts.meta or {}).get("settings") or {})
            out = class_updates(self.c, s)
            if saved.get("project"):
                s.core.set_name(str(saved["project"]))
                out[self.c.project_name] = s.core.name
            for comp, key in ((self.c.confidence, "confidence"), (self.c.iou, "iou_threshold"),
                              (self.c.max_detections, "max_detections"),
                              (self.c.score_mode, "score_mode")):
                if key in saved:
                    out[comp] = saved[key]
            out[self.c.imported_md] = imported_text(s)
            return out

    @engine_errors
    def on_forget_imported(self, request: gr.Request) -> dict:
        """Drop the imported exemplars (drawn boxes stay)."""
        s = self.session(request)
        with s.lock:
            s.core.clear_imported()
            s.load_imported()
            return {self.c.imported_md: imported_text(s)}
