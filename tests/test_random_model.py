"""The random checkpoint maker: presets, files, and detector-like behaviour of its heads."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert, box_iou
from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor

from owl_core.engine.random_model import (
    MARKER_FILE,
    PRESETS,
    add_subcommand,
    box_size_layout,
    build_random_model,
    main_make_random_model,
    make_random_model,
    token_features,
)


# ---------------------------------------------------------------------------- helpers
def scene(seed: int, size: int, shapes: int = 12) -> np.ndarray:
    """(size, size, 3) uint8: noisy grey-ish background with flat coloured rectangles/discs."""
    rng = np.random.default_rng(seed)
    img = rng.integers(70, 140, (size, size, 3)).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(shapes):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 20, size // 3, 2)
        colour = rng.integers(0, 256, 3)
        if rng.random() < 0.5:
            img[y0:y0 + h, x0:x0 + w] = colour
        else:
            img[((xx - x0) / w) ** 2 + ((yy - y0) / h) ** 2 < 1] = colour
    return img


def to_pixels(owl, img: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 at the model's input size -> (1, 3, S, S) normalised."""
    mean = torch.tensor(owl.image_mean).view(3, 1, 1)
    std = torch.tensor(owl.image_std).view(3, 1, 1)
    return ((torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std)[None]


def heads(owl, img: np.ndarray):
    """Objectness (P,), boxes (P, 4) cxcywh in [0, 1], normalised class embeddings (P, D)
    through the model's own predictor methods."""
    model = owl.model
    feature_map = owl.image_embedder(to_pixels(owl, img))[0].float()
    with torch.inference_mode():
        feats = feature_map.flatten(1, 2)
        objectness = model.objectness_predictor(feats).sigmoid()[0]
        boxes = model.box_predictor(feats, feature_map=feature_map)[0]
        embeds = model.class_head.dense0(feats)[0]
        embeds = embeds / (embeds.norm(dim=-1, keepdim=True) + 1e-6)
    return objectness, boxes, embeds


class _Geometry:
    """Normalisation of the random checkpoints (CLIP), for models built in memory."""

    image_mean = (0.48145466, 0.4578275, 0.40821073)
    image_std = (0.26862954, 0.26130258, 0.27577711)


def random_boxes(count: int, kind: str, seed: int) -> torch.Tensor:
    """(count, 4) cxcywh boxes inside the unit square with sides of 5-50 % of the side.

    kind "log": side log-uniform in [0.05, 0.5] and aspect log-uniform in [1/3, 3] (a side may
    then reach 0.03 or 0.87); kind "uniform": width and height independently uniform in
    [0.05, 0.5].
    """
    rng = np.random.default_rng(seed)
    if kind == "log":
        side = np.exp(rng.uniform(np.log(0.05), np.log(0.5), count))
        aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), count))
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
    else:
        w, h = rng.uniform(0.05, 0.5, count), rng.uniform(0.05, 0.5, count)
    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    return torch.tensor(np.stack([cx, cy, w, h], 1), dtype=torch.float32)


def match_rate(pred_boxes: torch.Tensor, drawn: torch.Tensor, threshold: float = 0.3) -> float:
    """Fraction of drawn boxes whose best predicted box has IoU > threshold."""
    iou = box_iou(box_convert(drawn, "cxcywh", "xyxy"), box_convert(pred_boxes, "cxcywh", "xyxy"))
    return float((iou.max(dim=1).values > threshold).float().mean())


# ---------------------------------------------------------------------------- presets
def test_base_preset_is_the_public_base_architecture():
    config = PRESETS["base"].config()
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size,
            vision.num_hidden_layers, config.projection_dim) == (960, 16, 768, 12, 512)
    assert (vision.num_attention_heads, vision.intermediate_size) == (12, 3072)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.intermediate_size, text.vocab_size, text.max_position_embeddings) == (
                512, 12, 8, 2048, 49408, 16)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (49406, 49407, 0)
    assert PRESETS["base"].grid_size == 60
    # transformers' defaults are the base model's, except the 768 px class default input
    default = Owlv2Config()
    ours, theirs = config.to_dict(), default.to_dict()
    assert ours["vision_config"] == {**theirs["vision_config"], "image_size": 960}
    assert ours["text_config"] == theirs["text_config"]
    assert ours["projection_dim"] == theirs["projection_dim"]


def test_large_preset_is_the_public_large_architecture():
    config = PRESETS["large"].config()
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers,
            vision.num_attention_heads, vision.intermediate_size) == (1008, 14, 1024, 24, 16, 4096)
    assert config.projection_dim == 768
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.intermediate_size) == (768, 12, 12, 3072)
    assert PRESETS["large"].grid_size == 72


def test_tiny_preset_is_small():
    spec = PRESETS["tiny"]
    assert spec.input_size % spec.patch_size == 0 and spec.grid_size == 32
    model = Owlv2ForObjectDetection(spec.config())
    assert sum(p.numel() for p in model.parameters()) < 500_000


# ---------------------------------------------------------------------------- files
def test_tiny_folder_holds_a_complete_checkpoint(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "merges.txt", MARKER_FILE} <= names
    pre = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": 256, "width": 256} and pre["do_pad"] is True
    assert json.loads((tiny_model_dir / MARKER_FILE).read_text())["preset"] == "tiny"
    vocab = json.loads((tiny_model_dir / "vocab.json").read_text())
    assert len(vocab) == 514 and vocab["<|endoftext|>"] == 513


def test_transformers_processor_and_forward_load_the_folder(tiny_model_dir):
    """Owlv2Processor.from_pretrained works offline on our folder and feeds the full model."""
    processor = Owlv2Processor.from_pretrained(tiny_model_dir)
    model = Owlv2ForObjectDetection.from_pretrained(tiny_model_dir).eval()
    inputs = processor(text=[["a cat", "dog"]], images=scene(0, 200), return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 256, 256)
    assert inputs["input_ids"].shape == (2, 16)
    assert inputs["input_ids"][0, 0] == model.config.text_config.bos_token_id
    assert model.config.text_config.eos_token_id in inputs["input_ids"][0]
    with torch.inference_mode():
        out = model(**inputs)
    assert out.logits.shape == (1, 32 * 32, 2)
    assert out.pred_boxes.shape == (1, 32 * 32, 4)


def test_same_seed_same_weights_other_seed_different(tiny_model_dir, tmp_path):
    again = make_random_model("tiny", tmp_path / "again", seed=0)
    other = make_random_model("tiny", tmp_path / "other", seed=1)
    ref = (tiny_model_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == ref
    assert (other / "model.safetensors").read_bytes() != ref


def test_make_random_model_guards_its_destination(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        make_random_model("huge", tmp_path / "x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        make_random_model("tiny", foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        make_random_model("tiny", tmp_path / "file")


def test_make_random_model_replaces_an_earlier_random_model(tmp_path):
    out = make_random_model("tiny", tmp_path / "m", seed=1)
    first = (out / "model.safetensors").read_bytes()
    assert make_random_model("tiny", out, seed=2) == out
    assert (out / "model.safetensors").read_bytes() != first
    assert json.loads((out / MARKER_FILE).read_text())["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left


def test_cli_function_writes_a_model(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main_make_random_model(["--preset", "tiny", "--seed", "3", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / MARKER_FILE).read_text())["seed"] == 3
    # the subparser a CLI can mount
    parser = argparse.ArgumentParser()
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["make-random-model", "--preset", "base", "DIR"])
    assert (args.preset, args.out_dir, args.seed) == ("base", "DIR", 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["make-random-model", "--preset", "huge", "DIR"])


def test_cli_function_reports_a_bad_destination(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main_make_random_model(["--preset", "tiny", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


# ---------------------------------------------------------------------------- behaviour
def test_token_features_equal_the_vision_tower(tiny_model):
    """The maker calibrates token by token; valid only if that equals the real tower."""
    img = scene(1, 256)
    pixels = to_pixels(tiny_model, img)
    feature_map = tiny_model.image_embedder(pixels)[0]
    n, p = 32, 8
    patches = pixels[0].reshape(3, n, p, n, p).permute(1, 3, 0, 2, 4).reshape(n * n, 3, p, p)
    with torch.inference_mode():
        per_token = token_features(tiny_model.model, patches, torch.arange(n * n) + 1)
    torch.testing.assert_close(per_token, feature_map[0].reshape(n * n, -1), atol=1e-4,
                               rtol=1e-4)


def test_each_patch_predicts_a_box_about_its_own_cell(tiny_model):
    _, boxes, _ = heads(tiny_model, scene(2, 256))
    n = 32
    centre = (torch.arange(n) + 0.5) / n
    assert (boxes[:, 0] - centre.repeat(n)).abs().max() < 0.3 / n
    assert (boxes[:, 1] - centre.repeat_interleave(n)).abs().max() < 0.3 / n
    widths = boxes[:, 2]
    # sizes spread from under a cell to most of the image
    assert widths.quantile(0.1) < 0.06 and widths.quantile(0.9) > 0.3 and widths.max() > 0.8


@pytest.mark.parametrize("kind, minimum", [
    ("log", 0.9),  # measured 0.93-0.96 depending on the image; misses are boxes < 7 % of side
    ("uniform", 0.97),  # measured 0.99-1.00
])
def test_drawn_boxes_find_a_predicted_box(tiny_model, kind, minimum):
    drawn = random_boxes(2000, kind, seed=11)
    rates = []
    for img in [scene(3, 256), scene(4, 256, shapes=30), np.full((256, 256, 3), 128, np.uint8)]:
        _, boxes, _ = heads(tiny_model, img)
        rates.append(match_rate(boxes, drawn))
    assert min(rates) > minimum, rates


def test_plain_random_init_would_not_match():
    """Why the maker shapes the box head: with the transformers initialisation the box logits
    saturate (widths of 0 or 1) and no drawn box finds a predicted box."""
    torch.manual_seed(0)
    plain = Owlv2ForObjectDetection(PRESETS["tiny"].config()).eval()
    pixels = to_pixels(_Geometry(), scene(3, 256))
    with torch.inference_mode():
        feature_map = plain.image_embedder(pixel_values=pixels)[0]
        boxes = plain.box_predictor(feature_map.flatten(1, 2), feature_map=feature_map)[0]
    assert match_rate(boxes, random_boxes(2000, "uniform", seed=11)) < 0.05
    assert ((boxes[:, 2:] < 0.01) | (boxes[:, 2:] > 0.99)).float().mean() > 0.5


def test_class_embeddings_are_distinct_across_patches(tiny_model):
    _, _, embeds = heads(tiny_model, scene(5, 256, shapes=30))
    cos = embeds @ embeds.T
    off = cos[~torch.eye(len(cos), dtype=torch.bool)]
    # measured: mean about 0.1-0.3, std about 0.4
    assert off.mean() < 0.5 and off.std() > 0.25


def test_same_content_same_embedding_anywhere(tiny_model):
    """Identical images give identical outputs; an object pasted at another grid-aligned place
    of another image gets the same embeddings; a copy shifted by half a patch stays similar."""
    obj = scene(6, 256)[:48, :48]
    first = scene(7, 256)
    first[16:64, 16:64] = obj
    second = scene(8, 256)
    second[160:208, 96:144] = obj
    o1, b1, e1 = heads(tiny_model, first)
    o1b, b1b, e1b = heads(tiny_model, first.copy())
    assert torch.equal(e1, e1b) and torch.equal(b1, b1b) and torch.equal(o1, o1b)
    _, _, e2 = heads(tiny_model, second)
    n = 32
    at1 = torch.tensor([(2 + r) * n + 2 + c for r in range(6) for c in range(6)])
    at2 = torch.tensor([(20 + r) * n + 12 + c for r in range(6) for c in range(6)])
    assert (e1[at1] * e2[at2]).sum(1).min() > 0.999
    # a flat-coloured disc, shifted by half a patch: the centre patch still agrees
    yy, xx = np.mgrid[0:256, 0:256]

    def disc(img, cx, cy, colour):
        img = img.copy()
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 20 ** 2] = colour
        return img

    _, _, red = heads(tiny_model, disc(scene(9, 256), 36, 36, (220, 30, 30)))
    _, _, red_shifted = heads(tiny_model, disc(scene(10, 256), 164, 100, (220, 30, 30)))
    _, _, blue = heads(tiny_model, disc(scene(10, 256), 164, 100, (30, 60, 220)))
    centre1, centre2 = 4 * n + 4, 12 * n + 20
    same = float(red[centre1] @ red_shifted[centre2])
    different = float(red[centre1] @ blue[centre2])
    assert same > 0.95 and different < 0.5, (same, different)


def test_objectness_and_logit_heads_vary(tiny_model):
    img = scene(12, 256, shapes=30)
    objectness, _, _ = heads(tiny_model, img)
    assert objectness.std() > 0.1 and objectness.min() < 0.2 and objectness.max() > 0.8
    feature_map = tiny_model.image_embedder(to_pixels(tiny_model, img))[0]
    head = tiny_model.model.class_head
    with torch.inference_mode():
        shift = head.logit_shift(feature_map.flatten(1, 2))[0, :, 0]
        scale = (head.elu(head.logit_scale(feature_map.flatten(1, 2))) + 1)[0, :, 0]
    assert -0.6 < float(shift.mean()) < 0.0 and shift.std() > 0.005
    assert 3.0 < float(scale.mean()) < 7.0 and scale.std() > 0.05


@pytest.mark.parametrize("grid", [60, 72])  # base, large
def test_layout_covers_drawn_boxes_on_real_grids(grid):
    """Box layout of the base / large grids (numpy only, no 155 M-parameter model): with boxes
    centred on their cells, nearly every drawn box has a predicted box at IoU > 0.3
    (the built base model measured 0.998 / 1.000 through its real heads)."""
    sizes = torch.from_numpy(box_size_layout(grid, seed=0)).float()
    centre = (torch.arange(grid) + 0.5) / grid
    boxes = torch.stack([centre.repeat(grid), centre.repeat_interleave(grid), sizes[:, 0],
                         sizes[:, 1]], dim=1)
    assert match_rate(boxes, random_boxes(3000, "log", seed=5)) > 0.98
    assert match_rate(boxes, random_boxes(3000, "uniform", seed=5)) > 0.99


def test_build_random_model_accepts_a_custom_spec():
    from dataclasses import replace

    spec = replace(PRESETS["tiny"], name="odd", input_size=96, patch_size=16)
    model = build_random_model(spec, seed=0)
    assert model.config.vision_config.image_size == 96
    with torch.inference_mode():
        feature_map = model.image_embedder(pixel_values=torch.zeros(1, 3, 96, 96))[0]
    assert feature_map.shape == (1, 6, 6, 64)
