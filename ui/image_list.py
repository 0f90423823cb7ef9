"""The image list of the review panel: one row per project image (file name, role, detections
per class at the current settings, labels, review status), filtered and sorted. Pure: rows
from plain values, so it is tested without a page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ui.review import status_word

#: Filters the list offers (value -> words); "has:<class>" filters are added per class.
FILTERS = {"all": "all images", "not_reviewed": "not reviewed", "in_review": "in review",
           "done": "done", "no_detections": "no detections"}
SORTS = {"list": "project order", "name": "file name", "status": "review status",
         "detections": "most detections"}
#: Rows shown at most (a project can hold thousands of images; the filter narrows it).
MAX_ROWS = 500
_STATUS_ORDER = {"not_reviewed": 0, "in_review": 1, "done": 2}


@dataclass(frozen=True)
class Entry:
    """What the list knows about one image."""

    id: str
    name: str
    role: str
    status: str
    labels: int
    counts: Mapping[str, int] | None  # detections per class; None: not detected yet


def filter_choices(classes: Sequence[str]) -> list[tuple[str, str]]:
    """(words, value) of every filter, with "has <class>" for each class."""
    return [(w, v) for v, w in FILTERS.items()] + [(f"has {c}", f"has:{c}") for c in classes]


def select(entries: Sequence[Entry], filt: str = "all", sort: str = "list") -> list[Entry]:
    """The entries the filter keeps, in the sort's order (ties keep project order)."""
    def keep(e: Entry) -> bool:
        if filt in ("not_reviewed", "in_review", "done"):
            return e.status == filt
        if filt == "no_detections":
            return e.counts is not None and sum(e.counts.values()) == 0
        if filt.startswith("has:"):
            return bool(e.counts) and e.counts.get(filt[4:], 0) > 0
        return True

    kept = [e for e in entries if keep(e)]
    if sort == "name":
        kept.sort(key=lambda e: e.name.lower())
    elif sort == "status":
        kept.sort(key=lambda e: _STATUS_ORDER.get(e.status, 0))
    elif sort == "detections":
        kept.sort(key=lambda e: -sum((e.counts or {}).values()))
    return kept


def headers(classes: Sequence[str]) -> list[str]:
    return ["image", "role", *classes, "labels", "status"]


def rows(entries: Sequence[Entry], classes: Sequence[str]) -> list[list]:
    """Table rows (at most `MAX_ROWS`); counts of an image not detected yet read "…"."""
    out = []
    for e in entries[:MAX_ROWS]:
        counts = [("…" if e.counts is None else e.counts.get(c, 0)) for c in classes]
        out.append([e.name, e.role, *counts, e.labels, status_word(e.status)])
    return out
