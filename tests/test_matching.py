"""`owl_core.engine.matching` on hand-made embeddings (no model): drawn boxes snapping to
predicted boxes at the match threshold, exemplar sets merged / converted / combined. Part of
the mutation check's test selection (bench/mutation.sh)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import (
    BoxMatch,
    Exemplars,
    ExemplarSource,
    MatchReport,
    combine_exemplars,
    exemplar_embedding,
    match_boxes,
)
from owl_core.engine.training_data import PromptBox
from owl_core.errors import SettingsError
from owl_core.params import DEFAULT_MATCH_THRESHOLD
from owl_core.phrases import PromptPhrase

SIZE = (200, 100)  # width, height: the padded square's side is 200


def embeddings(patch_boxes_px: list[tuple[float, float, float, float]], dim: int = 4,
               patches: bool = True) -> ImageEmbeddings:
    """Embeddings of a 200 x 100 image whose patches predict the given XYXY pixel boxes; patch
    i's class embedding is the unit vector e_(i mod dim) scaled by (i + 1) before L2
    normalisation (so each patch is told apart by its own row)."""
    xyxy = torch.tensor(patch_boxes_px, dtype=torch.float32) / 200
    cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                          xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1)
    n = len(patch_boxes_px)
    embeds = torch.arange(1, n * dim + 1, dtype=torch.float32).reshape(n, dim)
    embeds = F.normalize(embeds, dim=-1)
    order = torch.arange(n - 1, -1, -1)  # top-K = the patches in reverse order
    if not patches:
        return ImageEmbeddings(torch.linspace(0.9, 0.1, n), cxcywh, embeds, torch.zeros(n),
                               torch.ones(n), SIZE)
    return ImageEmbeddings(torch.linspace(0.9, 0.1, n), cxcywh[order], embeds[order],
                           torch.zeros(n), torch.ones(n), SIZE, patch_boxes=cxcywh,
                           topk_index=order, patch_class_embeds=embeds)


def box(xyxy, cls="a", negative=False) -> PromptBox:
    x0, y0, x1, y1 = xyxy
    return PromptBox((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, cls, negative)


PATCHES = [(10, 10, 50, 50), (100, 20, 180, 90), (0, 0, 200, 100)]


# ------------------------------------------------------------------------------ match_boxes
def test_a_drawn_box_snaps_to_the_patch_it_overlaps_most():
    emb = embeddings(PATCHES)
    [(index, iou, snapped, reason)] = match_boxes(emb, [box((100, 20, 180, 90))])
    assert (index, reason) == (1, None)
    assert iou == pytest.approx(1.0)
    assert snapped == pytest.approx((100, 20, 180, 90), abs=1e-3)


def test_the_match_threshold_is_inclusive_and_explains_a_miss():
    emb = embeddings(PATCHES)
    drawn = box((10, 10, 50, 70))  # IoU with patch 0: 1600 / 2400 = 2/3
    [(index, iou, snapped, reason)] = match_boxes(emb, [drawn], threshold=2 / 3 - 1e-6)
    assert index == 0 and iou == pytest.approx(2 / 3, abs=1e-5) and reason is None
    [(index, iou, snapped, reason)] = match_boxes(emb, [drawn], threshold=0.7)
    assert index is None and iou == pytest.approx(2 / 3, abs=1e-5)
    assert snapped == pytest.approx((10, 10, 50, 50), abs=1e-3)  # shown even when unmatched
    assert reason == ("best IoU 0.67 with any predicted box is below the match threshold "
                      "0.70; draw the box tighter around the object or lower the match "
                      "threshold")


def test_the_default_match_threshold_is_the_references():
    assert DEFAULT_MATCH_THRESHOLD == 0.3
    emb = embeddings([(0, 0, 100, 100)])
    at = box((0, 0, 30, 100))   # IoU 0.30: matched
    below = box((0, 0, 29, 100))  # IoU 0.29: not
    [(i_at, *_), (i_below, *_)] = match_boxes(emb, [at, below])
    assert i_at == 0 and i_below is None


@pytest.mark.parametrize("xyxy", [
    (210, 10, 260, 50),    # right of the image
    (10, 110, 50, 150),    # below it (the padded square's empty part)
    (-50, 10, -10, 50),    # left of it
    (10, -60, 50, -10),    # above it
    (30, 30, 30, 60),      # no width
    (30, 30, 60, 30),      # no height
])
def test_a_box_outside_the_image_matches_nothing(xyxy):
    [(index, iou, snapped, reason)] = match_boxes(embeddings(PATCHES), [box(xyxy)],
                                                  threshold=0.0)
    assert (index, iou, snapped) == (None, 0.0, None)
    assert reason == "the box lies outside the image"


def test_boxes_keep_their_order_and_no_boxes_is_no_matches():
    emb = embeddings(PATCHES)
    out = match_boxes(emb, [box((0, 0, 200, 100)), box((300, 0, 400, 50)),
                            box((12, 10, 50, 52))])
    assert [o[0] for o in out] == [2, None, 0]
    assert match_boxes(emb, []) == []


def test_top_k_only_embeddings_snap_among_the_top_k_rows():
    emb = embeddings(PATCHES).top_k_only()  # rows in reverse patch order
    [(index, *_)] = match_boxes(emb, [box((10, 10, 50, 50))])
    assert index == 2  # the row of patch 0 among the top K
    torch.testing.assert_close(exemplar_embedding(emb, index), emb.class_embeds[2])


def test_exemplar_embedding_of_a_patch_index():
    emb = embeddings(PATCHES)
    torch.testing.assert_close(exemplar_embedding(emb, 0), emb.patch_class_embeds[0])
    # without the patch embeddings, a patch inside the top K is found by its index
    lean = emb.without_patches()
    torch.testing.assert_close(exemplar_embedding(lean, 0), emb.patch_class_embeds[0])


# ------------------------------------------------------------------------------ reports
def test_match_report_lists_the_unmatched_boxes():
    hit = BoxMatch(0, 0, "h", "a", False, (0, 0, 1, 1), True, 0.9, (0, 0, 1, 1))
    miss = BoxMatch(0, 1, "h", "b", True, (0, 0, 1, 1), False, 0.1, None, "why")
    report = MatchReport((hit, miss), ("a", "b"), 0.3)
    assert report.unmatched == [miss]
    assert report.to_dicts()[1] == {"image_index": 0, "box_index": 1, "image_hash": "h",
                                    "cls": "b", "negative": True,
                                    "drawn_xyxy": (0, 0, 1, 1), "matched": False, "iou": 0.1,
                                    "matched_xyxy": None, "reason": "why"}


# ------------------------------------------------------------------------------ exemplar sets
def src(image_hash: str, cls: str, negative: bool = False, phrase: str = "") -> ExemplarSource:
    return ExemplarSource(image_hash, (1.0, 2.0, 3.0, 4.0), cls, negative, 0.5, phrase)


def rows(*values: float) -> torch.Tensor:
    return torch.tensor([[v, 1.0] for v in values])


def test_empty_exemplars():
    empty = Exemplars.empty(["a", "b"], dim=3)
    assert len(empty) == 0 and empty.class_names == ("a", "b")
    assert empty.embeds.shape == (0, 3) and empty.class_ids.dtype == torch.long
    assert empty.negative.dtype == torch.bool and empty.sources == ()


def test_to_moves_every_tensor_and_keeps_the_rest():
    ex = Exemplars(("a", "b"), rows(1, 2), torch.tensor([1, 0]), torch.tensor([True, False]),
                   (src("h", "b", True), src("h", "a")))
    moved = ex.to("meta")
    assert {t.device.type for t in (moved.embeds, moved.class_ids, moved.negative)} == {"meta"}
    assert moved.class_names == ex.class_names and moved.sources == ex.sources
    back = ex.to("cpu")
    assert torch.equal(back.embeds, ex.embeds) and torch.equal(back.class_ids, ex.class_ids)
    assert torch.equal(back.negative, ex.negative)


def test_known_sources_fills_blanks_for_foreign_rows():
    ex = Exemplars(("a", "b"), rows(1, 2), torch.tensor([1, 0]), torch.tensor([True, False]))
    assert ex.known_sources() == (ExemplarSource("", (0.0, 0.0, 0.0, 0.0), "b", True, 0.0),
                                  ExemplarSource("", (0.0, 0.0, 0.0, 0.0), "a", False, 0.0))
    assert ex.text_mask().tolist() == [False, False] and ex.phrases() == ()
    assert ex.text_mask().dtype == torch.bool  # a mask: `positive & text` needs bools
    with_sources = Exemplars(("a",), rows(1), torch.tensor([0]), torch.tensor([False]),
                             (src("h", "a"),))
    assert with_sources.known_sources() == (src("h", "a"),)


def test_phrases_and_text_mask_follow_the_sources():
    phrase = PromptPhrase("b", "a red cup", negative=True)
    ex = Exemplars(("a",), rows(1), torch.tensor([0]), torch.tensor([False]), (src("h", "a"),))
    both = ex.with_phrases([phrase], torch.tensor([[0.0, 2.0]], dtype=torch.float64))
    assert both.class_names == ("a", "b")
    assert both.class_ids.tolist() == [0, 1] and both.negative.tolist() == [False, True]
    assert both.embeds.dtype == torch.float32
    assert both.text_mask().tolist() == [False, True] and both.text_mask().dtype == torch.bool
    assert both.phrases() == (phrase,)
    assert both.sources[1] == ExemplarSource("", (0.0, 0.0, 0.0, 0.0), "b", True, 0.0,
                                             "a red cup")
    assert ex.with_phrases([], torch.zeros(0, 2)) is ex


def test_merged_unions_classes_by_name_and_keeps_a_repeat_once():
    a = Exemplars(("x", "y"), rows(1, 2), torch.tensor([0, 1]), torch.tensor([False, True]),
                  (src("h1", "x"), src("h1", "y", True)))
    b = Exemplars(("y", "z"), rows(2, 3), torch.tensor([0, 1]), torch.tensor([True, False]),
                  (src("h1", "y", True), src("h2", "z")))
    m = a.merged(b)
    assert m.class_names == ("x", "y", "z")
    assert m.class_ids.tolist() == [0, 1, 2]  # b's "y" repeat dropped, its "z" remapped to 2
    assert m.negative.tolist() == [False, True, False]
    assert m.embeds[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert m.sources == (src("h1", "x"), src("h1", "y", True), src("h2", "z"))


def test_merged_keeps_rows_without_provenance():
    a = Exemplars(("x",), rows(1), torch.tensor([0]), torch.tensor([False]))
    b = Exemplars(("x",), rows(1), torch.tensor([0]), torch.tensor([False]))
    m = a.merged(b)
    assert len(m) == 2 and m.sources == ()
    assert a.merged(Exemplars.empty(("w",), 2)).class_names == ("x", "w")
    m2 = Exemplars.empty((), 2).merged(b)
    assert len(m2) == 1 and m2.class_names == ("x",)


def test_train_data_dict_round_trip():
    ex = Exemplars(("a", "b", "c"), rows(1, 2, 3, 4), torch.tensor([1, 0, 1, 1]),
                   torch.tensor([False, False, True, False]))
    d = ex.to_train_data_dict()
    assert d["a"]["positive"][:, 0].tolist() == [2.0] and d["a"]["negative"] is None
    assert d["b"]["positive"][:, 0].tolist() == [1.0, 4.0]
    assert d["b"]["negative"][:, 0].tolist() == [3.0]
    assert d["c"] == {"positive": None, "negative": None}
    back = Exemplars.from_train_data_dict(("a", "b", "c"), d)
    assert back.class_ids.tolist() == [0, 1, 1, 1]  # class by class, positives first
    assert back.negative.tolist() == [False, False, False, True]
    assert back.embeds[:, 0].tolist() == [2.0, 1.0, 4.0, 3.0]
    assert len(Exemplars.from_train_data_dict(("a",), {"a": {"positive": None}})) == 0
    sources = [src(str(i), "a") for i in range(4)]
    assert Exemplars.from_train_data_dict(("a", "b", "c"), d, sources).sources == tuple(sources)
    assert Exemplars.from_train_data_dict(("a", "b", "c"), d, sources[:2]).sources == ()


# ------------------------------------------------------------------------------ combine
def test_combine_max_is_the_rows_as_they_are_and_unknown_modes_are_refused():
    ex = Exemplars(("a",), rows(1), torch.tensor([0]), torch.tensor([False]))
    assert combine_exemplars(ex) is ex and combine_exemplars(ex, "max") is ex
    with pytest.raises(SettingsError, match="unknown combine mode 'mean'; use one of max, fused"):
        combine_exemplars(ex, "mean")
    empty = Exemplars.empty(("a",), 2)
    assert combine_exemplars(empty, "fused") is empty


def test_fused_is_one_prototype_per_class_plus_the_negatives():
    e = torch.eye(3)
    box_a = src("h", "a")
    phrase_a = ExemplarSource("", (0.0, 0.0, 0.0, 0.0), "a", False, 0.0, "coin")
    ex = Exemplars(("a", "b", "c"), torch.stack([e[0] * 2, e[1], e[2], e[0]]),
                   torch.tensor([0, 0, 1, 1]), torch.tensor([False, False, False, True]),
                   (box_a, phrase_a, src("h", "b"), src("h", "b", True)))
    fused = combine_exemplars(ex, "fused")
    assert fused.class_names == ("a", "b", "c")
    assert fused.class_ids.tolist() == [0, 1, 1]  # a's prototype, b's, then b's negative
    assert fused.negative.tolist() == [False, False, True]
    s = 2 ** -0.5  # a: normalise(box e0 + phrase e1)
    torch.testing.assert_close(fused.embeds, torch.stack([
        torch.tensor([s, s, 0.0]), e[2], e[0]]))
