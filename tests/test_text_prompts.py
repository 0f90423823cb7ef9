"""Text prompts (issue 18): phrases next to drawn boxes, the two combine modes, the text cache,
zero-shot parity with transformers' own text path, and bad phrases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Owlv2ForObjectDetection, Owlv2Processor

from owl_core.engine import text as text_module
from owl_core.engine.embedding import compute_embeddings
from owl_core.engine.matching import Exemplars, ExemplarSource, combine_exemplars
from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.random_model import make_random_model
from owl_core.engine.scoring import detect
from owl_core.errors import LimitError, SettingsError, TrainingDataError
from owl_core.params import MAX_DETECTIONS_LIMIT, DetectParams
from owl_core.phrases import PromptPhrase, parse_phrases


def scene(seed: int, height: int, width: int, shapes: int = 12) -> np.ndarray:
    """uint8 RGB: a noisy background with flat coloured rectangles."""
    rng = np.random.default_rng(seed)
    img = rng.integers(70, 140, (height, width, 3)).astype(np.uint8)
    for _ in range(shapes):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(max(2, width // 20), width // 3), rng.integers(max(2, height // 20),
                                                                          height // 3)
        img[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return img


def zero_shot_predictor(model_dir, **kwargs) -> OwlPredictor:
    return OwlPredictor(str(model_dir), device="cpu", dtype="fp32", top_k=MAX_DETECTIONS_LIMIT,
                        **kwargs)


ZERO_SHOT = DetectParams(confidence=0.0, iou_threshold=1.0, max_detections=MAX_DETECTIONS_LIMIT,
                         score_mode="calibrated")


def transformers_text_path(model_dir, image: np.ndarray, phrases: list[str], threshold: float):
    """transformers' own zero-shot detection: boxes (XYXY pixels, unclipped), scores, labels."""
    processor = Owlv2Processor.from_pretrained(model_dir)
    model = Owlv2ForObjectDetection.from_pretrained(model_dir).eval()
    inputs = processor(text=[phrases], images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    height, width = image.shape[:2]
    found = processor.image_processor.post_process_object_detection(
        outputs, threshold=threshold, target_sizes=[(height, width)])[0]
    return found["boxes"], found["scores"], found["labels"], inputs, outputs


def assert_same_detections(ours, boxes, scores, labels, phrases, image_size):
    """Same set of (box, class, score): transformers' boxes clipped to the image (we clip),
    those wholly in the padding dropped (we never report them)."""
    width, height = image_size
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    clipped, scores, labels = clipped[inside], scores[inside], labels[inside]
    assert len(ours) == len(scores) > 10
    order_t = torch.argsort(scores, descending=True)
    order_o = np.argsort(-ours.confidence, kind="stable")
    np.testing.assert_allclose(ours.confidence[order_o], scores[order_t].numpy(), atol=1e-4)
    # boxes and classes compared as sets of rows (near-equal scores may swap places)
    theirs = sorted(zip(clipped.tolist(), [phrases[i] for i in labels.tolist()], strict=True))
    mine = sorted(zip(ours.xyxy.tolist(), [ours.class_names[i] for i in ours.class_id],
                      strict=True))
    for (box_t, cls_t), (box_o, cls_o) in zip(theirs, mine, strict=True):
        assert cls_o == cls_t
        np.testing.assert_allclose(box_o, box_t, atol=1e-2)


# ---------------------------------------------------------------------------- zero-shot parity
@pytest.mark.parametrize("phrases", [
    # one phrase per class
    ["coin", "a red cup"],
    # three classes, one a single character (shortest)
    ["x", "dog", "car wheel"],
])
def test_text_only_prompt_equals_transformers_text_path(tiny_model_dir, phrases):
    """A text-only prompt (calibrated, IoU 1.0, top-K = all patches) gives transformers'
    detections: same boxes, each box's best class, scores within 1e-4."""
    image = scene(1, 256, 256)  # the model's input size: both pipelines see the same pixels
    boxes, scores, labels, _, _ = transformers_text_path(tiny_model_dir, image, phrases, 0.3)
    predictor = zero_shot_predictor(tiny_model_dir)
    predictor.set_examples(phrases={p: [p] for p in phrases})
    ours = predictor.detect(image, ZERO_SHOT.replace(confidence=0.3))
    assert_same_detections(ours, boxes, scores, labels, phrases, (256, 256))


def test_text_path_on_transformers_pixels_of_a_non_square_image(tiny_model, tiny_model_dir):
    """Fed the processor's own pixels (its resize differs from ours in the last digits), a
    non-square image also gives transformers' detections, padding boxes aside."""
    phrases = ["coin", "mug"]
    image = scene(2, 150, 256)
    boxes, scores, labels, inputs, _ = transformers_text_path(tiny_model_dir, image, phrases,
                                                              0.3)
    predictor = zero_shot_predictor(tiny_model_dir)
    predictor.set_examples(phrases={p: [p] for p in phrases})
    emb = compute_embeddings(tiny_model, inputs["pixel_values"], [(256, 150)],
                             tiny_model.grid_size ** 2)[0]
    p = ZERO_SHOT.replace(confidence=0.3)
    ours = detect(emb, predictor.scored_exemplars(), p.confidence, p.iou_threshold,
                  p.max_detections, p.score_mode)
    assert_same_detections(ours, boxes, scores, labels, phrases, (256, 150))


def test_phrase_embedding_is_transformers_query_embedding(tiny_model_dir):
    """The cached phrase embedding is the model's own text query (its `text_embeds`)."""
    phrases = ["coin", "a red cup"]
    *_, outputs = transformers_text_path(tiny_model_dir, scene(0, 256, 256), phrases, 0.5)
    predictor = zero_shot_predictor(tiny_model_dir)
    ours = predictor.embed_phrases(phrases)
    np.testing.assert_allclose(ours.numpy(), F.normalize(outputs.text_embeds[0], dim=-1).numpy(),
                               atol=1e-5)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    return make_random_model("base", tmp_path_factory.mktemp("models") / "base", seed=0)


@pytest.mark.slow
def test_text_only_prompt_equals_transformers_on_the_base_architecture(base_model_dir):
    """The same parity on the architecture of google/owlv2-base-patch16 (random weights)."""
    phrases = ["coin", "a red cup", "dog"]
    image = scene(3, 960, 960)
    boxes, scores, labels, _, _ = transformers_text_path(base_model_dir, image, phrases, 0.2)
    predictor = zero_shot_predictor(base_model_dir)
    predictor.set_examples(phrases={p: [p] for p in phrases})
    ours = predictor.detect(image, ZERO_SHOT.replace(confidence=0.2))
    assert_same_detections(ours, boxes, scores, labels, phrases, (960, 960))


# ---------------------------------------------------------------------------- combine modes
def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_fused_mode_is_the_normalised_sum_of_mean_text_and_mean_boxes():
    """Kaul et al.: normalise(normalise(mean text) + normalise(mean boxes)); negatives kept."""
    embeds = unit([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1])
    sources = (ExemplarSource("h", (0, 0, 1, 1), "a", False, 0.9),
               ExemplarSource("h", (0, 0, 2, 2), "a", False, 0.9),
               ExemplarSource.of_phrase(PromptPhrase("a", "thing")),
               ExemplarSource.of_phrase(PromptPhrase("b", "other")),
               ExemplarSource("h", (0, 0, 3, 3), "a", True, 0.9))
    ex = Exemplars(("a", "b"), embeds, torch.tensor([0, 0, 0, 1, 0]),
                   torch.tensor([False, False, False, False, True]), sources)
    fused = combine_exemplars(ex, "fused")
    mean_boxes = F.normalize(embeds[:2].mean(0), dim=0)
    expected_a = F.normalize(mean_boxes + embeds[2], dim=0)
    assert fused.class_ids.tolist() == [0, 1, 0] and fused.negative.tolist() == [False, False,
                                                                                 True]
    torch.testing.assert_close(fused.embeds[0], expected_a)
    torch.testing.assert_close(fused.embeds[1], embeds[3])  # phrase only: the phrase
    torch.testing.assert_close(fused.embeds[2], embeds[4])  # the negative box as it was
    assert combine_exemplars(ex, "max") is ex
    with pytest.raises(SettingsError, match="combine mode"):
        combine_exemplars(ex, "mean")


def test_max_mode_scores_a_phrase_as_one_more_exemplar(tiny_model_dir):
    """max: the class score is the best of its box and phrase matches; fused differs."""
    image = scene(4, 256, 256)
    predictor = zero_shot_predictor(tiny_model_dir)
    box = {"x": 60, "y": 60, "w": 40, "h": 40, "cls": "coin", "negative": False}
    report = predictor.set_examples([{"image": image, "boxes": [box]}], phrases={"coin": "coin"})
    assert report.boxes[0].matched and report.phrases == (PromptPhrase("coin", "coin"),)
    assert len(predictor.exemplars) == 2
    emb = predictor.embeddings(image)
    sims = emb.class_embeds @ predictor.exemplars.embeds.T  # (K, 2)
    best = predictor.detect(image, confidence=0.0, iou_threshold=1.0,
                            max_detections=MAX_DETECTIONS_LIMIT)
    assert np.isclose(best.confidence.max(), float((sims.max(1).values.max() + 1) / 2),
                      atol=1e-5)
    fused = predictor.detect(image, confidence=0.0, iou_threshold=1.0,
                             max_detections=MAX_DETECTIONS_LIMIT, combine="fused")
    proto = F.normalize(predictor.exemplars.embeds.sum(0), dim=0)
    assert np.isclose(fused.confidence.max(), float(((emb.class_embeds @ proto).max() + 1) / 2),
                      atol=1e-5)
    assert not np.isclose(fused.confidence.max(), best.confidence.max())


@pytest.mark.parametrize("score_mode", ["reference", "calibrated"])
def test_both_score_modes_work_with_phrases(tiny_model_dir, score_mode):
    predictor = zero_shot_predictor(tiny_model_dir)
    predictor.set_examples(phrases={"coin": ["coin"]})
    found = predictor.detect(scene(5, 200, 256), confidence=0.0, score_mode=score_mode)
    assert len(found) > 0 and 0 < found.confidence.max() <= 1


def test_negative_phrase_removes_what_it_matches_best(tiny_model_dir):
    """A negative phrase acts as a negative box: a candidate closer to it than to the class's
    positives is never that class."""
    image = scene(6, 256, 256)
    predictor = zero_shot_predictor(tiny_model_dir)
    predictor.set_examples(phrases={"coin": ["coin"]})
    before = predictor.detect(image, confidence=0.0, max_detections=MAX_DETECTIONS_LIMIT,
                              iou_threshold=1.0)
    predictor.set_examples(phrases=[{"cls": "coin", "text": "coin"},
                                    {"cls": "coin", "text": "dog", "negative": True}])
    after = predictor.detect(image, confidence=0.0, max_detections=MAX_DETECTIONS_LIMIT,
                             iou_threshold=1.0)
    emb = predictor.embeddings(image)
    pos, neg = predictor.embed_phrases(["coin", "dog"])
    beaten = int(((emb.class_embeds @ neg) >= (emb.class_embeds @ pos)).sum())
    assert beaten > 0 and len(after) == len(before) - beaten


def test_phrase_only_class_beside_a_box_class(tiny_model_dir):
    """Classes: boxes for one, a phrase for the other; the class order is boxes then phrases."""
    image = scene(7, 256, 256)
    predictor = zero_shot_predictor(tiny_model_dir)
    box = {"x": 60, "y": 60, "w": 40, "h": 40, "cls": "cup", "negative": False}
    predictor.set_examples([{"image": image, "boxes": [box]}], phrases={"coin": ["coin"]})
    assert predictor.class_names == ("cup", "coin")
    with pytest.raises(TrainingDataError, match="phrases use classes"):
        predictor.set_examples([], ["cup"], phrases={"coin": ["coin"]})


# ---------------------------------------------------------------------------- the text cache
def test_each_phrase_is_embedded_once_per_model(tiny_model_dir, tmp_path, monkeypatch):
    """Editing one phrase embeds only that phrase; a new predictor on the same disk cache
    embeds none again."""
    calls: list[list[str]] = []
    real = text_module.compute_text_embeddings

    def spy(owl, phrases):
        calls.append(list(phrases))
        return real(owl, phrases)

    monkeypatch.setattr(text_module, "compute_text_embeddings", spy)
    predictor = zero_shot_predictor(tiny_model_dir, disk_cache_dir=tmp_path / "cache")
    predictor.set_examples(phrases={"coin": ["coin"], "cup": ["cup"]})
    predictor.set_examples(phrases={"coin": ["coin"], "cup": ["a mug"]})
    assert calls == [["coin", "cup"], ["a mug"]]
    again = zero_shot_predictor(tiny_model_dir, disk_cache_dir=tmp_path / "cache")
    again.set_examples(phrases={"coin": ["coin"], "cup": ["a mug"]})
    assert calls == [["coin", "cup"], ["a mug"]]
    assert again.text_cache_stats().hits_disk == 2
    assert list((tmp_path / "cache" / "text").glob("*.pt"))


def test_text_cache_is_bounded_by_bytes(tiny_model_dir):
    cache = text_module.new_text_cache(memory_bytes=3 * 32 * 4)  # three tiny (32-dim) rows
    predictor = zero_shot_predictor(tiny_model_dir, text_cache=cache)
    predictor.embed_phrases(["a", "b", "c", "d", "e"])
    stats = predictor.text_cache_stats()
    assert stats.entries_device == 3 and stats.bytes_device <= 3 * 32 * 4


# ---------------------------------------------------------------------------- bad phrases
@pytest.mark.parametrize("phrases, match", [
    # empty phrase
    ({"coin": [""]}, "the phrase is empty"),
    # whitespace only
    ({"coin": ["  \t "]}, "the phrase is empty"),
    # control characters
    ({"coin": ["co\x00in"]}, "control characters"),
    # escape sequence
    ({"coin": ["\x1b[31mred"]}, "control characters"),
    # not a string
    ({"coin": [3]}, "must be a string"),
    # empty class
    ({"": ["coin"]}, "Type a class name"),
    # list form without text
    ([{"cls": "coin"}], "needs 'cls'"),
    # a bad flag
    ([{"cls": "coin", "text": "c", "negative": "yes"}], "'negative' must be true or false"),
    # not a container
    ("coin", "expected"),
])
def test_bad_phrases_are_refused_with_the_fix(phrases, match):
    with pytest.raises(TrainingDataError, match=match):
        parse_phrases(phrases)


def test_phrase_limits(monkeypatch):
    with pytest.raises(LimitError, match="max_phrases_total"):
        parse_phrases({"coin": [f"c{i}" for i in range(5000)]})
    with pytest.raises(LimitError, match="max_phrases_per_class"):
        parse_phrases({"coin": [f"c{i}" for i in range(65)]})
    with pytest.raises(LimitError, match="max_phrase_chars"):
        parse_phrases({"coin": ["x" * 301]})
    monkeypatch.setenv("OWL_MAX_PHRASES_TOTAL", "2")
    with pytest.raises(LimitError, match="OWL_MAX_PHRASES_TOTAL"):
        parse_phrases({"a": ["x"], "b": ["y"], "c": ["z"]})


def test_whitespace_collapses_and_duplicates_go():
    assert parse_phrases({"coin": ["a  round\ncoin", "a round coin"]}) == (
        PromptPhrase("coin", "a round coin"),)


def test_phrase_over_the_token_limit_is_refused_before_any_image(tiny_model_dir, monkeypatch):
    """The tiny tokenizer makes one token per character; 16 positions hold 14."""
    predictor = zero_shot_predictor(tiny_model_dir)
    embedded = []
    monkeypatch.setattr(predictor, "_embed", lambda *a, **k: embedded.append(1))
    with pytest.raises(TrainingDataError, match="15 tokens long; this model reads at most 14"):
        predictor.set_examples([{"image": scene(0, 64, 64), "boxes": []}],
                               phrases={"coin": ["x" * 15]})
    assert not embedded
    assert len(predictor.embed_phrases(["x" * 14])) == 1


# ---------------------------------------------------------------------------- .pt files
def test_phrases_and_their_embeddings_round_trip_through_a_pt(tiny_model_dir, tmp_path):
    """A phrase-only class is a positive row of train_data_dict (what Roboflow's loaders read);
    our metadata marks it as a phrase, so both combine modes detect the same after loading."""
    from owl_core.engine.prompt_file import FORMAT_VERSION, load_pt

    image = scene(8, 256, 256)
    predictor = zero_shot_predictor(tiny_model_dir)
    box = {"x": 60, "y": 60, "w": 40, "h": 40, "cls": "cup", "negative": False}
    predictor.set_examples([{"image": image, "boxes": [box]}],
                           phrases=[{"cls": "coin", "text": "coin"},
                                    {"cls": "cup", "text": "a mug"},
                                    {"cls": "cup", "text": "dog", "negative": True}])
    path = predictor.export(tmp_path / "p.pt")
    raw = torch.load(path, weights_only=True)
    coin = predictor.embed_phrases(["coin"])
    torch.testing.assert_close(raw["train_data_dict"]["coin"]["positive"], coin)
    assert raw["train_data_dict"]["coin"]["negative"] is None
    assert raw["train_data_dict"]["cup"]["positive"].shape[0] == 2
    assert raw["owl_studio"]["format_version"] == FORMAT_VERSION == 2
    loaded = load_pt(path)
    assert set(loaded.exemplars.phrases()) == {PromptPhrase("coin", "coin"),
                                               PromptPhrase("cup", "a mug"),
                                               PromptPhrase("cup", "dog", True)}
    other = zero_shot_predictor(tiny_model_dir)
    other.load_pt(path)
    for mode in ("max", "fused"):
        a = predictor.detect(image, confidence=0.5, combine=mode)
        b = other.detect(image, confidence=0.5, combine=mode)
        assert len(a) > 0 and np.allclose(a.xyxy, b.xyxy) and np.allclose(a.confidence,
                                                                           b.confidence)


def test_a_version_1_pt_still_loads(tiny_model_dir, tmp_path):
    from owl_core.engine.prompt_file import load_pt

    image = scene(9, 256, 256)
    predictor = zero_shot_predictor(tiny_model_dir)
    box = {"x": 60, "y": 60, "w": 40, "h": 40, "cls": "cup", "negative": False}
    predictor.set_examples([{"image": image, "boxes": [box]}])
    path = predictor.export(tmp_path / "v1.pt")
    raw = torch.load(path, weights_only=True)
    raw["owl_studio"]["format_version"] = 1
    torch.save(raw, tmp_path / "old.pt")
    loaded = load_pt(tmp_path / "old.pt")
    assert loaded.exemplars.class_names == ("cup",) and loaded.exemplars.phrases() == ()


def test_a_bad_phrase_in_a_pt_is_refused(tiny_model_dir, tmp_path):
    from owl_core.engine.prompt_file import load_pt
    from owl_core.errors import PtFormatError

    predictor = zero_shot_predictor(tiny_model_dir)
    predictor.set_examples(phrases={"coin": ["coin"]})
    path = predictor.export(tmp_path / "p.pt")
    raw = torch.load(path, weights_only=True)
    raw["owl_studio"]["exemplars"][0]["phrase"] = "co\x00in"
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(PtFormatError, match="control characters"):
        load_pt(tmp_path / "bad.pt")
