"""`.pt` export and import, compatible with Roboflow Inference's `SerializedOwlV2`.

The file is a plain dict of tensors, strings, numbers, lists, tuples and None, so it loads with
``torch.load(weights_only=True)``: a file from someone else is data, never code (reference
defect 5). Our own metadata lives under one extra key, ``"owl_studio"``, which the reference
ignores.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from owl_core.embedding import ImageEmbeddings
from owl_core.errors import PtFormatError
from owl_core.matching import Exemplars, ExemplarSource

FORMAT_VERSION = 1
META_KEY = "owl_studio"
#: Refuse files larger than this many bytes (OWL_MAX_PT_BYTES), before unpickling anything.
MAX_PT_BYTES = int(os.environ.get("OWL_MAX_PT_BYTES", 4 * 1024**3))
_REQUIRED = ("huggingface_id", "class_names", "train_data_dict")


def _read_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; done once, at import
    os.umask(mask)
    return mask


#: Mode of written files: what open() would give (mkstemp alone makes them owner-only).
_FILE_MODE = 0o666 & ~_read_umask()




@dataclass(frozen=True)
class SerializedPrompts:
    """The validated content of a `.pt` file.

    Attributes:
        huggingface_id: model the embeddings belong to.
        roboflow_id: free-form id kept for Roboflow compatibility.
        exemplars: class names and exemplar embeddings (with provenance when we wrote it).
        image_embeds: content hash -> top-K embeddings (only entries whose size is known).
        meta: our metadata dict (empty for files written by other tools).
    """

    huggingface_id: str
    roboflow_id: str
    exemplars: Exemplars
    image_embeds: dict[str, ImageEmbeddings] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def canonical_order(exemplars: Exemplars) -> Exemplars:
    """Rows ordered class by class, positives first: the order `train_data_dict` implies."""
    if len(exemplars) == 0:
        return exemplars
    key = exemplars.class_ids.cpu() * 2 + exemplars.negative.cpu().long()
    order = torch.sort(key, stable=True).indices
    sources = tuple(exemplars.sources[i] for i in order.tolist()) if exemplars.sources else ()
    return Exemplars(exemplars.class_names, exemplars.embeds.cpu()[order],
                     exemplars.class_ids.cpu()[order], exemplars.negative.cpu()[order], sources)


def build_payload(
    *,
    huggingface_id: str,
    exemplars: Exemplars,
    image_embeds: dict[str, ImageEmbeddings] | None,
    meta: dict[str, Any],
    roboflow_id: str = "",
) -> dict[str, Any]:
    """The dict written to disk. `image_embeds=None` gives the "small" variant."""
    ordered = canonical_order(exemplars)
    embeds = image_embeds or {}
    full_meta = dict(meta)
    full_meta.update({
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exemplars": [
            {"image_hash": s.image_hash, "box_xyxy": [float(v) for v in s.box_xyxy],
             "cls": s.cls, "negative": bool(s.negative), "iou": float(s.iou)}
            for s in ordered.sources
        ],
        "image_sizes": {h: [int(e.image_size[0]), int(e.image_size[1])]
                        for h, e in embeds.items()},
    })
    return {
        "huggingface_id": huggingface_id,
        "roboflow_id": roboflow_id,
        "class_names": list(ordered.class_names),
        "train_data_dict": ordered.to_train_data_dict(),
        "image_embeds": {h: tuple(t.detach().cpu().clone() for t in e.reference_tuple())
                         for h, e in embeds.items()},
        META_KEY: full_meta,
    }


def save_pt(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temp file + rename in the same folder): a crash or a concurrent
    export never leaves a half-written file at `path` (reference defect 6)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_pt(path: str | Path) -> SerializedPrompts:
    """Load and validate a `.pt` with ``weights_only=True``.

    Raises:
        PtFormatError: missing/unreadable file, a pickle that needs code to load (refused,
            never run), or a structure that is not a serialized OWLv2 prompt set.
    """
    path = Path(path)
    if not path.is_file():
        raise PtFormatError(f"{path}: no such file.")
    size = path.stat().st_size
    if size > MAX_PT_BYTES:
        raise PtFormatError(f"{path}: {size:,} bytes is over the {MAX_PT_BYTES:,}-byte limit; "
                            "raise it with the environment variable OWL_MAX_PT_BYTES if the file "
                            "is expected to be this large.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _needed_code(str(exc))
        if code is None:  # not a pickle of ours at all (text, random bytes, ...)
            raise PtFormatError(f"{path}: not a readable .pt file (corrupt, or not a .pt at "
                                "all). Export it again.") from exc
        raise PtFormatError(
            f"{path}: refused to load: the file needs code or classes ({code}) that a prompt "
            "export never contains, so it was not loaded and nothing in it ran. Only load .pt "
            "files exported by this studio or Roboflow's OwlV2."
        ) from exc
    except Exception as exc:  # truncated zip, wrong format, ...
        detail = " ".join(str(exc).split())[:300]
        raise PtFormatError(f"{path}: not a readable .pt file ({type(exc).__name__}: {detail}). "
                            "Export it again.") from exc
    return parse_payload(raw, str(path))


def _needed_code(message: str) -> str | None:
    """The global/class a weights-only unpickling refused, or None when the failure was not
    about code (e.g. "Unsupported operand": the bytes are no pickle at all). torch's own message
    suggests weights_only=False, which is exactly what must not be done, so it isn't shown."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", message, re.S)
    if detail and re.search(r"global|class|reduce|build", detail.group(1), re.I):
        return " ".join(detail.group(1).split())[:200]
    return None


def parse_payload(raw: Any, label: str = "payload") -> SerializedPrompts:
    """Validate the structure of a loaded payload; see `load_pt`."""
    def fail(msg: str) -> PtFormatError:
        return PtFormatError(f"{label}: {msg}. This is not a valid serialized OWLv2 prompt set; "
                             "export it again (python -m owl_core export, or Export in the app).")

    if not isinstance(raw, dict):
        raise fail(f"expected a dict, got {type(raw).__name__}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise fail(f"missing keys {missing}")
    hf_id = raw["huggingface_id"]
    if not isinstance(hf_id, str) or not hf_id:
        raise fail("'huggingface_id' must be a non-empty string")
    names = raw["class_names"]
    if not isinstance(names, (list, tuple)) or not all(
            isinstance(n, str) and n.strip() for n in names):
        raise fail("'class_names' must be a list of non-empty strings")
    if len(set(names)) != len(names):
        raise fail("'class_names' has duplicates")
    tdd = raw["train_data_dict"]
    if not isinstance(tdd, dict):
        raise fail("'train_data_dict' must be a dict")
    dim = None
    for cls, entry in tdd.items():
        if cls not in names:
            raise fail(f"train_data_dict has class {cls!r} that is not in class_names")
        if not isinstance(entry, dict):
            raise fail(f"train_data_dict[{cls!r}] must be a dict with 'positive'/'negative'")
        for key in ("positive", "negative"):
            t = entry.get(key)
            if t is None:
                continue
            if not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.is_floating_point():
                raise fail(f"train_data_dict[{cls!r}][{key!r}] must be a float (N, D) tensor or "
                           f"None, got {_describe(t)}")
            if not torch.isfinite(t).all():
                raise fail(f"train_data_dict[{cls!r}][{key!r}] holds NaN/inf")
            if dim is None:
                dim = t.shape[1]
            elif t.shape[1] != dim:
                raise fail(f"exemplar dims disagree ({t.shape[1]} vs {dim})")
    meta = raw.get(META_KEY)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise fail(f"'{META_KEY}' must be a dict")
    sources = _parse_sources(meta.get("exemplars") or [], fail)
    exemplars = Exemplars.from_train_data_dict(list(names), tdd, sources)
    if len(exemplars) and dim is not None:
        exemplars = Exemplars(exemplars.class_names, exemplars.embeds.reshape(-1, dim),
                              exemplars.class_ids, exemplars.negative, exemplars.sources)
    image_embeds = raw.get("image_embeds")
    image_embeds = _parse_image_embeds({} if image_embeds is None else image_embeds, meta, dim,
                                       fail)
    roboflow_id = raw.get("roboflow_id") or ""
    return SerializedPrompts(hf_id, str(roboflow_id), exemplars, image_embeds, meta)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _parse_sources(items: Any, fail) -> tuple[ExemplarSource, ...]:
    if not isinstance(items, list):
        raise fail("exemplar provenance must be a list")
    out = []
    for item in items:
        try:
            box = tuple(float(v) for v in item["box_xyxy"])
            if len(box) != 4:
                raise ValueError(f"box_xyxy has {len(box)} values, expected 4")
            out.append(ExemplarSource(str(item["image_hash"]), box, str(item["cls"]),
                                      bool(item["negative"]), float(item["iou"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise fail(f"bad exemplar provenance entry ({exc})") from None
    return tuple(out)


def _parse_image_embeds(raw: Any, meta: dict, dim: int | None, fail) -> dict[str, ImageEmbeddings]:
    if not isinstance(raw, dict):
        raise fail("'image_embeds' must be a dict")
    sizes = meta.get("image_sizes") or {}
    if not isinstance(sizes, dict):
        raise fail("image sizes must be a dict")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise fail("image_embeds keys must be strings")
        if not isinstance(value, (tuple, list)) or len(value) != 5 or not all(
                isinstance(t, torch.Tensor) for t in value):
            raise fail(f"image_embeds[{key!r}] must be a 5-tuple of tensors (objectness, boxes, "
                       "class_embeds, logit_shift, logit_scale)")
        obj, boxes, embeds, shift, scale = (t.float() for t in value)
        k = obj.shape[0] if obj.ndim == 1 else -1
        if (k < 0 or boxes.shape != (k, 4) or embeds.ndim != 2 or embeds.shape[0] != k
                or shift.reshape(-1).shape[0] != k or scale.reshape(-1).shape[0] != k):
            raise fail(f"image_embeds[{key!r}] tensors have inconsistent shapes "
                       f"{[tuple(t.shape) for t in value]}; expected (K,), (K, 4), (K, D), (K,), "
                       "(K,)")
        if dim is not None and embeds.shape[1] != dim:
            raise fail(f"image_embeds[{key!r}] embedding dim {embeds.shape[1]} != exemplar dim {dim}")
        if not all(torch.isfinite(t).all() for t in (obj, boxes, embeds, shift, scale)):
            raise fail(f"image_embeds[{key!r}] holds NaN/inf")
        size = sizes.get(key)
        if size is None:
            continue  # foreign cache entry: without its image size the boxes can't be placed
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                           for v in size)):
            raise fail(f"image size of {key!r} must be [width, height] in pixels, got {size!r}")
        out[key] = ImageEmbeddings(obj, boxes, embeds, shift.reshape(-1), scale.reshape(-1),
                                   image_size=(int(size[0]), int(size[1])))
    return out
