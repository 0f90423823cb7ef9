"""Benchmark of `owl-studio label`: pipeline overhead over the vision tower, bf16, and
re-labelling from the embedding store.

    python bench/label_bench.py                       # base preset: all sections (a few minutes)
    python bench/label_bench.py --quick --json o.json # tiny preset, 200 stored images (seconds)

Sections (keys of the JSON):
  throughput  a label job (`LabelJob.run`: read, hash, decode and preprocess on prefetch
              threads, tower + heads, store shards, journal) on a few photos vs the vision tower
              alone on the same preprocessed inputs (timed before and after the job, averaged).
              `job / tower` is the whole embed phase over the tower alone; `job / in-job
              compute` the same phase over the tower + heads time measured inside the job (what
              the prefetching failed to hide; robust to the load of other processes).
  bf16        bf16 autocast vs fp32 on one photo: tower time and cosine of all patches' class
              embeddings (the automatic choice on CPUs with AVX512-BF16 / AMX).
  store       N generated images of the base model's shape (K=300, D=512, fp16) written to a
              store, then re-labelled: open the store, read every shard, score (batched) with a
              3-class prompt set, write the jsonl output.

The model is the random-weight checkpoint of `bench/owl_bench.py` (same FLOPs as the real one),
cached under ``~/.cache/owl_studio/bench_models/<preset>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from owl_bench import _noisy_resize, ensure_model, load_average  # noqa: E402

from owl_core.batch.job import LabelConfig, LabelJob, default_dtype, inputs_from_paths  # noqa: E402
from owl_core.batch.outputs import write_outputs  # noqa: E402
from owl_core.engine.batch_scoring import score_batch  # noqa: E402
from owl_core.engine.embedding import ImageEmbeddings, compute_embeddings  # noqa: E402
from owl_core.engine.embedding_store import EmbeddingStore  # noqa: E402
from owl_core.engine.loading import load_model  # noqa: E402
from owl_core.engine.matching import Exemplars  # noqa: E402
from owl_core.engine.transforms import OwlTransform  # noqa: E402
from owl_core.params import DetectParams  # noqa: E402

ASSETS = ROOT / "assets" / "images"
CACHE = Path.home() / ".cache" / "owl_studio" / "bench_models"


def make_photos(work: Path, count: int, quick: bool) -> list[Path]:
    """Bundled photos plus phone-sized synthetic JPEGs (decode costs what a real one does)."""
    sizes = [(640, 480), (1920, 1080), (4032, 3024), (1280, 960)]
    if quick:
        sizes = [(s[0] // 4, s[1] // 4) for s in sizes]
    sources = sorted(ASSETS.glob("*.jpg")) + sorted(ASSETS.glob("*.png"))
    photos = []
    for i in range(count):
        path = work / f"photo_{i:02d}.jpg"
        _noisy_resize(Image.open(sources[i % len(sources)]), sizes[i % len(sizes)],
                      seed=i).save(path, quality=90)
        photos.append(path)
    return photos


def random_exemplars(dim: int, classes: int = 3, per_class: int = 3, seed: int = 0,
                     concepts: torch.Tensor | None = None) -> Exemplars:
    """`per_class` positives per class (+ one negative for class 0), unit vectors; near the
    given concept vectors when given (so stored candidates match them)."""
    g = torch.Generator().manual_seed(seed)
    rows, ids, neg = [], [], []
    for c in range(classes):
        for _ in range(per_class):
            base = concepts[c] if concepts is not None else torch.zeros(dim)
            rows.append(base + 0.1 * torch.randn(dim, generator=g) / dim ** 0.5)
            ids.append(c)
            neg.append(False)
    rows.append(torch.randn(dim, generator=g))
    ids.append(0)
    neg.append(True)
    embeds = torch.stack(rows)
    embeds = embeds / embeds.norm(dim=1, keepdim=True)
    return Exemplars(tuple(f"class{c}" for c in range(classes)), embeds, torch.tensor(ids),
                     torch.tensor(neg))


# ---------------------------------------------------------------------------- sections
def tower_times(owl, transform: OwlTransform, photos: list[Path]) -> list[float]:
    """Seconds of `image_embedder` alone per photo (preprocessing not timed)."""
    times = []
    for photo in photos:
        pixels = transform.preprocess(np.asarray(Image.open(photo).convert("RGB")))[None]
        start = time.perf_counter()
        owl.image_embedder(pixels)
        times.append(time.perf_counter() - start)
    return times


def bench_throughput(model_dir: Path, work: Path, photos: list[Path], dtype: str | None,
                     log, tower_alone: bool = True) -> dict[str, Any]:
    owl = load_model(str(model_dir), device="cpu", dtype=dtype)
    transform = OwlTransform.for_mode(owl.input_size, tuple(owl.image_mean),
                                      tuple(owl.image_std))
    tower_times(owl, transform, photos[:1])  # warm-up
    before = tower_times(owl, transform, photos) if tower_alone else []
    log(f"tower alone (before): {[round(t, 2) for t in before]} s")
    config = LabelConfig(out=work / "job", fmt="jsonl", progress=False)
    job = LabelJob(owl, random_exemplars(owl.class_embed_dim), inputs_from_paths(photos),
                   config, top_k=300, transform=transform, log=log)
    summary = job.run()
    log(f"job: embed phase {summary.embed_seconds:.2f} s, tower + heads inside it "
        f"{summary.tower_seconds:.2f} s")
    after = tower_times(owl, transform, photos) if tower_alone else []
    log(f"tower alone (after): {[round(t, 2) for t in after]} s")
    # without the tower-alone passes (--no-tower-alone) the in-job compute stands in
    tower = (sum(before) + sum(after)) / 2 if tower_alone else summary.tower_seconds
    return {
        "images": len(photos), "dtype": dtype or "fp32",
        "tower_alone_s_per_image": tower / len(photos),
        "job_embed_s_per_image": summary.embed_seconds / len(photos),
        "job_total_s_per_image": summary.seconds / len(photos),
        "job_in_job_compute_s_per_image": summary.tower_seconds / len(photos),
        "job_over_tower": summary.embed_seconds / tower,
        "job_total_over_tower": summary.seconds / tower,
        "job_over_in_job_compute": summary.embed_seconds / summary.tower_seconds,
        "tower_before_after_s": [sum(before), sum(after)],
    }


def bench_bf16(model_dir: Path, photo: Path, log) -> dict[str, Any]:
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    out: dict[str, Any] = {}
    embs: dict[str, ImageEmbeddings] = {}
    for dtype in ("fp32", "bf16"):
        owl = load_model(str(model_dir), device="cpu", dtype=dtype)
        transform = OwlTransform.for_mode(owl.input_size, tuple(owl.image_mean),
                                          tuple(owl.image_std))
        pixels = transform.preprocess(rgb)[None]
        owl.image_embedder(pixels)  # warm-up
        times = []
        for _ in range(2):
            start = time.perf_counter()
            owl.image_embedder(pixels)
            times.append(time.perf_counter() - start)
        out[f"{dtype}_tower_s"] = min(times)
        embs[dtype] = compute_embeddings(owl, pixels, [(rgb.shape[1], rgb.shape[0])], 300,
                                         keep_patches=True)[0]
        log(f"{dtype}: tower {min(times):.2f} s")
    a, b = embs["fp32"].patch_class_embeds, embs["bf16"].patch_class_embeds
    cosine = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)
    top_fp32 = set(embs["fp32"].topk_index.tolist())
    top_bf16 = set(embs["bf16"].topk_index.tolist())
    out.update({"speedup": out["fp32_tower_s"] / out["bf16_tower_s"],
                "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
                "top_k_overlap": len(top_fp32 & top_bf16) / len(top_fp32)})
    return out


def bench_store(work: Path, count: int, k: int, dim: int, log) -> dict[str, Any]:
    """Write `count` generated images, then re-label them from the store."""
    g = torch.Generator().manual_seed(0)
    concepts = torch.randn(50, dim, generator=g)
    concepts = concepts / concepts.norm(dim=1, keepdim=True)
    root = work / "store"
    store = EmbeddingStore(root, "bench", shard_rows=256)
    # a pool of 64 generated images, stored under distinct hashes (scoring costs the same
    # whatever the values; generating 3 GB of fresh noise would dominate the run)
    pool = []
    for _ in range(min(64, count)):
        noise = torch.randn(k, dim, generator=g)
        which = torch.randint(0, 50, (k,), generator=g)
        near = torch.rand(k, generator=g) < 0.05  # 5% of candidates look like some concept
        embeds = torch.where(near[:, None], concepts[which] * 0.9 + 0.45 * noise / dim ** 0.5,
                             noise)
        embeds = embeds / embeds.norm(dim=1, keepdim=True)
        boxes = torch.cat([torch.rand(k, 2, generator=g),
                           torch.rand(k, 2, generator=g) * 0.3 + 0.02], dim=1)
        pool.append(ImageEmbeddings(
            objectness=torch.rand(k, generator=g), boxes=boxes, class_embeds=embeds,
            logit_shift=torch.randn(k, generator=g), logit_scale=torch.rand(k, generator=g) + 1,
            image_size=(1920, 1080)))
    start = time.perf_counter()
    hashes = []
    for i in range(count):
        content_hash = f"{i:032x}"
        store.add(content_hash, pool[i % len(pool)])
        hashes.append(content_hash)
    store.flush()
    write_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store.folder.glob("*.safetensors"))
    log(f"store: wrote {count} images, {size / 1e9:.2f} GB in {write_s:.1f} s")
    exemplars = random_exemplars(dim, concepts=concepts)
    params = DetectParams(confidence=0.9)

    cpu_start = time.process_time()
    start = time.perf_counter()
    reopened = EmbeddingStore(root, "bench")
    open_s = time.perf_counter() - start
    read_s = score_s = 0.0
    results = {}
    tick = time.perf_counter()
    for batch in reopened.iter_batches(hashes):
        read_s += time.perf_counter() - tick
        tick = time.perf_counter()
        for content_hash, result in zip(batch.hashes, score_batch(batch, exemplars, params),
                                        strict=True):
            results[content_hash] = result
        score_s += time.perf_counter() - tick
        tick = time.perf_counter()
    entries = [(f"img_{h[-8:]}.jpg", results[h]) for h in hashes]
    start = time.perf_counter()
    (work / "out").mkdir(exist_ok=True)
    write_outputs(work / "out", work / "job", "jsonl", exemplars.class_names, entries, {})
    output_s = time.perf_counter() - start
    total = open_s + read_s + score_s + output_s
    cpu_s = time.process_time() - cpu_start
    boxes = sum(len(r) for r in results.values())
    log(f"store: re-labelled {count} images in {total:.1f} s, {cpu_s:.1f} s CPU (open "
        f"{open_s:.2f}, read {read_s:.1f}, score {score_s:.1f}, write {output_s:.1f}); "
        f"{boxes} boxes")
    return {"images": count, "k": k, "dim": dim, "store_bytes": size, "write_s": write_s,
            "open_s": open_s, "read_s": read_s, "score_s": score_s, "output_s": output_s,
            "relabel_s": total, "relabel_cpu_s": cpu_s, "images_per_s": count / total,
            "boxes": boxes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default=None, choices=["tiny", "base", "large"],
                        help="(default: base, tiny with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny model, small store")
    parser.add_argument("--images", type=int, default=None, help="photos in the label job")
    parser.add_argument("--store-images", type=int, default=None,
                        help="stored images to re-label (default 10000; 200 with --quick)")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16"],
                        help="label job dtype (default: the automatic choice)")
    parser.add_argument("--sections", default="throughput,bf16,store")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--no-tower-alone", action="store_true",
                        help="skip the tower-alone passes (a third of the time on a busy "
                             "machine); the ratio to the in-job tower + heads time remains")
    args = parser.parse_args(argv)
    preset = args.preset or ("tiny" if args.quick else "base")
    sections = set(args.sections.split(","))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average_before": load_average()},
        "preset": preset}
    work = Path(tempfile.mkdtemp(prefix="label_bench_"))
    try:
        if sections & {"throughput", "bf16"}:
            model_dir, _ = ensure_model(preset, Path(args.model_dir) if args.model_dir
                                        else CACHE / preset)
            photos = make_photos(work, args.images or (3 if args.quick else 4), args.quick)
            if "throughput" in sections:
                dtype = args.dtype or default_dtype(torch.device("cpu"))
                result["throughput"] = bench_throughput(model_dir, work, photos, dtype, log,
                                                        tower_alone=not args.no_tower_alone)
            if "bf16" in sections:
                result["bf16"] = bench_bf16(model_dir, photos[0], log)
        if "store" in sections:
            k, dim = (300, 512)
            result["store"] = bench_store(work, args.store_images or (200 if args.quick
                                                                       else 10_000), k, dim, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_after"] = load_average()
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def print_table(result: dict[str, Any]) -> None:
    rows = []
    if "throughput" in result:
        t = result["throughput"]
        rows += [("label job / vision tower alone (embed phase)", f"{t['job_over_tower']:.3f}"),
                 ("label job / tower + heads inside the job",
                  f"{t['job_over_in_job_compute']:.3f}"),
                 ("whole run incl. scoring + output / tower", f"{t['job_total_over_tower']:.3f}"),
                 ("s per image: tower alone · job", f"{t['tower_alone_s_per_image']:.2f} · "
                                                    f"{t['job_embed_s_per_image']:.2f} "
                                                    f"({t['dtype']}, {t['images']} photos)")]
    if "bf16" in result:
        b = result["bf16"]
        rows += [("bf16 vs fp32: tower speed-up", f"{b['speedup']:.2f}x "
                  f"({b['fp32_tower_s']:.2f} vs {b['bf16_tower_s']:.2f} s)"),
                 ("bf16 vs fp32: class-embedding cosine mean · min · top-K overlap",
                  f"{b['cosine_mean']:.5f} · {b['cosine_min']:.5f} · {b['top_k_overlap']:.3f}")]
    if "store" in result:
        s = result["store"]
        rows += [(f"re-label {s['images']:,} stored images (K={s['k']}, D={s['dim']}, fp16)",
                  f"{s['relabel_s']:.1f} s wall, {s['relabel_cpu_s']:.1f} s CPU (open "
                  f"{s['open_s']:.2f} · read {s['read_s']:.1f} · "
                  f"score {s['score_s']:.1f} · write {s['output_s']:.1f}); "
                  f"{s['images_per_s']:.0f} images/s"),
                 ("store size · write time", f"{s['store_bytes'] / 1e9:.2f} GB · "
                                             f"{s['write_s']:.1f} s")]
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    m = result["machine"]
    print(f"\n{m['cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}; "
          f"preset {result['preset']}; load average {m['load_average_before']} / "
          f"{m['load_average_after']}")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
