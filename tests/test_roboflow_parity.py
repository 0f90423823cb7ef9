"""Roboflow Inference compatibility, pinned with our own code: the "roboflow" preprocessing,
the preprocessing as part of the embedding cache key and of `.pt` files, and a Roboflow-written
`.pt` selecting it. (The side-by-side run against the reference's own code is
`bench/roboflow_parity.py`; the scoring rules are pinned in tests/test_scoring.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from owl_core.cli.main import build_parser
from owl_core.engine.cache import EmbeddingCache
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars
from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.prompt_file import load_pt
from owl_core.engine.scoring import class_similarities
from owl_core.engine.transforms import OwlTransform
from owl_core.errors import SettingsError
from owl_core.geometry import square_to_pixels_tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def straightforward(rgb: np.ndarray, side: int) -> torch.Tensor:
    """Roboflow's recipe written out plainly: contiguous NCHW float, no antialiasing, a 0.5
    canvas, normalised afterwards."""
    h, w = rgb.shape[:2]
    r = min(side / h, side / w)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous().float()[None] / 255
    x = F.interpolate(x, size=(int(r * h), int(r * w)), mode="bilinear", align_corners=False,
                      antialias=False)
    canvas = torch.full((1, 3, side, side), 0.5)
    canvas[:, :, :x.shape[2], :x.shape[3]] = x
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((canvas - mean) / std)[0]


@pytest.mark.parametrize("side, height, width", [
    # landscape, downsampled (padding at the bottom)
    (256, 303, 384),
    # portrait, downsampled (padding on the right)
    (256, 427, 300),
    # upsampled 2x
    (256, 96, 128),
    # square: no padding at all
    (256, 200, 200),
    # r * h lands just below an integer: truncated, the content is one row short
    (960, 427, 640),
    # very thin strip
    (128, 1000, 37),
])
def test_roboflow_preprocessing_equals_the_plain_recipe(side, height, width):
    rgb = noise(height, width)
    ours = OwlTransform.for_mode(side, CLIP_MEAN, CLIP_STD, "roboflow").preprocess(rgb)
    expected = straightforward(rgb, side)
    assert ours.shape == (3, side, side)
    assert torch.allclose(ours, expected, atol=1e-5, rtol=0)


def test_roboflow_preprocessing_differs_from_hf_where_it_matters():
    # the two modes must really differ (else the mode could silently be ignored)
    rgb = noise(303, 384)
    hf = OwlTransform.for_mode(256, CLIP_MEAN, CLIP_STD, "hf")
    rf = OwlTransform.for_mode(256, CLIP_MEAN, CLIP_STD, "roboflow")
    assert (hf.pad_value, rf.pad_value) == (0.0, 0.5)
    diff = (hf.preprocess(rgb) - rf.preprocess(rgb)).abs()
    assert diff[:, 230:, :].mean() > 0.5  # the padding: 0.0 vs 0.5 before normalising
    assert diff[:, :190, :].mean() > 0.05  # the content: antialiased vs not


def test_roboflow_resized_shape_truncates():
    rf = OwlTransform.for_mode(960, CLIP_MEAN, CLIP_STD, "roboflow")
    r = min(960 / 427, 960 / 640)
    assert rf.resized_shape(427, 640) == (int(r * 427), int(r * 640))


def test_unknown_preprocessing_is_refused(tiny_model):
    with pytest.raises(SettingsError, match="hf, roboflow"):
        OwlTransform(256, CLIP_MEAN, CLIP_STD, None, "opencv")
    with pytest.raises(SettingsError, match="unknown preprocessing"):
        OwlPredictor(tiny_model, preprocessing="bicubic")


def test_predictor_embeds_with_the_chosen_preprocessing(tiny_model):
    rgb = noise(150, 200)
    rf = OwlPredictor(tiny_model, top_k=50, preprocessing="roboflow")
    hf = OwlPredictor(tiny_model, top_k=50)
    assert (rf.preprocessing, hf.preprocessing) == ("roboflow", "hf")
    pixels = straightforward(rgb, tiny_model.input_size)[None]
    feature_map = tiny_model.image_embedder(pixels)[0].float()
    n = feature_map.shape[1]
    objectness = tiny_model.model.objectness_predictor(feature_map.reshape(1, n * n, -1))
    expected_top = objectness[0].sigmoid().topk(50).values
    assert torch.allclose(rf.embeddings(rgb).objectness, expected_top, atol=1e-4)
    assert not torch.allclose(hf.embeddings(rgb).objectness, expected_top, atol=1e-4)


def test_cache_keys_differ_by_preprocessing(tiny_model):
    shared: EmbeddingCache[ImageEmbeddings] = EmbeddingCache(
        device="cpu", device_bytes=10**8, host_bytes=10**8, value_type=ImageEmbeddings)
    hf = OwlPredictor(tiny_model, top_k=50, cache=shared)
    rf = OwlPredictor(tiny_model, top_k=50, cache=shared, preprocessing="roboflow")
    assert hf.fingerprint != rf.fingerprint
    # the mode itself is part of the key, not only the pad value that comes with it
    hf_pad_half = OwlPredictor(tiny_model, top_k=50, cache=shared)
    t = hf.transform
    hf_pad_half.transform = OwlTransform(t.input_size, t.image_mean, t.image_std, 0.5, "hf")
    assert hf_pad_half.fingerprint != rf.fingerprint
    rgb = noise(120, 200)
    content = hf.embed(rgb)
    assert rf._key(content) not in shared  # embedded in hf mode only
    emb_rf = rf.embeddings(rgb)
    assert rf._key(content) in shared and hf._key(content) in shared
    assert not torch.equal(emb_rf.class_embeds, hf.embeddings(rgb).class_embeds)


def test_switching_mode_never_returns_the_other_modes_embeddings(tiny_model):
    pred = OwlPredictor(tiny_model, top_k=50)
    rgb = noise(120, 200)
    hf_emb = pred.embeddings(rgb)
    pred.set_preprocessing("roboflow")
    rf_emb = pred.embeddings(rgb)
    assert not torch.equal(hf_emb.class_embeds, rf_emb.class_embeds)
    pred.set_preprocessing("hf")
    assert torch.equal(pred.embeddings(rgb).class_embeds, hf_emb.class_embeds)


def _examples(rgb: np.ndarray) -> list[dict]:
    return [{"image": rgb, "boxes": [
        {"x": 60, "y": 50, "w": 50, "h": 40, "cls": "a", "negative": False},
        {"x": 140, "y": 60, "w": 40, "h": 60, "cls": "b", "negative": False},
    ]}]


@pytest.mark.parametrize("mode", ["hf", "roboflow"])
def test_export_records_the_preprocessing_and_reloads_it(mode, tiny_model, tmp_path):
    rgb = noise(120, 200)
    pred = OwlPredictor(tiny_model, top_k=50, preprocessing=mode)
    assert pred.set_examples(_examples(rgb)).boxes[0].matched
    path = pred.export(tmp_path / "prompts.pt")
    assert load_pt(path).meta["preprocessing"] == mode
    again = OwlPredictor.from_pt(path, model=tiny_model, top_k=50)
    assert again.preprocessing == mode
    # same mode, so the file's image embeddings are reused and detections agree
    expected = pred.detect(rgb, confidence=0.0)
    got = again.detect(rgb, confidence=0.0)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-6)


def roboflow_file(path, dim: int, hf_id: str) -> None:
    """What Roboflow Inference's SerializedOwlV2.save_model writes (small variant): its keys
    only, no "owl_studio" block."""
    torch.save({"huggingface_id": hf_id, "train_data_dict": {
        "a": {"positive": F.normalize(torch.randn(2, dim), dim=-1), "negative": None}},
        "class_names": ["a"], "roboflow_id": "owlv2/owlv2-base-patch16-ensemble",
        "image_embeds": {}}, path)


def test_a_roboflow_written_pt_selects_roboflow_preprocessing(tiny_model, tmp_path):
    path = tmp_path / "weights.pt"
    roboflow_file(path, tiny_model.class_embed_dim, tiny_model.model_id)
    assert OwlPredictor.from_pt(path, model=tiny_model).preprocessing == "roboflow"
    # unless the caller says otherwise, in the constructor or in load_pt
    assert OwlPredictor.from_pt(path, model=tiny_model, preprocessing="hf").preprocessing == "hf"
    pred = OwlPredictor(tiny_model)
    pred.load_pt(path, preprocessing="hf")
    assert pred.preprocessing == "hf"
    pinned = OwlPredictor(tiny_model, preprocessing="hf")
    pinned.load_pt(path)
    assert pinned.preprocessing == "hf"


def test_images_scored_against_a_roboflow_file_use_its_preprocessing(tiny_model, tmp_path):
    path = tmp_path / "weights.pt"
    roboflow_file(path, tiny_model.class_embed_dim, tiny_model.model_id)
    pred = OwlPredictor(tiny_model, top_k=50)
    rgb = noise(120, 200)
    hf_objectness = pred.embeddings(rgb).objectness
    pred.load_pt(path)
    rf_reference = OwlPredictor(tiny_model, top_k=50, preprocessing="roboflow")
    assert torch.equal(pred.embeddings(rgb).objectness, rf_reference.embeddings(rgb).objectness)
    assert not torch.equal(pred.embeddings(rgb).objectness, hf_objectness)
    pred.clear_imported()  # the file's mode no longer applies
    assert pred.preprocessing == "hf"


def test_cli_has_the_preprocessing_flag():
    parser = build_parser()
    args = parser.parse_args(["predict", "--weights", "x.pt", "--preprocessing", "roboflow",
                              "img.png"])
    assert args.preprocessing == "roboflow"
    assert parser.parse_args(["predict", "--weights", "x.pt", "img.png"]).preprocessing is None
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--weights", "x.pt", "--preprocessing", "cv2", "i.png"])


def test_similarities_are_computed_per_class_and_sign_as_roboflow_does():
    # Roboflow computes einsum("sd,nd->ns", image_class_embeds, one group's exemplars) per
    # class and sign; one product over all exemplars rounds differently in the last bit, which
    # reorders near-tied candidates in NMS. Bitwise equality pins the arithmetic.
    g = torch.Generator().manual_seed(0)
    k, d = 300, 512
    emb = ImageEmbeddings(
        objectness=torch.rand(k, generator=g), boxes=torch.rand(k, 4, generator=g),
        class_embeds=F.normalize(torch.randn(k, d, generator=g), dim=-1),
        logit_shift=torch.zeros(k), logit_scale=torch.ones(k), image_size=(100, 100))
    ids = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1])
    negative = torch.tensor([False, False, True, False, True, False, False, True, False])
    ex = Exemplars(("a", "b", "c"), F.normalize(torch.randn(9, d, generator=g), dim=-1), ids,
                   negative)
    best_pos, best_neg = class_similarities(emb, ex)
    for c in range(3):
        for sign, got in ((False, best_pos), (True, best_neg)):
            rows = ex.embeds[(ids == c) & (negative == sign)]
            want = torch.einsum("sd,nd->ns", emb.class_embeds, rows).max(dim=0)[0]
            assert torch.equal(got[:, c], want)


@pytest.mark.parametrize("mode", ["hf", "roboflow"])
def test_roboflow_mode_snaps_drawn_boxes_among_the_top_k_only(mode, tiny_model):
    # Roboflow matches a drawn box against the top-K candidates it keeps; we match against
    # every patch ("hf"), except in roboflow mode, so its exemplars are reproduced
    pred = OwlPredictor(tiny_model, top_k=20, match_threshold=0.05, preprocessing=mode)
    rgb = noise(120, 200, seed=3)
    emb = pred.embeddings(rgb, keep_patches=True)
    pixels = square_to_pixels_tensor(emb.patch_boxes, emb.image_size)
    area = (pixels[:, 2] - pixels[:, 0]) * (pixels[:, 3] - pixels[:, 1])
    outside_top_k = [i for i in area.argsort(descending=True).tolist()
                     if i not in set(emb.topk_index.tolist())]
    patch = outside_top_k[0]  # the largest predicted box that is not among the top K
    x0, y0, x1, y1 = pixels[patch].tolist()
    report = pred.set_examples([{"image": rgb, "boxes": [
        {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "w": x1 - x0, "h": y1 - y0, "cls": "a",
         "negative": False}]}])
    assert report.boxes[0].matched
    exemplar = pred.exemplars.embeds[0]
    if mode == "hf":
        assert torch.equal(exemplar, emb.patch_class_embeds[patch])
    else:
        top_k_xyxy = square_to_pixels_tensor(emb.boxes, emb.image_size)
        row = int(box_iou(pixels[patch][None], top_k_xyxy)[0].argmax())
        assert torch.equal(exemplar, emb.class_embeds[row])
        assert not torch.equal(exemplar, emb.patch_class_embeds[patch])
