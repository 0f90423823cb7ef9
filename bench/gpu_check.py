"""GPU check: what a CUDA machine changes, in one table (run it with `bash bench/gpu_check.sh`).

    python bench/gpu_check.py                 # CUDA: base architecture, full (< 8 min)
    python bench/gpu_check.py --short         # any machine: tiny architecture (~2 min on CPU)
    python bench/gpu_check.py --device cpu    # no CUDA: short mode on CPU (the default there)

The model is a random-weight checkpoint of the real architecture made by our own maker
(`make-random-model --preset base` into a temporary folder; the hub is not needed): timings
equal those of the real weights; detections mean nothing, so parity compares precisions of
the same weights. Rows:

* ``parity``: fp16 and bf16 autocast vs fp32 on the same images and drawn boxes: cosine of every
  patch's class embedding (mean, min), and the share of fp32 detections that the low precision
  finds too (same class, IoU >= 0.9) with the largest score difference among them.
* ``embed``: vision tower + heads (`compute_embeddings` on preprocessed pixels), ms per image
  at batch 1 and 8 (short mode: 1 and 2, one timed call), per precision.
* ``compile``: the same with `torch.compile` (``load_model(compile=True)``): time to compile,
  and ms per image at batch 1 and 8 against eager (short mode: batch 1; on a CPU the inductor
  compile of the tiny architecture takes ~30 s). Runs last.
* ``warm_preview``: what the studio's preview does after a box edit, on cached embeddings:
  `set_examples` with a moved box + `detect_many` over the query images.
* ``ray``: ``owl-studio label --ray`` (local Ray, ``num_gpus=1`` model actors when there are
  GPUs, one ``num_gpus=0`` CPU actor on ``--device cpu``) over a folder of images: seconds and
  images per second, against the same job without Ray.

Timings wait for the GPU (`torch.cuda.synchronize`) before reading the clock. A section that
fails prints its error in the table and the others still run. Writes the table and the numbers
to ``--out`` (``bench/results/gpu_check.md`` and ``.json``) after every section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.timing import Clock
from owl_core.engine.embedding import compute_embeddings
from owl_core.engine.loading import OwlModel, load_model
from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.random_model import make_random_model

ASSETS = ROOT / "assets" / "images"
PHOTOS = ("coins.png", "astronaut.jpg", "chelsea.png", "coffee.png", "rocket.jpg")
#: In the order they run: torch.compile last (its compile time is the least predictable; the
#: table and numbers are written after every section, so a timeout keeps what had finished).
SECTIONS = ("parity", "embed", "warm_preview", "ray", "compile")
LOW_PRECISIONS = ("fp16", "bf16")


# ---------------------------------------------------------------------------- helpers
def photos(count: int, max_side: int) -> list[np.ndarray]:
    """`count` RGB arrays from the bundled photos (cycled), at most `max_side` pixels wide."""
    out = []
    for i in range(count):
        img = Image.open(ASSETS / PHOTOS[i % len(PHOTOS)]).convert("RGB")
        img.thumbnail((max_side, max_side))
        arr = np.asarray(img).copy()
        arr[0, 0] = (i % 256, i // 256 % 256, 7)  # each copy its own content hash
        out.append(arr)
    return out


def drawn_boxes(pred: OwlPredictor, image: np.ndarray, classes: int = 2) -> list[dict]:
    """Boxes "drawn" where the model itself predicts its most objectness-confident boxes (so
    they match at any precision), one class each."""
    emb = pred.embeddings(image)
    width, height = emb.image_size
    side = max(width, height)
    boxes = []
    for i in range(classes):
        cx, cy, w, h = (emb.boxes[i].float().cpu() * side).tolist()
        boxes.append({"x": cx, "y": cy, "w": max(w, 2.0), "h": max(h, 2.0), "cls": f"c{i}",
                      "negative": False})
    return boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of XYXY boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def agreement(ref, other) -> tuple[int, int, float]:
    """(fp32 detections, found by `other` too (same class, IoU >= 0.9), largest score gap)."""
    if not len(ref):
        return 0, 0, 0.0
    if not len(other):
        return len(ref), 0, 0.0
    iou = box_iou(ref.xyxy, other.xyxy)
    iou[ref.class_id[:, None] != other.class_id[None, :]] = 0.0
    best = iou.argmax(axis=1)
    found = iou[np.arange(len(ref)), best] >= 0.9
    gaps = np.abs(ref.confidence[found] - other.confidence[best[found]])
    return len(ref), int(found.sum()), float(gaps.max(initial=0.0))


# ---------------------------------------------------------------------------- the check
class GpuCheck:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.clock = Clock(self.device)
        self.short = args.short
        self.work = Path(tempfile.mkdtemp(prefix="owl-gpu-check-"))
        self.model_dir = Path(args.model_dir) if args.model_dir else self.work / "model"
        self.rows: list[tuple[str, str, str]] = []
        self.result: dict[str, Any] = {}
        n = 2 if self.short else 5
        self.images = photos(n, 320 if self.short else 1024)
        self.warmup, self.repeats = (0, 1) if self.short else (3, 10)
        self.batches = (1, 2) if self.short else (1, 8)
        # short mode compiles one shape: each new batch size recompiles (~20 s on a CPU)
        self.compile_batches = (1,) if self.short else (1, 8)
        self.out = Path(args.out) if args.out else None
        self.default_dtype = "fp16" if self.device.type == "cuda" else "bf16"

    def model(self, dtype: str, compile: bool = False) -> OwlModel:
        return load_model(str(self.model_dir), device=self.device, dtype=dtype, compile=compile)

    def row(self, check: str, setting: str, value: str) -> None:
        self.rows.append((check, setting, value))
        print(f"  {check:<13} {setting:<34} {value}", flush=True)

    # ------------------------------------------------------------------ sections
    def prepare(self) -> None:
        start = time.perf_counter()
        if not (self.model_dir / "config.json").is_file():
            make_random_model(self.args.preset, self.model_dir)
        self.result["model"] = {"preset": self.args.preset, "dir": str(self.model_dir),
                                "make_s": round(time.perf_counter() - start, 2)}

    def parity(self) -> None:
        ref = OwlPredictor(self.model("fp32"), top_k=300)
        training = [{"image": self.images[0], "boxes": drawn_boxes(ref, self.images[0])}]
        ref.set_examples(training)
        ref_embs = [ref.embeddings(img, keep_patches=True) for img in self.images]
        ref_dets = ref.detect_many(self.images, confidence=0.0, max_detections=50)
        out = {}
        for dtype in LOW_PRECISIONS:
            try:
                low = OwlPredictor(self.model(dtype), top_k=300)
                embs = [low.embeddings(img, keep_patches=True) for img in self.images]
                cos = torch.cat([torch.nn.functional.cosine_similarity(
                    a.patch_class_embeds.float().cpu(), b.patch_class_embeds.float().cpu(), dim=1)
                    for a, b in zip(ref_embs, embs, strict=True)])
                low.set_examples(training)
                dets = low.detect_many(self.images, confidence=0.0, max_detections=50)
                counts = [agreement(a, b) for a, b in zip(ref_dets, dets, strict=True)]
                total, found = sum(c[0] for c in counts), sum(c[1] for c in counts)
                gap = max(c[2] for c in counts)
                out[dtype] = {"cosine_mean": round(float(cos.mean()), 6),
                              "cosine_min": round(float(cos.min()), 6),
                              "detections_fp32": total, "detections_found": found,
                              "found_share": round(found / total, 4) if total else None,
                              "max_score_gap": round(gap, 6)}
                self.row("parity", f"{dtype} vs fp32",
                         f"cosine mean {cos.mean():.5f} min {cos.min():.5f}; detections "
                         f"{found}/{total} found, max score gap {gap:.4f}")
            except Exception as exc:  # e.g. fp16 autocast not supported on this device
                out[dtype] = {"error": _short(exc)}
                self.row("parity", f"{dtype} vs fp32", f"error: {_short(exc)}")
        self.result["parity"] = out

    def _pixels(self, owl: OwlModel, batch: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        transform = OwlPredictor(owl, top_k=300).transform  # the predictor's preprocessing
        imgs = [self.images[i % len(self.images)] for i in range(batch)]
        pixels = torch.stack([transform.preprocess(img) for img in imgs]).to(owl.device)
        return pixels, [(img.shape[1], img.shape[0]) for img in imgs]

    def _embed_ms(self, owl: OwlModel, batch: int) -> float:
        pixels, sizes = self._pixels(owl, batch)
        return round(self.clock.median_ms(lambda: compute_embeddings(owl, pixels, sizes, 300),
                                          self.warmup, self.repeats) / batch, 3)

    def embed(self) -> None:
        out = {}
        for dtype in ("fp32", *LOW_PRECISIONS):
            try:
                owl = self.model(dtype)
                out[dtype] = {f"batch_{b}_ms_per_image": self._embed_ms(owl, b)
                              for b in self.batches}
                self.row("embed", f"{dtype}, ms per image", ", ".join(
                    f"batch {b}: {out[dtype][f'batch_{b}_ms_per_image']:.2f}"
                    for b in self.batches))
            except Exception as exc:
                out[dtype] = {"error": _short(exc)}
                self.row("embed", dtype, f"error: {_short(exc)}")
        self.result["embed"] = out

    def compile(self) -> None:
        dtype = self.default_dtype
        eager = self.model(dtype)
        start = time.perf_counter()
        compiled = self.model(dtype, compile=True)  # compiles and checks on one zero image
        load_s = time.perf_counter() - start
        out: dict[str, Any] = {"dtype": dtype, "compiled": compiled.compiled,
                               "compile_and_load_s": round(load_s, 2)}
        if not compiled.compiled:
            self.row("compile", dtype, "torch.compile failed here; the model runs eagerly "
                                       "(see the warning above)")
        else:
            for b in self.compile_batches:
                pixels, sizes = self._pixels(compiled, b)
                first, _ = self.clock.time(
                    lambda p=pixels, s=sizes: compute_embeddings(compiled, p, s, 300))
                out[f"batch_{b}_first_call_s"] = round(first, 2)  # a new shape recompiles
                out[f"batch_{b}_ms_per_image"] = self._embed_ms(compiled, b)
                out[f"batch_{b}_eager_ms_per_image"] = self._embed_ms(eager, b)
                self.row("compile", f"{dtype} batch {b}, ms per image",
                         f"compiled {out[f'batch_{b}_ms_per_image']:.2f} vs eager "
                         f"{out[f'batch_{b}_eager_ms_per_image']:.2f} (first call "
                         f"{first:.1f} s)")
            self.row("compile", f"{dtype}, compile + load", f"{load_s:.1f} s")
        self.result["compile"] = out

    def warm_preview(self) -> None:
        pred = OwlPredictor(self.model(self.default_dtype), top_k=300)
        queries = photos(4 if self.short else 12, 320 if self.short else 1024)
        example = self.images[0]
        boxes = drawn_boxes(pred, example)
        pred.embed(example, keep_patches=True)
        pred.embed_many(queries)  # the preview runs on cached embeddings
        step = [0]

        def edit() -> None:  # a moved box: no class-cache hit, as after a drag in the studio
            step[0] += 1
            moved = [{**b, "x": b["x"] + 0.01 * step[0]} for b in boxes]
            pred.set_examples([{"image": example, "boxes": moved}])
            pred.detect_many(queries, confidence=0.1)

        ms = self.clock.median_ms(edit, self.warmup, self.repeats)
        self.result["warm_preview"] = {"dtype": self.default_dtype, "queries": len(queries),
                                       "median_ms": ms}
        self.row("warm_preview", f"{len(queries)} cached queries, {self.default_dtype}",
                 f"{ms:.1f} ms per edit (set_examples + detect_many)")

    def ray(self) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            self.result["ray"] = {"skipped": "ray is not installed (requirements-ray.txt)"}
            self.row("ray", "label --ray", "skipped: pip install -r requirements-ray.txt")
            return
        folder = self.work / "label-input"
        folder.mkdir(exist_ok=True)
        count = 8 if self.short else 64
        for i, img in enumerate(photos(count, 256 if self.short else 640)):
            Image.fromarray(img).save(folder / f"img{i:03d}.png")
        pred = OwlPredictor(self.model(self.default_dtype), top_k=300)
        pred.set_examples([{"image": self.images[0], "boxes": drawn_boxes(pred, self.images[0])}])
        weights = pred.export(self.work / "prompts.pt")
        gpus = torch.cuda.device_count() if self.device.type == "cuda" else 0
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if not gpus:  # a CPU check on a GPU machine: Ray must see no GPU (num_gpus=0 actors)
            env["CUDA_VISIBLE_DEVICES"] = ""
        out: dict[str, Any] = {"images": count, "gpus": gpus}
        for name, extra in (("local", []), ("ray", ["--ray", "local"])):
            cmd = [sys.executable, "-m", "owl_core.batch.job", str(folder), "--weights",
                   str(weights), "--model", str(self.model_dir), "--out",
                   str(self.work / f"out-{name}"), "--device", self.device.type, "--dtype",
                   self.default_dtype, "--format", "coco", "--no-progress", *extra]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  timeout=self.args.ray_timeout, env=env)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"label {' '.join(extra) or '(no ray)'} exited "
                                   f"{proc.returncode}: {proc.stderr.strip()[-400:]}")
            out[name] = {"seconds": round(seconds, 2),
                         "images_per_s": round(count / seconds, 2)}
        out["same_annotations"] = ((self.work / "out-local" / "annotations.json").read_bytes()
                                   == (self.work / "out-ray" / "annotations.json").read_bytes())
        self.result["ray"] = out
        actors = f"{gpus} actor(s), num_gpus=1 each" if gpus else "1 CPU actor"
        self.row("ray", f"label --ray local, {count} images",
                 f"{out['ray']['seconds']:.1f} s ({actors}) vs {out['local']['seconds']:.1f} s "
                 f"without Ray (process start included); same COCO file: "
                 f"{out['same_annotations']}")

    # ------------------------------------------------------------------ run
    def run(self, sections: list[str]) -> dict[str, Any]:
        info = {"device": str(self.device), "short": self.short, "preset": self.args.preset,
                "torch": torch.__version__, "python": platform.python_version(),
                "gpu": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda" else None}
        self.result["machine"] = info
        print(f"GPU check on {info['gpu'] or self.device} ({self.args.preset} architecture"
              f"{', short mode' if self.short else ''})", flush=True)
        self.prepare()
        errors = {}
        for name in sections:
            start = time.perf_counter()
            try:
                getattr(self, name)()
            except Exception as exc:
                errors[name] = _short(exc)
                self.row(name, "", f"error: {_short(exc)}")
                traceback.print_exc()
            self.result.setdefault("section_seconds", {})[name] = round(
                time.perf_counter() - start, 2)
            self.result["errors"] = errors
            self.result["rows"] = [list(r) for r in self.rows]
            if self.out is not None:
                write(self.result, self.out)
        self.result["errors"] = errors
        self.result["rows"] = [list(r) for r in self.rows]
        return self.result


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    head = (f"GPU check: {m['gpu'] or m['device']}, {m['preset']} architecture"
            f"{' (short mode)' if m['short'] else ''}, torch {m['torch']}")
    lines = [head, "", "| check | setting | result |", "|---|---|---|"]
    lines += [f"| {c} | {s} | {v} |" for c, s, v in result["rows"]]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    """OUT.md (the table) and OUT.json (the numbers)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--short", action="store_true", default=None,
                        help="tiny architecture, few repeats (the default without CUDA)")
    parser.add_argument("--full", dest="short", action="store_false",
                        help="the full check even without CUDA (slow on CPU)")
    parser.add_argument("--preset", choices=("tiny", "base", "large"), default=None,
                        help="architecture (default: base, tiny in short mode)")
    parser.add_argument("--model-dir", default=None,
                        help="reuse a checkpoint folder made by make-random-model")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check"),
                        help="write OUT.md (the table) and OUT.json (the numbers)")
    parser.add_argument("--ray-timeout", type=float, default=240.0,
                        help="seconds each label run may take")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.short is None:
        args.short = not args.device.startswith("cuda")
    if args.preset is None:
        args.preset = "tiny" if args.short else "base"
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check = GpuCheck(args)
    result = check.run([s for s in SECTIONS if s in args.sections.split(",")])
    out = Path(args.out)
    write(result, out)
    print("\n" + table(result))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
