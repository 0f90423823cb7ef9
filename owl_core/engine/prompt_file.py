"""`.pt` export and import, compatible with Roboflow Inference's `SerializedOwlV2`.

The file is a plain dict of tensors, strings, numbers, lists, tuples and None, so it loads with
``torch.load(weights_only=True)``: a file from someone else is data, never code (reference
defect 5). Our own metadata lives under one extra key, ``"owl_studio"``, which the reference
ignores. ``class_names`` are written sorted (both Roboflow loaders then agree on class ids);
our class order is kept in the metadata. Text phrases are rows like exemplars (their embedding
in ``train_data_dict``) marked in our metadata's provenance (``"phrase"``), so a phrase-only
class detects in Roboflow Inference too (as one more exemplar: our "max" combine mode).

Loading treats the file as hostile: the archive's declared sizes are checked before anything
is unpacked, every value is type-checked after, bounds come from `owl_core.limits`, and every
refusal is a `PtFormatError` naming the file (never its folder).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from owl_core import limits
from owl_core.durable import atomic_write
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars, ExemplarSource
from owl_core.errors import PtFormatError, SettingsError
from owl_core.limits import PtLimitError
from owl_core.naming import stored_class_names
from owl_core.params import DetectParams
from owl_core.phrases import check_phrase

#: 1 = boxes only; 2 = phrases too: a phrase's embedding is a row of ``train_data_dict`` (a
#: positive, or a negative for a negative phrase, so Roboflow's loaders use it as one more
#: exemplar) and its provenance entry in our metadata carries ``"phrase"``. Version 1 files load.
FORMAT_VERSION = 2
META_KEY = "owl_studio"
_REQUIRED = ("huggingface_id", "class_names", "train_data_dict")
#: Roboflow Inference's own cache class, pickled by its older exports for ``image_embeds``
#: (``inference/models/owlv2/owlv2.py``): an ``OrderedDict`` subclass with a ``size_limit``.
#: The weights-only loader maps exactly this name to ``OrderedDict``: data, never its code.
ROBOFLOW_LIMITED_SIZE_DICT = "inference.models.owlv2.owlv2.LimitedSizeDict"
#: How far an exemplar / image embedding row's L2 norm may stray from 1 (fp16 storage, the
#: reference's +1e-6 in the denominator) before the file is refused; within it rows are
#: renormalised, so reference scores (cos + 1) / 2 stay in [0, 1].
NORM_TOLERANCE = 0.02
#: Rows this close to unit norm are kept bit for bit (an export loads back exactly).
_EXACT_NORM = 1e-5
#: Most characters of the ids and of the project name a file may carry.
MAX_ID_CHARS = 200
#: Deepest nesting of containers accepted in a file (ours is 4 deep).
MAX_DEPTH = 16
#: A temp file of ours not written to for this long was left by a crashed save.
STALE_TMP_SECONDS = 600.0
_TMP_MARK = ".owl-"
_TMP_SUFFIX = ".tmp"
_TMP_RE = re.compile(r"^\..*\.owl-[A-Za-z0-9_]+\.tmp$")
#: The settings keys of ours that a file may carry besides `DetectParams`' fields.
_SETTINGS_EXTRA = ("project",)


def _allow_roboflow_classes() -> None:
    """Allow-list Roboflow's `LimitedSizeDict` as a plain `OrderedDict` (on every load: a set
    entry, so idempotent, and back even if something cleared torch's safe globals).

    torch's weights-only unpickler only fills exact dict / OrderedDict / Counter objects with
    items, so the name maps to `OrderedDict` itself; its ``size_limit`` lands in the
    instance ``__dict__`` and is ignored. Nothing of Roboflow's is imported or run."""
    torch.serialization.add_safe_globals([(OrderedDict, ROBOFLOW_LIMITED_SIZE_DICT)])


def public_model_id(model_id: str) -> str:
    """The model id as a stranger may see it: a hub id (``org/name``) as it is, a local
    checkpoint folder by its name only, so `.pt` files handed out and ``GET /weights`` never
    show the server's folders."""
    text = str(model_id).replace("\\", "/").rstrip("/")
    local = (text.startswith(("/", "~", ".")) or ":" in text.split("/", 1)[0]
             or text.count("/") > 1 or Path(text).expanduser().exists())
    return (text.rsplit("/", 1)[-1] or "model") if local else text


def default_roboflow_id(huggingface_id: str) -> str:
    """The id Roboflow's `SerializedOwlV2` needs: ``owlv2/<model name>``, as its own exporter
    derives it (``google/X`` -> ``owlv2/X``); it then loads ``google/<model name>``."""
    name = huggingface_id.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1] or "model"
    return f"owlv2/{name}"[:MAX_ID_CHARS]


def _check_id(value: Any, what: str, fail: Callable[[str], PtFormatError]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what!r} must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise fail(f"{what!r} has {len(value):,} characters; at most {MAX_ID_CHARS} are "
                   "accepted")
    return value


@dataclass(frozen=True)
class SerializedPrompts:
    """The validated content of a `.pt` file.

    Attributes:
        huggingface_id: model the embeddings belong to.
        roboflow_id: id Roboflow's loader needs (``owlv2/<model name>``); "" if absent.
        exemplars: class names (our class order when the file has it) and exemplar
            embeddings (unit rows, with provenance when we wrote it).
        image_embeds: content hash -> top-K embeddings (only entries whose size is known).
            Data from the file's author: keep them with these prompts, never in a shared cache.
        meta: our metadata dict (empty for files written by other tools); its "settings" hold
            only validated detection settings (and the project name).
        settings: the validated detection settings the file carries, or None.
    """

    huggingface_id: str
    roboflow_id: str
    exemplars: Exemplars
    image_embeds: dict[str, ImageEmbeddings] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    settings: DetectParams | None = None


def canonical_order(exemplars: Exemplars) -> Exemplars:
    """Rows ordered class by class, positives first: the order `train_data_dict` implies."""
    if len(exemplars) == 0:
        return exemplars
    key = exemplars.class_ids.cpu() * 2 + exemplars.negative.cpu().long()
    order = torch.sort(key, stable=True).indices
    sources = tuple(exemplars.sources[i] for i in order.tolist()) if exemplars.sources else ()
    return Exemplars(exemplars.class_names, exemplars.embeds.cpu()[order],
                     exemplars.class_ids.cpu()[order], exemplars.negative.cpu()[order], sources)


def _with_class_order(exemplars: Exemplars, names: list[str]) -> Exemplars:
    """The same rows with class ids renumbered for `names` (a permutation of the classes)."""
    remap = torch.tensor([names.index(n) for n in exemplars.class_names], dtype=torch.long)
    ids = remap[exemplars.class_ids.cpu()] if len(exemplars) else exemplars.class_ids.cpu()
    return Exemplars(tuple(names), exemplars.embeds, ids, exemplars.negative, exemplars.sources)


def build_payload(
    *,
    huggingface_id: str,
    exemplars: Exemplars,
    image_embeds: dict[str, ImageEmbeddings] | None,
    meta: dict[str, Any],
    roboflow_id: str | None = None,
) -> dict[str, Any]:
    """The dict written to disk. `image_embeds=None` gives the "small" variant.

    ``class_names`` (and ``train_data_dict``) are SORTED: Roboflow's newer loader numbers
    classes through the sorted names, its older one in file order, so sorted reads the same
    in both. Our own class order is kept in ``meta["class_order"]`` and restored by `load_pt`.
    An empty `roboflow_id` becomes `default_roboflow_id` (Roboflow's loader refuses "").
    """
    order = list(exemplars.class_names)
    ordered = canonical_order(_with_class_order(exemplars, sorted(order)))
    rf_id = roboflow_id.strip() if isinstance(roboflow_id, str) else ""
    rf_id = rf_id or default_roboflow_id(huggingface_id)
    if len(rf_id) > MAX_ID_CHARS:
        raise SettingsError(f"roboflow_id has {len(rf_id):,} characters; at most "
                            f"{MAX_ID_CHARS} are accepted.")
    embeds = image_embeds or {}
    full_meta = dict(meta)
    full_meta.update({
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "class_order": order,
        "exemplars": [
            {"image_hash": s.image_hash, "box_xyxy": [float(v) for v in s.box_xyxy],
             "cls": s.cls, "negative": bool(s.negative), "iou": float(s.iou),
             **({"phrase": s.phrase} if s.phrase else {})}
            for s in ordered.sources
        ],
        "image_sizes": {h: [int(e.image_size[0]), int(e.image_size[1])]
                        for h, e in embeds.items()},
    })
    return {
        "huggingface_id": huggingface_id,
        "roboflow_id": rf_id,
        "class_names": list(ordered.class_names),
        "train_data_dict": ordered.to_train_data_dict(),
        "image_embeds": {h: tuple(t.detach().cpu().clone() for t in e.reference_tuple())
                         for h, e in embeds.items()},
        META_KEY: full_meta,
    }


def save_pt(payload: dict[str, Any], path: str | Path) -> Path:
    """Write atomically (temp file + rename in the same folder): a crash or a concurrent
    export never leaves a half-written file at `path` (reference defect 6). Temp files of
    ours that a crashed save left in the folder (untouched for `STALE_TMP_SECONDS`) go."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, buffer.getvalue(), prefix=f".{path.name}{_TMP_MARK}", suffix=_TMP_SUFFIX)
    return path


def remove_stale_temp_files(folder: str | Path, max_age: float = STALE_TMP_SECONDS) -> int:
    """Delete `save_pt` temp files in `folder` not written to for `max_age` seconds (a live
    save keeps touching its file); return how many went. Other files are never touched."""
    now = time.time()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _TMP_RE.match(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and \
                    now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # gone meanwhile, or not ours to delete
            continue
    return removed


def load_pt(path: str | Path) -> SerializedPrompts:
    """Load and validate a `.pt` with ``weights_only=True``.

    Before anything is unpickled the file's size and its zip archive's declared contents
    (members, unpacked bytes, compression ratios) are checked against `owl_core.limits`;
    after loading, every tensor. Messages name the file, never its folder (uploads live in
    server temp folders).

    Raises:
        PtFormatError: missing/unreadable file, a pickle that needs code to load (refused,
            never run), a structure that is not a serialized OWLv2 prompt set, or a bound
            exceeded (then also a `LimitError`).
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise PtFormatError(f"{name}: no such file.")
    lim = limits.current()
    lim.check("max_pt_bytes", path.stat().st_size, f"{name}: file size in bytes", PtLimitError)
    if not zipfile.is_zipfile(path):
        _refuse_non_zip(path, name)
    _check_archive(path, name, lim)
    _allow_roboflow_classes()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        code = _needed_code(str(exc)) or _zip_pickle_code(path)
        if code is None:  # not a pickle of ours at all (text, random bytes, ...)
            raise PtFormatError(f"{name}: not a readable .pt file (corrupt, or not a .pt at "
                                "all). Export it again.") from exc
        raise _refused(name, code) from exc
    except Exception as exc:  # truncated zip, wrong format, ...
        detail = " ".join(str(exc).split())[:300]
        raise PtFormatError(f"{name}: not a readable .pt file ({type(exc).__name__}: {detail}). "
                            "Export it again.") from exc
    _check_tree(raw, name, lim)
    return parse_payload(raw, name)


def _refused(name: str, code: str) -> PtFormatError:
    return PtFormatError(
        f"{name}: refused to load: the file needs code or classes ({code}) that a prompt "
        "export never contains, so it was not loaded and nothing in it ran. Only load .pt "
        "files exported by this studio or Roboflow's OwlV2.")


def _refuse_non_zip(path: Path, name: str) -> None:
    """Every file torch.save writes (since torch 1.6) is a zip archive. Anything else is
    refused without torch.load: a bare pickle that names classes or functions is reported as
    needing code (found by reading its opcodes, nothing run); the rest is unreadable."""
    with open(path, "rb") as fh:
        code = _pickle_code(fh)
    if code is not None:
        raise _refused(name, code)
    raise PtFormatError(f"{name}: not a readable .pt file (not the zip archive torch.save "
                        "writes). Export it again.")


#: Globals a weights-only torch pickle may name (tensors, storages, ordered dicts).
_PLAIN_GLOBAL = re.compile(r"^(torch\.[\w.]+|collections\.(OrderedDict|Counter)|"
                           + re.escape(ROBOFLOW_LIMITED_SIZE_DICT) + r")$")


def _pickle_code(fh: Any, *, allowed: re.Pattern[str] | None = None) -> str | None:
    """The first class / function a pickle names (outside `allowed`), read from its opcodes
    without running anything; None for a pickle without any, or bytes that are no pickle."""
    strings: list[str] = []
    try:
        for i, (op, arg, _) in enumerate(pickletools.genops(fh)):
            if i > 1_000_000:
                return None
            code = None
            if op.name in ("GLOBAL", "INST"):
                code = str(arg).replace(" ", ".")
            elif op.name == "STACK_GLOBAL":
                code = ".".join(strings[-2:]) or "a global"
            elif op.name == "OBJ":
                code = "an object built by OBJ"
            elif isinstance(arg, str):
                strings.append(arg[:100])
            if code is not None and (allowed is None or not allowed.match(code)):
                return code
    except Exception:  # noqa: BLE001 -- not (or no longer) a pickle: nothing named so far
        return None
    return None


def _zip_pickle_code(path: Path) -> str | None:
    """What a torch.save archive's pickle needs beyond plain tensors, when torch refused it
    with a message that does not say (e.g. an opcode weights-only loading never accepts)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                return None
            with archive.open(member) as fh:
                return _pickle_code(fh, allowed=_PLAIN_GLOBAL)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _check_archive(path: Path, name: str, lim: limits.Limits) -> None:
    """Refuse zip bombs from the central directory alone: too many members, too many declared
    unpacked bytes, or a member that claims to inflate more than the compression-ratio bound."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise PtFormatError(f"{name}: not a readable .pt file (a broken zip archive: {exc}). "
                            "Export it again.") from None
    lim.check("max_pt_members", len(infos), f"{name}: members in the archive", PtLimitError)
    total = sum(info.file_size for info in infos)
    lim.check("max_pt_unpacked_bytes", total, f"{name}: unpacked bytes", PtLimitError)
    on_disk = path.stat().st_size
    for info in infos:
        if info.filename.endswith(".pkl"):  # structure, not tensor data: objects, not bytes
            lim.check("max_pt_pickle_bytes", info.file_size, f"{name}: bytes of {info.filename}",
                      PtLimitError)
        if info.compress_size > on_disk or (info.compress_type == zipfile.ZIP_STORED
                                            and info.compress_size != info.file_size):
            raise PtFormatError(f"{name}: not a readable .pt file (the archive's sizes of "
                                f"{info.filename} are inconsistent). Export it again.")
        if info.compress_type == zipfile.ZIP_STORED:
            continue
        ratio = info.file_size // max(info.compress_size, 1)
        lim.check("max_pt_compression_ratio", ratio,
                  f"{name}: compression ratio of a member", PtLimitError)


def _check_tree(raw: Any, name: str, lim: limits.Limits) -> None:
    """Walk everything the file holds: bounded nesting, plain dense tensors only, and at
    most `max_pt_tensor_elements` elements in all."""
    elements = 0
    stack: list[tuple[Any, int]] = [(raw, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PtFormatError(f"{name}: containers nested more than {MAX_DEPTH} deep; this "
                                "is not a serialized OWLv2 prompt set. Export it again.")
        if isinstance(node, torch.Tensor):
            if node.layout != torch.strided or node.is_quantized or node.is_meta \
                    or node.is_nested:
                raise PtFormatError(f"{name}: holds a {node.layout} / quantized / meta tensor; "
                                    "prompt exports hold plain dense tensors only. Export it "
                                    "again.")
            elements += node.numel()
        elif isinstance(node, dict):
            stack.extend((k, depth + 1) for k in node)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)
    lim.check("max_pt_tensor_elements", elements, f"{name}: tensor elements", PtLimitError)


def _needed_code(message: str) -> str | None:
    """The global/class a weights-only unpickling refused, or None when the failure was not
    about code (e.g. "Unsupported operand": the bytes are no pickle at all). torch's own message
    suggests weights_only=False, which is exactly what must not be done, so it isn't shown."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    detail = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|$)", message, re.DOTALL)
    if detail and re.search(r"global|class|reduce|build|new object", detail.group(1),
                            re.IGNORECASE):
        return " ".join(detail.group(1).split())[:200]
    return None


def parse_payload(raw: Any, label: str = "payload") -> SerializedPrompts:
    """Validate everything a loaded payload holds; see `load_pt`. Tensors come out detached,
    float32, contiguous, with unit rows; settings as `DetectParams`."""
    def fail(msg: str) -> PtFormatError:
        return PtFormatError(f"{label}: {msg}. This is not a valid serialized OWLv2 prompt set; "
                             "export it again (python -m owl_core export, or Export in the app).")

    lim = limits.current()
    if not isinstance(raw, dict):
        raise fail(f"expected a dict, got {type(raw).__name__}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise fail(f"missing keys {missing}")
    hf_id = _check_id(raw["huggingface_id"], "huggingface_id", fail)
    names = raw["class_names"]
    if not isinstance(names, (list, tuple)):
        raise fail("'class_names' must be a list of non-empty strings")
    lim.check("max_classes", len(names), f"{label}: classes", PtLimitError)
    try:  # the one class-name rule, names kept as written (`naming.stored_class_names`)
        names = stored_class_names(names, "class_names")
    except PtLimitError:
        raise
    except PtFormatError as exc:
        raise fail(str(exc).rstrip(".")) from None
    tdd = raw["train_data_dict"]
    if not isinstance(tdd, dict):
        raise fail("'train_data_dict' must be a dict")
    dim: int | None = None
    clean: dict[str, dict[str, torch.Tensor | None]] = {}
    for cls, entry in tdd.items():
        if not isinstance(cls, str) or cls not in names:
            shown = cls[:60] if isinstance(cls, str) else cls
            raise fail(f"train_data_dict has class {shown!r} that is not in class_names")
        if not isinstance(entry, dict):
            raise fail(f"train_data_dict[{cls!r}] must be a dict with 'positive'/'negative'")
        clean[cls] = {}
        for key in ("positive", "negative"):
            t = entry.get(key)
            if t is not None:
                t = _unit_rows(t, f"train_data_dict[{cls!r}][{key!r}]", "(N, D)", lim, fail,
                               label)
                if dim is None:
                    dim = t.shape[1]
                elif t.shape[1] != dim:
                    raise fail(f"exemplar dims disagree ({t.shape[1]} vs {dim})")
                if not len(t):
                    t = None
            clean[cls][key] = t
    meta = raw.get(META_KEY)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise fail(f"'{META_KEY}' must be a dict")
    meta = _clean_meta(meta, fail)
    sources = _parse_sources(meta.get("exemplars", []), fail)
    exemplars = Exemplars.from_train_data_dict(names, clean, sources)
    if len(exemplars) and dim is not None:
        exemplars = Exemplars(exemplars.class_names, exemplars.embeds.reshape(-1, dim),
                              exemplars.class_ids, exemplars.negative, exemplars.sources)
    order = meta.get("class_order")
    if order is not None:
        if not isinstance(order, list) or sorted(order, key=str) != sorted(names) \
                or not all(isinstance(n, str) for n in order):
            raise fail("our class order is not a permutation of 'class_names'")
        exemplars = _with_class_order(exemplars, order)
    settings = _parse_settings(meta, fail)
    image_embeds = raw.get("image_embeds")
    image_embeds = _parse_image_embeds({} if image_embeds is None else image_embeds, meta, dim,
                                       lim, fail, label)
    roboflow_id = raw.get("roboflow_id")
    roboflow_id = "" if roboflow_id in (None, "") else _check_id(roboflow_id, "roboflow_id", fail)
    return SerializedPrompts(hf_id, roboflow_id, exemplars, image_embeds, meta, settings)


#: Our metadata keys with a fixed plain type; other keys of ours are parsed on their own.
_META_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "created": (str,), "input_size": (int,),
    "pad_value": (int, float), "preprocessing": (str,), "top_k": (int,),
    "match_threshold": (int, float), "fingerprint": (str,), "transformers_version": (str,),
    "torch_version": (str,),
}
_META_STRUCTURED = ("exemplars", "image_sizes", "class_order", "settings")
_MAX_META_TEXT = 1000


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clean_meta(meta: dict, fail) -> dict[str, Any]:
    """Our metadata with every value checked: known keys must have their type (refused
    otherwise), the structured ones are parsed later, and any other key is kept only when it
    is a short plain value (str, number, bool, None); anything else is dropped."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            continue
        if key in _META_STRUCTURED:
            if value is not None:
                out[key] = value
        elif key in _META_TYPES:
            kinds = _META_TYPES[key]
            if isinstance(value, bool) or not isinstance(value, kinds) or (
                    isinstance(value, str) and len(value) > _MAX_META_TEXT):
                raise fail(f"our metadata {key!r} must be a {kinds[0].__name__}, got "
                           f"{_describe(value)}")
            out[key] = value
        elif value is None or isinstance(value, (bool, int, float)) or (
                isinstance(value, str) and len(value) <= _MAX_META_TEXT):
            out[key] = value
    return out


def _parse_settings(meta: dict, fail) -> DetectParams | None:
    """Validate ``meta["settings"]``: detection settings through `DetectParams.from_dict`,
    the project name as a bounded string; every other key is dropped. ``meta`` is updated."""
    raw = meta.get("settings")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail("the saved settings must be a dict")
    try:
        params = DetectParams.from_dict(raw)
    except (SettingsError, TypeError) as exc:
        raise fail(f"bad saved settings ({exc})") from None
    keep = {k: v for k, v in params.to_dict().items() if k in raw and raw[k] is not None}
    for key in _SETTINGS_EXTRA:
        value = raw.get(key)
        if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
            keep[key] = value
    meta["settings"] = keep
    return params


def _unit_rows(t: Any, where: str, shape: str, lim: limits.Limits, fail,
               label: str) -> torch.Tensor:
    """A float (N, D) tensor of unit rows: detached, float32, contiguous, renormalised; or
    `fail` naming what is wrong (dtype, shape, width, NaN/inf, norms)."""
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.is_floating_point() \
            or t.is_complex():
        raise fail(f"{where} must be a float {shape} tensor or None, got {_describe(t)}")
    if t.shape[1] < 1:
        raise fail(f"{where} has zero-width rows (shape {tuple(t.shape)})")
    lim.check("max_embedding_dim", t.shape[1], f"{label}: {where}: embedding width",
              PtLimitError)
    t = t.detach().to(torch.float32).contiguous()
    if not torch.isfinite(t).all():
        raise fail(f"{where} holds NaN/inf")
    if len(t):
        norms = torch.linalg.vector_norm(t, dim=1)
        worst = float((norms - 1).abs().max())
        if not worst <= NORM_TOLERANCE:  # also catches an inf norm of huge finite rows
            raise fail(f"{where} rows must be L2-normalised embeddings; their norms range "
                       f"from {float(norms.min()):.3g} to {float(norms.max()):.3g}")
        if worst > _EXACT_NORM:
            t = t / norms[:, None]
    return t


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
            if not isinstance(item, dict) or not isinstance(item["box_xyxy"], (list, tuple)) \
                    or not all(_is_number(v) for v in item["box_xyxy"]) \
                    or not _is_number(item["iou"]) or not isinstance(item["negative"], bool):
                raise TypeError("box_xyxy must be 4 numbers, iou a number, negative a bool")
            box = tuple(float(v) for v in item["box_xyxy"])
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"box_xyxy has {len(box)} values, expected 4 finite ones")
            image_hash, cls = item["image_hash"], item["cls"]
            if not isinstance(image_hash, str) or len(image_hash) > 128 \
                    or not isinstance(cls, str) or len(cls) > MAX_ID_CHARS:
                raise ValueError("image_hash / cls must be short strings")
            iou = float(item["iou"])
            if not 0.0 <= iou <= 1.0:
                raise ValueError(f"iou {iou} is not in [0, 1]")
            phrase = item.get("phrase") or ""
            if phrase:
                phrase = check_phrase(phrase, "the phrase of an exemplar")
            out.append(ExemplarSource(image_hash, box, cls, bool(item["negative"]), iou, phrase))
        except (KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
            raise fail(f"bad exemplar provenance entry ({str(exc)[:200]})") from None
    return tuple(out)


def _parse_image_embeds(raw: Any, meta: dict, dim: int | None, lim: limits.Limits,
                        fail, label: str) -> dict[str, ImageEmbeddings]:
    if not isinstance(raw, dict):  # a Roboflow LimitedSizeDict arrives as an OrderedDict
        raise fail("'image_embeds' must be a dict")
    sizes = meta.get("image_sizes", {})
    if not isinstance(sizes, dict):
        raise fail("image sizes must be a dict")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise fail("image_embeds keys must be strings")
        shown = key if len(key) <= 64 else key[:64] + "..."
        if not isinstance(value, (tuple, list)) or len(value) != 5 or not all(
                isinstance(t, torch.Tensor) for t in value):
            raise fail(f"image_embeds[{shown!r}] must be a 5-tuple of tensors (objectness, "
                       "boxes, class_embeds, logit_shift, logit_scale)")
        if not all(t.is_floating_point() and not t.is_complex() for t in value):
            raise fail(f"image_embeds[{shown!r}] must hold float tensors, got "
                       f"{[str(t.dtype) for t in value]}")
        obj, boxes, embeds, shift, scale = (t.detach().to(torch.float32).contiguous()
                                            for t in value)
        k = obj.shape[0] if obj.ndim == 1 else -1
        if (k < 0 or boxes.shape != (k, 4) or embeds.ndim != 2 or embeds.shape[0] != k
                or shift.numel() != k or scale.numel() != k):
            raise fail(f"image_embeds[{shown!r}] tensors have inconsistent shapes "
                       f"{[tuple(t.shape) for t in value]}; expected (K,), (K, 4), (K, D), (K,), "
                       "(K,)")
        if dim is not None and embeds.shape[1] != dim:
            raise fail(f"image_embeds[{shown!r}] embedding dim {embeds.shape[1]} != exemplar "
                       f"dim {dim}")
        if not all(torch.isfinite(t).all() for t in (obj, boxes, shift, scale)):
            raise fail(f"image_embeds[{shown!r}] holds NaN/inf")
        embeds = _unit_rows(embeds, f"image_embeds[{shown!r}] class embeddings", "(K, D)", lim,
                            fail, label)
        if k and (obj.min() < 0 or obj.max() > 1 or boxes.min() < 0 or boxes.max() > 1
                  or scale.min() < 0):
            raise fail(f"image_embeds[{shown!r}]: objectness and boxes must lie in [0, 1] and "
                       "logit scales be >= 0")
        size = sizes.get(key)
        if size is None:
            continue  # foreign cache entry: without its image size the boxes can't be placed
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 10**6
                           for v in size)):
            raise fail(f"image size of {shown!r} must be [width, height] in pixels, got "
                       f"{size!r}"[:300])
        out[key] = ImageEmbeddings(obj, boxes, embeds, shift.reshape(-1), scale.reshape(-1),
                                   image_size=(int(size[0]), int(size[1])))
    return out
