"""The embedding store (`owl_core.engine.embedding_store`) and batched scoring from it
(`owl_core.engine.batch_scoring`).

Generated embeddings (no model): unit-norm class embeddings, boxes in the padded square.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from owl_core.engine.batch_scoring import score_batch
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.embedding_store import EmbeddingStore, model_identity
from owl_core.engine.matching import Exemplars
from owl_core.engine.scoring import detect
from owl_core.errors import SettingsError
from owl_core.params import DetectParams

K, D = 40, 16


def fake_embedding(seed: int, size=(640, 480)) -> ImageEmbeddings:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(K, D, generator=g)
    centres = torch.rand(K, 2, generator=g) * 0.6 + 0.2
    sides = torch.rand(K, 2, generator=g) * 0.2 + 0.05
    return ImageEmbeddings(
        objectness=torch.rand(K, generator=g).sort(descending=True).values,
        boxes=torch.cat([centres, sides], dim=1),
        class_embeds=embeds / embeds.norm(dim=1, keepdim=True),
        logit_shift=torch.randn(K, generator=g), logit_scale=torch.rand(K, generator=g) + 0.5,
        image_size=size)


def exemplars_from(embs: list[ImageEmbeddings]) -> Exemplars:
    """Two classes; "a" with two positives and a negative, "b" with one positive, "c" none."""
    rows = torch.stack([embs[0].class_embeds[3], embs[1].class_embeds[5],
                        embs[2].class_embeds[7], embs[0].class_embeds[9]])
    return Exemplars(("a", "b", "c"), rows, torch.tensor([0, 0, 0, 1]),
                     torch.tensor([False, False, True, False]))


def test_stored_rows_read_back_in_a_new_store_object(tmp_path):
    embs = {f"{i:032x}": fake_embedding(i, (100 + i, 50 + i)) for i in range(5)}
    store = EmbeddingStore(tmp_path, "fp-1", shard_rows=3)
    for h, emb in embs.items():
        store.add(h, emb)
    assert store.pending == 2  # one shard of 3 written by itself
    store.flush()
    again = EmbeddingStore(tmp_path, "fp-1")
    assert again.hashes() == set(embs) and len(again) == 5
    seen = set()
    for batch in again.iter_batches(reversed(list(embs))):
        assert batch.class_embeds.dtype == torch.float16  # fp16 by default: half the bytes
        for i, h in enumerate(batch.hashes):
            got, want = batch.embedding(i), embs[h]
            seen.add(h)
            assert got.image_size == want.image_size
            assert torch.equal(got.boxes, want.boxes)  # boxes stay float32: pixels don't move
            assert torch.equal(got.logit_scale, want.logit_scale)
            assert torch.equal(got.class_embeds, want.class_embeds.half().float())
    assert seen == set(embs)
    assert len(list((tmp_path / again.folder.name).glob("shard-*.safetensors"))) == 2


def test_fp32_store_keeps_exact_class_embeddings(tmp_path):
    store = EmbeddingStore(tmp_path, "fp-1", dtype="fp32")
    emb = fake_embedding(1)
    store.add("0" * 32, emb)
    store.flush()
    (batch,) = EmbeddingStore(tmp_path, "fp-1", dtype="fp32").iter_batches(["0" * 32])
    assert torch.equal(batch.class_embeds[0], emb.class_embeds)


def test_fingerprints_and_dtypes_never_share_rows(tmp_path):
    store = EmbeddingStore(tmp_path, "model A, top-k 300")
    store.add("0" * 32, fake_embedding(0))
    store.flush()
    assert "0" * 32 in EmbeddingStore(tmp_path, "model A, top-k 300")
    assert "0" * 32 not in EmbeddingStore(tmp_path, "model A, top-k 100")
    assert "0" * 32 not in EmbeddingStore(tmp_path, "model A, top-k 300", dtype="fp32")


def test_a_damaged_shard_or_a_leftover_temp_file_is_ignored(tmp_path):
    store = EmbeddingStore(tmp_path, "fp")
    store.add("1" * 32, fake_embedding(1))
    store.flush()
    store.add("2" * 32, fake_embedding(2))
    store.flush()
    shards = sorted(store.folder.glob("shard-*.safetensors"))
    bad = next(s for s in shards if "2" * 32 in s.read_bytes().decode("latin-1"))
    bad.write_bytes(bad.read_bytes()[:40])  # as if the disk lost its tail
    (store.folder / ".shard-x.safetensors.1234.tmp").write_bytes(b"half")
    again = EmbeddingStore(tmp_path, "fp")
    assert again.hashes() == {"1" * 32}  # image 2 will simply be embedded again


def test_adding_a_stored_image_again_is_a_no_op(tmp_path):
    store = EmbeddingStore(tmp_path, "fp")
    assert store.add("1" * 32, fake_embedding(1)) is False
    store.add("1" * 32, fake_embedding(2))
    assert store.pending == 1
    store.flush()
    assert store.flush() == []


def test_unknown_store_dtype_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="fp16"):
        EmbeddingStore(tmp_path, "fp", dtype="int8")


@pytest.mark.parametrize("params", [
    DetectParams(confidence=0.6),                              # many candidates, NMS at work
    DetectParams(confidence=0.6, max_detections=3),            # the cut
    DetectParams(confidence=0.3, score_mode="calibrated"),     # the model's own calibration
    DetectParams(confidence=0.6, iou_threshold=1.0),           # no suppression
    DetectParams(confidence=0.99),                             # next to nothing
])
def test_batched_scoring_equals_per_image_detect(tmp_path, params):
    embs = [fake_embedding(i, (320 + 7 * i, 200 + 3 * i)) for i in range(9)]
    exemplars = exemplars_from(embs)
    store = EmbeddingStore(tmp_path, "fp", dtype="fp32")
    for i, emb in enumerate(embs):
        store.add(f"{i:032x}", emb)
    store.flush()
    (batch,) = store.iter_batches([f"{i:032x}" for i in range(9)])
    results = score_batch(batch, exemplars, params, chunk=4)  # chunks of 4, 4, 1
    total = 0
    for i, result in enumerate(results):
        want = detect(batch.embedding(i), exemplars, params.confidence, params.iou_threshold,
                      params.max_detections, params.score_mode)
        total += len(result)
        assert result.image_size == want.image_size
        np.testing.assert_array_equal(result.class_id, want.class_id)
        # the same products, group by group: the same bits
        np.testing.assert_array_equal(result.confidence, want.confidence)
        np.testing.assert_array_equal(result.xyxy, want.xyxy)
    assert total > 0 or params.confidence == 0.99


def test_no_exemplars_or_no_detections_gives_empty_results(tmp_path):
    store = EmbeddingStore(tmp_path, "fp")
    store.add("1" * 32, fake_embedding(1))
    store.flush()
    (batch,) = store.iter_batches(["1" * 32])
    empty = Exemplars.empty(("a",), D)
    assert [len(r) for r in score_batch(batch, empty, DetectParams())] == [0]
    ex = exemplars_from([fake_embedding(0)] * 3)
    assert [len(r) for r in score_batch(batch, ex, DetectParams(max_detections=0))] == [0]


def test_model_identity_follows_the_weights_not_the_folder(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights one")
    first = model_identity(str(folder))
    shutil.copytree(folder, tmp_path / "copy")
    assert model_identity(str(tmp_path / "copy")) == first
    (folder / "model.safetensors").write_bytes(b"weights two")
    assert model_identity(str(folder)) != first
    assert model_identity("google/owlv2-base-patch16-ensemble") == \
        "hub:google/owlv2-base-patch16-ensemble"
