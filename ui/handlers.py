"""Event handlers of the studio page (`Studio.on_*`) and its named API endpoints (`api_*`).

Each handler finds its session by ``request.session_hash`` and works under that session's lock;
handlers return ``{component: value}`` dicts, so anything not named keeps its value. Engine
errors (ValueError / RuntimeError subclasses) become `gr.Error` with the engine's message.

Refresh rule: every edit ends in `_refresh`, which recomputes the preview from cached
embeddings only when something that changes it changed (a key of the training data, classes,
query images and settings), and re-exports the `.pt` downloads only when their content changes.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
from PIL import Image, UnidentifiedImageError

from owl_core.images import ImageError, decode_base64
from owl_core.scoring import SCORE_MODES
from ui import labels as L
from ui.drawing import PREVIEW_MAX_SIDE, draw_detections, draw_snaps, fit, open_rgb
from ui.formats import export_detections, load_project_file
from ui.session import (
    ImageItem,
    Project,
    Session,
    SessionStore,
    Settings,
    safe_file_name,
)

log = logging.getLogger(__name__)
#: A detection overlapping a drawn box this much is not offered as a suggestion.
SUGGESTION_OVERLAP = 0.5
#: At most this many detections (the best) become suggestions, so the annotator stays usable.
MAX_SUGGESTIONS = 60
DIAG_HEADERS = ["image", "#", "class", "kind", "IoU", "snapped to (x0, y0, x1, y1)", "status"]


@dataclass
class StudioConfig:
    """How the studio runs (filled from the command line by `app.py`).

    Attributes:
        predictor_kwargs: passed to every session's `OwlPredictor` (cache sizes, top_k, ...).
        random_preset: name of the random-weights preset in use (None for real weights).
        max_sessions: live sessions kept at most (least recently used dropped first).
        work_dir: folder for sessions' files (a temporary folder when None).
        preview_max_side: longest side of preview pictures, pixels.
        default_confidence: the confidence slider's start value.
    """

    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    random_preset: str | None = None
    max_sessions: int = 8
    work_dir: str | None = None
    preview_max_side: int = PREVIEW_MAX_SIDE
    default_confidence: float = 0.9


class Components:
    """The page's components, filled in by `ui.layout.build_demo` (attribute per component)."""

    def __getattr__(self, name: str) -> Any:  # only reached for missing attributes
        raise AttributeError(f"component {name!r} was not created by the layout")


def _engine_errors(fn: Callable) -> Callable:
    """Turn engine ValueError/RuntimeError into gr.Error with the same message, and an empty
    update dict into `gr.skip()`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
            # an empty {component: value} dict means "change nothing"; Gradio needs gr.skip()
            return gr.skip() if isinstance(out, dict) and not out else out
        except gr.Error:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            log.warning("%s failed: %s", fn.__name__, exc, exc_info=True)
            raise gr.Error(str(exc)) from exc

    return wrapper


def _settings(confidence, iou_threshold, max_detections, score_mode,
              show_examples=False) -> Settings:
    mode = score_mode if score_mode in SCORE_MODES else "reference"
    return Settings(float(confidence), float(iou_threshold), int(max_detections), mode,
                    bool(show_examples))


def _image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after EXIF rotation; ValueError for a file that is not an image."""
    try:
        return open_rgb(path).size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{Path(path).name}: not an image this studio can read ({exc}).") from exc


def _file_path(value: Any) -> str | None:
    """A file path out of what Gradio hands over (a str, a FileData-like dict or object)."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


class Studio:
    """The app's behaviour, independent of the layout.

    Args:
        model: the shared `OwlModel` every session's predictor uses.
        config: see `StudioConfig`.
        make_predictor: builds a session's predictor (default: `OwlPredictor(model, **kwargs)`).
    """

    def __init__(self, model: Any, config: StudioConfig | None = None,
                 make_predictor: Callable[[], Any] | None = None) -> None:
        self.model = model
        self.config = config or StudioConfig()
        if make_predictor is None:
            from owl_core import OwlPredictor

            def make_predictor():
                return OwlPredictor(model, **self.config.predictor_kwargs)
        import tempfile

        root = self.config.work_dir or tempfile.mkdtemp(prefix="owl-studio-")
        self.store = SessionStore(make_predictor, root, self.config.max_sessions)
        self.c = Components()

    # ------------------------------------------------------------------ session helpers
    def session(self, request: gr.Request | None) -> Session:
        session_id = getattr(request, "session_hash", None) or "default"
        return self.store.get(session_id)

    def on_unload(self, request: gr.Request) -> None:
        """Free a closed tab's predictor, caches and files."""
        session_id = getattr(request, "session_hash", None)
        if session_id:
            self.store.drop(session_id)

    # ------------------------------------------------------------------ view builders
    def _class_updates(self, p: Project, *, with_value: bool = False) -> dict:
        """Class dropdown, colour legend and the annotator's label list (and value)."""
        labels, colors = L.label_choices(p.classes)
        annot = {"label_list": labels, "label_colors": colors}
        if with_value:
            annot["value"] = self._annotator_value(p)
        return {
            self.c.class_pick: gr.update(choices=p.classes,
                                         value=p.active_class if p.active_class in p.classes
                                         else None),
            self.c.legend: self.legend_html(p.classes),
            self.c.annotator: gr.update(**annot),
        }

    @staticmethod
    def legend_html(classes: Sequence[str]) -> str:
        """Colour chips for each class and its negative."""
        if not classes:
            return "<div class='legend'><i>No classes yet: add one.</i></div>"
        chips = []
        for i, name in enumerate(classes):
            color = L.class_color(i)
            safe = html.escape(name)
            chips.append(f"<span class='chip' style='background:{color}'>{safe}</span>"
                         f"<span class='chip neg' style='background:{L.NEGATIVE_COLOR}'>"
                         f"{L.NEGATIVE_PREFIX}{safe}</span>")
        chips.append(f"<span class='chip' style='background:{L.SUGGESTION_COLOR}'>"
                     "grey = suggestion (a detection; relabel it to use it)</span>")
        return "<div class='legend'>" + "".join(chips) + "</div>"

    @staticmethod
    def _annotator_value(p: Project) -> dict | None:
        item = p.current_example
        if item is None:
            return None
        boxes = []
        for box in item.boxes:
            color = L.normalise_color(box.get("color")) or L.hex_to_rgb(
                L.label_color(L.parse_label(box.get("label"), p.classes), p.classes))
            boxes.append({"xmin": box["xmin"], "ymin": box["ymin"], "xmax": box["xmax"],
                          "ymax": box["ymax"], "label": box.get("label", ""), "color": color})
        return {"image": item.path, "boxes": boxes}

    @staticmethod
    def _gallery(items: Sequence[ImageItem], boxes: bool = False) -> list[tuple[str, str]]:
        out = []
        for item in items:
            caption = item.name
            if boxes:
                n = sum(1 for b in item.boxes
                        if L.parse_box(b, []).kind != "suggestion")
                caption += f" · {n} box{'es' if n != 1 else ''}"
            out.append((item.path, caption))
        return out

    def _examples_updates(self, p: Project) -> dict:
        return {self.c.examples_gallery: gr.update(value=self._gallery(p.examples, boxes=True),
                                                   selected_index=p.current
                                                   if p.current >= 0 else None)}

    @staticmethod
    def _recolor(p: Project) -> None:
        """Give every box the colour its label means (after classes changed)."""
        for item in p.examples:
            for box in item.boxes:
                parsed = L.parse_box(box, p.classes)
                if parsed.kind != "unlabeled":
                    box["color"] = L.hex_to_rgb(L.label_color(parsed, p.classes))

    # ------------------------------------------------------------------ the preview
    def _preview_items(self, s: Session, settings: Settings) -> list[ImageItem]:
        items = list(s.project.queries)
        if settings.show_examples:
            seen = {q.path for q in items}
            items += [e for e in s.project.examples if e.path not in seen]
        return items

    def _base_picture(self, s: Session, path: str) -> tuple[Image.Image, float]:
        """The image at preview size (decoded once per session) and its scale."""
        if path not in s.pictures:
            s.pictures[path] = fit(open_rgb(path), self.config.preview_max_side)
        return s.pictures[path]

    def _refresh(self, s: Session, settings: Settings) -> dict:
        """Preview, counts, diagnostics and downloads for the session's current state."""
        p = s.project
        training, origin = p.training_data()
        items = self._preview_items(s, settings)
        key = json.dumps([training, p.classes, [(i.path, i.content_hash) for i in items],
                          settings.__dict__, p.current, s.imported_version], default=str)
        out: dict = {}
        if key != s.preview_key:
            pred = s.predictor
            report = pred.set_examples(training, class_names=list(p.classes))
            s.report = report
            has_prompts = len(pred.exemplars) > 0
            gallery, results, rows = [], {}, []
            colors_by_name = {n: L.class_color(i) for i, n in enumerate(p.classes)}
            totals: dict[str, int] = {n: 0 for n in p.classes}
            for item in items:
                base, scale = self._base_picture(s, item.path)
                if item.content_hash is None:  # the embedding step will fill it in
                    gallery.append((base, f"{item.name} · embedding…"))
                    continue
                res = pred.detect(item.path, **settings.detect_kwargs())
                results[item.path] = res
                names = list(res.class_names)
                colors = [colors_by_name.get(n, L.class_color(len(p.classes) + i))
                          for i, n in enumerate(names)]
                picture = draw_detections(base, res.xyxy * scale, res.class_id, res.confidence,
                                          names, colors)
                counts = res.counts()
                if has_prompts:
                    summary = ", ".join(f"{n}: {c}" for n, c in counts.items()) or "no classes"
                else:
                    summary = "draw a box on an example to start"
                gallery.append((picture, f"{item.name} · {summary}"))
                if item in p.queries:
                    rows.append([item.name] + [counts.get(n, 0) for n in p.classes]
                                + [sum(counts.values())])
                    for n, c in counts.items():
                        totals[n] = totals.get(n, 0) + c
            if rows:
                rows.append(["all query images"] + [totals.get(n, 0) for n in p.classes]
                            + [sum(totals.get(n, 0) for n in p.classes)])
            s.results = results
            s.preview_items = items
            s.preview_key = key
            if gallery:
                s.selected_preview = min(s.selected_preview, len(gallery) - 1)
            out[self.c.preview] = gr.update(value=gallery,
                                            selected_index=s.selected_preview if gallery else None)
            out[self.c.counts] = gr.update(
                value=rows, headers=["image"] + list(p.classes) + ["total"],
                column_count=(len(p.classes) + 2, "fixed"))
            out.update(self._diagnostics(s, report, origin))
        out.update(self._downloads(s, settings, training))
        return out

    def _diagnostics(self, s: Session, report: Any, origin: list[tuple[int, int]]) -> dict:
        p = s.project
        rows, warnings = [], []
        snaps: dict[str, list] = {"drawn": [], "snapped": [], "titles": [], "matched": [],
                                  "negative": [], "class_index": []}
        ordinal: dict[int, int] = {}
        for n, match in enumerate(report.boxes):
            ei, _ = origin[n] if n < len(origin) else (-1, -1)
            ordinal[ei] = bi = ordinal.get(ei, 0) + 1  # 1-based among the example's boxes
            item = p.examples[ei] if 0 <= ei < len(p.examples) else None
            name = item.name if item else "?"
            snapped = ("" if match.matched_xyxy is None else
                       "(" + ", ".join(f"{v:.0f}" for v in match.matched_xyxy) + ")")
            status = "matched" if match.matched else "⚠ no match (ignored)"
            kind = "negative" if match.negative else "positive"
            rows.append([name, bi, match.cls, kind, round(float(match.iou), 2), snapped,
                         status])
            if not match.matched:
                label = L.negative_label(match.cls) if match.negative else match.cls
                warnings.append(f"**{name}** box {bi} ({label}): {match.reason}")
            if ei == p.current:
                snaps["drawn"].append(match.drawn_xyxy)
                snaps["snapped"].append(match.matched_xyxy)
                snaps["titles"].append(f"#{bi} IoU {match.iou:.2f}")
                snaps["matched"].append(bool(match.matched))
                snaps["negative"].append(bool(match.negative))
                snaps["class_index"].append(p.classes.index(match.cls)
                                            if match.cls in p.classes else 0)
        if warnings:
            many = len(warnings) > 1
            text = (f"⚠ **{len(warnings)} box{'es' if many else ''} matched no predicted box "
                    f"and {'are' if many else 'is'} ignored:**\n\n"
                    + "\n".join(f"- {w}" for w in warnings))
        elif len(rows) == 1:
            text = "✓ The box snapped to a predicted box."
        elif rows:
            text = f"✓ All {len(rows)} boxes snapped to a predicted box."
        else:
            text = "No boxes yet. Draw one on the example image."
        item = p.current_example
        picture = None
        if item is not None:
            base, scale = self._base_picture(s, item.path)
            picture = draw_snaps(base, [tuple(v * scale for v in d) for d in snaps["drawn"]],
                                 [None if m is None else tuple(v * scale for v in m)
                                  for m in snaps["snapped"]],
                                 snaps["titles"], snaps["matched"], snaps["negative"],
                                 snaps["class_index"])
        return {self.c.diag_table: gr.update(value=rows or None, headers=DIAG_HEADERS),
                self.c.diag_warning: text,
                self.c.diag_image: picture}

    def _export_settings(self, s: Session, settings: Settings, training: list[dict]) -> dict:
        hashes = {e.path: e.content_hash for e in s.project.examples}
        return {
            "project": s.project.name, "classes": list(s.project.classes),
            "confidence": settings.confidence, "iou_threshold": settings.iou_threshold,
            "max_detections": settings.max_detections, "score_mode": settings.score_mode,
            "examples": [{"name": Path(t["image"]).name.split("-", 1)[-1],
                          "image_hash": hashes.get(t["image"]) or "", "boxes": t["boxes"]}
                         for t in training],
        }

    def _downloads(self, s: Session, settings: Settings, training: list[dict]) -> dict:
        """(Re)write the full and small `.pt` behind the download buttons when they change."""
        meta = self._export_settings(s, settings, training)
        key = json.dumps([meta, s.imported_version, s.preview_key], default=str)
        if key == s.export_key and s.exports:
            return {}
        stem = safe_file_name(s.project.name, "owl-project")
        folder = s.work_dir("export")
        full = s.predictor.export(folder / f"{stem}.pt", settings=meta)
        small = s.predictor.export(folder / f"{stem}-small.pt", small=True, settings=meta)
        s.exports = (str(full), str(small))
        s.export_key = key
        n = len(s.predictor.exemplars)
        info = (f"Downloads ready: `{Path(full).name}` ({_size(full)}) and `{Path(small).name}` "
                f"({_size(small)}), {n} exemplar{'s' if n != 1 else ''}.")
        return {self.c.download_full: gr.update(value=str(full), interactive=True),
                self.c.download_small: gr.update(value=str(small), interactive=True),
                self.c.export_info: info}

    # ------------------------------------------------------------------ page load
    def on_load(self, request: gr.Request) -> dict:
        """Create the tab's session (the page's initial widgets already show a new project)."""
        s = self.session(request)
        with s.lock:
            return {self.c.status: self._status_text(s)}

    # ------------------------------------------------------------------ images in
    def _add_images(self, s: Session, paths: Sequence[tuple[str, str]], as_example: bool) -> int:
        """Copy images into the session; returns the index of the first example added."""
        p = s.project
        first = len(p.examples)
        bad = []
        for path, name in paths:
            try:
                size = _image_size(path)
            except ValueError as exc:
                bad.append(str(exc))
                continue
            item = ImageItem(s.store_image(path, name), name, size)
            (p.examples if as_example else p.queries).append(item)
        for message in bad:
            gr.Warning(message)
        if as_example and len(p.examples) > first:
            p.current = first
        return first

    @staticmethod
    def _uploaded(files: Any) -> list[tuple[str, str]]:
        files = files if isinstance(files, list) else [files]
        out = []
        for f in files:
            path = _file_path(f)
            if path:
                out.append((path, Path(path).name))
        return out

    def _status_text(self, s: Session, note: str = "") -> str:
        """One line about the images; empty while some wait for the embedding step (its
        progress bar then has the line to itself)."""
        p = s.project
        pending = sum(1 for i in p.examples + p.queries if i.content_hash is None)
        if pending and not note:
            return ""
        parts = [f"{len(p.examples)} example image(s), {len(p.queries)} query image(s)"]
        if pending:
            parts.append(f"{pending} waiting to be embedded")
        else:
            parts.append("all embedded")
        if note:
            parts.append(note)
        return " · ".join(parts)

    @_engine_errors
    def on_upload_examples(self, files: Any, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            self._add_images(s, self._uploaded(files), as_example=True)
            out = self._examples_updates(s.project)
            out[self.c.annotator] = gr.update(value=self._annotator_value(s.project))
            out[self.c.status] = self._status_text(s)
            return out

    @_engine_errors
    def on_upload_queries(self, files: Any, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            self._add_images(s, self._uploaded(files), as_example=False)
            return {self.c.status: self._status_text(s)}

    @_engine_errors
    def on_annotator_upload(self, payload: dict | None, request: gr.Request) -> dict:
        """An image dropped straight onto the empty annotator becomes an example."""
        s = self.session(request)
        image = (payload or {}).get("image") or {}
        path = _file_path(image)
        if not path:
            return {}
        name = image.get("orig_name") or Path(path).name
        with s.lock:
            self._add_images(s, [(path, name)], as_example=True)
            out = self._examples_updates(s.project)
            out[self.c.annotator] = gr.update(value=self._annotator_value(s.project))
            out[self.c.status] = self._status_text(s)
            return out

    def on_sample_select(self, evt: gr.SelectData, request: gr.Request) -> None:
        s = self.session(request)
        s.selected_sample = int(evt.index or 0)

    @_engine_errors
    def on_sample_to_examples(self, request: gr.Request) -> dict:
        from ui.formats import bundled_images

        s = self.session(request)
        images = bundled_images()
        if not images:
            raise gr.Error("No bundled images found in assets/images.")
        path = images[min(s.selected_sample, len(images) - 1)]
        return self.on_upload_examples([str(path)], request)

    @_engine_errors
    def on_sample_to_queries(self, request: gr.Request) -> dict:
        from ui.formats import bundled_images

        s = self.session(request)
        images = bundled_images()
        if not images:
            raise gr.Error("No bundled images found in assets/images.")
        path = images[min(s.selected_sample, len(images) - 1)]
        return self.on_upload_queries([str(path)], request)

    @_engine_errors
    def on_embed(self, request: gr.Request, progress=gr.Progress()) -> dict:
        """Embed every image not embedded yet (examples keep all patches for matching)."""
        s = self.session(request)
        with s.lock:
            example_paths = {e.path for e in s.project.examples}
            todo = [i for i in s.project.examples + s.project.queries if i.content_hash is None]
        if not todo:
            return {self.c.status: self._status_text(s)}
        start = time.perf_counter()
        for n, item in enumerate(todo):
            progress((n, len(todo)), desc=f"Embedding {item.name}", unit="images")
            item.content_hash = s.predictor.embed(item.path,
                                                  keep_patches=item.path in example_paths)
        progress((len(todo), len(todo)), desc="Embeddings ready", unit="images")
        note = f"embedded {len(todo)} image(s) in {time.perf_counter() - start:.1f} s"
        with s.lock:
            return {self.c.status: self._status_text(s, note)}

    # ------------------------------------------------------------------ boxes
    @_engine_errors
    def on_boxes_edited(self, payload: dict | None, confidence, iou_threshold, max_detections,
                        score_mode, show_examples, request: gr.Request) -> dict:
        """The annotator changed (box drawn, moved, relabelled, deleted): store the boxes and
        update the preview. Never writes the annotator's value unless a new class was typed
        into the label dialog (then the boxes get that class's colour)."""
        s = self.session(request)
        settings = _settings(confidence, iou_threshold, max_detections, score_mode, show_examples)
        image = (payload or {}).get("image") or {}
        key = image.get("orig_name") or Path(_file_path(image) or "").name
        with s.lock:
            p = s.project
            found = p.example_by_key(key) if key else None
            if found is None:
                return {}
            index, item = found
            boxes = L.parse_annotator_payload_boxes(payload.get("boxes") or [])
            for box in boxes:
                box["color"] = L.normalise_color(box.get("color"))
            item.boxes = boxes
            p.current = index
            added = []
            for box in boxes:
                parsed = L.parse_box(box, p.classes)
                if parsed.kind in ("positive", "negative") and parsed.new_class:
                    try:
                        name = L.validate_class_name(parsed.cls, p.classes)
                    except ValueError:
                        continue
                    p.classes.append(name)
                    added.append(name)
            out: dict = {}
            if added:
                self._recolor(p)
                out.update(self._class_updates(p, with_value=True))
                gr.Info(f"New class: {', '.join(added)}")
            out.update(self._refresh(s, settings))
            return out

    @_engine_errors
    def on_example_select(self, evt: gr.SelectData, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            if 0 <= int(evt.index or 0) < len(p.examples):
                p.current = int(evt.index)
            return {self.c.annotator: gr.update(value=self._annotator_value(p))}

    @_engine_errors
    def on_remove_example(self, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            if p.current_example is None:
                raise gr.Error("No example image to remove.")
            p.examples.pop(p.current)
            p.current = min(p.current, len(p.examples) - 1)
            out = self._examples_updates(p)
            out[self.c.annotator] = gr.update(value=self._annotator_value(p))
            out[self.c.status] = self._status_text(s)
            return out

    @_engine_errors
    def on_clear_suggestions(self, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            item = s.project.current_example
            if item is None:
                return {}
            item.boxes = [b for b in item.boxes
                          if L.parse_box(b, []).kind != "suggestion"]
            return {self.c.annotator: gr.update(value=self._annotator_value(s.project))}

    # ------------------------------------------------------------------ classes
    def on_class_pick(self, value: str | None, request: gr.Request) -> None:
        s = self.session(request)
        with s.lock:
            if value in s.project.classes:
                s.project.active_class = value

    @_engine_errors
    def on_add_class(self, name: str, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            try:
                name = L.validate_class_name(name, p.classes)
            except ValueError as exc:
                raise gr.Error(str(exc)) from None
            p.classes.append(name)
            p.active_class = name
            out = self._class_updates(p)
            out[self.c.class_name] = ""
            return out

    @_engine_errors
    def on_rename_class(self, selected: str | None, name: str, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            if selected not in p.classes:
                raise gr.Error("Pick the class to rename in the Class list first.")
            others = [c for c in p.classes if c != selected]
            try:
                name = L.validate_class_name(name, others)
            except ValueError as exc:
                raise gr.Error(str(exc)) from None
            p.classes[p.classes.index(selected)] = name
            for item in p.examples:
                for box in item.boxes:
                    parsed = L.parse_box(box, p.classes)
                    if parsed.cls != selected:
                        continue
                    box["label"] = L.negative_label(name) if parsed.kind == "negative" else name
            if p.active_class == selected:
                p.active_class = name
            out = self._class_updates(p, with_value=True)
            out[self.c.class_name] = ""
            return out

    @_engine_errors
    def on_remove_class(self, selected: str | None, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            p = s.project
            if selected not in p.classes:
                raise gr.Error("Pick the class to remove in the Class list first.")
            removed = 0
            for item in p.examples:
                keep = [b for b in item.boxes if L.parse_box(b, p.classes).cls
                        != selected]
                removed += len(item.boxes) - len(keep)
                item.boxes = keep
            p.classes.remove(selected)
            if p.active_class == selected:
                p.active_class = p.classes[0] if p.classes else ""
            self._recolor(p)
            if removed:
                gr.Info(f"Removed class {selected!r} and its {removed} box(es).")
            return self._class_updates(p, with_value=True)

    # ------------------------------------------------------------------ preview actions
    @_engine_errors
    def on_settings(self, confidence, iou_threshold, max_detections, score_mode, show_examples,
                    request: gr.Request) -> dict:
        s = self.session(request)
        settings = _settings(confidence, iou_threshold, max_detections, score_mode, show_examples)
        with s.lock:
            return self._refresh(s, settings)

    def on_preview_select(self, evt: gr.SelectData, request: gr.Request) -> None:
        s = self.session(request)
        s.selected_preview = int(evt.index or 0)

    def _selected_preview(self, s: Session) -> ImageItem:
        if not s.preview_items:
            raise gr.Error("No preview image yet: add a query image first.")
        return s.preview_items[min(s.selected_preview, len(s.preview_items) - 1)]

    @_engine_errors
    def on_correct(self, request: gr.Request) -> dict:
        """Open the selected preview image in the annotator with its detections as grey
        suggestion boxes: relabel one to "NOT class" to make a false positive a negative,
        draw a box for a missed object."""
        s = self.session(request)
        with s.lock:
            p = s.project
            item = self._selected_preview(s)
            found = next((i for i, e in enumerate(p.examples) if e.path == item.path
                          or (e.content_hash and e.content_hash == item.content_hash)), None)
            if found is None:
                p.examples.append(ImageItem(item.path, item.name, item.size,
                                            content_hash=None))
                found = len(p.examples) - 1
            example = p.examples[found]
            p.current = found
            real = [b for b in example.boxes
                    if L.parse_box(b, p.classes).kind != "suggestion"]
            result = s.results.get(item.path)
            suggestions = []
            taken = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in real]
            if result is not None:  # detections come best first
                for xyxy, cid in zip(result.xyxy.tolist(), result.class_id.tolist()):
                    if any(L.iou_xyxy(xyxy, t) > SUGGESTION_OVERLAP for t in taken):
                        continue  # already an example there
                    suggestions.append(L.annotator_box(
                        xyxy, result.class_names[cid], L.SUGGESTION_COLOR))
                    if len(suggestions) == MAX_SUGGESTIONS:
                        break
            example.boxes = suggestions + real
            gr.Info(f"{item.name}: {len(suggestions)} detections as grey boxes. Relabel one "
                    "'NOT …' to make it a negative; draw what was missed.")
            out = self._examples_updates(p)
            out[self.c.annotator] = gr.update(value=self._annotator_value(p))
            out[self.c.status] = self._status_text(s)
            return out

    @_engine_errors
    def on_remove_query(self, confidence, iou_threshold, max_detections, score_mode,
                        show_examples, request: gr.Request) -> dict:
        s = self.session(request)
        settings = _settings(confidence, iou_threshold, max_detections, score_mode, show_examples)
        with s.lock:
            item = self._selected_preview(s)
            if item not in s.project.queries:
                raise gr.Error(f"{item.name} is an example image; remove it from the examples.")
            s.project.queries.remove(item)
            s.selected_preview = 0
            out = self._refresh(s, settings)
            out[self.c.status] = self._status_text(s)
            return out

    # ------------------------------------------------------------------ project
    def on_project_name(self, name: str, request: gr.Request) -> None:
        s = self.session(request)
        with s.lock:
            s.project.name = " ".join(str(name or "").split()) or "my-project"

    @_engine_errors
    def on_load_example_project(self, choice: str | None, request: gr.Request) -> dict:
        from ui.formats import bundled_projects

        projects = bundled_projects()
        if not projects:
            raise gr.Error("No example project found in assets/.")
        path = projects.get(choice or "", next(iter(projects.values())))
        project = load_project_file(path)
        s = self.session(request)
        with s.lock:
            p = Project(name=project.name, classes=list(project.classes),
                        active_class=project.classes[0] if project.classes else "")
            s.project = p
            for entry in project.training_data:
                self._add_images(s, [(entry["image"], Path(entry["image"]).name)], True)
                item = p.examples[-1]
                item.boxes = [L.box_for_label(L.clip_xyxy(L.reference_to_xyxy(b), item.size),
                                              b["cls"], bool(b.get("negative")), p.classes)
                              for b in reversed(entry["boxes"])]  # newest first, see Project
            for query in project.query_images:
                self._add_images(s, [(query, Path(query).name)], False)
            p.current = 0 if p.examples else -1
            out = self._class_updates(p, with_value=True)
            out.update(self._examples_updates(p))
            out[self.c.project_name] = p.name
            out[self.c.status] = self._status_text(s, f"loaded example project {p.name!r}")
            return out

    @_engine_errors
    def on_import_pt(self, file: Any, request: gr.Request) -> dict:
        """Load a `.pt`: its exemplars stay active (merged with drawn boxes), its classes join
        the class list, its embeddings enter the cache, its saved settings move the sliders."""
        path = _file_path(file)
        if not path:
            return {}
        s = self.session(request)
        with s.lock:
            prompts = s.predictor.load_pt(path)
            p = s.project
            for name in prompts.exemplars.class_names:
                if name not in p.classes:
                    p.classes.append(name)
            if not p.active_class and p.classes:
                p.active_class = p.classes[0]
            s.imported.append(Path(path).name)
            s.imported_version += 1
            saved = dict((prompts.meta or {}).get("settings") or {})
            out = self._class_updates(p)
            if saved.get("project"):
                p.name = str(saved["project"])
                out[self.c.project_name] = p.name
            for comp, key in ((self.c.confidence, "confidence"), (self.c.iou, "iou_threshold"),
                              (self.c.max_detections, "max_detections"),
                              (self.c.score_mode, "score_mode")):
                if key in saved:
                    out[comp] = saved[key]
            out[self.c.imported_md] = self._imported_text(s)
            return out

    def _imported_text(self, s: Session) -> str:
        ex = s.predictor.imported_exemplars
        if not s.imported or len(ex.class_names) == 0:
            return "No `.pt` imported."
        ids, neg = ex.class_ids.cpu().numpy(), ex.negative.cpu().numpy()
        parts = []
        for cid, name in enumerate(ex.class_names):
            pos_n = int(((ids == cid) & ~neg).sum())
            neg_n = int(((ids == cid) & neg).sum())
            if pos_n or neg_n:
                parts.append(f"**{name}**: {pos_n} positive, {neg_n} negative")
        return (f"Imported from {', '.join(s.imported)}: " + "; ".join(parts)
                + ". These exemplars stay active next to the boxes you draw.")

    @_engine_errors
    def on_forget_imported(self, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            s.predictor.clear_imported()
            s.imported = []
            s.imported_version += 1
            return {self.c.imported_md: self._imported_text(s)}

    @_engine_errors
    def on_export_detections(self, fmt: str, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            queries = [q for q in s.project.queries if q.path in s.results]
            if not queries:
                raise gr.Error("No detections to export yet: add query images and draw a box.")
            items, used = [], set()
            for q in queries:
                name = safe_file_name(q.name, "image.png")
                stem, suffix = Path(name).stem, Path(name).suffix
                n = 1
                while name in used:
                    n += 1
                    name = f"{stem}-{n}{suffix}"
                used.add(name)
                items.append((q.path, name, s.results[q.path]))
            stem = safe_file_name(s.project.name, "owl-project")
            tag = {"COCO JSON": "coco", "YOLO": "yolo", "Pascal VOC": "voc"}[fmt]
            path = export_detections(items, s.project.classes, fmt,
                                     s.work_dir("detections") / tag, f"{stem}-{tag}.zip")
            return {self.c.detections_file: str(path)}

    # ------------------------------------------------------------------ named API
    def _api_session(self, request: gr.Request | None) -> Session:
        session_id = "api:" + (getattr(request, "session_hash", None) or "default")
        return self.store.get(session_id)

    @staticmethod
    def _api_training(training_data: Any, example_images: Any) -> list[dict]:
        """Training data whose "image" fields name uploaded files (by index or file name) or
        carry base64 data; never a path on the server."""
        if isinstance(training_data, str):
            try:
                training_data = json.loads(training_data) if training_data.strip() else []
            except ValueError as exc:
                raise gr.Error(f"training_data is not valid JSON: {exc}.") from None
        if isinstance(training_data, dict) and "training_data" in training_data:
            training_data = training_data["training_data"]
        if not isinstance(training_data, list):
            raise gr.Error("training_data must be a JSON list of {\"image\": ..., \"boxes\": "
                           f"[...]}} entries, got {type(training_data).__name__}.")
        files = [p for p in (_file_path(f) for f in (example_images or [])) if p]
        by_name = {Path(p).name: p for p in files}
        out = []
        for i, entry in enumerate(training_data):
            if not isinstance(entry, dict):
                raise gr.Error(f"training_data[{i}] must be an object with image and boxes.")
            image = entry.get("image")
            if isinstance(image, dict) and image.get("type") == "base64":
                image = image.get("value")
                resolved: Any = _decode_base64(image, i)
            elif isinstance(image, bool) or image is None:
                raise gr.Error(f"training_data[{i}].image is missing.")
            elif isinstance(image, int):
                if not 0 <= image < len(files):
                    raise gr.Error(f"training_data[{i}].image = {image}, but only {len(files)} "
                                   "example image(s) were uploaded (indices start at 0).")
                resolved = files[image]
            elif isinstance(image, str) and image in by_name:
                resolved = by_name[image]
            elif isinstance(image, str):
                resolved = _decode_base64(image, i, names=list(by_name))
            else:
                raise gr.Error(f"training_data[{i}].image must be an index, a file name or "
                               "base64 data.")
            out.append({"image": resolved, "boxes": entry.get("boxes", [])})
        return out

    @staticmethod
    def _api_settings(confidence, iou_threshold, max_detections, score_mode) -> Settings:
        if score_mode not in SCORE_MODES:
            raise gr.Error(f"score_mode must be one of {list(SCORE_MODES)}, got {score_mode!r}.")
        return _settings(confidence, iou_threshold, max_detections, score_mode)

    @staticmethod
    def _api_results(pred: Any, query_images: Any, settings: Settings) -> list[dict]:
        results = []
        for f in query_images or []:
            path = _file_path(f)
            res = pred.detect(path, **settings.detect_kwargs())
            results.append({"file": Path(path).name, **res.to_json()})
        return results

    @_engine_errors
    def api_infer(self, training_data: str, example_images: list, query_images: list,
                  confidence: float, iou_threshold: float, max_detections: float,
                  score_mode: str, request: gr.Request) -> dict:
        """Detect on query images from examples given as training data (reference schema)."""
        settings = self._api_settings(confidence, iou_threshold, max_detections, score_mode)
        s = self._api_session(request)
        with s.lock:
            training = self._api_training(training_data, example_images)
            pred = s.predictor
            pred.clear_imported()
            report = pred.set_examples(training)
            return {
                "classes": list(report.class_names),
                "match_report": [_match_json(b) for b in report.boxes],
                "results": self._api_results(pred, query_images, settings),
            }

    @_engine_errors
    def api_infer_pt(self, pt_file: Any, query_images: list, confidence: float,
                     iou_threshold: float, max_detections: float, score_mode: str,
                     request: gr.Request) -> dict:
        """Detect on query images with the exemplars of an exported `.pt`."""
        settings = self._api_settings(confidence, iou_threshold, max_detections, score_mode)
        path = _file_path(pt_file)
        if not path:
            raise gr.Error("Upload a .pt file (pt_file).")
        s = self._api_session(request)
        with s.lock:
            pred = s.predictor
            pred.clear_imported()
            pred.set_examples([])
            prompts = pred.load_pt(path)
            return {"classes": list(prompts.exemplars.class_names),
                    "results": self._api_results(pred, query_images, settings)}

    @_engine_errors
    def api_export(self, training_data: str, example_images: list, name: str, small: bool,
                   request: gr.Request) -> str:
        """Build a `.pt` from training data and return it (small = without image embeddings)."""
        s = self._api_session(request)
        with s.lock:
            training = self._api_training(training_data, example_images)
            pred = s.predictor
            pred.clear_imported()
            report = pred.set_examples(training)
            if not len(pred.exemplars):
                unmatched = "; ".join(b.reason or "" for b in report.unmatched)
                raise gr.Error("None of the boxes matched a predicted box, so there is nothing "
                               f"to export ({unmatched}).")
            stem = safe_file_name(name or "owl-project", "owl-project")
            target = s.work_dir(f"api-export-{time.time_ns()}") / (
                f"{stem}-small.pt" if small else f"{stem}.pt")
            return str(pred.export(target, small=bool(small),
                                   settings={"project": name or stem}))


def _size(path: str | Path) -> str:
    size = Path(path).stat().st_size
    return f"{size / 1024:.0f} KB" if size < 1024 ** 2 else f"{size / 1024 ** 2:.1f} MB"


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
        raise gr.Error(f"training_data[{index}].image {str(value)[:60]!r} is neither the name "
                       "or index of an uploaded example image nor base64 image data." + hint
                       ) from None
