"""OwlPredictor end to end on the tiny random checkpoint."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from owl_core import OwlPredictor, TrainingDataError
from owl_core.engine import predictor as predictor_module
from owl_core.engine.cache import EmbeddingCache
from owl_core.engine.embedding import ImageEmbeddings, compute_embeddings
from owl_core.engine.prompt_file import load_pt
from owl_core.images import ImageSource


def scene(seed=0, size=(128, 96)):
    """A synthetic picture: noisy background and a few flat coloured rectangles."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    for x0, y0, x1, y1, colour in [(10, 10, 42, 40, (220, 30, 30)),
                                   (70, 20, 110, 60, (30, 200, 40)),
                                   (20, 55, 60, 90, (40, 40, 230))]:
        img[y0:y1, x0:x1] = colour
    return img


def box(x0, y0, x1, y1, cls, negative=False):
    return {"x": (x0 + x1) / 2, "y": (y0 + y1) / 2, "w": x1 - x0, "h": y1 - y0, "cls": cls,
            "negative": negative}


@pytest.fixture
def predictor(tiny_model):
    return OwlPredictor(tiny_model, top_k=40)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "scene.png"
    Image.fromarray(scene()).save(path)
    return path


def test_heads_equal_the_models_own_forward(tiny_model):
    """Our per-image outputs equal what Owlv2ForObjectDetection.forward computes itself."""
    pred = OwlPredictor(tiny_model, top_k=10_000)  # keep every patch
    img = scene()
    pixels = pred.transform.preprocess(img)[None]
    input_ids = torch.tensor([[5, 7, 9, 1]])  # a first id of 0 would mark the query as padding
    with torch.inference_mode():
        out = tiny_model.model(input_ids=input_ids, pixel_values=pixels,
                               attention_mask=torch.ones_like(input_ids))
    emb = pred.embeddings(img)
    order = emb.topk_index
    torch.testing.assert_close(emb.objectness, out.objectness_logits[0, order].sigmoid())
    torch.testing.assert_close(emb.boxes, out.pred_boxes[0, order])
    torch.testing.assert_close(emb.class_embeds, out.class_embeds[0, order])
    # the model's own logit for the text query = our calibrated logit with that query
    query = out.text_embeds[0, 0] / (out.text_embeds[0, 0].norm() + 1e-6)
    ours = (emb.class_embeds @ query + emb.logit_shift) * emb.logit_scale
    torch.testing.assert_close(ours, out.logits[0, order, 0], rtol=1e-4, atol=1e-4)
    assert emb.num_boxes == tiny_model.grid_size ** 2


def test_top_k_is_clamped_and_sorted(tiny_model):
    pred = OwlPredictor(tiny_model, top_k=10)
    emb = pred.embeddings(scene())
    assert emb.num_boxes == 10
    assert torch.all(emb.objectness[:-1] >= emb.objectness[1:])
    assert OwlPredictor(tiny_model, top_k=10**6).top_k == tiny_model.grid_size ** 2


def test_repeated_inference_is_identical(predictor, image_file):
    predictor.set_examples([{"image": str(image_file), "boxes": [box(10, 10, 42, 40, "red")]}])
    first = predictor.detect(image_file, confidence=0.0)
    predictor.reset_cache()
    second = predictor.detect(image_file, confidence=0.0)
    assert len(first) > 0
    np.testing.assert_array_equal(first.xyxy, second.xyxy)
    np.testing.assert_array_equal(first.confidence, second.confidence)


def test_cached_image_is_never_decoded_again(predictor, image_file, monkeypatch):
    predictor.embed(image_file)
    calls = []
    original = ImageSource.decode
    monkeypatch.setattr(ImageSource, "decode", lambda self: calls.append(1) or original(self))
    predictor.detect(image_file)
    predictor.detect(str(image_file))
    predictor.detect(image_file.read_bytes())
    assert calls == []


def test_edited_file_is_embedded_again(predictor, image_file):
    h1 = predictor.embed(image_file)
    Image.fromarray(scene(seed=1)[::-1].copy()).save(image_file)  # same path, new pixels
    h2 = predictor.embed(image_file)
    assert h1 != h2
    assert predictor.cache_stats().misses == 2
    emb = predictor.embeddings(image_file)
    fresh = OwlPredictor(predictor.owl, top_k=40).embeddings(scene(seed=1)[::-1].copy())
    torch.testing.assert_close(emb.class_embeds, fresh.class_embeds)


def test_unmatched_box_never_shifts_other_labels(predictor):
    img = scene()
    data = [{"image": img, "boxes": [
        box(10, 10, 42, 40, "red"),
        box(200, 200, 260, 260, "ghost", negative=True),  # outside the image: matches nothing
        box(70, 20, 110, 60, "green", negative=True),
        box(64, 48, 64.5, 48.5, "ghost"),  # a sliver: IoU far below the threshold
        box(20, 55, 60, 90, "blue"),
    ]}]
    report = predictor.set_examples(data)
    matched = [b.matched for b in report.boxes]
    assert matched == [True, False, True, False, True]
    assert "outside the image" in report.boxes[1].reason
    assert "below the match threshold" in report.boxes[3].reason
    ex = predictor.exemplars
    names = [ex.class_names[i] for i in ex.class_ids.tolist()]
    assert names == ["red", "green", "blue"]
    assert ex.negative.tolist() == [False, True, False]
    # each exemplar is the embedding of the patch its own box snapped to
    emb = predictor.embeddings(img, keep_patches=True)
    for row, b in zip(ex.embeds, [report.boxes[0], report.boxes[2], report.boxes[4]],
                      strict=True):
        sims = emb.patch_class_embeds @ row
        assert sims.max().item() == pytest.approx(1.0, abs=1e-5)
        assert b.iou >= predictor.match_threshold


def test_match_threshold_decides_which_drawn_boxes_become_exemplars(tiny_model):
    img = scene()
    data = [{"image": img, "boxes": [box(10, 10, 42, 40, "red")]}]
    probe = OwlPredictor(tiny_model, top_k=40, match_threshold=0.01)
    iou = probe.set_examples(data).boxes[0].iou
    assert 0.05 < iou < 0.95  # room above and below for the thresholds tried
    pred = OwlPredictor(tiny_model, top_k=40, match_threshold=iou)
    for threshold, matched in [(iou, True),            # equal to the best IoU: matches
                               (iou - 0.01, True),
                               (iou + 0.01, False)]:
        pred.match_threshold = threshold
        report = pred.set_examples(data)
        assert report.match_threshold == threshold
        assert report.boxes[0].matched is matched, threshold
        assert report.boxes[0].iou == pytest.approx(iou)
        assert len(pred.exemplars) == int(matched)
        if not matched:
            assert f"below the match threshold {threshold:.2f}" in report.boxes[0].reason
            assert len(pred.detect(img, confidence=0.0)) == 0  # no exemplar, no detection


def test_matching_searches_all_patches_not_only_top_k(tiny_model):
    pred = OwlPredictor(tiny_model, top_k=1)
    img = scene()
    emb = pred.embeddings(img, keep_patches=True)
    # draw exactly the predicted box of a patch that is NOT the top-1 one
    patch = int(emb.topk_index[0]) ^ 1
    cx, cy, w, h = (emb.patch_boxes[patch] * 128).tolist()
    pred.set_examples([{"image": img, "boxes": [{"x": cx, "y": cy, "w": w, "h": h, "cls": "a"}]}])
    assert pred.last_report.boxes[0].iou == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(pred.exemplars.embeds[0], emb.patch_class_embeds[patch])


def test_box_partly_outside_the_image_is_clipped(predictor):
    img = scene()
    report = predictor.set_examples([{"image": img, "boxes": [box(-30, -20, 42, 40, "red")]}])
    assert report.boxes[0].drawn_xyxy == (0.0, 0.0, 42.0, 40.0)


def test_negative_only_class_and_empty_data(predictor):
    img = scene()
    predictor.set_examples([{"image": img, "boxes": [box(10, 10, 42, 40, "red", True)]}])
    assert predictor.class_names == ("red",)
    assert len(predictor.detect(img, confidence=0.0)) == 0
    predictor.set_examples([])
    res = predictor.detect(img, confidence=0.0)
    assert len(res) == 0 and res.class_names == ()
    predictor.set_examples([], class_names=["declared"])
    assert predictor.detect(img, confidence=0.0).counts() == {"declared": 0}


def test_negative_suppresses_its_own_positive_match(predictor):
    img = scene()
    predictor.set_examples([{"image": img, "boxes": [box(10, 10, 42, 40, "red")]}])
    hits = predictor.detect(img, confidence=0.0)
    assert len(hits) > 0
    # a negative drawn on the same object suppresses everything at least as close to it
    predictor.set_examples([{"image": img, "boxes": [box(10, 10, 42, 40, "red"),
                                                     box(10, 10, 42, 40, "red", True)]}])
    assert len(predictor.detect(img, confidence=0.0)) == 0


def test_bad_training_data_changes_nothing(predictor):
    img = scene()
    predictor.set_examples([{"image": img, "boxes": [box(10, 10, 42, 40, "red")]}])
    before = predictor.exemplars
    with pytest.raises(TrainingDataError, match="width and height must be positive"):
        predictor.set_examples([{"image": img, "boxes": [{"x": 1, "y": 1, "w": 0, "h": 3,
                                                          "cls": "red"}]}])
    with pytest.raises(TrainingDataError, match="not in class_names"):
        predictor.set_examples([{"image": img, "boxes": [box(1, 1, 9, 9, "red")]}], ["blue"])
    assert predictor.exemplars is before


def test_same_examples_are_answered_from_the_class_cache(predictor):
    data = [{"image": scene(), "boxes": [box(10, 10, 42, 40, "red")]}]
    first = predictor.set_examples(data)
    assert predictor.set_examples(data) is first
    predictor.match_threshold = 0.31  # the key includes the match threshold (reference defect 3)
    assert predictor.set_examples(data) is not first


def test_lru_eviction_by_bytes(tiny_model):
    probe = OwlPredictor(tiny_model, top_k=40)
    one = probe.embeddings(scene(0)).nbytes()
    pred = OwlPredictor(tiny_model, top_k=40, device_cache_bytes=int(2.5 * one), host_cache_bytes=0)
    a, b, c = scene(0), scene(1), scene(2)
    pred.embed(a)
    pred.embed(b)
    pred.embed(a)  # refresh a: b is now least recently used
    pred.embed(c)
    stats = pred.cache_stats()
    assert stats.misses == 3 and stats.evictions >= 1
    assert stats.bytes_device <= int(2.5 * one)
    pred.embed(a)
    assert pred.cache_stats().misses == 3  # a survived
    pred.embed(b)
    assert pred.cache_stats().misses == 4  # b was evicted


def test_export_then_load_gives_identical_detections(predictor, image_file, tmp_path):
    predictor.set_examples([{"image": str(image_file), "boxes": [
        box(10, 10, 42, 40, "red"), box(70, 20, 110, 60, "green"),
        box(20, 55, 60, 90, "green", True)]}])
    query = scene(5)
    live = predictor.detect(query, confidence=0.0, iou_threshold=0.5)
    out = predictor.export(tmp_path / "p.pt")
    loaded = OwlPredictor.from_pt(out, model=predictor.owl, top_k=40)
    again = loaded.detect(query, confidence=0.0, iou_threshold=0.5)
    assert loaded.class_names == ("red", "green")
    np.testing.assert_array_equal(live.xyxy, again.xyxy)
    np.testing.assert_array_equal(live.confidence, again.confidence)
    np.testing.assert_array_equal(live.class_id, again.class_id)
    # the full export carries the example image's embeddings; loading them avoids a recompute
    before = loaded.cache_stats().misses
    assert loaded.embed(image_file) and loaded.cache_stats().misses == before
    small = load_pt(predictor.export(tmp_path / "s.pt", small=True))
    assert small.image_embeds == {} and len(small.exemplars) == 3


def test_incremental_export_keeps_old_and_new_exemplars(predictor, tmp_path):
    predictor.set_examples([{"image": scene(0), "boxes": [box(10, 10, 42, 40, "red")]}])
    old = predictor.export(tmp_path / "old.pt")
    fresh = OwlPredictor(predictor.owl, top_k=40)
    fresh.set_examples([{"image": scene(1), "boxes": [box(70, 20, 110, 60, "green"),
                                                      box(20, 55, 60, 90, "red", True)]}])
    new = load_pt(fresh.export(tmp_path / "new.pt", previous=old))
    assert new.exemplars.class_names == ("red", "green")
    labels = sorted((new.exemplars.class_names[c], bool(n)) for c, n in
                    zip(new.exemplars.class_ids.tolist(), new.exemplars.negative.tolist(),
                        strict=True))
    assert labels == [("green", False), ("red", False), ("red", True)]
    assert len(new.image_embeds) == 2  # the old image's embeddings carried over
    # exporting again on top of the result doesn't duplicate exemplars
    again = load_pt(fresh.export(tmp_path / "again.pt", previous=tmp_path / "new.pt"))
    assert len(again.exemplars) == 3


def test_concurrent_embeds_compute_once(tiny_model, monkeypatch):
    """Four threads ask for one new image at once: the vision tower runs for it once."""
    tower_images = []
    barrier = threading.Barrier(4)

    def counting(owl, pixel_values, *args, **kwargs):
        tower_images.append(pixel_values.shape[0])
        time.sleep(0.2)  # hold the tower so the other threads really wait on it
        return compute_embeddings(owl, pixel_values, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "compute_embeddings", counting)
    pred = OwlPredictor(tiny_model, top_k=40)
    img = scene(3)
    hashes = []

    def worker():
        barrier.wait()
        hashes.append(pred.embed(img))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(hashes) == 4 and len(set(hashes)) == 1
    assert sum(tower_images) == 1
    assert pred.cache_stats().entries_device == 1


def test_embed_many_batches_and_reports_progress(tiny_model):
    pred = OwlPredictor(tiny_model, top_k=40)
    seen = []
    infos = pred.embed_many([scene(i) for i in range(5)], batch_size=2,
                            progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert [i.cached for i in infos] == [False] * 5
    solo = OwlPredictor(tiny_model, top_k=40).embeddings(scene(3))
    torch.testing.assert_close(pred.embeddings(scene(3)).class_embeds, solo.class_embeds,
                               rtol=1e-4, atol=1e-5)


def test_same_content_twice_in_one_call_is_embedded_once_with_patches(tiny_model):
    pred = OwlPredictor(tiny_model, top_k=40)
    img = scene(4)
    infos = pred.embed_many([img, img.copy()], keep_patches=[True, False])
    assert infos[0].content_hash == infos[1].content_hash
    assert pred.cache_stats().entries_device == 1
    assert pred.embeddings(img).has_patches  # the query copy didn't replace the example entry


def test_a_query_path_can_later_become_an_example(predictor, image_file):
    # the path is memoised as its hash after the first embed; all-patch embeddings are then
    # asked for (a query image turned into an example): the file must be read again
    predictor.embed(image_file)
    assert not predictor.embeddings(image_file).has_patches
    predictor.embed(image_file, keep_patches=True)
    assert predictor.embeddings(image_file).has_patches


def poisoned_copy(source, target, content_hash):
    """`source` with the embeddings of `content_hash` replaced by a stranger's: every box the
    whole image, objectness 1, all class embeddings equal to the file's first exemplar."""
    raw = torch.load(source, weights_only=True)
    obj, boxes, embeds, shift, scale = raw["image_embeds"][content_hash]
    exemplar = next(v["positive"] for v in raw["train_data_dict"].values()
                    if v["positive"] is not None)[0]
    raw["image_embeds"][content_hash] = (torch.ones_like(obj), torch.full_like(boxes, 0.5),
                                         exemplar.expand_as(embeds).clone(), shift, scale)
    torch.save(raw, target)
    return target


@pytest.mark.parametrize("sharing", [
    # a persistent disk cache shared by processes (--disk-cache-dir)
    "disk",
    # one in-memory cache shared by the sessions of a server
    "memory",
])
def test_embeddings_from_a_file_never_reach_a_shared_cache(sharing, tiny_model, image_file,
                                                           tmp_path):
    if sharing == "disk":
        def make():
            return OwlPredictor(tiny_model, top_k=40, disk_cache_dir=tmp_path / "disk")
    else:
        shared = EmbeddingCache(device="cpu", device_bytes=2**28, host_bytes=0,
                                value_type=ImageEmbeddings)

        def make():
            return OwlPredictor(tiny_model, top_k=40, cache=shared)
    author = OwlPredictor(tiny_model, top_k=40)
    author.set_examples([{"image": str(image_file), "boxes": [box(10, 10, 42, 40, "red")]}])
    content_hash = author.embed(image_file)
    genuine = author.embeddings(image_file)
    evil = poisoned_copy(author.export(tmp_path / "p.pt"), tmp_path / "evil.pt", content_hash)

    victim_session, other_session = make(), make()
    victim_session.load_pt(evil)
    # the file's embeddings stay with the prompts they came with ...
    assert torch.equal(victim_session.embeddings(image_file).objectness,
                       torch.ones(genuine.num_boxes))
    # ... and never reach the cache others read: they compute the real thing
    assert list((tmp_path / "disk").glob("*.pt")) == []
    assert other_session.cache_stats().entries_device == 0
    theirs = other_session.embeddings(image_file)
    torch.testing.assert_close(theirs.objectness, genuine.objectness)
    other_session.set_examples([{"image": str(image_file),
                                 "boxes": [box(10, 10, 42, 40, "red")]}])
    found = other_session.detect(image_file, confidence=0.0)
    assert not np.all(found.confidence >= 0.999)
    # forgetting the imported prompts forgets their embeddings too
    victim_session.clear_imported()
    torch.testing.assert_close(victim_session.embeddings(image_file).objectness,
                               genuine.objectness)


def test_exports_carry_a_valid_roboflow_id(predictor, image_file, tmp_path):
    predictor.set_examples([{"image": str(image_file), "boxes": [box(10, 10, 42, 40, "red")]}])
    name = predictor.owl.model_id.rstrip("/").rsplit("/", 1)[-1]
    for small in (False, True):
        raw = torch.load(predictor.export(tmp_path / f"{small}.pt", small=small),
                         weights_only=True)
        assert raw["roboflow_id"] == f"owlv2/{name}"
    chosen = predictor.export(tmp_path / "c.pt", roboflow_id="owlv2/owlv2-large-patch14")
    assert load_pt(chosen).roboflow_id == "owlv2/owlv2-large-patch14"


def test_class_names_order_survives_export(predictor, image_file, tmp_path):
    predictor.set_examples([{"image": str(image_file), "boxes": [
        box(70, 20, 110, 60, "zebra"), box(10, 10, 42, 40, "apple")]}])
    assert predictor.class_names == ("zebra", "apple")
    raw = torch.load(predictor.export(tmp_path / "p.pt"), weights_only=True)
    assert raw["class_names"] == ["apple", "zebra"]
    again = OwlPredictor.from_pt(tmp_path / "p.pt", model=predictor.owl, top_k=40)
    assert again.class_names == ("zebra", "apple")
    query = scene(5)
    live = predictor.detect(query, confidence=0.0)
    loaded = again.detect(query, confidence=0.0)
    np.testing.assert_array_equal(live.class_id, loaded.class_id)
