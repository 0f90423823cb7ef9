"""Randomly initialised OWLv2 checkpoints that still behave like a detector.

`make_random_model(preset, out_dir)` writes a folder that `load_model` (and
`Owlv2ForObjectDetection.from_pretrained` / `Owlv2Processor.from_pretrained`) loads like a real
checkpoint: ``config.json``, ``model.safetensors``, ``preprocessor_config.json``, a minimal CLIP
tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json``, ``merges.txt``) and
``owl_random_model.json`` (preset, seed; marks the folder as random weights).

Presets (`PRESETS`):

========  =====  =====  ==================================  ===============  ==========  ====
preset    input  patch  vision width / layers / heads / MLP  text w/l/h/MLP   projection  grid
========  =====  =====  ==================================  ===============  ==========  ====
tiny        256      8  64 / 2 / 4 / 256                     32/2/2/64        32          32x32
base        960     16  768 / 12 / 12 / 3072                 512/12/8/2048    512         60x60
large      1008     14  1024 / 24 / 16 / 4096                768/12/12/3072   768         72x72
========  =====  =====  ==================================  ===============  ==========  ====

``base`` is the architecture of google/owlv2-base-patch16(-ensemble) (its config equals
`Owlv2Config()` except ``vision_config.image_size`` 960 instead of the class default 768; 155 M
parameters) and ``large`` that of google/owlv2-large-patch14(-ensemble) (438 M parameters). Both
use the CLIP vocabulary size 49408 (bos 49406, eos 49407, pad 0), 16 text positions,
``quick_gelu``, layer-norm eps 1e-5, and the CLIP mean/std with bicubic resize and padding in
``preprocessor_config.json``. ``tiny`` has a 514-entry vocabulary (bos 512, eos 513) and a 32x32
grid: embedding one image takes milliseconds on a CPU, yet the grid is dense enough for drawn
boxes of 5-50 % of the image side to snap to a predicted box (an 8x8 grid cannot: its cells are
12.5 % of the side, so a 5 % box centred between two cells overlaps no predicted box at IoU 0.3).

Why the weights are shaped. A plainly initialised OWLv2 predicts degenerate boxes (every patch
predicts one cell-sized box about its grid corner) and near-identical class embeddings, so no
drawn box would match and every candidate would score the same. The maker keeps the real
architecture and shapes the weights (all by the seed) so the model behaves like a detector of
image content:

* Hidden units are split in 10 "position" channels and ``width - 10`` "content" channels.
  The patch embedding writes pixels (mean colour plus smoothed random texture filters) into the
  content channels only; the position embedding writes, into the position channels only, four
  per-patch box numbers as (+v, -v) pairs plus a filler pair that gives every position the same
  norm. Attention projections are zero (a patch's features depend on its own pixels, so a
  copy of an object elsewhere on the grid gets the same embedding); the MLPs read and write the
  content channels only (per-patch non-linear features). The class token starts as a +-1
  vector and, with no attention, ends the same for every image, so the model's "multiply by the
  class token" step is a fixed per-channel scaling.
* Box head: the first units pass the position numbers through both GELUs (shifted by +10 where
  GELU is the identity) to the output, so patch (i, j) predicts a box centred on its own cell
  (``((j + .5) / g, (i + .5) / g)``; the model's grid bias alone would put it on the cell's
  corner). Box widths and heights come from a per-patch layout, found by greedy set cover over
  random target boxes, that puts boxes of every size from 3 % to 95 % of the side and aspect
  ratios up to 4:1 near every location (small sizes densely, large sizes sparsely), and are
  modulated by patch content (random MLP units, standard deviation 0.3 in logit units).
* Class head: a random projection of the content channels, centred on the mean over synthetic
  scenes, so class embeddings of different content point in different directions (mean pairwise
  cosine between the patches of one image 0.2-0.5, standard deviation about 0.4, depending on
  how much of it is plain background) and identical content gives identical embeddings. Patch
  features are about 2/3 mean colour and 1/3 smooth texture, so a flat-coloured object shifted
  by half a patch still gives a similar embedding (cosine > 0.95). ``logit_shift`` is about -0.3
  and ``logit_scale`` about 5, both varying a little with content.
* Objectness: random MLP of the content channels, logits with mean 0 and std 1.5.

Scales are calibrated on a few thousand patches of synthetic scenes (gradients, coloured shapes,
stripes, noise) run through the real sub-modules. The text tower keeps the transformers random
initialisation: text queries run but mean nothing.

Measured through the real heads (tests/test_random_model.py), share of random drawn boxes with
sides 5-50 % of the image whose best predicted box reaches IoU > 0.3: tiny 0.94-0.96 with
log-uniform size and aspect 1:3-3:1 (the misses are boxes under 7 % of the side, smaller than a
32x32-grid cell), 0.99-1.00 with independent uniform sides; base 0.998 and 1.000.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# heavy imports stay lazy: `owl_core.cli.main` imports PRESETS to build its parser
if TYPE_CHECKING:
    from transformers import Owlv2Config, Owlv2ForObjectDetection

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: File that marks a folder as written by `make_random_model` (preset, seed, note).
MARKER_FILE = "owl_random_model.json"

_POS_DIMS = 10  # 4 (+v, -v) pairs: dx, dy, dw, dh logit offsets; 1 filler pair
_GELU_SHIFT = 10.0  # GELU(x + 10) - 10 == x to 1e-7 for x > -4.5
_TEXTURE_WEIGHT = 0.5  # texture filters relative to mean colour (shift robustness)
_SIZE_CONTENT_STD = 0.3  # content modulation of box width/height logits
_MIN_SIZE, _MAX_SIZE, _MAX_ASPECT = 0.03, 0.95, 4.0


@dataclass(frozen=True)
class RandomPreset:
    """Architecture of one random checkpoint.

    Attributes:
        name: preset name.
        input_size: square model input side in pixels.
        patch_size: ViT patch side in pixels; the grid is input_size // patch_size per side.
        vision_width, vision_layers, vision_heads, vision_mlp: vision tower.
        text_width, text_layers, text_heads, text_mlp: text tower; text_width is also the class
            embedding dimension of the detection head.
        projection_dim: CLIP projection dimension.
        vocab_size: text vocabulary; bos/eos are the last two ids.
        text_positions: text sequence length (OWLv2: 16).
        hub_equivalent: the public checkpoint with the same architecture, if any.
    """

    name: str
    input_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp: int
    projection_dim: int
    vocab_size: int = 49408
    text_positions: int = 16
    hub_equivalent: str | None = None

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    def config(self) -> Owlv2Config:
        """The `Owlv2Config` of this preset (cheap: no weights)."""
        from transformers import Owlv2Config

        return Owlv2Config(
            text_config=dict(
                vocab_size=self.vocab_size, hidden_size=self.text_width,
                intermediate_size=self.text_mlp, num_hidden_layers=self.text_layers,
                num_attention_heads=self.text_heads, max_position_embeddings=self.text_positions,
                hidden_act="quick_gelu", layer_norm_eps=1e-5, pad_token_id=0,
                bos_token_id=self.vocab_size - 2, eos_token_id=self.vocab_size - 1,
            ),
            vision_config=dict(
                hidden_size=self.vision_width, intermediate_size=self.vision_mlp,
                num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                num_channels=3, image_size=self.input_size, patch_size=self.patch_size,
                hidden_act="quick_gelu", layer_norm_eps=1e-5,
            ),
            projection_dim=self.projection_dim,
            logit_scale_init_value=2.6592,
        )


PRESETS: dict[str, RandomPreset] = {
    "tiny": RandomPreset(
        "tiny", input_size=256, patch_size=8,
        vision_width=64, vision_layers=2, vision_heads=4, vision_mlp=256,
        text_width=32, text_layers=2, text_heads=2, text_mlp=64, projection_dim=32,
        vocab_size=514,
    ),
    "base": RandomPreset(  # google/owlv2-base-patch16(-ensemble, -finetuned)
        "base", input_size=960, patch_size=16,
        vision_width=768, vision_layers=12, vision_heads=12, vision_mlp=3072,
        text_width=512, text_layers=12, text_heads=8, text_mlp=2048, projection_dim=512,
        hub_equivalent="google/owlv2-base-patch16-ensemble",
    ),
    "large": RandomPreset(  # google/owlv2-large-patch14(-ensemble, -finetuned)
        "large", input_size=1008, patch_size=14,
        vision_width=1024, vision_layers=24, vision_heads=16, vision_mlp=4096,
        text_width=768, text_layers=12, text_heads=12, text_mlp=3072, projection_dim=768,
        hub_equivalent="google/owlv2-large-patch14-ensemble",
    ),
}


# ---------------------------------------------------------------------------- public API
def make_random_model(preset: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight OWLv2 checkpoint folder shaped to behave like a detector.

    Args:
        preset: "tiny", "base" or "large" (see `PRESETS`).
        out_dir: destination folder; created if missing. An existing folder must be empty or
            hold an earlier random model (it is then replaced).
        seed: all weights are a function of (preset, seed).

    Returns:
        The folder path, loadable with `owl_core.load_model(str(path))`.

    Raises:
        ValueError: unknown preset, or out_dir is a file / a non-empty folder of something else.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
    spec = PRESETS[preset]
    out = Path(out_dir).expanduser()
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{out} is a file; make_random_model needs a folder path.")
        if any(out.iterdir()) and not (out / MARKER_FILE).exists():
            raise ValueError(f"{out} is not empty and was not written by make_random_model; "
                             "choose a new or empty folder.")
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_random_model(spec, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        _write_preprocessor(tmp, spec)
        _write_tokenizer(tmp, spec)
        (tmp / MARKER_FILE).write_text(json.dumps({
            "preset": spec.name, "seed": seed, "input_size": spec.input_size,
            "patch_size": spec.patch_size, "hub_equivalent": spec.hub_equivalent,
            "note": "random weights shaped by owl_core.engine.random_model; not a trained detector",
        }, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def random_preset_of(model: str | Path | None) -> str | None:
    """The preset named by a model folder's `MARKER_FILE` ("random" when the marker can't be
    read), None when `model` is no such folder (real weights, a hub id)."""
    if not model:
        return None
    marker = Path(model).expanduser() / MARKER_FILE
    try:
        if not marker.is_file():
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "random"
    preset = data.get("preset") if isinstance(data, dict) else None
    return str(preset)[:40] if isinstance(preset, str) and preset else "random"


def build_random_model(spec: RandomPreset | str, seed: int = 0) -> Owlv2ForObjectDetection:
    """Build the shaped random model in memory (eval mode, fp32, CPU) without saving it.

    The text tower uses torch's global RNG (seed it for reproducibility, `make_random_model`
    does); everything shaped here uses generators seeded by `seed`.
    """
    import torch
    from transformers import Owlv2ForObjectDetection

    if isinstance(spec, str):
        spec = PRESETS[spec]
    model = Owlv2ForObjectDetection(spec.config()).eval()
    with torch.no_grad():
        _shape_weights(model, spec, seed)
    return model


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``make-random-model --preset {tiny,base,large} [--seed N] OUT_DIR`` to a CLI."""
    parser = subparsers.add_parser(
        "make-random-model",
        help="write a random-weight OWLv2 checkpoint (tests, benchmarks, trials without weights)",
        description="Write a random-weight OWLv2 checkpoint folder, then pass it as --model DIR.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True,
                        help="architecture: tiny (tests), base / large (real OWLv2 shapes)")
    parser.add_argument("--seed", type=int, default=0, help="weights are a function of the seed")
    parser.add_argument("out_dir", help="destination folder (created; must be empty or an "
                                        "earlier random model)")
    parser.set_defaults(handler=_run_subcommand)
    return parser


def main_make_random_model(argv: Sequence[str] | None = None) -> int:
    """``python -m owl_core.engine.random_model --preset tiny OUT_DIR``: returns the exit status."""
    parser = argparse.ArgumentParser(prog="make-random-model")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommand(sub)
    argv = ["make-random-model", *(sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(argv)
    return args.handler(args)


def _run_subcommand(args: argparse.Namespace) -> int:
    try:
        out = make_random_model(args.preset, args.out_dir, seed=args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


# ---------------------------------------------------------------------------- box layout
def box_size_layout(grid: int, seed: int = 0, iou_goal: float = 0.4) -> np.ndarray:
    """Per-patch box (width, height), normalised to the input side, by greedy set cover.

    Random target boxes (half with log-uniform side 3-90 % and aspect 1:3-3:1, half with
    independent uniform sides 4-60 %) are covered patch by patch in random order: each patch,
    whose box is centred on its cell, takes the candidate size that reaches ``iou_goal`` with the
    most targets not yet covered. Small sizes end up dense and large ones sparse, with every
    size and shape near every location.

    Returns:
        (grid * grid, 2) float64 array, row-major patch order (row i, column j -> i * grid + j).
    """
    rng = np.random.default_rng(seed)
    n = grid
    centre = (np.arange(n) + 0.5) / n
    cx = np.tile(centre, n)
    cy = np.repeat(centre, n)

    m = max(16000, 8 * n * n)
    half = m // 2
    side = np.exp(rng.uniform(math.log(0.03), math.log(0.9), half))
    aspect = np.exp(rng.uniform(math.log(1 / 3), math.log(3), half))
    qw = np.concatenate([side * np.sqrt(aspect), rng.uniform(0.04, 0.6, m - half)])
    qh = np.concatenate([side / np.sqrt(aspect), rng.uniform(0.04, 0.6, m - half)])
    qw, qh = np.clip(qw, 0.02, 0.95), np.clip(qh, 0.02, 0.95)
    qx, qy = rng.uniform(qw / 2, 1 - qw / 2), rng.uniform(qh / 2, 1 - qh / 2)

    steps = np.exp(np.linspace(math.log(_MIN_SIZE), math.log(_MAX_SIZE), 14))
    cw, ch = (a.ravel() for a in np.meshgrid(steps, steps, indexing="ij"))
    keep = np.maximum(cw / ch, ch / cw) <= _MAX_ASPECT
    cw, ch = cw[keep], ch[keep]
    c_area = cw * ch

    uncovered = np.arange(m)
    out = np.empty((n * n, 2))
    for p in rng.permutation(n * n):
        ux, uy, uw, uh = qx[uncovered], qy[uncovered], qw[uncovered], qh[uncovered]
        near = (np.abs(ux - cx[p]) < 0.45 * uw) & (np.abs(uy - cy[p]) < 0.45 * uh)
        if not near.any():
            k = rng.integers(len(cw))
            out[p] = cw[k], ch[k]
            continue
        ix = np.minimum(cx[p] + cw[:, None] / 2, ux[near] + uw[near] / 2) - np.maximum(
            cx[p] - cw[:, None] / 2, ux[near] - uw[near] / 2)
        iy = np.minimum(cy[p] + ch[:, None] / 2, uy[near] + uh[near] / 2) - np.maximum(
            cy[p] - ch[:, None] / 2, uy[near] - uh[near] / 2)
        inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
        iou = inter / (c_area[:, None] + (uw[near] * uh[near])[None] - inter)
        hits = iou >= iou_goal
        gain = hits.sum(1) + rng.uniform(0, 0.5, len(cw))  # random tie break
        best = int(gain.argmax())
        out[p] = cw[best], ch[best]
        uncovered = np.delete(uncovered, np.flatnonzero(near)[hits[best]])
    return out


# ---------------------------------------------------------------------------- weight shaping
def _synthetic_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: gradient background, coloured rectangles/ellipses, some
    striped, plus noise. Used to calibrate scales."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(angle) + yy * math.sin(angle)
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    img = c0 + (c1 - c0) * ramp[..., None]
    for _ in range(int(rng.integers(8, 20))):
        w, h = rng.uniform(0.03, 0.4, 2)
        x0, y0 = rng.uniform(-0.1, 1.0, 2)
        if rng.random() < 0.5:
            mask = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
        else:
            mask = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 < 1
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        if rng.random() < 0.3:
            freq = rng.uniform(10, 60)
            stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx if rng.random() < 0.5 else yy))
            other = rng.uniform(0, 255, 3).astype(np.float32)
            img[mask] = (colour * stripes[..., None] + other * (1 - stripes[..., None]))[mask]
        else:
            img[mask] = colour
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _calibration_patches(spec: RandomPreset, rng: np.random.Generator, count: int):
    """(count, 3, p, p) normalised patches from synthetic scenes (a few from the zero padding)
    and their position-embedding indices (1 + row-major patch index)."""
    import torch

    n, p = spec.grid_size, spec.patch_size
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    scenes = np.stack([_synthetic_scene(rng, spec.input_size) for _ in range(3)])
    pixels = (torch.from_numpy(scenes).permute(0, 3, 1, 2).float() / 255 - mean) / std
    pixels = pixels[:, :, : n * p, : n * p]
    # (S, 3, n, p, n, p) -> (S, n*n, 3, p, p)
    patches = pixels.reshape(len(scenes), 3, n, p, n, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(len(scenes), n * n, 3, p, p)
    scene_ix = torch.from_numpy(rng.integers(0, len(scenes), count))
    patch_ix = torch.from_numpy(rng.integers(0, n * n, count))
    out = patches[scene_ix, patch_ix].clone()
    pad = count // 16  # padded area: pixel 0.0 before normalisation
    out[:pad] = ((0.0 - mean) / std).view(3, 1, 1)
    return out, patch_ix + 1


def _run_tokens(model, patches, pos_index, upto_layer: int | None = None):
    """Residual stream of independent patch tokens through the real sub-modules.

    Valid because the shaped model's attention output projections are zero: each token then
    evolves alone. Returns the hidden states after ``upto_layer`` layers (all when None).
    """
    vision = model.owlv2.vision_model
    x = vision.embeddings.patch_embedding(patches).flatten(1)
    x = x + vision.embeddings.position_embedding.weight[pos_index]
    x = vision.pre_layernorm(x)
    layers = vision.encoder.layers
    for layer in layers[: len(layers) if upto_layer is None else upto_layer]:
        x = x + layer.mlp(layer.layer_norm2(x))
    return x


def _cls_token(model):
    """(1, D) class token after the vision tower and post layer norm."""
    vision = model.owlv2.vision_model
    x = vision.embeddings.class_embedding + vision.embeddings.position_embedding.weight[0]
    x = vision.pre_layernorm(x[None])
    for layer in vision.encoder.layers:
        x = x + layer.mlp(layer.layer_norm2(x))
    return vision.post_layernorm(x)


def token_features(model, patches, pos_index):
    """(N, D) head input features of N patches, computed token by token.

    Equals ``model.image_embedder(...)[0]`` at those patches for a model shaped by this module
    (tested), and lets the maker calibrate on a few thousand patches instead of whole images.
    """
    vision = model.owlv2.vision_model
    x = vision.post_layernorm(_run_tokens(model, patches, pos_index))
    return model.layer_norm(x * _cls_token(model))


def _randn(gen, *shape):
    import torch

    return torch.randn(*shape, generator=gen)


def _shape_weights(model, spec: RandomPreset, seed: int) -> None:
    """Set every vision / head weight as described in the module docstring (in place)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    d, n, p = spec.vision_width, spec.grid_size, spec.patch_size
    con = slice(_POS_DIMS, d)  # content channels; 0-9 are the position channels
    n_con = d - _POS_DIMS
    vision = model.owlv2.vision_model
    emb = vision.embeddings
    calib_count = 1024 if spec.vision_width > 768 else 2048
    patches, pos_index = _calibration_patches(spec, rng, calib_count)

    # Layer norms: identity affine.
    for ln in [vision.pre_layernorm, vision.post_layernorm, model.layer_norm,
               *(m for layer in vision.encoder.layers for m in (layer.layer_norm1,
                                                                layer.layer_norm2))]:
        ln.weight.fill_(1.0)
        ln.bias.zero_()

    # Patch embedding: mean colour + smoothed random texture, content channels only.
    colour = _randn(gen, n_con, 3, 1, 1).expand(n_con, 3, p, p) / (p * p)
    texture = _randn(gen, n_con * 3, 1, p, p)
    sigma = max(p / 6, 0.5)
    ax = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
    kernel = torch.exp(-(ax**2) / (2 * sigma**2))
    kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2
    texture = F.conv2d(F.pad(texture, [p // 2] * 4, mode="circular"), kernel[None, None])
    texture = texture[..., :p, :p].reshape(n_con, 3, p, p)
    texture = texture - texture.mean(dim=(2, 3), keepdim=True)  # DC lives in `colour`
    flat = patches.flatten(1)
    colour = colour / (flat @ colour.flatten(1).T).std()
    texture = texture / (flat @ texture.flatten(1).T).std()
    weight = torch.zeros_like(emb.patch_embedding.weight)
    weight[con] = colour + _TEXTURE_WEIGHT * texture
    emb.patch_embedding.weight.copy_(weight)
    raw = emb.patch_embedding(patches).flatten(1)[:, con]
    weight[con] /= raw.pow(2).mean().sqrt()  # content channels: RMS 1
    emb.patch_embedding.weight.copy_(weight)
    content_mean = (raw / raw.pow(2).mean().sqrt()).mean(0)

    # Position embedding: per-patch box logit offsets in (+v, -v) pairs plus a filler pair.
    sizes = torch.from_numpy(box_size_layout(n, seed)).float()
    centre = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    target = torch.stack([centre.repeat(n), centre.repeat_interleave(n), sizes[:, 0],
                          sizes[:, 1]], dim=1).clamp(1e-4, 1 - 1e-4)
    offsets = torch.logit(target) - model.box_bias.float()  # (n*n, 4)
    radius2 = 12.0 * n_con  # position energy 2 * radius2 = 24x the content energy
    alpha = 0.8 * math.sqrt(radius2) / offsets.pow(2).sum(1).max().sqrt()
    filler = (radius2 - alpha**2 * offsets.pow(2).sum(1)).sqrt()
    table = torch.zeros(n * n + 1, d)
    table[1:, 0:8:2] = alpha * offsets
    table[1:, 1:8:2] = -alpha * offsets
    table[1:, 8], table[1:, 9] = filler, -filler
    table[1:, con] = -content_mean  # centre the content channels
    emb.position_embedding.weight.copy_(table)

    # Class token: +1 on position channels, +-1 on content channels, mean 0, variance 1.
    signs = torch.ones(n_con)
    signs[torch.randperm(n_con, generator=gen)[: d // 2]] = -1.0
    cls = torch.ones(d)
    cls[con] = signs
    emb.class_embedding.copy_(cls)

    # Encoder: attention adds nothing; MLPs map content channels to content channels.
    layers = vision.encoder.layers
    step = 0.7 / math.sqrt(len(layers))
    h = _run_tokens(model, patches, pos_index, upto_layer=0)
    for layer in layers:
        attn = layer.self_attn  # all zero: uniform attention over zero values, no overflow
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            linear.weight.zero_()
            linear.bias.zero_()
        fc1, fc2 = layer.mlp.fc1, layer.mlp.fc2
        normed = layer.layer_norm2(h)
        w1 = torch.zeros_like(fc1.weight)
        w1[:, con] = _randn(gen, fc1.out_features, n_con)
        z = normed @ w1.T
        w1 *= 1.5 / z.std()
        fc1.weight.copy_(w1)
        fc1.bias.copy_(0.5 * _randn(gen, fc1.out_features))
        act = layer.mlp.activation_fn(fc1(normed))
        w2 = torch.zeros_like(fc2.weight)
        w2[con] = _randn(gen, n_con, fc2.in_features)
        upd = act @ w2.T
        w2 *= step * h[:, con].std() / upd[:, con].std()
        fc2.weight.copy_(w2)
        b2 = torch.zeros(d)
        b2[con] = -(act @ w2.T)[:, con].mean(0)
        fc2.bias.copy_(b2)
        h = h + layer.mlp(normed)

    feats = token_features(model, patches, pos_index)
    gain = (feats[:, 8] - feats[:, 9]) / (2 * table[pos_index, 8])
    readout = 1.0 / (2 * alpha * gain.median())

    def random_layer(linear, in_feats, in_slice, out_slice, std=1.0):
        """Random weights from in_slice to out_slice, scaled to `std`, centred by the bias."""
        w = torch.zeros_like(linear.weight)
        rows = range(linear.out_features)[out_slice]
        w[out_slice, in_slice] = _randn(gen, len(rows), in_feats[:, in_slice].shape[1])
        z = in_feats @ w.T
        w[out_slice] *= std / z[:, out_slice].std(0).clamp_min(1e-6)[:, None]
        b = torch.zeros(linear.out_features)
        b[out_slice] = -(in_feats @ w.T)[:, out_slice].mean(0)
        return w, b

    # Box head: units 0-3 carry the position numbers, units 4+ are content features.
    head = model.box_head
    w0, b0 = random_layer(head.dense0, feats, con, slice(4, d))
    for k in range(4):
        w0[k, 2 * k], w0[k, 2 * k + 1] = readout, -readout
        b0[k] = _GELU_SHIFT
    head.dense0.weight.copy_(w0)
    head.dense0.bias.copy_(b0)
    h1 = head.gelu(head.dense0(feats))
    w1, b1 = random_layer(head.dense1, h1, slice(4, d), slice(4, d))
    w1[range(4), range(4)] = 1.0
    head.dense1.weight.copy_(w1)
    head.dense1.bias.copy_(b1)
    h2 = head.gelu(head.dense1(h1))
    w2, b2 = random_layer(head.dense2, h2, slice(4, d), slice(2, 4), std=_SIZE_CONTENT_STD)
    w2[range(4), range(4)] = 1.0
    b2 -= _GELU_SHIFT
    head.dense2.weight.copy_(w2)
    head.dense2.bias.copy_(b2)

    # Objectness head: content MLP, logits mean 0 std 1.5.
    head = model.objectness_head
    w0, b0 = random_layer(head.dense0, feats, con, slice(0, d))
    head.dense0.weight.copy_(w0)
    head.dense0.bias.copy_(b0)
    h1 = head.gelu(head.dense0(feats))
    w1, b1 = random_layer(head.dense1, h1, slice(0, d), slice(0, d))
    head.dense1.weight.copy_(w1)
    head.dense1.bias.copy_(b1)
    h2 = head.gelu(head.dense1(h1))
    w2, b2 = random_layer(head.dense2, h2, slice(0, d), slice(0, 1), std=1.5)
    head.dense2.weight.copy_(w2)
    head.dense2.bias.copy_(b2)

    # Class head: centred random projection of the content channels; shift ~-0.3, scale ~5.
    ch = model.class_head
    w, b = random_layer(ch.dense0, feats, con, slice(0, ch.dense0.out_features))
    ch.dense0.weight.copy_(w)
    ch.dense0.bias.copy_(b)
    w, b = random_layer(ch.logit_shift, feats, con, slice(0, 1), std=0.05)
    ch.logit_shift.weight.copy_(w)
    ch.logit_shift.bias.copy_(b - 0.3)
    w, b = random_layer(ch.logit_scale, feats, con, slice(0, 1), std=0.3)
    ch.logit_scale.weight.copy_(w)
    ch.logit_scale.bias.copy_(b + 4.0)  # elu(4) + 1 = 5


# ---------------------------------------------------------------------------- files
def _write_preprocessor(folder: Path, spec: RandomPreset) -> None:
    from transformers import Owlv2ImageProcessor

    Owlv2ImageProcessor(
        size={"height": spec.input_size, "width": spec.input_size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_pad=True, resample=3,
    ).save_pretrained(folder)


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 / CLIP)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _write_tokenizer(folder: Path, spec: RandomPreset) -> None:
    """Minimal CLIP tokenizer: the 256 byte symbols, the same with the end-of-word suffix, and
    the specials at the config's bos/eos ids; no merges (one token per character). Works offline
    and lets `Owlv2Processor.from_pretrained(folder)` load; text queries tokenise (up to 14
    characters fit OWLv2's 16 positions) but the random text tower gives them no meaning."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": 256 + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = spec.vocab_size - 2
    vocab["<|endoftext|>"] = spec.vocab_size - 1
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], pad_token="!",
                              model_max_length=spec.text_positions)
    tokenizer.save_pretrained(folder)


if __name__ == "__main__":
    raise SystemExit(main_make_random_model())
