"""Labeling projects: the UI-free model of what a person labels, and its ONE reader and writer.

A project is a folder::

    my-project/
        project.json        versioned (see `FORMAT_VERSION`), written atomically
        project.json.bak    the previous save
        project.journal     changes saved since (`save_changes`; `owl_core.project.journal`)
        images/             the images the project owns (content-addressed file names)
        prompts/            imported `.pt` prompt files (content-addressed, `ImportedPrompt`)
        embeddings/         optional embedding store (`Project.embedding_dir`)

Inside a project boxes are XYXY pixels of the image as shown upright (EXIF applied); the
reference ``{x, y, w, h}`` centre form only appears in `Project.training_data()` (what
`OwlPredictor.set_examples` takes) and in the derived ``training_data`` key of the file, kept so
tools that read the old example-project form still read a new project. Conversions go through
`owl_core.geometry`.

Per image there are *prompts* (the drawn positive / negative examples the detector learns from)
and, separately, reviewed *labels* (ground truth a person accepted, corrected or drew) with a
review status. Invalid data raises `ProjectError` (or `LimitError` over a bound), never a
half-changed project: every setter validates the new value before it replaces the old one.

The older form ``{"name", "classes", "training_data", "query_images"}`` (image paths relative to
the file) still loads; saving such a project copies its images into ``images/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from owl_core import geometry, limits
from owl_core.durable import atomic_write, fsync_dir, synced_temp
from owl_core.errors import ImageError, LimitError, OwlError, ProjectChangedError, ProjectError
from owl_core.images import IMAGE_FORMATS, upright_size
from owl_core.naming import class_key, clean_class_name
from owl_core.params import DetectParams
from owl_core.phrases import check_phrase
from owl_core.project import journal

FORMAT_NAME = "owl-studio-project"
#: Version written by `save_project`. 1 = the old example-project form (no "version" key);
#: 2 = images with prompts and labels; 3 = adds "imported" (`.pt` files the project uses).
#: 4 adds "phrases" (text prompts per class; older files have none and load as they were);
#: 5 adds "negative_phrases" (per class: "not this" words; older files have none).
#: 6 adds per image "rejected" (detections the person deleted in review; older files: none).
FORMAT_VERSION = 6
PROJECT_FILE = "project.json"
BACKUP_FILE = "project.json.bak"
IMAGES_DIR = "images"
PROMPTS_DIR = "prompts"
EMBEDDINGS_DIR = "embeddings"
LOCK_FILE = ".project.lock"
_TMP_PREFIX = ".project.json."
_TMP_SUFFIX = ".tmp"

Role = Literal["example", "query"]
ROLES: tuple[str, ...] = ("example", "query")
LabelSource = Literal["accepted", "corrected", "drawn"]
LABEL_SOURCES: tuple[str, ...] = ("accepted", "corrected", "drawn")
ReviewStatus = Literal["not_reviewed", "in_review", "done"]
REVIEW_STATUSES: tuple[str, ...] = ("not_reviewed", "in_review", "done")
#: Prefix the studio uses to show a negative box; a class may not start with it.
#: How far (pixels) a box may reach past the image edge (float rounding of drawn boxes).
EDGE_TOLERANCE = 1.0
_MAX_JSON_BYTES = 256 * 1024**2
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HASH = re.compile(r"^[0-9a-f]{8,128}$")


# ------------------------------------------------------------------------------- validation
def _fail(where: str, message: str) -> ProjectError:
    return ProjectError(f"{where}: {message}" if where else message)


def _xyxy(box: Any, size: tuple[int, int], where: str) -> geometry.XYXY:
    """A validated XYXY pixel box: 4 finite numbers, positive area, inside the image."""
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 4:
        raise _fail(where, f"xyxy must be 4 numbers [x0, y0, x1, y1] in pixels, got {box!r}.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
           for v in box):
        raise _fail(where, f"xyxy must be 4 finite numbers, got {list(box)!r}.")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise _fail(where, f"box [{x0}, {y0}, {x1}, {y1}] has no area; x0 < x1 and y0 < y1 "
                           "are needed (XYXY pixels).")
    width, height = size
    tol = EDGE_TOLERANCE
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise _fail(where, f"box [{x0}, {y0}, {x1}, {y1}] reaches outside the {width}x{height} "
                           "image; clip it to the image (geometry.clip_xyxy).")
    return geometry.clip_xyxy((x0, y0, x1, y1), size)


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"'negative' must be true or false, got {value!r}.")
    return value


# ------------------------------------------------------------------------------- boxes
@dataclass(frozen=True)
class Prompt:
    """A drawn example box: XYXY pixels (image upright), its class, positive or negative."""

    xyxy: geometry.XYXY
    cls: str
    negative: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "cls", clean_class_name(self.cls, "prompt class"))
        _flag(self.negative, "prompt")
        if len(self.xyxy) != 4 or not geometry.is_finite_box(self.xyxy):
            raise ProjectError(f"prompt: xyxy must be 4 finite numbers, got {self.xyxy!r}.")
        object.__setattr__(self, "xyxy", tuple(float(v) for v in self.xyxy))

    def to_dict(self) -> dict[str, Any]:
        return {"xyxy": list(self.xyxy), "cls": self.cls, "negative": self.negative}


@dataclass(frozen=True)
class Label:
    """A reviewed ground-truth box: XYXY pixels, class, how it came to be, optional score."""

    xyxy: geometry.XYXY
    cls: str
    source: LabelSource = "drawn"
    confidence: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cls", clean_class_name(self.cls, "label class"))
        if self.source not in LABEL_SOURCES:
            raise ProjectError(f"label: source must be one of {', '.join(LABEL_SOURCES)}, got "
                               f"{self.source!r}.")
        if len(self.xyxy) != 4 or not geometry.is_finite_box(self.xyxy):
            raise ProjectError(f"label: xyxy must be 4 finite numbers, got {self.xyxy!r}.")
        object.__setattr__(self, "xyxy", tuple(float(v) for v in self.xyxy))
        c = self.confidence
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                    or not 0.0 <= c <= 1.0:
                raise ProjectError(f"label: confidence must be a number in [0, 1] or null, got "
                                   f"{c!r}.")
            object.__setattr__(self, "confidence", float(c))

    def to_dict(self) -> dict[str, Any]:
        return {"xyxy": list(self.xyxy), "cls": self.cls, "source": self.source,
                "confidence": self.confidence}


@dataclass(frozen=True)
class Rejection:
    """A detection the person deleted in review: XYXY pixels, class, its score. Kept with the
    image so "Rejected -> negative examples" adds exactly these, after a reload or restart."""

    xyxy: geometry.XYXY
    cls: str
    confidence: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cls", clean_class_name(self.cls, "rejected detection class"))
        if len(self.xyxy) != 4 or not geometry.is_finite_box(self.xyxy):
            raise ProjectError(f"rejected detection: xyxy must be 4 finite numbers, got "
                               f"{self.xyxy!r}.")
        object.__setattr__(self, "xyxy", tuple(float(v) for v in self.xyxy))
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) \
                or not 0.0 <= c <= 1.0:
            raise ProjectError(f"rejected detection: confidence must be a number in [0, 1], got "
                               f"{c!r}.")
        object.__setattr__(self, "confidence", float(c))

    def to_dict(self) -> dict[str, Any]:
        return {"xyxy": list(self.xyxy), "cls": self.cls, "confidence": self.confidence}


def _box_record(kind: type, what: str, fields: str, value: Any, where: str,
                build: Any) -> Any:
    """`value` as a `kind` (a Prompt, Label or Rejection): kept when it is one already, else
    built from its mapping by `build`; any problem is a ProjectError naming `where`."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, Mapping):
        raise _fail(where, f"{what} must be {{{fields}}}, got {type(value).__name__}.")
    try:
        return build(value)
    except ProjectError as exc:
        raise _fail(where, str(exc)) from None


def _rejection(value: Any, where: str) -> Rejection:
    return _box_record(Rejection, "a rejected detection", "'xyxy', 'cls', 'confidence'", value,
                       where, lambda v: Rejection(tuple(v.get("xyxy") or ()), v.get("cls"),
                                                  v.get("confidence", 0.0)))


def _prompt(value: Any, where: str) -> Prompt:
    return _box_record(Prompt, "a prompt", "'xyxy', 'cls', 'negative'", value, where,
                       lambda v: Prompt(tuple(v.get("xyxy") or ()), v.get("cls"),
                                        _flag(v.get("negative", False), where)))


def _label(value: Any, where: str) -> Label:
    return _box_record(Label, "a label", "'xyxy', 'cls', 'source', 'confidence'", value, where,
                       lambda v: Label(tuple(v.get("xyxy") or ()), v.get("cls"),
                                       v.get("source", "drawn"), v.get("confidence")))


# ------------------------------------------------------------------------------- images
def new_image_id() -> str:
    """A fresh random image id (12 hex digits); ids are never derived from content, so removing
    an image and adding it again gives a new id."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class ImageRecord:
    """One image of a project.

    Attributes:
        id: stable id, unique in the project, never reused.
        file: path relative to the project folder (``images/<hash>.<ext>``); images of an old
            project file loaded in place may point elsewhere until the project is saved.
        name: the original file name, for people.
        size: (width, height) in pixels after EXIF rotation.
        content_hash: `owl_core.images` hash of the file's bytes (the embedding cache key).
        role: "example" or "query": which of the studio's panes shows it.
        prompts: drawn example boxes.
        labels: reviewed ground-truth boxes (kept apart from prompts).
        status: review status, "not_reviewed" | "in_review" | "done".
        rejected: detections the person deleted in review (what "Rejected -> negative
            examples" adds).
    """

    id: str
    file: str
    name: str
    size: tuple[int, int]
    content_hash: str
    role: Role = "example"
    prompts: tuple[Prompt, ...] = ()
    labels: tuple[Label, ...] = ()
    status: ReviewStatus = "not_reviewed"
    rejected: tuple[Rejection, ...] = ()

    def __post_init__(self) -> None:
        where = f"image {self.id!r}"
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise ProjectError(f"image id {self.id!r}: expected 1-64 letters, digits, '-' or "
                               "'_'.")
        if not isinstance(self.file, str) or not self.file.strip() or "\0" in self.file:
            raise _fail(where, f"file must be a path relative to the project, got "
                               f"{self.file!r}.")
        if not isinstance(self.name, str) or len(self.name) > 1024:
            raise _fail(where, "name must be a string of at most 1024 characters.")
        size = tuple(self.size) if isinstance(self.size, (list, tuple)) else ()
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                                 for v in size):
            raise _fail(where, f"size must be [width, height] in pixels, got {self.size!r}.")
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        if not isinstance(self.content_hash, str) or not _HASH.match(self.content_hash):
            raise _fail(where, f"content_hash must be a lowercase hex digest, got "
                               f"{self.content_hash!r}.")
        if self.role not in ROLES:
            raise _fail(where, f"role must be one of {', '.join(ROLES)}, got {self.role!r}.")
        if self.status not in REVIEW_STATUSES:
            raise _fail(where, f"status must be one of {', '.join(REVIEW_STATUSES)}, got "
                               f"{self.status!r}.")
        prompts = tuple(_prompt(p, f"{where} prompts[{i}]") for i, p in enumerate(self.prompts))
        labels = tuple(_label(b, f"{where} labels[{i}]") for i, b in enumerate(self.labels))
        lim = limits.current() if prompts or labels else limits.Limits()
        lim.check("max_boxes_per_image", len(prompts), f"{where}: prompt boxes",
                  limits.ProjectLimitError)
        lim.check("max_boxes_per_image", len(labels), f"{where}: labels", limits.ProjectLimitError)
        for i, p in enumerate(prompts):
            _xyxy(p.xyxy, self.size, f"{where} prompts[{i}]")
        for i, b in enumerate(labels):
            _xyxy(b.xyxy, self.size, f"{where} labels[{i}]")
        rejected = tuple(_rejection(b, f"{where} rejected[{i}]")
                         for i, b in enumerate(self.rejected))
        lim.check("max_boxes_per_image", len(rejected), f"{where}: rejected detections",
                  limits.ProjectLimitError)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "rejected", rejected)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "name": self.name,
                "width": self.size[0], "height": self.size[1],
                "content_hash": self.content_hash, "role": self.role,
                "prompts": [p.to_dict() for p in self.prompts],
                "labels": [b.to_dict() for b in self.labels], "status": self.status,
                "rejected": [b.to_dict() for b in self.rejected]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "image") -> ImageRecord:
        if not isinstance(data, Mapping):
            raise _fail(where, f"expected an object, got {type(data).__name__}.")
        prompts, labels = data.get("prompts", []), data.get("labels", [])
        rejected = data.get("rejected", [])  # none before version 6
        for key, value in (("prompts", prompts), ("labels", labels), ("rejected", rejected)):
            if not isinstance(value, list):
                raise _fail(where, f"{key!r} must be a list, got {type(value).__name__}.")
        return cls(id=data.get("id"), file=data.get("file"), name=data.get("name", ""),
                   size=(data.get("width"), data.get("height")),
                   content_hash=data.get("content_hash"), role=data.get("role", "example"),
                   prompts=tuple(prompts), labels=tuple(labels),
                   status=data.get("status", "not_reviewed"), rejected=tuple(rejected))


@dataclass(frozen=True)
class ImportedPrompt:
    """A `.pt` prompt file the project uses next to its drawn boxes (its exemplars stay active
    after a reload or a restart).

    Attributes:
        name: the file name the person picked, for people.
        file: path relative to the project folder (``prompts/<sha256>.pt``).
    """

    name: str
    file: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 255:
            raise ProjectError(f"imported prompt: name must be 1-255 characters, got "
                               f"{self.name!r}.")
        if not isinstance(self.file, str) or not _local(self.file, PROMPTS_DIR) \
                or not self.file.endswith(".pt"):
            raise ProjectError(f"imported prompt {self.name!r}: file must be "
                               f"{PROMPTS_DIR}/<hash>.pt, got {self.file!r}.")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file}

    @classmethod
    def from_dict(cls, data: Any, where: str = "imported") -> ImportedPrompt:
        if not isinstance(data, Mapping):
            raise _fail(where, f"expected {{'name', 'file'}}, got {type(data).__name__}.")
        try:
            return cls(name=data.get("name"), file=data.get("file"))
        except ProjectError as exc:
            raise _fail(where, str(exc)) from None


@dataclass(frozen=True)
class ImageInfo:
    """What a project needs to know about an image file's bytes."""

    content_hash: str
    size: tuple[int, int]
    suffix: str


def inspect_image(data: bytes | Path, label: str = "image",
                  content_hash: str | None = None) -> ImageInfo:
    """Hash (the engine's), upright (width, height) and file suffix of encoded image bytes,
    or of an image file (then read as a stream, never whole; ``content_hash`` when the caller
    hashed it already).

    Reads the header only. Raises `ImageError` for bytes that are not a supported image and
    `LimitError` for an image over ``max_image_pixels``.
    """
    from owl_core.images import content_hasher, resolve_image

    if isinstance(data, Path):
        if data.stat().st_size == 0:
            raise ImageError(f"{label}: the file is empty.")
        if content_hash is None:
            hasher = content_hasher()
            with data.open("rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    hasher.update(chunk)
            content_hash = hasher.hexdigest()
        opened = data
    else:
        if not data:
            raise ImageError(f"{label}: the file is empty.")
        content_hash = resolve_image(bytes(data)).content_hash
        opened = io.BytesIO(data)
    try:
        with Image.open(opened) as img:
            fmt, (width, height) = img.format, upright_size(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise ImageError(f"{label}: not a readable image ({exc}); use PNG, JPEG, WebP, BMP, "
                         "GIF or TIFF.") from exc
    if fmt not in IMAGE_FORMATS:
        raise ImageError(f"{label}: {fmt} images are not supported; use PNG, JPEG, WebP, "
                         "BMP, GIF or TIFF.")
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: the image is empty ({width}x{height}).")
    limits.current().check("max_image_pixels", width * height, f"{label} ({width}x{height})",
                           limits.ImageLimitError)
    return ImageInfo(content_hash, (width, height), IMAGE_FORMATS[fmt])


def _read_bounded(path: Path, label: str) -> bytes:
    lim = limits.current()
    try:
        size = path.stat().st_size
        lim.check("max_upload_bytes", size, f"{label}: file size", limits.ImageLimitError)
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{label}: no such image file ({path}).") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, not an image file.") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc


# ------------------------------------------------------------------------------- the project
@dataclass
class Project:
    """A labeling project: classes, images with their boxes, detection settings.

    Change it through the methods (they validate and keep classes, prompts and labels
    consistent); `save_project` writes it. ``folder`` is where it lives (None: not on disk yet).
    The methods replace lists rather than change them in place, but a change may set two
    fields: a program that edits from several threads holds its own lock around edits and
    saves (the folder's file lock only keeps writers from interleaving on disk).
    """

    name: str = "my-project"
    classes: list[str] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    settings: DetectParams = field(default_factory=DetectParams)
    folder: Path | None = None
    version: int = FORMAT_VERSION
    #: imported `.pt` prompt files, in the order they were imported
    imported: list[ImportedPrompt] = field(default_factory=list)
    #: text prompts: class -> its phrases ("describe it"), classes without phrases absent
    phrases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: negative text prompts: class -> phrases of what it is not ("not this"), same rules
    negative_phrases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = _project_name(self.name)
        self.imported = list(self.imported)
        if not all(isinstance(i, ImportedPrompt) for i in self.imported):
            raise ProjectError("imported must be a list of ImportedPrompt.")
        if not isinstance(self.settings, DetectParams):
            raise ProjectError("settings must be a DetectParams.")
        if self.folder is not None:
            self.folder = Path(self.folder).resolve()
        self.classes = _class_list(self.classes)
        self.images = list(self.images)
        self._check_images(self.images)
        self.phrases = _phrase_map(self.phrases, self.classes)
        self.negative_phrases = _phrase_map(self.negative_phrases, self.classes,
                                            "negative_phrases")

    # ---------------------------------------------------------------- queries
    def __eq__(self, other: object) -> bool:  # the folder is where it is, not what it is
        if not isinstance(other, Project):
            return NotImplemented
        return (self.name, self.classes, self.images, self.settings, self.imported,
                self.phrases, self.negative_phrases) == (
            other.name, other.classes, other.images, other.settings, other.imported,
            other.phrases, other.negative_phrases)

    @property
    def embedding_dir(self) -> Path:
        """The project's own embedding store (``embeddings/``; created by whoever uses it)."""
        return self._require_folder("an embedding store") / EMBEDDINGS_DIR

    def image(self, image_id: str) -> ImageRecord:
        for record in self.images:
            if record.id == image_id:
                return record
        raise ProjectError(f"no image with id {image_id!r} in project {self.name!r}.")

    def image_path(self, record: ImageRecord | str) -> Path:
        """Absolute path of an image's file."""
        record = self.image(record) if isinstance(record, str) else record
        return Path(os.path.normpath(self._require_folder("image paths") / record.file))

    def class_index(self, name: str) -> int:
        """Index of a class, matched case-insensitively; `ProjectError` when absent."""
        key = class_key(str(name))
        for i, cls in enumerate(self.classes):
            if class_key(cls) == key:
                return i
        raise ProjectError(f"no class {name!r} in project {self.name!r} (classes: "
                           f"{', '.join(self.classes) or 'none'}); add it first.")

    def training_data(self) -> list[dict[str, Any]]:
        """Reference-schema training data (absolute image paths, centre x/y/w/h boxes) of every
        image with prompt boxes: what `OwlPredictor.set_examples` takes, with `classes`."""
        return [{"image": str(self.image_path(r)),
                 "boxes": [geometry.xyxy_to_reference(p.xyxy, p.cls, p.negative, ndigits=None)
                           for p in r.prompts]}
                for r in self.images if r.prompts]

    def prompt_phrases(self) -> dict[str, list[str | dict[str, Any]]]:
        """The phrases per class, as `OwlPredictor.set_examples(phrases=...)` takes them: a
        positive phrase as its text, a negative one as ``{"text", "negative": True}``."""
        out: dict[str, list[str | dict[str, Any]]] = {}
        for cls in self.classes:
            items: list[str | dict[str, Any]] = list(self.phrases.get(cls, ()))
            items += [{"text": p, "negative": True} for p in self.negative_phrases.get(cls, ())]
            if items:
                out[cls] = items
        return out

    def query_images(self) -> list[Path]:
        """Absolute paths of the images whose role is "query"."""
        return [self.image_path(r) for r in self.images if r.role == "query"]

    # ---------------------------------------------------------------- images
    def add_image(self, source: str | os.PathLike | bytes, name: str | None = None,
                  role: Role = "example") -> ImageRecord:
        """Copy an image (a path or the file's bytes) into ``images/`` and add a record.

        The file is named by its content hash, so the same picture added twice (e.g. as example
        and as query) is stored once and no other image is ever overwritten. Returns the new
        record (a new id every time).
        """
        folder = self._require_folder("adding images")
        if role not in ROLES:
            raise ProjectError(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            limits.current().check("max_upload_bytes", len(data), f"{name or 'image'}: size",
                                   limits.ImageLimitError)
            label = name or "image bytes"
        else:
            path = Path(os.fspath(source))
            label = name or path.name
            data = _read_bounded(path, label)
            name = name or path.name
        info = inspect_image(data, label)
        display = _display_name(name or f"image{info.suffix}")
        rel = f"{IMAGES_DIR}/{info.content_hash}{info.suffix}"
        _write_file_once(folder / rel, data)
        record = ImageRecord(id=self._fresh_id(), file=rel, name=display, size=info.size,
                             content_hash=info.content_hash, role=role)
        images = [*self.images, record]
        self._check_images(images, changed=[record])  # a fresh id: unique
        self.images = images
        return record

    def remove_image(self, image_id: str, delete_file: bool = True) -> ImageRecord:
        """Drop an image record; its file is deleted when no other record uses it (unless
        `delete_file` is False: a caller that saves later deletes it after the save, so the
        file on disk never lists a missing image)."""
        record = self.image(image_id)
        self.images = [r for r in self.images if r.id != image_id]
        if delete_file and self.folder is not None \
                and not any(r.file == record.file for r in self.images):
            target = (self.folder / record.file).resolve()
            if _inside(target, self.folder / IMAGES_DIR):
                target.unlink(missing_ok=True)
        return record

    def set_role(self, image_id: str, role: Role) -> ImageRecord:
        return self._replace(image_id, role=role)

    def set_prompt_boxes(self, image_id: str, prompts: Iterable[Prompt | Mapping]) -> ImageRecord:
        """Replace an image's prompt boxes (`Prompt` or ``{"xyxy", "cls", "negative"}``); each
        class must be one of the project's (spelled as the project spells it)."""
        items = [_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        items = [dataclasses.replace(p, cls=self.classes[self.class_index(p.cls)])
                 for p in items]
        return self._replace(image_id, prompts=tuple(items))

    def set_labels(self, image_id: str, labels: Iterable[Label | Mapping],
                   status: ReviewStatus | None = None) -> ImageRecord:
        """Replace an image's reviewed labels (and optionally its review status)."""
        items = [_label(b, f"labels[{i}]") for i, b in enumerate(labels)]
        items = [dataclasses.replace(b, cls=self.classes[self.class_index(b.cls)])
                 for b in items]
        changes: dict[str, Any] = {"labels": tuple(items)}
        if status is not None:
            changes["status"] = status
        return self._replace(image_id, **changes)

    def set_rejected(self, image_id: str,
                     rejected: Iterable[Rejection | Mapping]) -> ImageRecord:
        """Replace the detections the person deleted in review on an image (of the project's
        classes only: another class's detection cannot become its negative example)."""
        items = [_rejection(b, f"rejected[{i}]") for i, b in enumerate(rejected)]
        items = [dataclasses.replace(b, cls=self.classes[self.class_index(b.cls)])
                 for b in items]
        return self._replace(image_id, rejected=tuple(items))

    def set_status(self, image_id: str, status: ReviewStatus) -> ImageRecord:
        return self._replace(image_id, status=status)

    def set_settings(self, settings: DetectParams | Mapping[str, Any]) -> DetectParams:
        self.settings = (settings if isinstance(settings, DetectParams)
                         else DetectParams.from_dict(settings, strict=True))
        return self.settings

    def set_name(self, name: str) -> str:
        """Rename the project (whitespace runs collapsed, at most 200 printable characters)."""
        self.name = _project_name(name)
        return self.name

    # ---------------------------------------------------------------- imported prompts
    def add_imported(self, source: str | os.PathLike, name: str | None = None) -> ImportedPrompt:
        """Copy a `.pt` file into ``prompts/`` (named by its SHA-256, so the same file is kept
        once) and list it; the caller has checked that it loads. Returns the new entry."""
        import hashlib

        folder = self._require_folder("importing prompts")
        path = Path(os.fspath(source))
        label = name or path.name
        try:
            size = path.stat().st_size
            limits.current().check("max_upload_bytes", size, f"{label}: file size",
                                   limits.ProjectLimitError)
            data = path.read_bytes()
        except OSError as exc:
            raise ProjectError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc
        rel = f"{PROMPTS_DIR}/{hashlib.sha256(data).hexdigest()}.pt"
        _write_file_once(folder / rel, data)
        entry = ImportedPrompt(name=_display_name(label)[-255:], file=rel)
        self.imported = [*(i for i in self.imported if i.file != rel), entry]
        return entry

    def clear_imported(self) -> list[ImportedPrompt]:
        """Forget every imported prompt file (the files go at the next save). Returns them."""
        dropped, self.imported = self.imported, []
        return dropped

    def imported_path(self, entry: ImportedPrompt) -> Path:
        """Absolute path of an imported prompt file."""
        return Path(os.path.normpath(self._require_folder("prompt paths") / entry.file))

    def class_usage(self, name: str) -> tuple[int, int, int]:
        """(prompt boxes, reviewed labels, images with either) of a class: what removing it
        deletes."""
        cls = self.classes[self.class_index(name)]
        prompts = labels = images = 0
        for r in self.images:
            p = sum(1 for b in r.prompts if b.cls == cls)
            lab = sum(1 for b in r.labels if b.cls == cls)
            prompts, labels, images = prompts + p, labels + lab, images + bool(p or lab)
        return prompts, labels, images

    def set_phrases(self, cls: str, phrases: Iterable[str], *,
                    negative: bool = False) -> tuple[str, ...]:
        """Replace the phrases of a class, or its negative phrases (validated, duplicates
        dropped; empty = none). Nothing changes when one is refused."""
        name = self.classes[self.class_index(cls)]
        if negative:
            self.negative_phrases = _phrase_map({**self.negative_phrases, name: tuple(phrases)},
                                                self.classes, "negative_phrases")
            return self.negative_phrases.get(name, ())
        self.phrases = _phrase_map({**self.phrases, name: tuple(phrases)}, self.classes)
        return self.phrases.get(name, ())

    # ---------------------------------------------------------------- classes
    def add_class(self, name: str) -> str:
        cleaned = clean_class_name(name)
        self.classes = _class_list([*self.classes, cleaned])
        return cleaned

    def rename_class(self, old: str, new: str) -> str:
        """Rename a class; its prompt boxes, labels and rejected detections carry the new
        name."""
        index = self.class_index(old)
        old_name, cleaned = self.classes[index], clean_class_name(new)
        classes = list(self.classes)
        classes[index] = cleaned
        classes = _class_list(classes)  # a clash with another class raises here, nothing changed

        def rename(box):
            return dataclasses.replace(box, cls=cleaned) if box.cls == old_name else box

        self.images = [dataclasses.replace(r, prompts=tuple(map(rename, r.prompts)),
                                           labels=tuple(map(rename, r.labels)),
                                           rejected=tuple(map(rename, r.rejected)))
                       for r in self.images]
        self.phrases = {cleaned if c == old_name else c: p for c, p in self.phrases.items()}
        self.negative_phrases = {cleaned if c == old_name else c: p
                                 for c, p in self.negative_phrases.items()}
        self.classes = classes
        return cleaned

    def remove_class(self, name: str) -> str:
        """Remove a class with every prompt box, label and rejected detection of it."""
        removed = self.classes[self.class_index(name)]
        self.images = [dataclasses.replace(
            r, prompts=tuple(p for p in r.prompts if p.cls != removed),
            labels=tuple(b for b in r.labels if b.cls != removed),
            rejected=tuple(b for b in r.rejected if b.cls != removed)) for r in self.images]
        self.classes = [c for c in self.classes if c != removed]
        self.phrases = {c: p for c, p in self.phrases.items() if c != removed}
        self.negative_phrases = {c: p for c, p in self.negative_phrases.items() if c != removed}
        return removed

    # ---------------------------------------------------------------- file form
    def to_dict(self, images: Sequence[ImageRecord] | None = None) -> dict[str, Any]:
        """The ``project.json`` content (see the module docstring); ``images`` replaces
        `self.images` (a snapshot taken by the writer)."""
        images = self.images if images is None else images
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "name": self.name,
            "classes": list(self.classes), "settings": self.settings.to_dict(),
            "phrases": {cls: list(p) for cls, p in self.phrases.items()},
            "negative_phrases": {cls: list(p) for cls, p in self.negative_phrases.items()},
            "images": [r.to_dict() for r in images],
            "imported": [i.to_dict() for i in self.imported],
            **_derived(images),
        }

    # ---------------------------------------------------------------- internals
    def _require_folder(self, what: str) -> Path:
        if self.folder is None:
            raise ProjectError(f"project {self.name!r} has no folder yet; {what} needs one "
                               "(create it with ProjectLibrary.create or save_project(project, "
                               "folder)).")
        return self.folder

    def _fresh_id(self) -> str:
        taken = {r.id for r in self.images}
        while (image_id := new_image_id()) in taken:
            pass
        return image_id

    def _replace(self, image_id: str, **changes: Any) -> ImageRecord:
        index = next((i for i, r in enumerate(self.images) if r.id == image_id), None)
        if index is None:
            raise ProjectError(f"no image with id {image_id!r} in project {self.name!r}.")
        record = dataclasses.replace(self.images[index], **changes)  # validates
        images = list(self.images)
        images[index] = record
        self._check_images(images, changed=[record])
        self.images = images
        return record

    def _check_images(self, images: Sequence[ImageRecord],
                      changed: Sequence[ImageRecord] | None = None) -> None:
        """Unique ids, known classes, bounds; ``changed``: only those records are new (same
        ids as before), the rest was checked already."""
        lim = limits.current()
        ids: set[str] = set()
        known = set(self.classes)
        for record in images if changed is None else changed:
            if not isinstance(record, ImageRecord):
                raise ProjectError(f"images must be ImageRecord, got {type(record).__name__}.")
            if changed is None and record.id in ids:
                raise ProjectError(f"image id {record.id!r} is used twice.")
            ids.add(record.id)
            for box in (*record.prompts, *record.labels):
                if box.cls not in known:
                    raise ProjectError(f"image {record.id!r}: class {box.cls!r} is not one of "
                                       f"the project's classes ({', '.join(self.classes) or 'none'}"
                                       "); add it first.")
        total = sum(len(record.prompts) for record in images)
        lim.check("max_boxes_total", total, f"project {self.name!r}: prompt boxes",
                  limits.ProjectLimitError)
        lim.check("max_project_images", len(images), f"project {self.name!r}: images",
                  limits.ProjectLimitError)


def _project_name(name: Any) -> str:
    if not isinstance(name, str):
        raise ProjectError(f"project name must be a string, got {type(name).__name__}.")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ProjectError("project name is empty; give the project a name.")
    if len(cleaned) > 200 or any(not ch.isprintable() for ch in cleaned):
        raise ProjectError(f"project name {cleaned[:40]!r}...: at most 200 printable characters.")
    return cleaned


def _class_list(classes: Any) -> list[str]:
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise ProjectError(f"classes must be a list of names, got {classes!r}.")
    out: list[str] = []
    seen: dict[str, str] = {}
    for i, name in enumerate(classes):
        cleaned = clean_class_name(name, f"classes[{i}]")
        if class_key(cleaned) in seen:
            raise ProjectError(f"classes[{i}]: {cleaned!r} is already a class "
                               f"({seen[class_key(cleaned)]!r}); class names are unique "
                               "regardless of case.")
        seen[class_key(cleaned)] = cleaned
        out.append(cleaned)
    limits.current().check("max_classes", len(out), "classes", limits.ProjectLimitError)
    return out


def _phrase_map(phrases: Any, classes: Sequence[str],
                key: str = "phrases") -> dict[str, tuple[str, ...]]:
    """Validated ``{class: (phrase, ...)}``: classes of the project, phrases by the one rule
    (`owl_core.phrases.check_phrase`), duplicates dropped, classes without phrases left out."""
    if not isinstance(phrases, Mapping):
        raise ProjectError(f"\"{key}\" must map class names to lists of phrases, got "
                           f"{type(phrases).__name__}.")
    lim = limits.current()
    out: dict[str, tuple[str, ...]] = {}
    for cls, items in phrases.items():
        where = f"{key}[{str(cls)[:40]!r}]"
        if cls not in classes:
            raise ProjectError(f"{where}: {str(cls)[:40]!r} is not a class of the project "
                               f"(classes: {', '.join(classes) or 'none'}).")
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise ProjectError(f"{where}: expected a list of phrases, got "
                               f"{type(items).__name__}.")
        items = list(items)
        lim.check("max_phrases_per_class", len(items), f"{where}: phrases",
                  limits.ProjectLimitError)
        try:
            cleaned = tuple(dict.fromkeys(check_phrase(p, f"{where}[{i}]", lim)
                                          for i, p in enumerate(items)))
        except LimitError:
            raise
        except OwlError as exc:
            raise ProjectError(str(exc)) from None
        if cleaned:
            out[cls] = cleaned
    lim.check("max_phrases_total", sum(map(len, out.values())), key,
              limits.ProjectLimitError)
    return out


def _display_name(name: str) -> str:
    """A name for people: a relative POSIX path at most (no drive, root or '..'), printable."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    name = "".join(ch for ch in "/".join(parts) if ch.isprintable()).strip()
    return name[-255:] or "image"


def _local(rel: str, under: str | None = None) -> bool:
    """Whether a relative path stays inside its folder (and below ``under``), judged from the
    text alone: a project never creates links, and a zip with links is refused."""
    norm = os.path.normpath(rel).replace("\\", "/")
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        return False
    return under is None or norm.startswith(f"{under}/")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _write_file_once(target: Path, data: bytes) -> None:
    """Write content-addressed bytes: a file already there holds the same bytes; never a
    half-written file (temp file + rename)."""
    if target.is_file() and target.stat().st_size == len(data):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data, prefix=".tmp-")


def _derived(images: Sequence[ImageRecord]) -> dict[str, Any]:
    """The keys derived from the images, for readers of the old form (ignored when a
    versioned file is read)."""
    return {
        "training_data": [{"image": r.file, "boxes": [
            geometry.xyxy_to_reference(p.xyxy, p.cls, p.negative, ndigits=None)
            for p in r.prompts]} for r in images if r.prompts],
        "query_images": [r.file for r in images if r.role == "query"],
    }


# ------------------------------------------------------------------------------- the reader
def project_file(path: str | os.PathLike) -> Path:
    """The ``project.json`` of a project folder (or the file itself)."""
    path = Path(path)
    return path / PROJECT_FILE if path.is_dir() else path


def read_json(path: Path, what: str = "project file") -> Any:
    """Parse a bounded UTF-8 JSON file; `ProjectError` naming the file on any failure.

    A project file is capped at ``max_project_json_bytes``, other JSON (training data, which
    may carry base64 images) at 256 MiB; both are checked by `parse_json_bounded` before parsing.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ProjectError(f"{path}: cannot read the {what} (No such file or directory); check "
                           "the path.") from None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read the {what} ({exc.strerror or exc}).") from exc
    lim = limits.current()
    cap = lim.max_project_json_bytes if what == "project file" else _MAX_JSON_BYTES
    if size > cap:
        name = "max_project_json_bytes" if what == "project file" else None
        raise limits.ProjectLimitError(
            f"{path}: {size:,} bytes is over the {cap:,}-byte limit for a {what}"
            + (f" ({name}); raise it with OWL_{name.upper()}." if name else "."))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read the {what} ({exc.strerror or exc}); check the "
                           "path.") from exc
    hint = ""
    if path.name == PROJECT_FILE and (path.parent / BACKUP_FILE).is_file():
        hint = f" {BACKUP_FILE} next to it holds the previous save."
    return parse_json_bounded(data, str(path), hint=hint, lim=lim)


def parse_json_bounded(data: bytes, label: str, *, hint: str = "",
                       lim: limits.Limits | None = None) -> Any:
    """Parse JSON bytes after bounding what parsing them can cost.

    Parsing builds one Python object per JSON value (an empty ``{}`` costs ~70 bytes of
    memory for 3 bytes of text), so the values are counted first from the text, without
    parsing: every value but the last of a container is followed by a comma, so commas plus
    brackets bound the count (commas inside strings only over-count). Over
    ``max_project_json_values`` -> `ProjectLimitError` before any object is built.
    """
    lim = lim or limits.current()
    values = data.count(b",") + data.count(b"{") + data.count(b"[") + 1
    lim.check("max_project_json_values", values, f"{label}: JSON values (about)",
              limits.ProjectLimitError)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProjectError(f"{label}: not UTF-8 text ({exc}); save the JSON as UTF-8.") from exc
    except RecursionError:
        raise ProjectError(f"{label}: the JSON is nested too deeply; a project file is a few "
                           "levels deep.") from None
    except json.JSONDecodeError as exc:
        raise ProjectError(f"{label}: not valid JSON ({exc}); fix the file or export it "
                           f"again.{hint}") from exc


def load_project(path: str | os.PathLike, *, allow_external: bool = False) -> Project:
    """Read a project folder (or its ``project.json``), either form.

    Args:
        path: the project folder or its JSON file.
        allow_external: accept image paths outside the folder (absolute, or ``../``). Only for
            files a person pointed at themselves (CLI, the bundled examples); a project folder
            from a zip or an upload never needs it.

    Raises:
        ProjectError: unreadable, malformed, or an image path escaping the folder.
    """
    file = project_file(path)
    stamp = _disk_stamp(file.parent)  # before reading: a write meanwhile shows as a change
    with limits.pinned() as lim:
        data = read_json(file)
        read = None
        if isinstance(data, dict) and file.name == PROJECT_FILE and "version" in data:
            read = journal.read_journal(file.parent, lim.max_project_json_bytes)
            seq = journal.apply_lines(data, read.lines)
        project = project_from_dict(data, file.parent, allow_external=allow_external,
                                    source=str(file) + (f" + {journal.JOURNAL_FILE}"
                                                        if read and read.lines else ""))
    if read is not None:
        version = data.get("version")
        project._journal = _JournalState(
            folder=file.parent.resolve(), seq=seq, size=read.valid_bytes, ends=read.ends,
            base=_snapshot(project), file_bytes=file.stat().st_size,
            file_version=version if isinstance(version, int) else 1, stamp=stamp)
    return project


def project_from_dict(data: Any, folder: str | os.PathLike, *, allow_external: bool = False,
                      source: str = "project.json") -> Project:
    """A `Project` from parsed ``project.json`` content whose relative paths are relative to
    ``folder`` (the one reader: versioned and old form)."""
    folder = Path(folder).resolve()
    if isinstance(data, list):  # a bare reference-schema list: an unnamed project
        data = {"training_data": data}
    if not isinstance(data, Mapping):
        raise ProjectError(f"{source}: expected a JSON object with \"classes\" and \"images\" "
                           f"(or \"training_data\"), got {type(data).__name__}.")
    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ProjectError(f"{source}: \"version\" must be a positive integer, got {version!r}.")
    if version > FORMAT_VERSION:
        raise ProjectError(f"{source}: project format version {version} is newer than this "
                           f"program reads ({FORMAT_VERSION}); update owl-studio.")
    try:
        with limits.pinned():
            if version == 1:
                return _from_v1(data, folder, allow_external, source)
            return _from_v2(data, folder, allow_external, version)
    except OwlError as exc:
        if str(exc).startswith(source):
            raise
        raise type(exc)(f"{source}: {exc}") from None


def _count_boxes(images: list, lim: limits.Limits) -> None:
    """Bound the lists of a parsed file before a single box object is built: per image
    (``max_boxes_per_image``) and in total (``max_boxes_total`` prompts,
    ``max_project_labels`` labels)."""
    prompts = labels = 0
    for i, data in enumerate(images):
        if not isinstance(data, Mapping):
            continue  # ImageRecord.from_dict says what is wrong
        for key in ("prompts", "labels"):
            value = data.get(key)
            if isinstance(value, list):
                lim.check("max_boxes_per_image", len(value), f"images[{i}]: {key}",
                          limits.ProjectLimitError)
        prompts += len(data["prompts"]) if isinstance(data.get("prompts"), list) else 0
        labels += len(data["labels"]) if isinstance(data.get("labels"), list) else 0
    lim.check("max_boxes_total", prompts, "prompt boxes", limits.ProjectLimitError)
    lim.check("max_project_labels", labels, "labels", limits.ProjectLimitError)


def _from_v2(data: Mapping, folder: Path, allow_external: bool, version: int) -> Project:
    """Versions 2 to 5 (3 adds "imported", 4 "phrases", 5 "negative_phrases")."""
    lim = limits.current()
    images = data.get("images", [])
    if not isinstance(images, list):
        raise ProjectError("\"images\" must be a list.")
    lim.check("max_project_images", len(images), "images", limits.ProjectLimitError)
    classes = data.get("classes", [])
    if isinstance(classes, list):
        lim.check("max_classes", len(classes), "classes", limits.ProjectLimitError)
    _count_boxes(images, lim)
    records = [ImageRecord.from_dict(d, f"images[{i}]") for i, d in enumerate(images)]
    for record in records:
        _check_path(record.file, folder, allow_external, f"image {record.id!r}")
    imported = data.get("imported", []) if version >= 3 else []
    if not isinstance(imported, list):
        raise ProjectError("\"imported\" must be a list.")
    lim.check("max_project_zip_unreferenced", len(imported), "imported prompt files",
              limits.ProjectLimitError)
    phrases = data.get("phrases") if version >= 4 else None
    negative_phrases = data.get("negative_phrases") if version >= 5 else None
    return Project(name=data.get("name") or folder.name, classes=classes, images=records,
                   settings=DetectParams.from_dict(data.get("settings")), folder=folder,
                   version=version, imported=[ImportedPrompt.from_dict(d, f"imported[{i}]")
                                              for i, d in enumerate(imported)],
                   phrases=phrases or {}, negative_phrases=negative_phrases or {})


def _check_path(rel: str, folder: Path, allow_external: bool, where: str) -> Path:
    if _local(rel):
        return Path(os.path.normpath(folder / rel))
    if not allow_external:
        raise ProjectError(f"{where}: path {rel!r} leads outside the project folder; a project "
                           f"only refers to its own files (under {IMAGES_DIR}/).")
    return (folder / rel).resolve()


def _from_v1(data: Mapping, folder: Path, allow_external: bool, source: str) -> Project:
    """The old form: {"name", "classes", "training_data": [{"image", "boxes": [x, y, w, h, cls,
    negative]}], "query_images": [path]} with paths relative to the file."""
    from owl_core.engine.training_data import parse_training_data

    classes = data.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or not all(isinstance(c, str) for c in classes)):
        raise ProjectError(f"\"classes\" must be a list of class names, got {classes!r}.")
    entries = parse_training_data(data.get("training_data", []))  # TrainingDataError names box
    queries = data.get("query_images", [])
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ProjectError(f"\"query_images\" must be a list of image paths, got {queries!r}.")
    class_names = list(classes or [])
    seen = {class_key(c) for c in class_names}
    for entry in entries:
        for box in entry.boxes:
            if class_key(box.cls) not in seen:
                seen.add(class_key(box.cls))
                class_names.append(box.cls)
    project = Project(name=data.get("name") or folder.name, classes=class_names,
                      settings=DetectParams.from_dict(data.get("settings")), folder=folder,
                      version=1)
    infos: dict[Path, ImageInfo] = {}

    def record_for(image: Any, where: str, role: str) -> ImageRecord:
        if not isinstance(image, str) or image.lstrip()[:5].lower() == "data:":
            raise ProjectError(f"{where}: a project's images must be file paths; use a "
                               "training-data list for images given as data.")
        path = _check_path(image, folder, allow_external, where)
        if path not in infos:
            infos[path] = inspect_image(_read_bounded(path, image), image)
        info = infos[path]
        rel = os.path.relpath(path, folder) if not Path(image).is_absolute() else str(path)
        return ImageRecord(id=project._fresh_id(), file=Path(rel).as_posix(),
                           name=_display_name(path.name), size=info.size,
                           content_hash=info.content_hash, role=role)

    for i, entry in enumerate(entries):
        record = record_for(entry.image, f"training_data[{i}]", "example")
        project.images.append(record)
        prompts = [Prompt(geometry.clip_xyxy(b.xyxy, record.size), b.cls, b.negative)
                   for b in entry.boxes]
        project.set_prompt_boxes(record.id, [p for p in prompts
                                             if geometry.area_xyxy(p.xyxy) > 0])
    for i, query in enumerate(queries):
        project.images.append(record_for(query, f"query_images[{i}]", "query"))
    project._check_images(project.images)
    return project


# ------------------------------------------------------------------------------- the writer
def save_project(project: Project, folder: str | os.PathLike | None = None, *,
                 if_unchanged: bool = False) -> Path:
    """Write ``project.json`` atomically (temp file, fsync, rename) and keep the previous one as
    ``project.json.bak``; temp files left by a crashed save are removed. Images that live
    outside the folder (an old-form project read in place) are copied into ``images/`` first.
    Holds the folder's lock, so two writers never interleave. Returns the file written.

    ``if_unchanged``: refuse with `ProjectChangedError` when another writer changed the project
    on disk since this `Project` last read or wrote it (`changed_on_disk`)."""
    from filelock import FileLock, Timeout

    target = Path(folder) if folder is not None else project._require_folder("saving")
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    state = getattr(project, "_journal", None)
    if state is not None and state.folder != target:
        state = None
    try:
        with state.lock if state is not None else _NO_LOCK, \
                FileLock(str(target / LOCK_FILE), timeout=30):
            if if_unchanged and state is not None:
                _check_disk(project, state)
            seq = state.seq if state is not None else 0
            final = _save_locked(project, target, seq)
            journal.remove_journal(target)
            if state is not None:
                state.generation += 1
            project._journal = _JournalState(
                folder=target, seq=seq, size=0, ends=[], base=_snapshot(project),
                file_bytes=final.stat().st_size, file_version=FORMAT_VERSION,
                generation=state.generation if state is not None else 0,
                lock=state.lock if state is not None else threading.Lock(),
                stamp=_disk_stamp(target))
            return final
    except Timeout:
        raise ProjectError(f"{target}: another program holds the project's lock ({LOCK_FILE}) "
                           "for more than 30 s; close it, or delete the lock file if none "
                           "runs.") from None


def _save_locked(project: Project, target: Path, seq: int = 0) -> Path:
    for leftover in target.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    source = project.folder.resolve() if project.folder is not None else None
    images = project.images  # one snapshot: the methods replace lists, never change them
    adopted: list[ImageRecord] = []
    for record in images:
        rel = record.file
        if source != target or not _local(rel, IMAGES_DIR):  # not (yet) one of ours: copy it
            path = (source / rel).resolve() if source is not None else Path(rel).resolve()
            if not path.is_file():
                raise ProjectError(f"image {record.id!r}: its file {path} is missing; remove "
                                   "the image or put the file back.")
            suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_FORMATS.values() \
                else inspect_image(_read_bounded(path, record.name), record.name).suffix
            rel = f"{IMAGES_DIR}/{record.content_hash}{suffix}"
            dest = target / rel
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        adopted.append(dataclasses.replace(record, file=rel) if rel != record.file else record)
    for entry in project.imported:  # prompt files are always ours: copy them along
        if source is not None and source != target and not (target / entry.file).is_file():
            src = source / entry.file
            if not src.is_file():
                raise ProjectError(f"imported prompt {entry.name!r}: its file {src} is missing; "
                                   "import it again.")
            (target / entry.file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target / entry.file)
    if any(a is not r for a, r in zip(adopted, images, strict=True)) or source != target:
        project.images = adopted  # otherwise untouched: an edit made meanwhile is not undone
        project.folder = target
    project.version = FORMAT_VERSION
    final = _write_file(target, project.to_dict(adopted), seq)
    _remove_unused_prompts(target, project.imported)
    return final


def _write_file(target: Path, content: dict[str, Any], seq: int,
                replace: Any = None) -> Path:
    """Write project.json atomically (temp file, fsync, rename, fsync of the folder), the
    previous one kept as the backup; ``seq``: the last journal line it includes. ``replace``
    (a context manager) is held around the rename only (compaction writes without the lock)."""
    text = json.dumps({**content, "journal_seq": seq}, indent=2, ensure_ascii=False) + "\n"
    final = target / PROJECT_FILE
    with (synced_temp(final, text.encode("utf-8"), _TMP_PREFIX, _TMP_SUFFIX) as tmp,
          replace if replace is not None else _NO_LOCK as go):
        if go is False:  # the compaction was overtaken by a full save
            return final
        if final.is_file():
            _keep_backup(final, target / BACKUP_FILE)
        os.replace(tmp, final)
        fsync_dir(target)
    return final


# ------------------------------------------------------------------------------- the journal
_NO_LOCK = contextlib.nullcontext()
#: A journal is compacted into project.json once it is this large (or a quarter of the file).
COMPACT_MIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Snapshot:
    """What was last written (file or journal): the top-level keys, the records by id (the
    same objects: records are immutable, so `is` tells an untouched one) and their order."""

    head: dict[str, Any]
    records: dict[str, ImageRecord]
    order: tuple[str, ...]


@dataclass
class _JournalState:
    """Per project and folder: the journal's last seq, its valid size, where each line ends,
    and the state it holds (`_Snapshot`). ``lock`` orders appends, compaction and full saves
    (always taken before the folder's file lock)."""

    folder: Path
    seq: int
    size: int
    ends: list[tuple[int, int]]
    base: _Snapshot
    file_bytes: int
    file_version: int
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    compactor: threading.Thread | None = None
    #: `_disk_stamp` of the folder right after this project last read or wrote it
    stamp: tuple | None = None


def _disk_stamp(folder: Path) -> tuple:
    """(inode, size, mtime_ns) of project.json and of the journal (None: missing): any other
    writer's save (a rename: a new inode; an append: a new size) changes it."""
    def one(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    return one(folder / PROJECT_FILE), one(folder / journal.JOURNAL_FILE)


def _disk_content(folder: Path) -> tuple[Any, journal.JournalRead] | None:
    """project.json with its journal applied, as a comparable value (top-level keys, image
    records), and the journal read; None when it cannot be read."""
    try:
        data = read_json(folder / PROJECT_FILE)
        if not isinstance(data, dict):
            return None
        read = journal.read_journal(folder, limits.current().max_project_json_bytes)
        journal.apply_lines(data, read.lines)
    except (OwlError, OSError):
        return None
    head = {k: v for k, v in data.items() if k not in journal.DERIVED_KEYS}
    return (head, data.get("images")), read


def _comparable(base: _Snapshot) -> Any:
    images = [base.records[i].to_dict() for i in base.order]
    return json.loads(json.dumps((base.head, images), ensure_ascii=False))


def _check_disk(project: Project, state: _JournalState) -> None:
    """Under the folder's lock: raise `ProjectChangedError` when the project on disk is no
    longer what ``state`` last read or wrote (another tab or process saved it). A different
    stamp with the same content (a compaction by another `Project` of this folder, a rewrite
    of the same state) is no change: the journal's position is read again so the next line
    goes after the lines on disk."""
    stamp = _disk_stamp(state.folder)
    if state.stamp is None or stamp == state.stamp:
        return
    found = _disk_content(state.folder)
    if found is None:
        return  # unreadable: ours is the better copy (the full save below replaces it)
    content, read = found
    if json.loads(json.dumps(list(content), ensure_ascii=False)) != _comparable(state.base):
        raise ProjectChangedError(
            f"{state.folder.name}: the project was changed on disk by another tab, window or "
            "program since this one read it; not saved over it. Reload to continue from the "
            "saved project.")
    state.generation += 1  # a compaction under way was made for the old journal: void
    state.seq = max(read.lines[-1][0] if read.lines else 0, _file_seq(state.folder))
    state.size, state.ends = read.valid_bytes, list(read.ends)
    state.file_bytes = stamp[0][1] if stamp[0] else 0
    state.stamp = stamp


def _file_seq(folder: Path) -> int:
    try:
        seq = read_json(folder / PROJECT_FILE).get("journal_seq", 0)
    except (OwlError, OSError, AttributeError):
        return 0
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def changed_on_disk(project: Project) -> bool:
    """Whether another writer changed the project on disk since this `Project` last read or
    wrote it (its own journal appends and compactions are no change)."""
    from filelock import FileLock

    state = getattr(project, "_journal", None)
    if state is None:
        return False
    with state.lock, FileLock(str(state.folder / LOCK_FILE), timeout=30):
        try:
            _check_disk(project, state)
        except ProjectChangedError:
            return True
    return False


def unsaved_changes(project: Project) -> bool:
    """Whether the project differs from what it last read or wrote (cheap: records are
    compared by identity first)."""
    state = getattr(project, "_journal", None)
    if state is None or project.folder is None or state.folder != project.folder.resolve():
        return True
    with state.lock:
        return _diff(state.base, project)[0] is not None


def _snapshot(project: Project) -> _Snapshot:
    head = {k: v for k, v in project.to_dict(images=()).items()
            if k not in journal.DERIVED_KEYS}
    images = project.images
    return _Snapshot(head, {r.id: r for r in images}, tuple(r.id for r in images))


def _diff(base: _Snapshot, project: Project) -> tuple[dict[str, Any] | None, _Snapshot]:
    """The journal line that turns ``base`` into the project now (None: nothing changed)."""
    now = _snapshot(project)
    line: dict[str, Any] = {}
    head = {k: v for k, v in now.head.items() if base.head.get(k) != v}
    if head:
        line["head"] = head
    changed = [r for r in project.images
               if base.records.get(r.id) is not r and base.records.get(r.id) != r]
    if changed:
        line["images"] = [r.to_dict() for r in changed]
    removed = [i for i in base.order if i not in now.records]
    if removed:
        line["removed"] = removed
    expected = [i for i in base.order if i in now.records] + \
        [i for i in now.order if i not in base.records]
    if list(now.order) != expected:
        line["order"] = list(now.order)
    return (line or None), now


def save_changes(project: Project, *, if_unchanged: bool = False) -> Path:
    """Save what changed since the project was last loaded or saved, as one fsynced line of
    ``project.journal`` (see `owl_core.project.journal`): the cost follows the change, not
    the project, so the work a kill -9 can lose is what changed since the last call. The
    journal is compacted into project.json by a background thread once it outgrows
    `COMPACT_MIN_BYTES` (or a quarter of the file); `compact_project` does it now (call it when
    the project is closed). Falls back to `save_project` for a project that has never been
    written to its folder, holds images not copied in yet, or whose file is an older version.
    ``if_unchanged``: as `save_project`'s (checked under the folder's lock, so a writer in
    another process cannot slip in between). Returns the file written."""
    from filelock import FileLock, Timeout

    folder = project._require_folder("saving").resolve()
    while True:
        state = getattr(project, "_journal", None)
        if state is None or state.folder != folder or state.file_version != FORMAT_VERSION:
            return save_project(project, if_unchanged=if_unchanged)
        with state.lock:
            if project._journal is not state:  # a full save replaced it meanwhile: again
                continue
            line, now = _diff(state.base, project)
            if line is None:
                return folder / journal.JOURNAL_FILE
            if any(not _local(d["file"], IMAGES_DIR) for d in line.get("images", [])):
                break  # images to copy in first: a full save (below, without the lock)
            try:
                with FileLock(str(folder / LOCK_FILE), timeout=30):
                    if if_unchanged:
                        _check_disk(project, state)
                    line["seq"] = state.seq + 1
                    data = journal.encode_line(line)
                    state.size = journal.append_line(folder, data, state.size)
                    state.stamp = _disk_stamp(folder)
            except Timeout:
                raise ProjectError(f"{folder}: another program holds the project's lock "
                                   f"({LOCK_FILE}) for more than 30 s.") from None
            state.seq += 1
            state.ends.append((state.seq, state.size))
            state.base = now
            if _compact_due(state) and (state.compactor is None
                                        or not state.compactor.is_alive()):
                state.compactor = threading.Thread(target=_compact, args=(state,),
                                                   name="owl-project-compact", daemon=True)
                state.compactor.start()
            return folder / journal.JOURNAL_FILE
    return save_project(project, if_unchanged=if_unchanged)


def _compact_due(state: _JournalState) -> bool:
    """Whether the journal has grown enough to fold into project.json (replaying it on open
    then costs at most about a quarter of reading the file)."""
    return state.size > max(COMPACT_MIN_BYTES, state.file_bytes // 4)


def compact_project(project: Project) -> Path:
    """Write everything into project.json now and drop the journal (waits for a running
    background compaction first). Call when a project is closed."""
    state = getattr(project, "_journal", None)
    if state is not None and state.compactor is not None:
        state.compactor.join()
    return save_project(project)


def compact_in_background(project: Project) -> threading.Thread | None:
    """Fold the journal into project.json on a background thread when it holds any line (a
    project being closed: its next open reads one file). Returns the thread (None: nothing to
    fold, or one already running). Loses nothing if the process ends meanwhile: the journal
    stays until the new project.json is in place."""
    state = getattr(project, "_journal", None)
    if state is None:
        return None
    with state.lock:
        if state.size == 0 or (state.compactor is not None and state.compactor.is_alive()):
            return None
        state.compactor = threading.Thread(target=_compact, args=(state,),
                                           name="owl-project-compact", daemon=True)
        state.compactor.start()
        return state.compactor


def _compact(state: _JournalState) -> None:
    """Background: write the state of the journal's last line into project.json without
    holding the folder's lock (appends go on meanwhile), then, holding it, swap the file in
    and keep only the lines written since."""
    import logging

    from filelock import FileLock

    with state.lock:
        seq, base, end, generation = state.seq, state.base, state.size, state.generation
    images = [base.records[i] for i in base.order]
    content = {**base.head, "images": [r.to_dict() for r in images], **_derived(images)}

    @contextlib.contextmanager
    def swap() -> Iterator[bool]:
        with state.lock:
            if state.generation != generation:  # a full save came first: it holds more
                yield False
                return
            with FileLock(str(state.folder / LOCK_FILE), timeout=30):
                if state.stamp is not None and _disk_stamp(state.folder) != state.stamp:
                    yield False  # another writer saved meanwhile: never swap over its work
                    return
                yield True
                state.size = journal.keep_tail(state.folder, end, state.size)
                state.ends = [(s, e - end) for s, e in state.ends if s > seq]
                state.file_bytes = (state.folder / PROJECT_FILE).stat().st_size
                state.stamp = _disk_stamp(state.folder)

    if not (state.folder / PROJECT_FILE).is_file():
        return  # the project was deleted meanwhile: nothing to fold
    try:
        _write_file(state.folder, content, seq, replace=swap())
    except Exception:  # noqa: BLE001 -- the journal still holds every change; say so
        if not (state.folder / PROJECT_FILE).is_file():
            return  # the project was deleted meanwhile: nothing was lost
        logging.getLogger(__name__).exception("compacting %s failed; its journal is kept",
                                              state.folder)


def _remove_unused_prompts(folder: Path, imported: Sequence[ImportedPrompt]) -> None:
    """Delete prompt files the saved project no longer lists (after the save: the file on
    disk never names a missing one)."""
    used = {entry.file for entry in imported}
    for path in (folder / PROMPTS_DIR).glob("*.pt"):
        if f"{PROMPTS_DIR}/{path.name}" not in used:
            path.unlink(missing_ok=True)


def _keep_backup(current: Path, backup: Path) -> None:
    """``backup`` becomes a copy of ``current`` (a hard link where possible), atomically."""
    if backup.is_file() and os.path.samefile(current, backup):
        return  # an interrupted save already linked it
    tmp = backup.with_name(f"{_TMP_PREFIX}bak-{secrets.token_hex(4)}{_TMP_SUFFIX}")
    try:
        os.link(current, tmp)
    except OSError:
        shutil.copyfile(current, tmp)
    os.replace(tmp, backup)
    tmp.unlink(missing_ok=True)  # rename() between two links to one file leaves the source




# ------------------------------------------------------------------------------- training files
def read_training_file(path: str | os.PathLike) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Training data and class order from a file: a project folder or ``project.json`` (either
    form), or a bare reference-schema list. Relative image paths resolve from the file's folder;
    strings that are no file there (base64 data) are passed on as they are.

    Returns:
        (reference-schema training data with absolute image paths, classes or None)
    """
    file = project_file(path)
    data = read_json(file, "training data")
    if isinstance(data, list):  # a bare list may hold base64 images: resolve only real files
        out = []
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("image"), str):
                image = entry["image"]
                candidate = file.parent / image
                if (len(image) < 4096 and not os.path.isabs(image)
                        and not image.lstrip().startswith("data:") and candidate.is_file()):
                    entry = {**entry, "image": str(candidate.resolve())}
            out.append(entry)
        return out, None
    if isinstance(data, dict) and file.name == PROJECT_FILE and "version" in data:
        journal.apply_lines(data, journal.read_journal(
            file.parent, limits.current().max_project_json_bytes).lines)  # saved since
    project = project_from_dict(data, file.parent, allow_external=True, source=str(file))
    return project.training_data(), list(project.classes)
