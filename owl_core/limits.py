"""Bounds on everything that comes from outside (requests, files, projects).

One place for the numbers so the parser, the `.pt` loader, the HTTP API and the UI refuse the
same things with the same words. Each can be raised by an environment variable read when
`current()` is called (never at import). A breach raises `LimitError` naming the limit and how
to change it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields

from owl_core.errors import ImageError, LimitError, ProjectError, PtFormatError, TrainingDataError


class TrainingDataLimitError(LimitError, TrainingDataError):
    """Training data over a bound (class-name length, classes, boxes, images)."""


class ImageLimitError(LimitError, ImageError):
    """An image over the pixel bound."""


class PtLimitError(LimitError, PtFormatError):
    """A `.pt` over a bound (bytes on disk, unpacked bytes, members, tensor elements)."""


class ProjectLimitError(LimitError, ProjectError):
    """A project (or project zip) over a bound (images, unpacked bytes, files)."""


@dataclass(frozen=True)
class Limits:
    """Upper bounds (inclusive). Environment variable: ``OWL_`` + the field name in capitals."""

    max_class_name_chars: int = 200
    max_classes: int = 200
    max_boxes_per_image: int = 1_000
    max_boxes_total: int = 5_000
    max_images_per_request: int = 64
    max_folder_images: int = 1_000
    max_training_images: int = 256
    max_request_bytes: int = 64 * 1024**2
    max_upload_bytes: int = 64 * 1024**2
    #: seconds a request body (REST call, studio upload) may take to arrive, in total
    max_body_seconds: int = 60
    max_image_pixels: int = 80_000_000
    max_image_file_bytes: int = 256 * 1024**2
    max_pt_bytes: int = 4 * 1024**3
    max_pt_unpacked_bytes: int = 8 * 1024**3
    max_pt_tensor_elements: int = 500_000_000
    max_pt_members: int = 10_000
    max_pt_pickle_bytes: int = 64 * 1024**2
    max_pt_compression_ratio: int = 200
    max_embedding_dim: int = 4_096
    max_project_images: int = 100_000
    max_project_labels: int = 500_000
    max_project_json_bytes: int = 32 * 1024**2
    max_project_json_values: int = 2_000_000
    max_project_zip_bytes: int = 4 * 1024**3
    max_project_zip_files: int = 100_000
    max_project_zip_unreferenced: int = 100
    max_project_zip_compression_ratio: int = 200
    max_phrase_chars: int = 300
    max_phrases_per_class: int = 64
    max_phrases_total: int = 1_000

    def check(self, name: str, value: int, what: str,
              error: type[LimitError] = LimitError) -> None:
        """Raise `error` (a `LimitError`) when `value` exceeds the limit `name`; `what` names
        the input. The subclasses above are also the area's own error (e.g. `ImageError`), so
        callers that catch either see it."""
        limit = getattr(self, name)
        if value > limit:
            raise error(f"{what}: {value:,} is over the limit of {limit:,} ({name}); "
                        f"reduce it, or raise the limit with OWL_{name.upper()}.")


_PINNED: ContextVar[Limits | None] = ContextVar("owl_pinned_limits", default=None)


@contextmanager
def pinned(lim: Limits | None = None) -> Iterator[Limits]:
    """Read the limits once for a block of work: inside it `current()` returns the same
    `Limits` without reading the environment again (a project load checks every box; reading
    25 variables per box cost seconds on a hostile file)."""
    token = _PINNED.set(lim if lim is not None else current())
    try:
        yield _PINNED.get()
    finally:
        _PINNED.reset(token)


def current() -> Limits:
    """The limits in force: defaults, overridden by ``OWL_<NAME>`` environment variables (or
    the ones `pinned` holds for the block of work running now)."""
    held = _PINNED.get()
    if held is not None:
        return held
    values = {}
    for f in fields(Limits):
        raw = os.environ.get(f"OWL_{f.name.upper()}")
        if raw is None:
            continue
        try:
            values[f.name] = int(raw)
        except ValueError:
            raise LimitError(f"OWL_{f.name.upper()}={raw!r} is not an integer.") from None
        if values[f.name] < 0:
            raise LimitError(f"OWL_{f.name.upper()} must be >= 0, got {raw}.")
    return Limits(**values)
