"""Review: turn one image's detections into reviewed labels (see `ui.review` for what each
annotator gesture means), set its review status, accept all detections on one image or on
all, and fold rejected / accepted boxes into the prompt as negative / positive examples.

Labels go into the tab's project through its API (`owl_core.project.model.Project.set_labels`), so
they are saved with it (`ui.session.Saver`) and survive a reload. The review annotator is its
own component: its edits never touch the example annotator or the preview's prompts.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from owl_core.project.model import ImageRecord, Label, Prompt, Rejection
from ui import image_list as IL
from ui import labels as L
from ui import review as R
from ui.escape import error, info, md_text
from ui.handlers.common import Area, AreaContext, engine_errors, file_path
from ui.handlers.preview import PreviewHandlers
from ui.handlers.views import (
    annotator_value,
    examples_updates,
    label_list_updates,
    status_text,
)
from ui.session import Session

#: The review list shows at most this many images (the dropdown stays usable).
MAX_LISTED = 2000


#: Box lists the server showed for the image under review, kept to recognise their echoes.
MAX_SHOWN = 8


@dataclass
class ReviewState:
    """What the review annotator shows: which image, the detections offered for it, the boxes
    it sent last (to tell which detections the person deleted), the box lists the server
    showed for this image (a late echo of any of them is not an edit). (The detections the
    person deleted are part of the project: `ImageRecord.rejected`.)"""

    image_id: str = ""
    proposals: list[R.Proposal] = field(default_factory=list)
    boxes: list[dict] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    list_ids: list[str] = field(default_factory=list)
    shown: list[list[dict]] = field(default_factory=list)

    def showing(self, image_id: str, boxes: list[dict]) -> None:
        """The server sends `boxes` of image `image_id` to the annotator."""
        if image_id != self.image_id:
            self.shown = []
        self.image_id, self.boxes = image_id, boxes
        self.shown = [*self.shown, [dict(b) for b in boxes]][-MAX_SHOWN:]

    def echoes(self, boxes: list[dict]) -> bool:
        """Whether `boxes` are a value the server showed for this image (its echo, maybe
        late: the page echoes every value it is sent, in order, after the server moved on)."""
        return same_boxes(boxes, self.boxes) or any(same_boxes(boxes, old)
                                                     for old in self.shown)

    def expect(self, boxes: list[dict]) -> None:
        """`boxes` come back as an edit (an undo / redo sends them): not an echo."""
        self.shown = [old for old in self.shown if not same_boxes(old, boxes)]


def rejected_of(rec: ImageRecord | None) -> list[R.Proposal]:
    """The detections the person deleted on an image (saved with it), as review proposals."""
    if rec is None:
        return []
    return [R.Proposal(tuple(b.xyxy), b.cls, b.confidence) for b in rec.rejected]


def all_items(s: Session) -> list[ImageRecord]:
    """Query images first, then example images (the order of the review list)."""
    return s.queries() + s.examples()


def same_boxes(a: list[dict], b: list[dict]) -> bool:
    """Whether two annotator box lists are the same boxes (labels, places within a pixel,
    order ignored): the value the server set comes back rounded and rescaled."""
    def key(box: dict) -> tuple:
        return (str(box.get("label") or ""), L.normalise_color(box.get("color")))

    if len(a) != len(b):
        return False
    rest = list(b)
    for box in a:
        hit = next((o for o in rest if key(o) == key(box) and all(
            abs(float(o[k]) - float(box[k])) <= R.SAME_PLACE_PX
            for k in ("xmin", "ymin", "xmax", "ymax"))), None)
        if hit is None:
            return False
        rest.remove(hit)
    return True


class ReviewHandlers(Area):
    """The review panel."""

    def __init__(self, ctx: AreaContext, preview: PreviewHandlers) -> None:
        super().__init__(ctx)
        self.preview = preview  # the detections the review shows come from the preview's
        self._state: weakref.WeakKeyDictionary[Session, ReviewState] = \
            weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ state
    def state(self, s: Session) -> ReviewState:
        st = self._state.get(s)
        if st is None:
            st = self._state[s] = ReviewState(image_id=s.view.review_image or "")
        return st

    @staticmethod
    def record(s: Session, image_id: str) -> ImageRecord | None:
        return s.record(image_id)

    def item(self, s: Session, image_id: str | None) -> ImageRecord | None:
        items = all_items(s)
        if not items:
            return None
        if image_id:
            found = next((i for i in items if i.id == image_id), None)
            if found is not None:
                return found
        return items[0]

    def shown(self, s: Session) -> tuple[ReviewState, ImageRecord, ImageRecord] | None:
        """The panel's state, the image it shows and that image's project record, the same
        record (None when the project has no image yet: the handlers then change nothing)."""
        st = self.state(s)
        item = self.item(s, st.image_id)
        if item is None:
            return None
        return st, item, item

    def proposals(self, s: Session, item: ImageRecord) -> list[R.Proposal]:
        """The item's detections at the current settings: the preview's, else detected now
        from its cached embedding (example images are not in the preview)."""
        result = s.results.get(s.path(item))
        if result is None and s.embedded(item) and s.predictor is not None \
                and len(s.predictor.exemplars) > 0:
            result = self.preview.results_for(s, [item]).get(s.path(item))
        return R.proposals_from(result, s.core.classes)

    def choices(self, s: Session) -> list[tuple[str, str]]:
        """(caption, image id) per image: name, role, status, label count."""
        out = []
        for item in all_items(s)[:MAX_LISTED]:
            status = R.status_word(item.status)
            n = len(item.labels)
            role = item.role
            out.append((f"{item.name} · {role} · {status} · {n} label{'s' if n != 1 else ''}",
                        item.id))
        return out

    # ------------------------------------------------------------------ views
    def show(self, s: Session, image_id: str | None) -> dict:
        """Every review component for image `image_id` (the first image when unknown)."""
        c = self.c
        item = self.item(s, image_id)
        st = self.state(s)
        labels_list, colors = L.label_choices(s.core.classes, s.active_class,
                                              negatives=False)  # the picked class first
        if item is None:
            st.image_id, st.proposals, st.boxes = "", [], []
            return {c.review_annotator: gr.update(value=None, label_list=labels_list,
                                                  label_colors=colors),
                    c.review_image: gr.update(choices=[], value=None),
                    c.review_status: gr.update(value="not_reviewed"),
                    c.review_info: "No images yet: upload query images to review."}
        rec = self.record(s, item.id)
        s.view.review_image = item.id  # a reload comes back to it
        st.classes = tuple(s.core.classes)
        st.proposals = self.proposals(s, item)
        labels = list(rec.labels) if rec else []
        status = rec.status if rec else "not_reviewed"
        # the detections the person deleted stay deleted
        offered = R.not_rejected(st.proposals, rejected_of(rec))
        st.showing(item.id, R.review_boxes(labels, offered, s.core.classes,
                                           show_pending=status != "done"))
        return {c.review_annotator: gr.update(value={"image": s.path(item), "boxes": st.boxes},
                                              label_list=labels_list, label_colors=colors),
                c.review_image: gr.update(choices=self.choices(s), value=item.id),
                c.review_status: gr.update(value=status),
                **self.counts(s, item)}

    def info(self, s: Session, item: ImageRecord) -> str:
        rec = self.record(s, item.id)
        st = self.state(s)
        labels = list(rec.labels) if rec else []
        waiting = sum(1 for b in st.boxes if L.parse_box(b, []).kind == "suggestion")
        rejected = len(rec.rejected) if rec else 0
        by_source = {k: sum(1 for b in labels if b.source == k)
                     for k in ("accepted", "corrected", "drawn")}
        status = R.status_word(rec.status if rec else "not_reviewed")
        text = (f"**{md_text(item.name)}** · {status} · "
                f"{len(labels)} label(s): {by_source['accepted']} accepted, "
                f"{by_source['corrected']} corrected, {by_source['drawn']} drawn")
        if waiting and (rec is None or rec.status != "done"):
            text += f" · {waiting} detection(s) still grey (not labels yet)"
        if rejected:
            text += f" · {rejected} rejected"
        return text

    def counts(self, s: Session, item: ImageRecord) -> dict:
        """The info line, and the two "→ examples" buttons saying how many boxes they add."""
        c = self.c
        rec = self.record(s, item.id)
        rejected = len(rec.rejected) if rec else 0
        labels = len(rec.labels) if rec else 0
        return {c.review_info: self.info(s, item),
                c.review_to_negatives: gr.update(
                    value=f"{rejected} rejected → negative examples"),
                c.review_to_positives: gr.update(
                    value=f"{labels} label{'s' if labels != 1 else ''} → positive examples")}

    def _after_labels(self, s: Session, item: ImageRecord) -> dict:
        c = self.c
        rec = self.record(s, item.id)
        return {c.review_image: gr.update(choices=self.choices(s), value=item.id),
                c.review_status: rec.status if rec else "not_reviewed",
                **self.counts(s, item)}

    def _set_labels(self, s: Session, item: ImageRecord, labels: list[Label],
                    status: str | None = None) -> None:
        rec = self.record(s, item.id)
        if rec is None:
            raise error(f"{item.name} is not in the project yet; try again in a moment.")
        if status is None and rec.status == "not_reviewed":
            status = "in_review"  # touched: the person is reviewing it
        s.core.set_labels(item.id, labels, status)

    # ------------------------------------------------------------------ events
    @engine_errors
    def on_pick(self, image_id: str | None, request: gr.Request) -> dict:
        """The review list picked an image (or the project changed: show the first)."""
        s = self.session(request)
        with s.lock:
            return self.show(s, image_id)

    @engine_errors
    def on_preview_pick(self, evt: gr.SelectData, request: gr.Request) -> dict:
        """A preview thumbnail was clicked: review that image."""
        s = self.session(request)
        with s.lock:
            index = int(evt.index or 0)
            if not 0 <= index < len(s.preview_items):
                return {}
            return self.show(s, s.preview_items[index])

    @engine_errors
    def on_step(self, image_id: str | None, step: int, request: gr.Request) -> dict:
        """Previous (-1) / next (+1) image of the review list."""
        s = self.session(request)
        with s.lock:
            items = all_items(s)
            if not items:
                return self.show(s, None)
            ids = [i.id for i in items]
            at = ids.index(image_id) if image_id in ids else 0
            return self.show(s, ids[(at + int(step)) % len(ids)])

    @engine_errors
    def on_edited(self, payload: dict | None, request: gr.Request) -> dict:
        """The review annotator changed: its coloured boxes are the image's labels now."""
        s = self.session(request)
        image = (payload or {}).get("image") or {}
        key = image.get("orig_name") or Path(file_path(image) or "").name
        with s.lock:
            shown = self.shown(s)
            if shown is None or Path(shown[1].file).name != key:
                return {}
            st, item, rec = shown
            boxes = L.parse_annotator_payload_boxes((payload or {}).get("boxes") or [])
            if st.echoes(boxes):
                # a value the server set, echoed back (maybe late, after the server showed
                # newer boxes or changed the labels, e.g. "Accept all"): no edit of the
                # person's, nothing to store, no status change
                return {}
            before = list(rec.labels) if rec else []
            labels = R.boxes_to_labels(boxes, st.proposals, s.core.classes, item.size,
                                       before)
            deleted = R.newly_rejected(st.proposals, st.boxes, boxes)
            known = rejected_of(rec)
            rejected = R.update_rejected(known, deleted, boxes)
            if rec is not None and rejected != known:  # saved with the project
                s.core.set_rejected(item.id, [Rejection(p.xyxy, p.cls, p.confidence)
                                              for p in rejected if p.cls in s.core.classes])
            st.boxes = boxes
            if labels == before and len(rejected) == len(known) and not deleted:
                # nothing the person did (a click, a box without area): no status change
                return self.counts(s, item)
            self._set_labels(s, item, labels)  # "in review" once the person touched it
            return self._after_labels(s, item)

    @engine_errors
    def on_status(self, status: str, request: gr.Request) -> dict:
        """The status radio moved."""
        s = self.session(request)
        if status not in R.STATUS_WORDS:
            raise error(f"Unknown review status {status!r}.")
        with s.lock:
            shown = self.shown(s)
            if shown is None:
                return {}
            item = shown[1]
            s.core.set_status(item.id, status)
            return self._after_labels(s, item)

    @engine_errors
    def on_done_next(self, request: gr.Request) -> dict:
        """Mark this image done (its grey detections are not labels) and show the next image
        that is not done."""
        s = self.session(request)
        with s.lock:
            shown = self.shown(s)
            if shown is None:
                return {}
            item = shown[1]
            s.core.set_status(item.id, "done")
            ids = [i.id for i in all_items(s)]
            status = {r.id: r.status for r in s.core.images}
            at = ids.index(item.id)
            after = ids[at + 1:] + ids[:at]
            nxt = next((i for i in after if status.get(i) != "done"), item.id)
            return self.show(s, nxt)

    @engine_errors
    def on_accept_image(self, request: gr.Request) -> dict:
        """Accept every grey detection on this image as it is."""
        s = self.session(request)
        with s.lock:
            shown = self.shown(s)
            if shown is None:
                return {}
            st, item, rec = shown
            self._set_labels(s, item, R.accept_all(list(rec.labels) if rec else [],
                                                   st.proposals))
            return self.show(s, item.id)

    @engine_errors
    def on_accept_all(self, request: gr.Request) -> dict:
        """On every query image not reviewed yet, accept its detections above the current
        confidence as its labels and mark it done (images in review or done are kept)."""
        s = self.session(request)
        self.preview.fill_results(s)  # every query image's detections
        with s.lock:
            changed, waiting = 0, 0
            for item in s.queries():
                if item.status != "not_reviewed":
                    continue
                if s.path(item) not in s.results:
                    waiting += 1
                    continue
                labels = R.accept_all([], R.proposals_from(s.results[s.path(item)],
                                                           s.core.classes))
                s.core.set_labels(item.id, labels, "done")
                changed += 1
            note = f"{changed} image(s) accepted and marked done"
            if waiting:
                note += f"; {waiting} still being embedded (not changed)"
            info(note + ".")
            out = self.show(s, self.state(s).image_id)
            out[self.c.status] = status_text(s, note)
            return out

    @engine_errors
    def on_to_examples(self, negatives: bool, request: gr.Request) -> dict:
        """Rejected detections of this image become negative examples (`negatives`), or its
        labels become positive examples: the image joins the examples (once) with those boxes,
        and the annotator shows it. The image is then left out of the quality meter."""
        s = self.session(request)
        with s.lock:
            shown = self.shown(s)
            if shown is None:
                return {}
            st, item, rec = shown
            if negatives:  # exactly the detections the person deleted on this image
                new = [Prompt(x.xyxy, x.cls, True) for x in rejected_of(rec)
                       if x.cls in s.core.classes]
                what = "rejected detection(s) → negative examples"
            else:
                new = [Prompt(b.xyxy, b.cls, False) for b in rec.labels]
                what = "label(s) → positive examples"
            if not new:
                raise error("Nothing to add: delete a grey detection to reject it, or accept "
                               "/ draw a label first." if negatives else
                               "This image has no labels yet: accept or draw some first.")
            example = next((e for e in s.examples() if e.content_hash == item.content_hash),
                           None)
            if example is None:
                # embedded again as an example (examples keep every patch's embedding)
                example = s.core.add_image(s.path(item), item.name, "example")
            taken = [p.xyxy for p in example.prompts]
            fresh = [p for p in new if not any(L.iou_xyxy(p.xyxy, t) > 0.9 for t in taken)]
            s.core.set_prompt_boxes(example.id, [*example.prompts, *fresh])
            s.view.current = example.id
            info(f"{item.name}: {len(fresh)} {what}.")
            out = examples_updates(self.c, s)
            out[self.c.annotator] = gr.update(value=annotator_value(s))
            out[self.c.status] = status_text(s)
            return out

    def on_prev(self, image_id: str | None, request: gr.Request) -> dict:
        return self.on_step(image_id, -1, request)

    def on_next(self, image_id: str | None, request: gr.Request) -> dict:
        return self.on_step(image_id, +1, request)

    def on_to_negatives(self, request: gr.Request) -> dict:
        return self.on_to_examples(True, request)

    def on_to_positives(self, request: gr.Request) -> dict:
        return self.on_to_examples(False, request)

    @engine_errors
    def on_sync(self, request: gr.Request) -> dict:
        """The preview changed (new detections, images, classes): show the first image when
        the panel shows none, and the new detections on an image nobody touched yet (status
        "not reviewed"); an image under review keeps what the person sees."""
        s = self.session(request)
        with s.lock:
            st = self.state(s)
            item = self.item(s, st.image_id) if st.image_id else None
            if item is None or item.id != st.image_id:
                return self.show(s, None)
            rec = self.record(s, item.id)
            if rec is not None and rec.status != "not_reviewed":
                out = {self.c.review_image: gr.update(choices=self.choices(s), value=item.id)}
                if tuple(s.core.classes) != st.classes:  # a class added / renamed
                    st.classes = tuple(s.core.classes)
                    out[self.c.review_annotator] = label_list_updates(
                        self.c, s)[self.c.review_annotator]
                return out
            before = st.boxes
            out = self.show(s, item.id)
            if st.boxes == before:
                out.pop(self.c.review_annotator)
            return out

    # ------------------------------------------------------------------ the image list
    def entries(self, s: Session) -> list[IL.Entry]:
        out = []
        for item in all_items(s):
            res = s.results.get(s.path(item))
            out.append(IL.Entry(item.id, item.name, item.role, item.status, len(item.labels),
                                None if res is None else res.counts()))
        return out

    @engine_errors
    def on_list(self, filt: str | None, sort: str | None, request: gr.Request) -> dict:
        """The image list, filtered and sorted (after any change to images, detections or
        reviews)."""
        s = self.session(request)
        c = self.c
        self.preview.fill_results(s)  # the counts of every query image
        with s.lock:
            classes = list(s.core.classes)
            choices = IL.filter_choices(classes)
            valid = filt in {v for _, v in choices}
            filt = filt if valid else "all"
            chosen = IL.select(self.entries(s), filt, sort or "list")
            self.state(s).list_ids = [e.id for e in chosen[:IL.MAX_ROWS]]
            more = len(chosen) - IL.MAX_ROWS
            heads = IL.headers(classes)
            return {c.image_list: gr.update(value=IL.rows(chosen, classes) or None,
                                            headers=heads,
                                            column_count=(len(heads), "fixed")),
                    # the value only when the filter became invalid (its class is gone): a
                    # listing that started before the person picked another filter must not
                    # put the old one back
                    c.list_filter: (gr.update(choices=choices) if valid
                                    else gr.update(choices=choices, value=filt)),
                    c.list_note: (f"{len(chosen)} image(s)" + (
                        f"; the first {IL.MAX_ROWS} listed: narrow the filter" if more > 0
                        else "") + " · click a row to review it")}

    @engine_errors
    def on_list_select(self, evt: gr.SelectData, request: gr.Request) -> dict:
        """A row of the image list was clicked: review that image."""
        s = self.session(request)
        with s.lock:
            ids = self.state(s).list_ids
            index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            if index is None or not 0 <= int(index) < len(ids):
                return {}
            return self.show(s, ids[int(index)])
