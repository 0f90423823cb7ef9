"""Load an OWLv2 checkpoint once per process and describe its input geometry.

`load_model` returns one shared `OwlModel` per (checkpoint, device, autocast dtype, compile):
every predictor and every UI session in the process uses the same weights. The checkpoint is a
hub id (default `DEFAULT_MODEL_ID`) or a local folder with ``config.json``, the weights and
``preprocessor_config.json``. Input side, mean and std come from ``preprocessor_config.json``;
only when a checkpoint has none does the loader fall back to ``vision_config.image_size`` and the
CLIP mean/std (with a warning).

Hub ids are looked up in the local Hugging Face cache first (no network when the model is
there). Otherwise one metadata request (timeout ``HF_HUB_ETAG_TIMEOUT`` seconds, default 10, no
retries) decides quickly whether the hub is reachable and knows the model, before the download.
With ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) nothing goes to the network at all.
Every failure is a `ModelLoadError` that names the model and the remedies.

Environment: ``OWL_DEVICE`` (cpu, cuda, cuda:1, mps, auto), ``OWL_DTYPE`` (fp32, fp16, bf16,
auto), ``OWL_COMPILE=1``; explicit arguments win over them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from owl_core.errors import ModelLoadError as _ModelLoadError

if TYPE_CHECKING:
    from transformers import Owlv2ForObjectDetection

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "google/owlv2-base-patch16-ensemble"
#: Fallback normalisation when a checkpoint has no preprocessor_config.json (CLIP's).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None, "float32": None,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
_TRUE = {"1", "true", "yes", "on"}
_REMEDY = (
    "To fix it: pass a local folder that holds the weights (config.json, model.safetensors, "
    "preprocessor_config.json) as the model, e.g. --model DIR; or set HF_HUB_OFFLINE=1 with a "
    "Hugging Face cache that already holds this model (copied from a machine with internet); or, "
    "for a trial without weights, use random weights: `python -m owl_core make-random-model "
    "--preset base DIR`, then `--model DIR` (the app offers `--random-weights`)."
)


class ModelLoadError(_ModelLoadError):
    __doc__ = _ModelLoadError.__doc__

    def __init__(self, model_id: str, problem: str, remedy: str = _REMEDY) -> None:
        super().__init__(model_id, problem, remedy)


@dataclass(frozen=True, eq=False)
class OwlModel:
    """A loaded OWLv2 detector and its input geometry. Shared: treat as read-only.

    Attributes:
        model: `Owlv2ForObjectDetection`, eval mode, fp32 weights on `device`, SDPA attention.
        model_id: the model as first given to `load_model` (hub id or folder path string).
        device: where the weights live.
        autocast_dtype: dtype of `torch.autocast` around the vision tower, or None for fp32.
        input_size: side S of the square model input in pixels (960 base, 1008 large).
        image_mean, image_std: per-channel normalisation in [0, 1] pixel space.
        patch_size: ViT patch side in pixels.
        grid_size: patches per side, input_size // patch_size (60 base, 72 large).
        class_embed_dim: D of the class embeddings (512 base, 768 large).
        compiled: the vision tower runs through `torch.compile`.
        source: the resolved folder (absolute path) or hub id; the registry key.
    """

    model: Owlv2ForObjectDetection = field(repr=False)
    model_id: str
    device: torch.device
    autocast_dtype: torch.dtype | None
    input_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    patch_size: int
    grid_size: int
    class_embed_dim: int
    compiled: bool
    source: str = ""
    _embedder: Callable[..., Any] | None = field(default=None, repr=False)

    def image_embedder(self, pixel_values: torch.Tensor) -> tuple[Any, ...]:
        """Run the vision tower: ``model.image_embedder(pixel_values=...)`` under
        `torch.inference_mode` and, when configured, `torch.autocast`.

        Args:
            pixel_values: (B, 3, S, S) normalised float pixels, S = input_size (moved to the
                model's device as float32).

        Returns:
            (feature_map, vision_outputs): feature_map is (B, grid, grid, width), in
            `autocast_dtype` when set (call ``.float()`` before the heads), else float32.

        Raises:
            ValueError: pixel_values is not a (B, 3, S, S) tensor.
        """
        size = self.input_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or tuple(
                pixel_values.shape[1:]) != (3, size, size):
            got = (tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor)
                   else type(pixel_values).__name__)
            raise ValueError(f"expected pixel_values of shape (B, 3, {size}, {size}) for "
                             f"{self.model_id!r}, got {got}; preprocess with OwlTransform.")
        embed = self._embedder if self._embedder is not None else self.model.image_embedder
        with torch.inference_mode():
            pixel_values = pixel_values.to(self.device, torch.float32)
            if self.autocast_dtype is None:
                return embed(pixel_values=pixel_values)
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                return embed(pixel_values=pixel_values)


# ---------------------------------------------------------------------------- options
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the argument, else env ``OWL_DEVICE``, else CUDA when available,
    else CPU. "auto" (or an empty value) means the automatic choice.

    Raises:
        ValueError: an unknown device name, or a device that this machine does not have.
    """
    origin = "device"
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        env = os.environ.get("OWL_DEVICE", "").strip()
        device, origin = (env, "OWL_DEVICE") if env.lower() not in ("", "auto") else (None, "")
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"{origin} {device!r} is not a device; expected cpu, cuda, cuda:N, mps "
                         f"or auto ({exc}).") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{origin} {str(device)!r} asks for CUDA, but torch sees no CUDA "
                             "GPU here; use cpu (or install a CUDA build of torch).")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"{origin} {str(device)!r}: there are only "
                             f"{torch.cuda.device_count()} CUDA device(s).")
        return torch.device("cuda", index)
    if dev.type == "mps" and not (hasattr(torch.backends, "mps")
                                  and torch.backends.mps.is_available()):
        raise ValueError(f"{origin} {str(device)!r}: MPS is not available here; use cpu.")
    return dev


def resolve_autocast_dtype(dtype: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for a dtype name: the argument, else env ``OWL_DTYPE``, else automatic
    (fp16 on CUDA, None = fp32 elsewhere). "fp32" gives None."""
    origin = "dtype"
    if dtype is None or str(dtype).strip().lower() in ("", "auto"):
        env = os.environ.get("OWL_DTYPE", "").strip()
        dtype, origin = (env, "OWL_DTYPE") if env.lower() not in ("", "auto") else (None, "")
    if dtype is None:
        return torch.float16 if device.type == "cuda" else None
    key = str(dtype).strip().lower()
    if key not in _DTYPES:
        raise ValueError(f"{origin} {dtype!r} is not supported; expected fp32, fp16, bf16 or "
                         "auto.")
    return _DTYPES[key]


def _resolve_compile(compile: bool | None) -> bool:
    if compile is None:
        return os.environ.get("OWL_COMPILE", "").strip().lower() in _TRUE
    return bool(compile)


# ---------------------------------------------------------------------------- registry
_REGISTRY: dict[tuple[str, str, str, bool], OwlModel] = {}
_KEY_LOCKS: dict[tuple[str, str, str, bool], threading.Lock] = {}
_REGISTRY_LOCK = threading.Lock()


def load_model(
    model_id: str | os.PathLike[str] = DEFAULT_MODEL_ID,
    *,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    compile: bool | None = None,
) -> OwlModel:
    """Load (once) and return the shared `OwlModel` for a hub id or local folder.

    Args:
        model_id: hub id (e.g. "google/owlv2-large-patch14-ensemble") or checkpoint folder.
        device: "cpu", "cuda", "cuda:1", "mps", a torch.device, or None (`resolve_device`).
        dtype: "fp32", "fp16", "bf16" autocast, or None: env ``OWL_DTYPE``, else fp16 on CUDA
            and fp32 on CPU. Weights stay fp32 either way.
        compile: wrap the vision tower in `torch.compile` (None: env ``OWL_COMPILE=1``). If
            compiling fails here (no compiler, unsupported backend) the model runs eagerly and
            `OwlModel.compiled` is False.

    Returns:
        The same object for every call with the same resolved folder / hub id, device, autocast
        dtype and compile flag; concurrent first calls load once.

    Raises:
        ModelLoadError: missing folder, folder without config.json or weights, not an OWLv2
            checkpoint, unknown hub id, hub unreachable or offline without a cached copy.
        ValueError: bad device or dtype.
    """
    if isinstance(model_id, os.PathLike):
        model_id = os.fspath(model_id)
    if not isinstance(model_id, str) or not model_id.strip():
        raise ModelLoadError(str(model_id), "the model must be a non-empty hub id or folder path.")
    dev = resolve_device(device)
    autocast_dtype = resolve_autocast_dtype(dtype, dev)
    want_compile = _resolve_compile(compile)
    kind, source = _classify(model_id)
    key = (source, str(dev), str(autocast_dtype), want_compile)
    with _REGISTRY_LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _REGISTRY_LOCK:
            if key in _REGISTRY:
                return _REGISTRY[key]
        owl = _load_uncached(model_id, kind, source, dev, autocast_dtype, want_compile)
        with _REGISTRY_LOCK:
            _REGISTRY[key] = owl
        return owl


def clear_registry() -> None:
    """Forget every shared model (tests; frees memory once no predictor holds them)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
        _KEY_LOCKS.clear()


# ---------------------------------------------------------------------------- loading
def _classify(model_id: str) -> tuple[str, str]:
    """("local", absolute folder) | ("hub", repo id); a path-like string that does not exist
    raises `ModelLoadError`."""
    path = Path(model_id).expanduser()
    if path.exists():
        return "local", str(path.resolve())
    text = model_id.strip()
    looks_like_path = (
        path.is_absolute() or text.startswith((".", "~")) or "\\" in text
        or text.endswith("/") or text.count("/") > 1
    )
    if looks_like_path:
        raise ModelLoadError(model_id, f"there is no folder at {str(path.absolute())!r} (and "
                                       "it is not a hub id of the form 'org/name').")
    return "hub", text


def _load_uncached(model_id: str, kind: str, source: str, device: torch.device,
                   autocast_dtype: torch.dtype | None, want_compile: bool) -> OwlModel:
    if kind == "local":
        model, preprocessor = _load_local(model_id, Path(source))
    else:
        model, preprocessor = _load_hub(model_id)
    model = model.eval().to(device)
    for param in model.parameters():
        param.requires_grad_(False)
    input_size, mean, std = _input_geometry(model_id, model, preprocessor)
    vision = model.config.vision_config
    owl = OwlModel(
        model=model, model_id=model_id, device=device, autocast_dtype=autocast_dtype,
        input_size=input_size, image_mean=mean, image_std=std, patch_size=int(vision.patch_size),
        grid_size=input_size // int(vision.patch_size),
        class_embed_dim=int(model.class_head.dense0.out_features), compiled=False, source=source,
    )
    if want_compile:
        owl = _compiled(owl)
    logger.info("loaded %s on %s (input %d px, autocast %s, compiled %s)", model_id, device,
                input_size, autocast_dtype, owl.compiled)
    return owl


def _read_json(model_id: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(model_id, f"cannot read {path} ({exc}).") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(model_id, f"{path} does not hold a JSON object.")
    return data


def _check_config(model_id: str, config: dict[str, Any], where: str) -> None:
    model_type = config.get("model_type")
    if model_type == "owlv2":
        return
    if model_type == "owlvit":
        problem = (f"{where} is an OWL-ViT (v1) checkpoint; owl_core needs OWLv2 "
                   f"(model_type 'owlv2'), e.g. {DEFAULT_MODEL_ID}.")
    else:
        problem = (f"{where} has model_type {model_type!r}, not an OWLv2 checkpoint (expected "
                   f"model_type 'owlv2', e.g. {DEFAULT_MODEL_ID}).")
    raise ModelLoadError(model_id, problem)


def _from_pretrained(location: str, *, local_only: bool, hub: bool = False):
    from transformers import Owlv2ForObjectDetection

    extra: dict[str, Any] = {}
    if hub:  # the cache `_cached` looked in (read now, not at transformers' import)
        import huggingface_hub.constants as hf_constants

        extra["cache_dir"] = hf_constants.HF_HUB_CACHE
    return Owlv2ForObjectDetection.from_pretrained(
        location, attn_implementation="sdpa", dtype=torch.float32, local_files_only=local_only,
        **extra)


def _load_local(model_id: str, folder: Path):
    if not folder.is_dir():
        raise ModelLoadError(model_id, f"{folder} is a file; expected a checkpoint folder with "
                                       "config.json, model.safetensors and "
                                       "preprocessor_config.json.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(model_id, f"the folder {folder} has no config.json, so it is not a "
                                       "transformers checkpoint.")
    _check_config(model_id, _read_json(model_id, config_path), f"the folder {folder}")
    try:
        model = _from_pretrained(str(folder), local_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(model_id, f"the folder {folder} has a config.json but its weights "
                                       f"could not be loaded ({_short(exc)}).") from exc
    return model, _local_preprocessor(model_id, folder)


def _local_preprocessor(model_id: str, folder: Path) -> dict[str, Any] | None:
    path = folder / "preprocessor_config.json"
    if path.is_file():
        return _read_json(model_id, path)
    path = folder / "processor_config.json"  # transformers may nest it in the processor file
    if path.is_file():
        nested = _read_json(model_id, path).get("image_processor")
        return nested if isinstance(nested, dict) else None
    return None


def _offline() -> bool:
    import huggingface_hub.constants as hf_constants

    env = any(os.environ.get(name, "").strip().lower() in _TRUE
              for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(hf_constants.HF_HUB_OFFLINE)


def _cached(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, filename)
    except Exception:  # invalid repo id: the probe explains
        return None
    return hit if isinstance(hit, str) else None


def _load_hub(model_id: str):
    import huggingface_hub.constants as hf_constants

    cached_config = _cached(model_id, "config.json")
    if cached_config is not None:
        _check_config(model_id, _read_json(model_id, Path(cached_config)),
                      "the cached hub checkpoint")
        try:
            model = _from_pretrained(model_id, local_only=True, hub=True)
        except (OSError, ValueError) as exc:
            if _offline():
                raise ModelLoadError(model_id, "offline mode is on (HF_HUB_OFFLINE) and the "
                                               "Hugging Face cache has its config but not its "
                                               f"weights ({_short(exc)}).") from exc
        else:
            return model, _hub_preprocessor(model_id, local_only=True)
    elif _offline():
        raise ModelLoadError(model_id, "offline mode is on (HF_HUB_OFFLINE / "
                                       "TRANSFORMERS_OFFLINE) and the Hugging Face cache "
                                       f"({hf_constants.HF_HUB_CACHE}) has no copy of it.")
    _probe_hub(model_id)
    return _download_and_load(model_id)


def _download_and_load(model_id: str):
    """Download (into the Hugging Face cache) and load; the hub answered the probe."""
    from huggingface_hub import hf_hub_download

    try:
        config_path = hf_hub_download(model_id, "config.json")
        _check_config(model_id, _read_json(model_id, Path(config_path)), "the hub repository")
        model = _from_pretrained(model_id, local_only=False, hub=True)
    except ModelLoadError:
        raise
    except Exception as exc:  # network drop mid-download, disk full, corrupt file ...
        raise ModelLoadError(model_id, f"downloading it from the Hugging Face hub failed "
                                       f"({_short(exc)}).") from exc
    return model, _hub_preprocessor(model_id, local_only=False)


def _probe_hub(model_id: str) -> None:
    """One metadata request, short timeout, no retries: a clear error within seconds when the
    hub is unreachable or does not know the model."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    try:
        get_hf_file_metadata(hf_hub_url(model_id, "config.json"), timeout=timeout,
                             retry_on_errors=False)
    except hf_errors.HFValidationError as exc:
        raise ModelLoadError(model_id, "it is neither an existing folder nor a valid hub id "
                                       f"('org/name'): {_short(exc)}") from exc
    except hf_errors.GatedRepoError as exc:
        raise ModelLoadError(model_id, "the hub repository is gated: accept its terms on "
                                       "huggingface.co and log in with `hf auth login`.") from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise ModelLoadError(model_id, "the Hugging Face hub has no such model (check the "
                                       "spelling; private models need `hf auth login`), and no "
                                       "folder of that name exists here.") from exc
    except (hf_errors.EntryNotFoundError, hf_errors.RemoteEntryNotFoundError) as exc:
        raise ModelLoadError(model_id, "the hub repository has no config.json, so it is not a "
                                       "transformers checkpoint.") from exc
    except Exception as exc:  # DNS failure, refused connection, timeout, proxy error, 5xx
        raise ModelLoadError(model_id, "the Hugging Face hub cannot be reached from here "
                                       f"({_short(exc)}), the model is not in the local "
                                       f"cache, and there is no folder {model_id!r} here.") from exc


def _hub_preprocessor(model_id: str, *, local_only: bool) -> dict[str, Any] | None:
    from huggingface_hub import hf_hub_download

    path = _cached(model_id, "preprocessor_config.json")
    if path is None and not local_only:
        try:
            path = hf_hub_download(model_id, "preprocessor_config.json")
        except Exception:  # absent from the repo: fall back to the vision config
            path = None
    return _read_json(model_id, Path(path)) if path else None


def _input_geometry(model_id: str, model, preprocessor: dict[str, Any] | None):
    """(input_size, mean, std) from preprocessor_config.json.

    Falls back to ``vision_config.image_size`` and the CLIP mean/std (what
    `Owlv2ImageProcessor` defaults to) only when the checkpoint has no preprocessor file or the
    file lacks the key; a warning says so.
    """
    vision_size = int(model.config.vision_config.image_size)
    patch = int(model.config.vision_config.patch_size)
    pre = preprocessor or {}
    if not preprocessor:
        logger.warning("%s has no preprocessor_config.json: using vision_config.image_size %d "
                       "and the CLIP mean/std", model_id, vision_size)
    size = pre.get("size")
    if isinstance(size, dict) and "height" in size and "width" in size:
        if int(size["height"]) != int(size["width"]):
            raise ModelLoadError(model_id, f"preprocessor_config.json has a non-square size "
                                           f"{size}; OWLv2 takes a padded square.")
        input_size = int(size["height"])
    elif isinstance(size, dict) and "shortest_edge" in size:
        input_size = int(size["shortest_edge"])
    elif isinstance(size, (int, float)):
        input_size = int(size)
    else:
        input_size = vision_size
    if input_size != vision_size or input_size % patch:
        raise ModelLoadError(model_id, f"preprocessor_config.json says {input_size} px but the "
                                       f"vision config says {vision_size} px with {patch} px "
                                       "patches; the checkpoint files disagree.")

    def triple(name: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = pre.get(name, default)
        if isinstance(value, (int, float)):
            value = [value] * 3
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ModelLoadError(model_id, f"preprocessor_config.json {name} should be 3 "
                                           f"numbers, got {value!r}.")
        return tuple(float(v) for v in value)  # type: ignore[return-value]

    return input_size, triple("image_mean", CLIP_MEAN), triple("image_std", CLIP_STD)


def _compiled(owl: OwlModel) -> OwlModel:
    """`owl` with a `torch.compile`d vision tower, checked on one zero image; `owl` unchanged
    (compiled=False, a warning) when compiling fails on this machine."""
    from dataclasses import replace

    try:
        embed = torch.compile(owl.model.image_embedder)
        candidate = replace(owl, compiled=True, _embedder=embed)
        size = owl.input_size
        candidate.image_embedder(torch.zeros(1, 3, size, size))
    except Exception as exc:  # missing C++ compiler, unsupported device/backend ...
        logger.warning("torch.compile failed for %s on %s, running eagerly: %s", owl.model_id,
                       owl.device, _short(exc))
        return owl
    return candidate


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
