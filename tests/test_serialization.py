"""Tests for owl_core.serialization: the Roboflow-compatible `.pt` layout, round trips, refusal of
hostile or malformed files, and atomic writes."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from owl_core import serialization
from owl_core.embedding import ImageEmbeddings
from owl_core.matching import Exemplars, ExemplarSource
from owl_core.serialization import (META_KEY, PtFormatError, build_payload, load_pt,
                                    parse_payload, save_pt)

D = 8  # embedding dim of the synthetic exemplars
K = 5  # top-K rows of the synthetic image embeddings
HASH_A = "a" * 32
HASH_B = "b" * 32
REFERENCE_KEYS = {"huggingface_id", "roboflow_id", "class_names", "train_data_dict",
                  "image_embeds"}


def unit_rows(n: int, seed: int) -> torch.Tensor:
    rows = torch.randn(n, D, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def make_exemplars(seed: int = 0) -> Exemplars:
    """Three classes, rows deliberately out of canonical order:
    coin: 2 positives + 1 negative; cup: 1 positive; nut: only a negative; bolt: nothing."""
    names = ("coin", "cup", "nut", "bolt")
    class_ids = torch.tensor([1, 0, 2, 0, 0])
    negative = torch.tensor([False, True, True, False, False])
    embeds = unit_rows(5, seed)
    sources = tuple(
        ExemplarSource(HASH_A if i < 3 else HASH_B, (1.0 + i, 2.0, 30.0 + i, 40.0),
                       names[int(c)], bool(n), 0.5 + i / 10)
        for i, (c, n) in enumerate(zip(class_ids.tolist(), negative.tolist())))
    return Exemplars(names, embeds, class_ids, negative, sources)


def make_embeddings(seed: int, size: tuple[int, int]) -> ImageEmbeddings:
    gen = torch.Generator().manual_seed(seed)
    return ImageEmbeddings(
        objectness=torch.rand(K, generator=gen).sort(descending=True).values,
        boxes=torch.rand(K, 4, generator=gen),
        class_embeds=unit_rows(K, seed + 100),
        logit_shift=torch.randn(K, generator=gen),
        logit_scale=torch.rand(K, generator=gen) + 1,
        image_size=size,
        patch_boxes=torch.rand(K * 2, 4, generator=gen),  # in memory only, never exported
        topk_index=torch.arange(K),
    )


def payload(small: bool = False, **meta) -> dict:
    embeds = None if small else {HASH_A: make_embeddings(1, (640, 480)),
                                 HASH_B: make_embeddings(2, (300, 500))}
    return build_payload(huggingface_id="google/owlv2-base-patch16-ensemble",
                         exemplars=make_exemplars(), image_embeds=embeds,
                         meta={"top_k": K, **meta}, roboflow_id="ws/proj/1")


def rows_of(exemplars: Exemplars, cls: str, negative: bool) -> list[tuple[float, ...]]:
    cid = exemplars.class_names.index(cls)
    mask = (exemplars.class_ids == cid) & (exemplars.negative == negative)
    return [tuple(round(v, 6) for v in row) for row in exemplars.embeds[mask].tolist()]


# ---------------------------------------------------------------------------- layout
def test_payload_has_the_reference_layout():
    data = payload()
    assert set(data) == REFERENCE_KEYS | {META_KEY}
    assert data["huggingface_id"] == "google/owlv2-base-patch16-ensemble"
    assert data["roboflow_id"] == "ws/proj/1"
    assert data["class_names"] == ["coin", "cup", "nut", "bolt"]
    tdd = data["train_data_dict"]
    assert list(tdd) == ["coin", "cup", "nut", "bolt"]
    for entry in tdd.values():
        assert set(entry) == {"positive", "negative"}
        for value in entry.values():
            assert value is None or (isinstance(value, torch.Tensor) and value.ndim == 2
                                     and value.shape[1] == D)
    ex = make_exemplars()
    # rows land under their own class and polarity (class ids / flags given out of order)
    assert torch.equal(tdd["coin"]["positive"], ex.embeds[[3, 4]])
    assert torch.equal(tdd["coin"]["negative"], ex.embeds[[1]])
    assert torch.equal(tdd["cup"]["positive"], ex.embeds[[0]])
    assert tdd["cup"]["negative"] is None
    assert tdd["nut"]["positive"] is None and torch.equal(tdd["nut"]["negative"], ex.embeds[[2]])
    assert tdd["bolt"] == {"positive": None, "negative": None}
    assert set(data["image_embeds"]) == {HASH_A, HASH_B}
    for key, seed in ((HASH_A, 1), (HASH_B, 2)):
        value = data["image_embeds"][key]
        emb = make_embeddings(seed, (1, 1))
        assert isinstance(value, tuple) and len(value) == 5
        assert [tuple(t.shape) for t in value] == [(K,), (K, 4), (K, D), (K,), (K,)]
        for got, want in zip(value, (emb.objectness, emb.boxes, emb.class_embeds,
                                     emb.logit_shift, emb.logit_scale)):
            assert torch.equal(got, want)


def test_small_variant_has_no_image_embeds():
    data = payload(small=True)
    assert data["image_embeds"] == {}
    assert data[META_KEY]["image_sizes"] == {}
    assert set(data["train_data_dict"]) == {"coin", "cup", "nut", "bolt"}


def test_saved_file_is_plain_data_for_any_loader(tmp_path):
    # what Roboflow's SerializedOwlV2 (or anyone) gets from torch.load with weights_only=True
    path = save_pt(payload(), tmp_path / "prompts.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert REFERENCE_KEYS <= set(raw)
    assert isinstance(raw["train_data_dict"]["coin"]["positive"], torch.Tensor)
    assert isinstance(raw["image_embeds"][HASH_A], tuple)


# ---------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("small", [
    # full: exemplars and the image embeddings of their images
    False,
    # small: exemplars only
    True,
])
def test_round_trip(small, tmp_path):
    path = save_pt(payload(small, note="hello"), tmp_path / "prompts.pt")
    loaded = load_pt(path)
    original = make_exemplars()
    assert loaded.huggingface_id == "google/owlv2-base-patch16-ensemble"
    assert loaded.roboflow_id == "ws/proj/1"
    ex = loaded.exemplars
    assert ex.class_names == original.class_names
    assert len(ex) == len(original)
    for cls in original.class_names:
        for negative in (False, True):
            assert rows_of(ex, cls, negative) == rows_of(original, cls, negative), (cls, negative)
    # a class with only negatives survives with its negative
    assert rows_of(ex, "nut", True) and not rows_of(ex, "nut", False)
    # provenance travels with each row (rows are reordered class by class on export)
    assert len(ex.sources) == len(ex)
    for k, (row, source) in enumerate(zip(ex.embeds, ex.sources)):
        i = next(j for j in range(len(original)) if torch.equal(original.embeds[j], row))
        assert source == original.sources[i]
        assert ex.class_names[int(ex.class_ids[k])] == source.cls
        assert bool(ex.negative[k]) == source.negative
    assert loaded.meta["note"] == "hello" and loaded.meta["top_k"] == K
    assert loaded.meta["format_version"] == serialization.FORMAT_VERSION
    if small:
        assert loaded.image_embeds == {}
    else:
        assert set(loaded.image_embeds) == {HASH_A, HASH_B}
        for key, seed, size in ((HASH_A, 1, (640, 480)), (HASH_B, 2, (300, 500))):
            got, want = loaded.image_embeds[key], make_embeddings(seed, size)
            assert got.image_size == size
            for a, b in zip(got.reference_tuple(), want.reference_tuple()):
                assert torch.equal(a, b)
            assert got.patch_boxes is None  # only the top K is exported


def test_round_trip_without_exemplars(tmp_path):
    empty = Exemplars.empty(("coin",), D)
    data = build_payload(huggingface_id="m", exemplars=empty, image_embeds=None, meta={})
    assert data["train_data_dict"] == {"coin": {"positive": None, "negative": None}}
    loaded = load_pt(save_pt(data, tmp_path / "e.pt"))
    assert loaded.exemplars.class_names == ("coin",) and len(loaded.exemplars) == 0


def test_foreign_file_without_our_metadata_loads(tmp_path):
    # a Roboflow-written file: no "owl_studio" key, image embeds without sizes (skipped)
    data = payload()
    del data[META_KEY]
    path = tmp_path / "roboflow.pt"
    torch.save(data, path)
    loaded = load_pt(path)
    assert loaded.exemplars.class_names == ("coin", "cup", "nut", "bolt")
    assert len(loaded.exemplars) == 5 and loaded.exemplars.sources == ()
    assert loaded.image_embeds == {} and loaded.meta == {}


# ---------------------------------------------------------------------------- hostile files
class WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("writer", [
    # torch.save (zip container with a pickle inside)
    "torch.save",
    # a bare pickle (torch.load's legacy path)
    "pickle",
])
def test_hostile_pickle_is_refused_and_never_runs(writer, tmp_path):
    marker = tmp_path / "marker.txt"
    hostile = {**payload(small=True), "extra": WritesMarker(marker)}
    path = tmp_path / "hostile.pt"
    if writer == "torch.save":
        torch.save(hostile, path)
    else:
        path.write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(PtFormatError, match=r"hostile\.pt: refused to load: the file needs code "
                                            r"or classes \([\w.]+\) .*nothing in it ran.*Only load "
                                            r"\.pt files") as refused:
        load_pt(path)
    assert "weights_only" not in str(refused.value)  # torch's advice to load unsafely is dropped
    assert not marker.exists()
    # the file really is hostile: an unsafe load runs the code (this proves the test can fail)
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.read_text() == "pwned"


# ---------------------------------------------------------------------------- malformed files
def test_missing_file(tmp_path):
    with pytest.raises(PtFormatError, match=r"nope\.pt: no such file"):
        load_pt(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [
    # a zip cut in half
    "truncated",
    # random bytes
    b"\x00\x01garbage" * 50,
    # an empty file
    b"",
])
def test_unreadable_files(content, tmp_path):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        full = save_pt(payload(), tmp_path / "full.pt").read_bytes()
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(PtFormatError, match=r"bad\.pt: not a readable \.pt file .*Export it "
                                            r"again\.$"):
        load_pt(path)


def test_files_over_the_size_limit_are_refused_before_loading(tmp_path, monkeypatch):
    path = save_pt(payload(), tmp_path / "big.pt")
    monkeypatch.setattr(serialization, "MAX_PT_BYTES", 100)
    monkeypatch.setattr(serialization.torch, "load", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(PtFormatError, match=r"big\.pt: [\d,]+ bytes is over the 100-byte limit; "
                                            r"raise it with the environment variable "
                                            r"OWL_MAX_PT_BYTES"):
        load_pt(path)


def mutate(change):
    def apply() -> dict:
        data = payload()
        change(data)
        return data
    return apply


NAN_ROW = torch.full((1, D), float("nan"))


@pytest.mark.parametrize("make, message", [
    # not a dict
    (lambda: [1, 2, 3], r"expected a dict, got list"),
    # required keys missing
    (mutate(lambda d: (d.pop("class_names"), d.pop("train_data_dict"))),
     r"missing keys \['class_names', 'train_data_dict'\]"),
    # empty model id
    (mutate(lambda d: d.update(huggingface_id="")), r"'huggingface_id' must be a non-empty string"),
    # class names not strings
    (mutate(lambda d: d.update(class_names=["coin", 3, "nut", "bolt"])),
     r"'class_names' must be a list of non-empty strings"),
    # blank class name
    (mutate(lambda d: d.update(class_names=["coin", " ", "nut", "bolt"])),
     r"'class_names' must be a list of non-empty strings"),
    # duplicate class names
    (mutate(lambda d: d.update(class_names=["coin", "coin", "nut", "bolt"])),
     r"'class_names' has duplicates"),
    # train_data_dict not a dict
    (mutate(lambda d: d.update(train_data_dict=[])), r"'train_data_dict' must be a dict"),
    # a class that is not in class_names
    (mutate(lambda d: d["train_data_dict"].update(ghost={"positive": None, "negative": None})),
     r"train_data_dict has class 'ghost' that is not in class_names"),
    # entry not a dict
    (mutate(lambda d: d["train_data_dict"].update(cup=torch.zeros(1, D))),
     r"train_data_dict\['cup'\] must be a dict with 'positive'/'negative'"),
    # 1-D exemplar tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=torch.zeros(D))),
     r"train_data_dict\['cup'\]\['positive'\] must be a float \(N, D\) tensor or None, got a "
     r"torch\.float32 tensor of shape \(8,\)"),
    # 3-D exemplar tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(negative=torch.zeros(1, 1, D))),
     r"\['negative'\] must be a float \(N, D\) tensor or None, got .* shape \(1, 1, 8\)"),
    # integer tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=torch.zeros(1, D, dtype=torch.long))),
     r"must be a float \(N, D\) tensor or None, got a torch\.int64 tensor"),
    # a list instead of a tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=[[0.0] * D])),
     r"must be a float \(N, D\) tensor or None, got a list"),
    # NaN in an exemplar
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=NAN_ROW)),
     r"train_data_dict\['cup'\]\['positive'\] holds NaN/inf"),
    # exemplar dims disagree between classes
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=torch.zeros(1, D + 1))),
     r"exemplar dims disagree \(9 vs 8\)"),
    # our metadata not a dict
    (mutate(lambda d: d.update({META_KEY: [1]})), r"'owl_studio' must be a dict"),
    # provenance entry without a field
    (mutate(lambda d: d[META_KEY]["exemplars"][0].pop("iou")), r"bad exemplar provenance entry"),
    # provenance box with 3 numbers
    (mutate(lambda d: d[META_KEY]["exemplars"][0].update(box_xyxy=[1, 2, 3])),
     r"bad exemplar provenance entry \(box_xyxy has 3 values, expected 4\)"),
    # image_embeds not a dict
    (mutate(lambda d: d.update(image_embeds=[])), r"'image_embeds' must be a dict"),
    # an image entry with 4 tensors
    (mutate(lambda d: d["image_embeds"].update({HASH_A: d["image_embeds"][HASH_A][:4]})),
     r"image_embeds\['a+'\] must be a 5-tuple of tensors \(objectness, boxes, class_embeds"),
    # boxes of the wrong shape
    (mutate(lambda d: d["image_embeds"].update({HASH_A: (torch.zeros(K), torch.zeros(K, 3),
                                                        torch.zeros(K, D), torch.zeros(K),
                                                        torch.zeros(K))})),
     r"image_embeds\['a+'\] tensors have inconsistent shapes \[\(5,\), \(5, 3\), \(5, 8\), "
     r"\(5,\), \(5,\)\]"),
    # fewer class embeddings than boxes
    (mutate(lambda d: d["image_embeds"].update({HASH_A: (torch.zeros(K), torch.zeros(K, 4),
                                                        torch.zeros(K - 1, D), torch.zeros(K),
                                                        torch.zeros(K))})),
     r"inconsistent shapes"),
    # image embedding dim differs from the exemplars'
    (mutate(lambda d: d["image_embeds"].update({HASH_A: (torch.zeros(K), torch.zeros(K, 4),
                                                        torch.zeros(K, D * 2), torch.zeros(K),
                                                        torch.zeros(K))})),
     r"embedding dim 16 != exemplar dim 8"),
    # NaN in image embeddings
    (mutate(lambda d: d["image_embeds"].update({HASH_A: (torch.full((K,), float("nan")),
                                                        *d["image_embeds"][HASH_A][1:])})),
     r"image_embeds\['a+'\] holds NaN/inf"),
    # image size not [w, h]
    (mutate(lambda d: d[META_KEY]["image_sizes"].update({HASH_A: [640]})),
     r"image size of 'a+' must be \[width, height\] in pixels, got \[640\]"),
    # image size zero
    (mutate(lambda d: d[META_KEY]["image_sizes"].update({HASH_A: [0, 480]})),
     r"image size of 'a+' must be \[width, height\]"),
])
def test_malformed_payloads_are_refused(make, message, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save(make(), path)
    with pytest.raises(PtFormatError, match=r"bad\.pt: .*" + message):
        load_pt(path)
    with pytest.raises(PtFormatError, match=r"export it again"):
        parse_payload(make())


def test_errors_are_value_errors():
    assert issubclass(PtFormatError, ValueError)


# ---------------------------------------------------------------------------- atomic writes
def test_save_leaves_only_the_file(tmp_path):
    path = save_pt(payload(), tmp_path / "sub" / "prompts.pt")  # folder created
    assert path == tmp_path / "sub" / "prompts.pt"
    assert os.listdir(tmp_path / "sub") == ["prompts.pt"]


def test_saved_file_mode_follows_the_umask(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = save_pt(payload(), tmp_path / "prompts.pt")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_pt(payload(small=True), tmp_path / "prompts.pt")
    before = path.read_bytes()

    def half_written(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(serialization.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_pt(payload(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["prompts.pt"]  # no temp file left behind
    assert len(load_pt(path).exemplars) == 5


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_pt(payload(small=True), tmp_path / "prompts.pt")
    before = path.read_bytes()

    def interrupted(obj, fh, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_pt(payload(), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["prompts.pt"]


@pytest.mark.parametrize("same_path", [
    # two exports to two files at once: both complete
    False,
    # two exports to one file at once: the survivor is whole (one or the other)
    True,
])
def test_concurrent_saves(same_path, tmp_path):
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    datas = [payload(small=False, writer=0), payload(small=True, writer=1)]
    paths = [tmp_path / "x.pt", tmp_path / ("x.pt" if same_path else "y.pt")]

    def write(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(5):
                save_pt(datas[i], paths[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(os.listdir(tmp_path)) == sorted({p.name for p in paths})
    writers = {load_pt(p).meta["writer"] for p in set(paths)}
    if same_path:
        assert len(writers) == 1 and writers <= {0, 1}
    else:
        assert writers == {0, 1}
    for p in set(paths):
        loaded = load_pt(p)
        assert len(loaded.image_embeds) == (2 if loaded.meta["writer"] == 0 else 0)
