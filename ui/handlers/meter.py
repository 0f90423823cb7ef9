"""The quality meter (how good the current prompt is on the reviewed images) and the dataset
export, both read from the tab's project through the engine (`owl_core.project.evaluate`,
`owl_core.project.dataset_export`); nothing is measured or written here by hand.

The meter detects once per *prompt state* (`owl_core.project.evaluate.measure_project`: the prompts,
the reviewed labels, IoU / max detections / score mode) and keeps that `Measurement`; a
confidence move only reads it again (`Measurement.at`), which costs a recount, no detection.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import gradio as gr

from owl_core.params import CONFIDENCE_STEP, DetectParams
from owl_core.project.dataset_export import DATASET_FORMATS, export_dataset
from owl_core.project.evaluate import (
    PROMPT_PARTS,
    Evaluation,
    Measurement,
    measure_project,
    prompt_part,
)
from ui.escape import error, info, md_text
from ui.handlers.common import Area, AreaContext, engine_errors, read_settings
from ui.handlers.preview import PreviewHandlers
from ui.session import Session, safe_file_name

#: Short headers: the whole table fits the half-width column at 1280 px (the summary line
#: above it spells out precision / recall).
METER_HEADERS = ["class", "P", "R", "F1", "AP@50", "TP", "FP", "FN"]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def meter_rows(ev: Evaluation) -> list[list[Any]]:
    """One row per class, then "all" (pooled counts; its AP@50 is the mAP@50)."""
    return [[c.name, _fmt(c.precision), _fmt(c.recall), _fmt(c.f1), _fmt(c.ap50),
             c.true_positives, c.false_positives, c.false_negatives]
            for c in (*ev.classes, ev.overall)]


def meter_text(ev: Evaluation) -> str:
    """The meter's summary line: mAP@50, the suggestion, what was measured and left out."""
    parts = [f"**mAP@50 {_fmt(ev.map50)}** at any confidence · "
             f"P / R / F1 at confidence **{ev.confidence:.2f}** on {ev.images_measured} "
             f"reviewed image(s)"]
    if ev.suggested is not None:
        sg = ev.suggested
        parts.append(f"Suggested confidence **{sg.confidence:.2f}** (best F1 {sg.f1:.3f}: "
                     f"P {sg.precision:.3f}, R {sg.recall:.3f})")
    if ev.left_out:
        names = (", ".join(md_text(n) for n in ev.left_out[:5])
                 + (" …" if len(ev.left_out) > 5 else ""))
        parts.append(f"{len(ev.left_out)} reviewed example image(s) left out (the prompt "
                     f"would be graded on its own examples): {names}")
    return "\n\n".join(parts)


def parts_text(parts: dict[str, Evaluation | None]) -> str:
    """The comparison of the prompt's parts on the same reviewed images, as a Markdown table
    ("–" where a part is missing from the prompt or a number is undefined)."""
    if not parts:
        return ""
    lines = ["", "", "Which helps? The same reviewed images, with part of the prompt:", "",
             "| prompt | mAP@50 | P | R | F1 |", "|---|---|---|---|---|"]
    for name in PROMPT_PARTS:
        ev = parts.get(name)
        o = ev.overall if ev is not None else None
        cells = ([_fmt(ev.map50), _fmt(o.precision), _fmt(o.recall), _fmt(o.f1)]
                 if ev is not None and o is not None else ["–"] * 4)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class MeterHandlers(Area):
    """The quality meter panel and the "Export dataset" action."""

    def __init__(self, ctx: AreaContext, preview: PreviewHandlers) -> None:
        super().__init__(ctx)
        self.preview = preview  # fills every query image's detections before a measurement
        self._kept: weakref.WeakKeyDictionary[Session, tuple[str, Measurement]] = \
            weakref.WeakKeyDictionary()
        #: per session: (state key, params[, the parts' measurements]) for `part_measurements`
        self._parts: weakref.WeakKeyDictionary[Session, tuple] = weakref.WeakKeyDictionary()

    def measurement(self, s: Session) -> Measurement | None:
        """The measurement for the session's prompt state (measured again only when that
        state changed); None when there is nothing to measure yet (the reason is raised as
        a `gr.Error`-free message by `on_meter`)."""
        core = s.core
        params = DetectParams(iou_threshold=s.settings.iou_threshold,
                              max_detections=s.settings.max_detections,
                              score_mode=s.settings.score_mode, combine=s.settings.combine)
        done = [r for r in core.images if r.status == "done"]
        key = json.dumps([core.training_data(), core.classes,
                          [(r.content_hash, [b.to_dict() for b in r.labels]) for r in done],
                          params.to_dict(), core.prompt_phrases(),
                          s.imported_version], sort_keys=True, default=str)
        kept = self._kept.get(s)
        if kept is not None and kept[0] == key:
            return kept[1]
        # suggestions on the slider's step: Apply then reads exactly what was promised
        m = measure_project(core, s.predictor, params, confidence_step=CONFIDENCE_STEP)
        self._kept[s] = (key, m)
        self._parts[s] = (key, params)
        return m

    def part_measurements(self, s: Session) -> dict[str, Measurement | None]:
        """The meter of "phrases only", "boxes only" and "both" on the same reviewed images
        (after `measurement`, for the same prompt state; each measured once per state)."""
        kept, parts = self._kept.get(s), self._parts.get(s)
        if kept is None or parts is None or parts[0] != kept[0]:
            return {}
        if len(parts) == 3:
            return parts[2]
        out: dict[str, Measurement | None] = {"both": kept[1]}
        for part in PROMPT_PARTS[:2]:
            sub = prompt_part(s.predictor.exemplars, part)
            out[part] = None if sub is None else measure_project(
                s.core, s.predictor, parts[1], confidence_step=CONFIDENCE_STEP, exemplars=sub)
        self._parts[s] = (kept[0], parts[1], out)
        return out

    @engine_errors
    def on_meter(self, confidence, iou_threshold, max_detections, score_mode, show_examples,
                 request: gr.Request) -> dict:
        """Bring the meter up to date (after an edit, a review change or a slider move)."""
        s = self.session(request)
        c = self.c
        with s.lock:
            settings = read_settings(confidence, iou_threshold, max_detections, score_mode,
                                     s.settings)
            if settings != s.core.settings:
                s.core.set_settings(settings)
            reason = self._not_ready(s)
            if reason:
                return {c.meter_table: None, c.meter_md: reason}
            ev = self.measurement(s).at(settings.confidence)
            if ev.images_measured == 0:
                text = ("No reviewed image to measure on: every image marked done is an "
                        "example image (left out so the prompt is not graded on its own "
                        "examples). Review a query image.")
                return {c.meter_table: None, c.meter_md: text}
            parts = {name: None if m is None else m.at(settings.confidence)
                     for name, m in self.part_measurements(s).items()}
            return {c.meter_table: gr.update(value=meter_rows(ev), headers=METER_HEADERS),
                    c.meter_md: meter_text(ev) + parts_text(parts)}

    @staticmethod
    def _not_ready(s: Session) -> str:
        if s.core is None or s.predictor is None:
            return "No project open."
        if len(s.predictor.exemplars) == 0:
            return ("Draw an example box or describe a class in words first: the meter grades "
                    "the prompt.")
        items = [r for r in s.core.images if r.status == "done"]
        if not items:
            return ("No reviewed images yet. Review a query image below (accept, reject, draw) "
                    "and mark it **done**: the meter then shows precision, recall, F1 and "
                    "mAP@50 of the current prompt on it.")
        if any(s.embedded(r) is None for r in items):
            return "⏳ Reviewed images are still being embedded; the meter follows."
        return ""

    @engine_errors
    def on_apply_suggested(self, request: gr.Request) -> float:
        """The suggested confidence, for the confidence slider (a multiple of its step, so the
        meter then reads exactly the P / R / F1 it promised)."""
        s = self.session(request)
        with s.lock:
            kept = self._kept.get(s)
            suggested = kept[1].at(s.settings.confidence).suggested if kept else None
            if suggested is None:
                raise error("No suggestion yet: review at least one query image.")
            return float(suggested.confidence)

    @engine_errors
    def on_export_dataset(self, fmt: str, include_unreviewed: bool,
                          request: gr.Request) -> str:
        """A zip of the project's dataset (COCO / YOLO / VOC): reviewed labels of the images
        marked done, and with `include_unreviewed` the current detections (at the preview's
        settings) of the images not done yet."""
        if fmt not in DATASET_FORMATS:
            raise error(f"Unknown format {fmt!r}; pick one of {', '.join(DATASET_FORMATS)}.")
        s = self.session(request)
        if include_unreviewed:
            self.preview.fill_results(s)  # detections of every query image
        with s.lock:
            core = s.core
            detections = {r.id: s.results[s.path(r)] for r in core.images
                          if s.path(r) in s.results}
            out_dir = s.work_dir("datasets")
            name = f"{safe_file_name(core.name, 'project')}-{fmt}"
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                summary = export_dataset(core, Path(tmp) / name, fmt,
                                         include_unreviewed=bool(include_unreviewed),
                                         detections=detections, yolo_path=name)
                target = out_dir / f"{name}.zip"
                target.unlink(missing_ok=True)
                archive = shutil.make_archive(str(out_dir / name), "zip", Path(tmp) / name)
            note = (f"{summary.images} image(s), {summary.boxes} box(es): {summary.reviewed} "
                    f"reviewed, {summary.from_detections} from detections")
            if summary.skipped:
                note += f"; {len(summary.skipped)} left out"
            info(f"Dataset ({fmt}): {note}.")
            return archive
