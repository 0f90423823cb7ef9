"""The review panel's pure helpers: annotator boxes <-> reviewed labels (which source each
label gets), pending / rejected detections, the image list's filter, sort and rows."""

from __future__ import annotations

from owl_core.project.model import Label
from ui import image_list as IL
from ui import labels as L
from ui import review as R
from ui.handlers.history import MAX_STEPS, BoxHistory

CLASSES = ["coin", "cat"]
A = R.Proposal((10.0, 10.0, 50.0, 50.0), "coin", 0.9)
B = R.Proposal((100.0, 10.0, 150.0, 60.0), "coin", 0.8)
SIZE = (200, 100)


def box(xyxy, label, grey=False):
    return L.annotator_box(xyxy, label, L.SUGGESTION_COLOR if grey else L.class_color(0))


def test_review_boxes_show_labels_coloured_and_uncovered_detections_grey():
    labels = [Label(A.xyxy, "coin", "accepted", 0.9)]
    boxes = R.review_boxes(labels, [A, B], CLASSES)
    kinds = [(L.parse_box(b, CLASSES).kind, b["xmin"]) for b in boxes]
    assert kinds == [("positive", 10.0), ("suggestion", 100.0)]
    assert len(R.review_boxes(labels, [A, B], CLASSES, show_pending=False)) == 1


def test_sources_accepted_corrected_drawn_and_grey_is_not_a_label():
    boxes = [box((20, 60, 60, 95), "coin"),            # drawn: overlaps no detection
             box((102, 12, 150, 60), "coin"),           # moved B: corrected
             box(A.xyxy, "cat"),                        # relabelled A: corrected
             box(B.xyxy, "coin", grey=True)]            # still grey: not a label
    got = R.boxes_to_labels(boxes, [A, B], CLASSES, SIZE)
    assert [(b.cls, b.source) for b in got] == [("cat", "corrected"), ("coin", "corrected"),
                                                ("coin", "drawn")]
    same = R.boxes_to_labels([box(A.xyxy, "coin")], [A, B], CLASSES, SIZE)
    assert [(b.source, b.confidence) for b in same] == [("accepted", 0.9)]


def test_a_label_kept_as_it_was_keeps_its_source_when_detections_change():
    before = [Label(A.xyxy, "coin", "accepted", 0.9)]
    got = R.boxes_to_labels([box(A.xyxy, "coin")], [], CLASSES, SIZE, before)
    assert [(b.source, b.confidence) for b in got] == [("accepted", 0.9)]
    assert R.boxes_to_labels([box(A.xyxy, "coin")], [], CLASSES, SIZE)[0].source == "drawn"


def test_accept_all_and_rejected():
    got = R.accept_all([Label(A.xyxy, "cat", "corrected")], [A, B])
    assert [(b.cls, b.source) for b in got] == [("cat", "corrected"), ("coin", "accepted")]
    assert R.rejected([A, B], [box(A.xyxy, "coin")]) == [B]
    assert R.rejected([A, B], [box(A.xyxy, "coin"), box(B.xyxy, "coin", True)]) == []


def test_image_list_filters_sorts_and_rows():
    entries = [IL.Entry("1", "b.png", "query", "done", 2, {"coin": 2, "cat": 0}),
               IL.Entry("2", "a.png", "query", "not_reviewed", 0, {"coin": 0, "cat": 0}),
               IL.Entry("3", "c.png", "query", "in_review", 1, {"coin": 0, "cat": 5}),
               IL.Entry("4", "d.png", "example", "not_reviewed", 0, None)]
    ids = [e.id for e in IL.select(entries)]
    assert ids == ["1", "2", "3", "4"]
    assert [e.id for e in IL.select(entries, "not_reviewed")] == ["2", "4"]
    assert [e.id for e in IL.select(entries, "no_detections")] == ["2"]
    assert [e.id for e in IL.select(entries, "has:cat")] == ["3"]
    assert [e.id for e in IL.select(entries, sort="name")] == ["2", "1", "3", "4"]
    assert [e.id for e in IL.select(entries, sort="detections")] == ["3", "1", "2", "4"]
    assert [e.id for e in IL.select(entries, sort="status")] == ["2", "4", "3", "1"]
    assert IL.rows(entries[2:], CLASSES) == [["c.png", "query", 0, 5, 1, "in review"],
                                             ["d.png", "example", "…", "…", 0, "not reviewed"]]
    assert ("has cat", "has:cat") in IL.filter_choices(CLASSES)


def test_box_history_undo_redo_and_one_step_per_labelled_box():
    h = BoxHistory()
    first = [box(A.xyxy, "coin")]
    drawing = [box(B.xyxy, ""), *first]           # drawn, label dialog open
    second = [box(B.xyxy, "coin"), *first]
    for state in ([], first, first, drawing, second):
        h.record(state)
    assert h.undo() == first                      # the unlabeled state is not a step
    assert h.undo() == []
    assert h.undo() is None
    assert h.redo() == first and h.redo() == second and h.redo() is None
    h.undo()
    h.record([box(A.xyxy, "cat")])                 # a new edit drops the redo stack
    assert h.redo() is None
    for i in range(MAX_STEPS + 10):
        h.record([box((5 * i, 0, 5 * i + 10, 10), "coin")])
    assert len(h.done) == MAX_STEPS
