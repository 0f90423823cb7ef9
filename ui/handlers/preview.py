"""The live preview: detections on the query images, per-class counts, and the per-box
diagnostics, recomputed from cached embeddings after every edit.

`refresh` is the edit -> preview path, so it does as little as it can (see `ui.profiling`,
``OWL_PROFILE=1``, for where the time goes):

* nothing at all when nothing it shows depends on changed (the key: training data, classes,
  images and their hashes, settings);
* only the images on the preview's page (`PREVIEW_PAGE_SIZE`) are detected, drawn and sent,
  so an edit costs the same whatever the project holds; the per-class counts of every query
  image follow in their own event (`on_counts`), and detections are kept per prompt
  (`prepare`), so nothing is detected twice;
* only embedded images take part: an example still being embedded waits (its boxes are listed
  as waiting), so an edit never runs the vision tower;
* each picture is drawn and encoded only when its detections changed (`PictureCache`), as a
  JPEG file Gradio merely copies;
* outputs whose value did not change are left out of the answer (less to send and redraw),
  and the others are sent as plain values, not `gr.update`s, unless a property changed;
* the `.pt` downloads are rewritten by their own chained event (`ui.handlers.project`), after
  the preview is on screen.
"""

from __future__ import annotations

import json
import weakref
from collections import Counter, OrderedDict
from dataclasses import replace
from typing import Any

import gradio as gr

from owl_core.engine.matching import ExemplarSource
from owl_core.geometry import xyxy_to_reference
from owl_core.project.model import ImageRecord
from ui import labels as L
from ui.drawing import draw_snaps, signature
from ui.escape import error, md_text
from ui.handlers.common import Area, engine_errors, read_settings
from ui.handlers.views import status_text
from ui.preview_view import (
    PREVIEW_FLOOR,
    PreviewImage,
    PreviewPage,
    box_rows,
    picture_url,
    preview_value,
)
from ui.profiling import StageTimer
from ui.session import Session

#: The Match threshold slider's range (IoU a drawn box needs to become an example).
MATCH_THRESHOLD_RANGE = (0.05, 0.9)
DIAG_HEADERS = ["image", "#", "class", "kind", "IoU", "snapped to (x0, y0, x1, y1)", "status",
                "wins"]
#: Images on one preview page: an edit detects, draws and sends at most this many pictures.
PREVIEW_PAGE_SIZE = 12
#: Images detected per session-lock hold while the counts of all images are brought up to date.
FILL_CHUNK = 32
#: Prompt states whose preview detections are kept per session (undo / redo go back to them).
PROMPT_STATES_KEPT = 16
#: Rows of the per-class counts table at most (the total row counts every image).
MAX_COUNT_ROWS = 500


def pager_text(start: int, shown: int, total: int) -> str:
    """Which query images the preview page shows, e.g. "Images 13-24 of 300"."""
    if total == 0:
        return "No images to preview yet."
    if total <= shown:
        return f"{total} image{'s' if total != 1 else ''}"
    return f"Images {start + 1}–{start + shown} of {total}"


def embedded_training_data(s: Session) -> tuple[list[dict], list[tuple[str, int]], int]:
    """The project's training data restricted to embedded example images; for each box the
    (image id, 1-based box number on its image) it came from; and how many boxes wait for
    their image's embedding."""
    training, origin, waiting = [], [], 0
    for record in s.examples():
        if not record.prompts:
            continue
        if s.embedded(record) is None:
            waiting += len(record.prompts)
            continue
        training.append({"image": s.path(record), "boxes": [
            xyxy_to_reference(p.xyxy, p.cls, p.negative) for p in record.prompts]})
        origin += [(record.id, n) for n in range(1, len(record.prompts) + 1)]
    return training, origin, waiting


def at_confidence(res: Any, confidence: float) -> Any:
    """A `DetectionResult` made at a lower confidence, cut at `confidence`: the same as
    detecting at `confidence` (see `ui.preview_view`)."""
    keep = res.confidence >= confidence
    return replace(res, xyxy=res.xyxy[keep], confidence=res.confidence[keep],
                   class_id=res.class_id[keep])


def prompt_wins(s: Session, shown: list[ImageRecord]) -> Counter:
    """How many detections shown at the confidence on the page each prompt row wins (a box
    exemplar or a phrase, by its `ExemplarSource`; see `OwlPredictor.winners`)."""
    wins: Counter = Counter()
    if not len(s.predictor.exemplars):
        return wins
    for record in shown:
        path = s.path(record)
        res = s.results.get(path)
        if res is not None and len(res):
            wins.update(w for w in s.predictor.winners(path, res) if w is not None)
    return wins


def wins_cell(wins: Counter | None, source: ExemplarSource, never: bool) -> Any:
    """The "wins" cell of a box or phrase: '-' where it can win nothing (a negative, a box
    that matched nothing)."""
    if never or wins is None:
        return "-"
    return int(wins.get(source, 0))


def phrase_rows(report: Any, wins: Counter | None) -> list[list]:
    """Diagnostics rows of the phrases in use, beside the boxes."""
    rows = []
    for n, phrase in enumerate(getattr(report, "phrases", ()), start=1):
        kind = "negative phrase" if phrase.negative else "phrase"
        rows.append(["(words)", n, phrase.cls, kind, "", f"“{phrase.text}”", "text prompt",
                     wins_cell(wins, ExemplarSource.of_phrase(phrase), phrase.negative)])
    return rows


class PreviewHandlers(Area):
    """The preview, its settings and the actions on its selected image."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: per session: prompt state -> image path -> detections down to the floor
        self._floor: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        #: per session: image path -> URL of its picture
        self._urls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ the refresh
    def apply(self, s: Session, confidence, iou_threshold, max_detections, score_mode,
              show_examples, match_threshold: float | None = None) -> None:
        """The sliders' values into the project's settings (a `DetectParams`, saved with it)
        and the tab's view (call under ``s.lock``)."""
        params = read_settings(confidence, iou_threshold, max_detections, score_mode,
                               s.settings)
        if match_threshold is not None:
            params = params.replace(match_threshold=float(match_threshold))
        if params != s.core.settings:
            s.core.set_settings(params)
        s.view.show_examples = bool(show_examples)

    def refresh(self, s: Session, what: str = "refresh") -> dict:
        """The preview page, its pager and the diagnostics for the session's current state
        (call under ``s.lock``); only outputs whose value changed are returned.

        Only the images on the preview's page are detected, drawn and sent: an edit costs the
        same with 10 or 10,000 query images (the per-class counts follow in their own event,
        `on_counts`)."""
        timer = StageTimer(what)
        s.predictor.match_threshold = float(s.settings.match_threshold)
        training, origin, waiting = embedded_training_data(s)
        with timer.stage("set_examples"):
            report = self.prepare(s, training)
        items = self._preview_items(s)
        pages = max(1, -(-len(items) // PREVIEW_PAGE_SIZE))
        s.view.preview_page = min(max(0, s.view.preview_page), pages - 1)
        start = s.view.preview_page * PREVIEW_PAGE_SIZE
        shown = items[start:start + PREVIEW_PAGE_SIZE]
        current = s.current_example()
        key = json.dumps([s.detect_key, [(s.path(r), s.embedded(r)) for r in shown],
                          [r.prompts for r in shown if r.role == "example"],
                          current.id if current else None, waiting, start, len(items)],
                         default=str)
        if key == s.preview_key:
            return {}
        with timer.stage("detect", len(shown)):
            floor = min(float(s.settings.confidence), PREVIEW_FLOOR)
            results = self.floor_results_for(s, shown, floor, training)
        with timer.stage("value"):
            value = self._page_value(s, shown, results, floor, start)
        s.preview_items = [r.id for r in shown]
        s.preview_key = key
        if shown:
            s.selected_preview = min(s.selected_preview, len(shown) - 1)
        out: dict = {}
        self._send(s, out, self.c.preview, "preview", value)
        self._send(s, out, self.c.preview_page, "preview_page",
                   pager_text(start, len(shown), len(items)))
        with timer.stage("diagnostics"):
            wins = prompt_wins(s, shown)
            out.update(self._diagnostics(s, report, origin, waiting, timer, wins))
        timer.report()
        return out

    @staticmethod
    def prepare(s: Session, training: list[dict]) -> Any:
        """Give the predictor the current prompt (only when it changed: the drawn boxes, the
        classes, the example embeddings, the settings, an imported `.pt`) and forget the
        detections made with the previous one. Returns the match report."""
        phrases = s.core.prompt_phrases()
        key = json.dumps([training, s.core.classes, [s.embedded(r) for r in s.examples()],
                          s.settings.detect_kwargs(), s.predictor.match_threshold,
                          s.imported_version, phrases], default=str)
        if key != s.detect_key or s.report is None:
            s.report = s.predictor.set_examples(training, class_names=list(s.core.classes),
                                                phrases=phrases)
            s.results = {}
            s.detect_key = key
        return s.report

    @staticmethod
    def results_for(s: Session, items: list[ImageRecord]) -> dict[str, Any]:
        """Detections of the embedded `items` with the prompt `prepare` set (detected only
        where not known yet), by image path."""
        paths = [s.path(r) for r in items if s.embedded(r) is not None]
        missing = list(dict.fromkeys(p for p in paths if p not in s.results))
        if missing:
            found = s.predictor.detect_many(missing, **s.settings.detect_kwargs())
            s.results.update(zip(missing, found, strict=True))
        return {p: s.results[p] for p in paths if p in s.results}

    def floor_results_for(self, s: Session, items: list[ImageRecord], floor: float,
                          training: list[dict]) -> dict[str, Any]:
        """Detections of the embedded `items` down to `floor` (what the page's confidence
        slider can show without asking again), by image path.

        Kept per prompt state (the drawn boxes, classes, embeddings and the settings other than
        the confidence; the last `PROMPT_STATES_KEPT`), so an undo or redo back to a state seen
        before detects nothing. The detections at the confidence itself (`s.results`, for the
        counts, the review and the meter) are these cut at it, not detected again."""
        settings = s.settings.detect_kwargs()
        state = json.dumps([training, s.core.classes, [s.embedded(r) for r in s.examples()],
                            s.predictor.match_threshold, s.imported_version, floor,
                            s.core.prompt_phrases(),
                            {k: v for k, v in settings.items() if k != "confidence"}],
                           default=str)
        states = self._floor.setdefault(s, OrderedDict())
        found = states.pop(state, None)
        found = {} if found is None else found
        states[state] = found  # the newest last
        while len(states) > PROMPT_STATES_KEPT:
            states.popitem(last=False)
        paths = [s.path(r) for r in items if s.embedded(r) is not None]
        missing = list(dict.fromkeys(p for p in paths if p not in found))
        if missing:
            detected = s.predictor.detect_many(missing, **{**settings, "confidence": floor})
            found.update(zip(missing, detected, strict=True))
        for path in paths:  # the same detections at the confidence (see `ui.preview_view`)
            if path in found and path not in s.results:
                s.results[path] = at_confidence(found[path], settings["confidence"])
        return {p: found[p] for p in paths if p in found}

    def fill_results(self, s: Session, items: list[ImageRecord] | None = None) -> bool:
        """Detect every embedded image of `items` (default: all query images) in chunks, taking
        the session lock per chunk only, so an edit waiting for the lock is answered between
        chunks. Returns False when the prompt changed meanwhile (a newer refresh takes over) or
        the session is closed."""
        with s.lock:
            if s.predictor is None:
                return False
            training, _, _ = embedded_training_data(s)
            self.prepare(s, training)
            key = s.detect_key
            todo = list(s.queries() if items is None else items)
        for start in range(0, len(todo), FILL_CHUNK):
            with s.lock:
                if s.detect_key != key:
                    return False
                self.results_for(s, todo[start:start + FILL_CHUNK])
        return True

    def counts(self, s: Session) -> dict:
        """The per-class counts table of every query image (call under ``s.lock`` after
        `fill_results`); only sent when it changed."""
        classes = s.core.classes
        rows = []
        totals: dict[str, int] = {n: 0 for n in classes}
        for item in s.queries():
            res = s.results.get(s.path(item))
            if res is None:
                rows.append([item.name] + ["…"] * len(classes) + ["…"])
                continue
            counts = res.counts()
            rows.append([item.name] + [counts.get(n, 0) for n in classes]
                        + [sum(counts.values())])
            for n, c in counts.items():
                totals[n] = totals.get(n, 0) + c
        rows = rows[:MAX_COUNT_ROWS]
        if rows:
            rows.append(["all query images"] + [totals.get(n, 0) for n in classes]
                        + [sum(totals.get(n, 0) for n in classes)])
        headers = ["image"] + list(classes) + ["total"]
        out: dict = {}
        self._send(s, out, self.c.counts, "counts", rows or None, headers=headers,
                   column_count=(len(headers), "fixed"))
        return out

    @staticmethod
    def _preview_items(s: Session) -> list[ImageRecord]:
        items = s.queries()
        if s.view.show_examples:
            seen = {q.file for q in items}
            items += [e for e in s.examples() if e.file not in seen]
        return items

    def _page_value(self, s: Session, shown: list[ImageRecord], results: dict[str, Any],
                    floor: float, start: int) -> dict:
        """The preview view's value (`ui.preview_view.preview_value`): each image's picture URL,
        size and detections down to `floor`; an example image's drawn boxes too."""
        classes = list(s.core.classes)
        has_prompts = len(s.predictor.exemplars) > 0
        images = []
        for item in shown:
            path = s.path(item)
            res = results.get(path)
            if res is None:
                note = "embedding…"
            elif not has_prompts:
                note = "describe a class or draw a box on an example to start"
            else:
                note = ""
            boxes: list = []
            if res is not None and has_prompts:  # class ids of the result -> the project's
                index = [classes.index(n) if n in classes else len(classes)
                         for n in res.class_names]
                boxes = box_rows(res.xyxy, [index[c] for c in res.class_id.tolist()],
                                 res.confidence)
            prompts = [(*p.xyxy, classes.index(p.cls), p.negative) for p in item.prompts
                       if p.cls in classes] if item.role == "example" else []
            size = tuple(res.image_size) if res is not None else tuple(item.size)
            images.append(PreviewImage(item.name, self._picture_url(s, path), size, boxes,
                                       prompts, note))
        page = PreviewPage(images, classes, [L.class_color(i) for i in range(len(classes))],
                           confidence=float(s.settings.confidence), floor=floor,
                           selected=min(s.selected_preview, max(0, len(shown) - 1)),
                           start=start)
        value = preview_value(page)
        # what is drawn, not how it was made: a setting that changes no box changes no value
        value["rev"] = signature(value["images"], value["classes"], start)
        return value

    def _picture_url(self, s: Session, path: str) -> str:
        """The URL of the image's preview-size picture (made and copied to Gradio's cache once
        per session)."""
        urls = self._urls.setdefault(s, {})
        if path not in urls:
            plain = s.pictures.render("plain", path, "", lambda base, scale: base)
            urls[path] = picture_url(self.c.preview, plain)
        return urls[path]

    @staticmethod
    def _send(s: Session, out: dict, component: Any, name: str, value: Any, **props: Any) -> None:
        """Put `value` into `out` only if it differs from the value last sent; as a plain value
        unless one of the component's `props` changed too. (A `gr.update` makes Gradio rebuild
        the component and its config for the session: 5-10 ms each; a plain value is only
        postprocessed.)"""
        props_changed = any(s.shown.get((name, k), s) != v for k, v in props.items())
        if not props_changed and s.shown.get(name, s) == value:
            return
        s.shown[name] = value
        if props_changed:
            s.shown.update({(name, k): v for k, v in props.items()})
            out[component] = gr.update(value=value, **props)
        else:
            out[component] = value

    # ------------------------------------------------------------------ diagnostics
    def _diagnostics(self, s: Session, report: Any, origin: list[tuple[str, int]],
                     waiting: int, timer: StageTimer, wins: Counter | None = None) -> dict:
        """The per-box table (what each drawn box snapped to), the warning about boxes that
        matched nothing, and the current example with its snapped boxes drawn."""
        classes = s.core.classes
        current = s.current_example()
        rows, warnings = [], []
        snaps: dict[str, list] = {"drawn": [], "snapped": [], "titles": [], "matched": [],
                                  "negative": [], "class_index": []}
        for n, match in enumerate(report.boxes):
            image_id, bi = origin[n] if n < len(origin) else ("", n + 1)  # bi: 1-based
            item = s.record(image_id)
            name = item.name if item else "?"
            snapped = ("" if match.matched_xyxy is None else
                       "(" + ", ".join(f"{v:.0f}" for v in match.matched_xyxy) + ")")
            status = "matched" if match.matched else "⚠ no match (ignored)"
            kind = "negative" if match.negative else "positive"
            source = ExemplarSource(match.image_hash, match.drawn_xyxy, match.cls,
                                    match.negative, match.iou)
            rows.append([name, bi, match.cls, kind, round(float(match.iou), 2), snapped,
                         status, wins_cell(wins, source, match.negative or not match.matched)])
            if not match.matched:
                label = L.negative_label(match.cls) if match.negative else match.cls
                warnings.append(f"**{md_text(name)}** box {bi} ({md_text(label)}): "
                                f"{md_text(match.reason)}")
            if current is not None and image_id == current.id:
                snaps["drawn"].append(match.drawn_xyxy)
                snaps["snapped"].append(match.matched_xyxy)
                snaps["titles"].append(f"#{bi} IoU {match.iou:.2f}")
                snaps["matched"].append(bool(match.matched))
                snaps["negative"].append(bool(match.negative))
                snaps["class_index"].append(classes.index(match.cls)
                                            if match.cls in classes else 0)
        rows += phrase_rows(report, wins)
        if warnings:
            many = len(warnings) > 1
            text = (f"⚠ **{len(warnings)} box{'es' if many else ''} matched no predicted box "
                    f"and {'are' if many else 'is'} ignored.** Lower **Match threshold** "
                    f"(now {s.predictor.match_threshold:.2f}; under **Preview options**, below "
                    "the preview) or redraw the box tighter around the object:\n\n"
                    + "\n".join(f"- {w}" for w in warnings))
        elif len(report.boxes) == 1:
            text = "✓ The box snapped to a predicted box."
        elif report.boxes:
            text = f"✓ All {len(report.boxes)} boxes snapped to a predicted box."
        elif report.phrases:
            text = ("Phrases only so far: draw a box on an example to refine them. **wins**: "
                    "the shown detections each phrase matches best.")
        elif waiting:
            text = ""
        else:
            text = ("No boxes yet. Draw one on the example image, or describe the class in "
                    "words (Describe it).")
        if waiting:
            text += (("\n\n" if text else "") + f"⏳ {waiting} box{'es' if waiting != 1 else ''}"
                     " on an image still being embedded: shown here when it is ready.")
        picture = None
        if current is not None:
            path = s.path(current)
            sig = signature(snaps)
            picture = s.pictures.cached("snaps", path, sig)
            if picture is None:
                with timer.stage("draw"):
                    base, scale = s.pictures.base(path)
                    drawn = draw_snaps(
                        base, [tuple(v * scale for v in d) for d in snaps["drawn"]],
                        [None if m is None else tuple(v * scale for v in m)
                         for m in snaps["snapped"]],
                        snaps["titles"], snaps["matched"], snaps["negative"],
                        snaps["class_index"])
                with timer.stage("encode"):
                    picture = s.pictures.save("snaps", path, sig, drawn)
        out: dict = {}
        self._send(s, out, self.c.diag_table, "diag_table", rows or None)
        self._send(s, out, self.c.diag_warning, "diag_warning", text)
        self._send(s, out, self.c.diag_image, "diag_image", picture)
        return out

    # ------------------------------------------------------------------ events
    @engine_errors
    def on_settings(self, confidence, iou_threshold, max_detections, score_mode, show_examples,
                    request: gr.Request) -> dict:
        """A slider/radio moved, or another step (upload, class edit, embedding) finished:
        bring the preview up to date."""
        s = self.session(request)
        with s.lock:
            self.apply(s, confidence, iou_threshold, max_detections, score_mode, show_examples)
            return self.refresh(s)

    @engine_errors
    def on_match_threshold(self, match_threshold, confidence, iou_threshold, max_detections,
                           score_mode, show_examples, request: gr.Request) -> dict:
        """The Match threshold slider moved: drawn boxes snap again with the new IoU."""
        try:
            value = float(match_threshold)
        except (TypeError, ValueError):
            value = float("nan")
        if not MATCH_THRESHOLD_RANGE[0] <= value <= MATCH_THRESHOLD_RANGE[1]:
            raise error(f"Match threshold must be between {MATCH_THRESHOLD_RANGE[0]} and "
                           f"{MATCH_THRESHOLD_RANGE[1]}, got {match_threshold!r}: move the slider.")
        s = self.session(request)
        with s.lock:
            self.apply(s, confidence, iou_threshold, max_detections, score_mode, show_examples,
                       match_threshold=value)
            return self.refresh(s)

    @engine_errors
    def on_counts(self, request: gr.Request) -> dict:
        """After the preview is on screen: detect the query images not on its page (in chunks,
        see `fill_results`) and update the per-class counts table."""
        s = self.session(request)
        if not self.fill_results(s):
            return {}
        with s.lock:
            return self.counts(s)

    @engine_errors
    def on_page(self, step: int, confidence, iou_threshold, max_detections, score_mode,
                show_examples, request: gr.Request) -> dict:
        """◀ / ▶ under the preview: the previous / next page of images."""
        s = self.session(request)
        with s.lock:
            self.apply(s, confidence, iou_threshold, max_detections, score_mode, show_examples)
            s.view.preview_page += int(step)
            s.selected_preview = 0
            return self.refresh(s)

    # explicit parameters: Gradio passes the request only to a handler that names it
    def on_prev_page(self, confidence, iou_threshold, max_detections, score_mode, show_examples,
                     request: gr.Request) -> dict:
        return self.on_page(-1, confidence, iou_threshold, max_detections, score_mode,
                            show_examples, request)

    def on_next_page(self, confidence, iou_threshold, max_detections, score_mode, show_examples,
                     request: gr.Request) -> dict:
        return self.on_page(+1, confidence, iou_threshold, max_detections, score_mode,
                            show_examples, request)

    def on_preview_select(self, evt: gr.SelectData, request: gr.Request) -> None:
        """Remember the clicked preview image (for "Remove selected query")."""
        s = self.session(request)
        s.selected_preview = int(evt.index or 0)

    def selected_item(self, s: Session) -> ImageRecord:
        """The preview image the user picked last."""
        shown = [r for r in map(s.record, s.preview_items) if r is not None]
        if not shown:
            raise error("No preview image yet: add a query image first.")
        return shown[min(s.selected_preview, len(shown) - 1)]

    @engine_errors
    def on_remove_query(self, confidence, iou_threshold, max_detections, score_mode,
                        show_examples, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            self.apply(s, confidence, iou_threshold, max_detections, score_mode, show_examples)
            item = self.selected_item(s)
            if item.role != "query":
                raise error(f"{item.name} is an example image; remove it from the examples.")
            s.remove_image(item.id)
            s.selected_preview = 0
            out = self.refresh(s)
            out[self.c.status] = status_text(s)
            return out
