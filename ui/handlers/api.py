"""The named API endpoints (infer, infer_pt, export), for `gradio_client` and the "API &
batch" tab. Each call gets its own short-lived predictor (sharing the server's embedding
cache), never a session: API calls take no browser tab's slot in the session store, and never
change what a tab shows. Images come as uploads or base64, never as paths on the server.
Exported files live in the server's `ExportSpool` only until Gradio has copied them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from owl_core.engine.scoring import SCORE_MODES
from owl_core.geometry import xyxy_to_reference
from owl_core.images import ImageError, decode_base64
from owl_core.params import DetectParams
from ui.escape import error
from ui.handlers.common import Area, AreaContext, engine_errors, file_path, read_settings
from ui.runtime import ExportSpool
from ui.session import safe_file_name


class ApiHandlers(Area):
    """`api_infer`, `api_infer_pt`, `api_export`.

    Args:
        ctx: the shared `AreaContext`.
        make_predictor: builds a fresh predictor (sharing the server's embedding cache).
        exports: the spool that keeps exported files for a while (`ui.runtime.ExportSpool`).
    """

    def __init__(self, ctx: AreaContext, make_predictor: Callable[[], Any],
                 exports: ExportSpool) -> None:
        super().__init__(ctx)
        self.make_predictor = make_predictor
        self.exports = exports

    def _predictor(self) -> Any:
        """A fresh predictor for one call: no prompts left from another call, no session."""
        return self.make_predictor()

    @staticmethod
    def _api_training(training_data: Any, example_images: Any) -> tuple[list[dict], Any]:
        """Training data whose "image" fields name uploaded files (by index or file name) or
        carry base64 data; never a path on the server. And the phrases per class, when the
        JSON is an object with "phrases" (``{"training_data": [...], "phrases": {class:
        [phrase, ...]}}``, or a project file's content)."""
        if isinstance(training_data, str):
            try:
                training_data = json.loads(training_data) if training_data.strip() else []
            except ValueError as exc:
                raise error(f"training_data is not valid JSON: {exc}.") from None
        phrases = training_data.get("phrases") if isinstance(training_data, dict) else None
        if isinstance(training_data, dict) and "images" in training_data:
            training_data = _project_training(training_data)
        elif isinstance(training_data, dict) and "training_data" in training_data:
            training_data = training_data["training_data"]  # the old project form
        elif isinstance(training_data, dict) and "phrases" in training_data:
            training_data = []  # phrases alone: zero-shot
        if not isinstance(training_data, list):
            raise error("training_data must be a JSON list of {\"image\": ..., \"boxes\": "
                           f"[...]}} entries, got {type(training_data).__name__}.")
        files = [p for p in (file_path(f) for f in (example_images or [])) if p]
        by_name = {Path(p).name: p for p in files}
        out = []
        for i, entry in enumerate(training_data):
            if not isinstance(entry, dict):
                raise error(f"training_data[{i}] must be an object with image and boxes.")
            image = entry.get("image")
            if isinstance(image, dict) and image.get("type") == "base64":
                image = image.get("value")
                resolved: Any = _decode_base64(image, i)
            elif isinstance(image, bool) or image is None:
                raise error(f"training_data[{i}].image is missing.")
            elif isinstance(image, int):
                if not 0 <= image < len(files):
                    raise error(f"training_data[{i}].image = {image}, but only {len(files)} "
                                   "example image(s) were uploaded (indices start at 0).")
                resolved = files[image]
            elif isinstance(image, str) and image in by_name:
                resolved = by_name[image]
            elif isinstance(image, str):
                resolved = _decode_base64(image, i, names=list(by_name))
            else:
                raise error(f"training_data[{i}].image must be an index, a file name or "
                               "base64 data.")
            out.append({"image": resolved, "boxes": entry.get("boxes", [])})
        return out, phrases

    def _api_examples(self, pred: Any, training_data: str, example_images: list) -> Any:
        """Replace the API session's prompts by these examples (and phrases) alone; their
        `MatchReport`."""
        training, phrases = self._api_training(training_data, example_images)
        pred.clear_imported()
        return pred.set_examples(training, phrases=phrases)

    @staticmethod
    def _api_settings(confidence, iou_threshold, max_detections, score_mode) -> DetectParams:
        if score_mode not in SCORE_MODES:
            raise error(f"score_mode must be one of {list(SCORE_MODES)}, got {score_mode!r}.")
        return read_settings(confidence, iou_threshold, max_detections, score_mode)

    def _api_results(self, pred: Any, query_images: Any, settings: DetectParams) -> list[dict]:
        """Detections per query image; the images are embedded in batches first."""
        paths = [file_path(f) for f in query_images or []]
        pred.embed_many(paths, batch_size=self.config.embed_batch_size)
        found = pred.detect_many(paths, **settings.detect_kwargs())
        return [{"file": Path(path).name, **res.to_json()}
                for path, res in zip(paths, found, strict=True)]

    @engine_errors
    def api_infer(self, training_data: str, example_images: list, query_images: list,
                  confidence: float, iou_threshold: float, max_detections: float,
                  score_mode: str, request: gr.Request) -> dict:
        """Detect on query images from examples given as training data (reference schema)."""
        settings = self._api_settings(confidence, iou_threshold, max_detections, score_mode)
        pred = self._predictor()
        report = self._api_examples(pred, training_data, example_images)
        return {
            "classes": list(report.class_names),
            "match_report": [_match_json(b) for b in report.boxes],
            "phrases": [p.to_dict() for p in report.phrases],
            "results": self._api_results(pred, query_images, settings),
        }

    @engine_errors
    def api_infer_pt(self, pt_file: Any, query_images: list, confidence: float,
                     iou_threshold: float, max_detections: float, score_mode: str,
                     request: gr.Request) -> dict:
        """Detect on query images with the exemplars of an exported `.pt`."""
        settings = self._api_settings(confidence, iou_threshold, max_detections, score_mode)
        path = file_path(pt_file)
        if not path:
            raise error("Upload a .pt file (pt_file).")
        pred = self._predictor()
        prompts = pred.load_pt(path)
        return {"classes": list(prompts.exemplars.class_names),
                "results": self._api_results(pred, query_images, settings)}

    @engine_errors
    def api_export(self, training_data: str, example_images: list, name: str, small: bool,
                   request: gr.Request) -> str:
        """Build a `.pt` from training data and return it (small = without image embeddings)."""
        pred = self._predictor()
        report = self._api_examples(pred, training_data, example_images)
        if not len(pred.exemplars):
            unmatched = "; ".join(b.reason or "" for b in report.unmatched)
            raise error("None of the boxes matched a predicted box, so there is nothing "
                           f"to export ({unmatched}).")
        stem = safe_file_name(name or "owl-project", "owl-project")
        target = self.exports.new_folder() / (
            f"{stem}-small.pt" if small else f"{stem}.pt")
        return str(pred.export(target, small=bool(small), settings={"project": name or stem},
                               public=True))


def _project_training(data: dict) -> list[dict]:
    """Training data from a project file's content (``project.json``, read by the one project
    reader, `owl_core.project.model.project_from_dict`): each image with prompt boxes, named by its
    original file name, which must match an uploaded example image."""
    from owl_core.project.model import project_from_dict

    with tempfile.TemporaryDirectory() as folder:  # the reader resolves image paths in it
        project = project_from_dict(data, folder, source="training_data")
    return [{"image": record.name,
             "boxes": [xyxy_to_reference(p.xyxy, p.cls, p.negative, ndigits=None)
                       for p in record.prompts]}
            for record in project.images if record.prompts]


def _match_json(match: Any) -> dict:
    return {"image_index": match.image_index, "box_index": match.box_index, "cls": match.cls,
            "negative": bool(match.negative), "matched": bool(match.matched),
            "iou": round(float(match.iou), 4),
            "snapped_xyxy": None if match.matched_xyxy is None
            else [round(float(v), 2) for v in match.matched_xyxy],
            "reason": match.reason}


def _decode_base64(value: Any, index: int, names: Sequence[str] = ()) -> bytes:
    """Image bytes from API input that must be base64 (server paths are never opened)."""
    try:
        return decode_base64(str(value or ""))
    except ImageError:
        hint = f" Uploaded file names: {list(names)}." if names else ""
        raise error(f"training_data[{index}].image {str(value)[:60]!r} is neither the name "
                       "or index of an uploaded example image nor base64 image data." + hint
                       ) from None
