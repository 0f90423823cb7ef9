"""`owl-studio label --ray [ADDRESS]`: the embed phase of a label job on Ray Data.

    read + hash + decode + preprocess      CPU tasks (`Dataset.map`), as many as the cluster has
    vision tower + heads                   a pool of model actors (`map_batches` with a callable
                                           class, `concurrency` actors, `num_gpus=1` each when
                                           the cluster has GPUs)
    store + journal, then scoring + output on the driver, exactly as the single-process job

Rows travel between stages as plain bytes (preprocessed float32 pixels, then the top-K arrays)
so images that fail to read, or whose embeddings are already stored, need no tensor of the same
shape. Ray is optional (``pip install -r requirements-ray.txt``); only this module imports it,
and only when ``--ray`` is given.

The job (`owl_core.batch.job`) imports this module, never the other way round: the phase gets
the job, its images and its sink as arguments and uses only the attributes named in
`ray_embed_phase`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from owl_core.batch.outputs import describe_error
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.embedding_store import STORE_DTYPES
from owl_core.errors import OwlError, SettingsError

if TYPE_CHECKING:
    from owl_core.engine.transforms import OwlTransform

#: The embed phase `LabelJob.run` takes: ``phase(job, images, sink)``.
EmbedPhase = Callable[[Any, list[Any], Any], None]

#: Rows per read task block and per model call.
READ_BATCH = 8


def _read_row(row: dict[str, Any], transform: OwlTransform,
              stored: frozenset[str]) -> dict[str, Any]:
    """CPU task: read, hash, decode and preprocess one image (skipping stored content)."""
    from owl_core.images import resolve_image

    out = {**row, "hash": "", "error": "", "width": 0, "height": 0, "pixels": b""}
    try:
        st = os.stat(row["path"])
        out["size"], out["mtime_ns"] = st.st_size, st.st_mtime_ns
    except OSError:
        out["size"], out["mtime_ns"] = -1, -1
    try:
        source = resolve_image(row["path"])
        out["hash"] = source.content_hash
        if source.content_hash in stored:
            return out
        rgb = source.decode()
        out["height"], out["width"] = int(rgb.shape[0]), int(rgb.shape[1])
        out["pixels"] = transform.preprocess(rgb).numpy().tobytes()
    except (OwlError, OSError, ValueError) as exc:
        out["error"] = describe_error(exc)
    return out


class EmbedActor:
    """Model actor: loads the checkpoint once, embeds the rows that carry pixels.

    Args:
        model: hub id or folder (the same on every node).
        device: "cpu" or "cuda" (the actor's one GPU).
        dtype: autocast dtype name or None.
        top_k, input_size: as in the job.
        store_dtype: dtype of the class embeddings sent back ("fp16" halves the bytes).
    """

    def __init__(self, model: str, device: str, dtype: str | None, top_k: int,
                 input_size: int, store_dtype: str) -> None:
        from owl_core.engine.loading import load_model

        self.owl = load_model(model, device=device, dtype=dtype)
        self.top_k = top_k
        self.size = input_size
        self.store_dtype = STORE_DTYPES[store_dtype]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from owl_core.engine.embedding import compute_embeddings

        n = len(batch["path"])
        todo = [i for i in range(n) if len(batch["pixels"][i])]
        names = ("objectness", "boxes", "class_embeds", "logit_shift", "logit_scale")
        out: dict[str, list] = {name: [b""] * n for name in names}
        if todo:
            pixels = torch.stack([
                torch.from_numpy(np.frombuffer(batch["pixels"][i], dtype=np.float32).copy())
                .reshape(3, self.size, self.size) for i in todo])
            sizes = [(int(batch["width"][i]), int(batch["height"][i])) for i in todo]
            for i, emb in zip(todo, compute_embeddings(self.owl, pixels, sizes, self.top_k),
                              strict=True):
                for name in names:
                    tensor = getattr(emb, name).cpu()
                    tensor = tensor.to(self.store_dtype) if name == "class_embeds" \
                        else tensor.float()
                    out[name][i] = _to_bytes(tensor)
        keep = ("path", "hash", "error", "size", "mtime_ns", "width", "height")
        result = {name: batch[name] for name in keep}
        result.update({name: np.array(values, dtype=object) for name, values in out.items()})
        return result


def _to_bytes(tensor: torch.Tensor) -> bytes:
    if tensor.dtype == torch.bfloat16:  # numpy has no bf16
        tensor = tensor.float()
    return tensor.contiguous().numpy().tobytes()


def _from_row(row: dict[str, Any], k: int, dim: int, store_dtype: str) -> ImageEmbeddings:
    dtype = {"fp16": np.float16, "fp32": np.float32}[store_dtype]

    def arr(name: str, shape: tuple[int, ...], kind=np.float32) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(row[name], dtype=kind).copy().reshape(shape))

    return ImageEmbeddings(
        objectness=arr("objectness", (k,)), boxes=arr("boxes", (k, 4)),
        class_embeds=arr("class_embeds", (k, dim), dtype),
        logit_shift=arr("logit_shift", (k,)), logit_scale=arr("logit_scale", (k,)),
        image_size=(int(row["width"]), int(row["height"])))


def ray_embed_phase(address: str | None = "auto", actors: int | None = None,
                    batch_size: int | None = None,
                    init_kwargs: dict[str, Any] | None = None
                    ) -> EmbedPhase:
    """The embed phase for `LabelJob.run` on Ray Data.

    The phase uses of the `LabelJob`: ``owl``, ``transform``, ``top_k``, ``config.batch_size``
    and ``config.store_dtype``; of each `InputImage`: ``path``; of the `EmbedSink`: ``store``,
    ``failure``, ``stored`` and ``embedded_image``.

    Args:
        address: "auto"/None: the cluster of ``RAY_ADDRESS`` or a new local one; "local": a new
            local one; else a cluster address (``ray://head:10001`` or ``head:6379``). Ignored
            when Ray is already initialised in this process (as a test does).
        actors: model actors (default: one per GPU of the cluster, else 1).
        batch_size: images per model call (default: the job's batch size).
        init_kwargs: extra `ray.init` arguments (e.g. ``num_cpus``).
    """
    try:
        import ray
    except ImportError as exc:
        raise SettingsError("--ray needs Ray Data: pip install -r requirements-ray.txt") from exc

    def phase(job: Any, todo: list[Any], sink: Any) -> None:
        if not todo:
            return
        if not ray.is_initialized():
            where = None if address in (None, "auto") else ("local" if address == "local"
                                                            else address)
            ray.init(address=where, log_to_driver=False, **(init_kwargs or {}))
        gpus = int(ray.cluster_resources().get("GPU", 0))
        pool = actors or max(1, gpus)
        owl = job.owl
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(owl.autocast_dtype, "fp32")
        model = owl.source or owl.model_id
        stored = frozenset(sink.store.hashes())
        ds = ray.data.from_items([{"path": str(im.path)} for im in todo],
                                 override_num_blocks=max(1, min(len(todo) // READ_BATCH, 1000)))
        ds = ds.map(_read_row, fn_kwargs={"transform": job.transform, "stored": stored})
        ds = ds.map_batches(
            EmbedActor, batch_size=batch_size or job.config.batch_size, batch_format="numpy",
            concurrency=pool, num_gpus=1 if gpus else 0,
            fn_constructor_kwargs={
                "model": model, "device": "cuda" if gpus else "cpu", "dtype": dtype,
                "top_k": job.top_k, "input_size": job.transform.input_size,
                "store_dtype": job.config.store_dtype})
        images = {str(im.path): im for im in todo}
        dim = owl.class_embed_dim
        for row in ds.iter_rows():
            image = images[row["path"]]
            stat = (int(row["size"]), int(row["mtime_ns"])) if row["size"] >= 0 else None
            if row["error"]:
                sink.failure(image, stat, row["error"])
            elif not len(row["class_embeds"]) or row["hash"] in sink.store:
                sink.stored(image, stat, row["hash"])
            else:
                emb = _from_row(row, len(row["objectness"]) // 4, dim, job.config.store_dtype)
                sink.embedded_image(image, stat, row["hash"], emb)

    return phase
