"""Tests for owl_core.engine.prompt_file: the Roboflow-compatible `.pt` layout, round trips,
refusal of hostile or malformed files, and atomic writes."""

from __future__ import annotations

import os
import pickle
import pickletools
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from owl_core.engine import prompt_file as serialization
from owl_core.engine.embedding import ImageEmbeddings
from owl_core.engine.matching import Exemplars, ExemplarSource
from owl_core.engine.prompt_file import (
    META_KEY,
    PtFormatError,
    build_payload,
    load_pt,
    parse_payload,
    save_pt,
)
from owl_core.errors import LimitError
from owl_core.limits import PtLimitError

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
        for i, (c, n) in enumerate(zip(class_ids.tolist(), negative.tolist(), strict=True)))
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
    # sorted in the file (Roboflow's newer loader numbers classes through the sorted names,
    # its older one in file order: sorted reads the same in both); our order in our metadata
    assert data["class_names"] == ["bolt", "coin", "cup", "nut"]
    assert data[META_KEY]["class_order"] == ["coin", "cup", "nut", "bolt"]
    tdd = data["train_data_dict"]
    assert list(tdd) == ["bolt", "coin", "cup", "nut"]
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
                                     emb.logit_shift, emb.logit_scale), strict=True):
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
    for k, (row, source) in enumerate(zip(ex.embeds, ex.sources, strict=True)):
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
            for a, b in zip(got.reference_tuple(), want.reference_tuple(), strict=True):
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
    assert loaded.exemplars.class_names == ("bolt", "coin", "cup", "nut")  # the file's order
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
    monkeypatch.setenv("OWL_MAX_PT_BYTES", "100")  # read when called, not at import
    monkeypatch.setattr(serialization.torch, "load", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(LimitError, match=r"big\.pt: file size in bytes: [\d,]+ is over the limit "
                                         r"of 100 \(max_pt_bytes\).*OWL_MAX_PT_BYTES"):
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
    # class names not a list
    (mutate(lambda d: d.update(class_names="coin")),
     r"'class_names' must be a list of non-empty strings"),
    # class names not strings
    (mutate(lambda d: d.update(class_names=["coin", 3, "nut", "bolt"])),
     r"class_names\[1\]: must be a non-empty class name \(a string\), got 3"),
    # blank class name
    (mutate(lambda d: d.update(class_names=["coin", " ", "nut", "bolt"])),
     r"class_names\[1\]: empty"),
    # control characters (the class-name rule: a terminal escape in a stranger's file)
    (mutate(lambda d: d.update(class_names=["coin", "cup\x1b[2J", "nut", "bolt"])),
     r"class_names\[1\]: 'cup\\x1b\[2J' contains control characters"),
    # duplicate class names
    (mutate(lambda d: d.update(class_names=["coin", "coin", "nut", "bolt"])),
     r"class_names: repeated names \['coin'\]; each class once"),
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
     (r"train_data_dict\['cup'\]\['positive'\] must be a float \(N, D\) tensor or None, got a "
     r"torch\.float32 tensor of shape \(8,\)")),
    # 3-D exemplar tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(negative=torch.zeros(1, 1, D))),
     r"\['negative'\] must be a float \(N, D\) tensor or None, got .* shape \(1, 1, 8\)"),
    # integer tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(
        positive=torch.zeros(1, D, dtype=torch.long))),
     r"must be a float \(N, D\) tensor or None, got a torch\.int64 tensor"),
    # a list instead of a tensor
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=[[0.0] * D])),
     r"must be a float \(N, D\) tensor or None, got a list"),
    # NaN in an exemplar
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=NAN_ROW)),
     r"train_data_dict\['cup'\]\['positive'\] holds NaN/inf"),
    # exemplar dims disagree between classes
    (mutate(lambda d: d["train_data_dict"]["cup"].update(positive=torch.ones(1, D + 1) / 3)),
     r"exemplar dims disagree \(9 vs 8\)"),
    # our metadata not a dict
    (mutate(lambda d: d.update({META_KEY: [1]})), r"'owl_studio' must be a dict"),
    # provenance entry without a field
    (mutate(lambda d: d[META_KEY]["exemplars"][0].pop("iou")), r"bad exemplar provenance entry"),
    # provenance box with 3 numbers
    (mutate(lambda d: d[META_KEY]["exemplars"][0].update(box_xyxy=[1, 2, 3])),
     r"bad exemplar provenance entry \(box_xyxy has 3 values, expected 4 finite ones\)"),
    # image_embeds not a dict
    (mutate(lambda d: d.update(image_embeds=[])), r"'image_embeds' must be a dict"),
    # an image entry with 4 tensors
    (mutate(lambda d: d["image_embeds"].update({HASH_A: d["image_embeds"][HASH_A][:4]})),
     r"image_embeds\['a+'\] must be a 5-tuple of tensors \(objectness, boxes, class_embeds"),
    # boxes of the wrong shape
    (mutate(lambda d: d["image_embeds"].update({HASH_A: (torch.zeros(K), torch.zeros(K, 3),
                                                        torch.zeros(K, D), torch.zeros(K),
                                                        torch.zeros(K))})),
     (r"image_embeds\['a+'\] tensors have inconsistent shapes \[\(5,\), \(5, 3\), \(5, 8\), "
     r"\(5,\), \(5,\)\]")),
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
    # multi-element tensors where our metadata has lists / dicts / flags (truthiness)
    (mutate(lambda d: d[META_KEY].update(exemplars=torch.ones(3))),
     r"exemplar provenance must be a list"),
    (mutate(lambda d: d[META_KEY].update(image_sizes=torch.ones(3))),
     r"image sizes must be a dict"),
    (mutate(lambda d: d[META_KEY]["exemplars"][0].update(negative=torch.ones(2))),
     r"bad exemplar provenance entry \(box_xyxy must be 4 numbers"),
    (mutate(lambda d: d[META_KEY].update(fingerprint=torch.ones(2))),
     r"our metadata 'fingerprint' must be a str, got a torch\.float32 tensor"),
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
        except BaseException as exc:  # noqa: BLE001 -- surfaced below
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


# ---------------------------------------------------------------------------- bounds
def rezip(source: Path, target: Path, extra: dict[str, bytes] | None = None,
          compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """Copy a torch.save archive member by member (deflated), adding `extra` members."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        prefix = src.infolist()[0].filename.split("/")[0]
        for name, data in (extra or {}).items():
            dst.writestr(f"{prefix}/{name}", data)
    return target


@pytest.mark.parametrize("env, limit", [
    # a member of 20 MB of zeros, deflated about 1000:1 (a zip bomb in miniature)
    ({}, "max_pt_compression_ratio"),
    # the declared unpacked size of all members
    ({"OWL_MAX_PT_UNPACKED_BYTES": "10000", "OWL_MAX_PT_COMPRESSION_RATIO": "100000"},
     "max_pt_unpacked_bytes"),
    # too many members
    ({"OWL_MAX_PT_MEMBERS": "3", "OWL_MAX_PT_COMPRESSION_RATIO": "100000"}, "max_pt_members"),
    # a pickle (structure, unpickled into objects) larger than any prompt set needs
    ({"OWL_MAX_PT_PICKLE_BYTES": "1000", "OWL_MAX_PT_COMPRESSION_RATIO": "100000"},
     "max_pt_pickle_bytes"),
])
def test_zip_bombs_are_refused_from_the_archive_directory(env, limit, tmp_path, monkeypatch):
    plain = save_pt(payload(small=True), tmp_path / "plain.pt")
    bomb = rezip(plain, tmp_path / "bomb.pt", {"data/999": bytes(20 * 1024**2)})
    assert bomb.stat().st_size < 200_000
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(serialization.torch, "load", lambda *a, **k: pytest.fail("unpacked"))
    with pytest.raises(PtFormatError, match=rf"bomb\.pt: .* is over the limit of .*\({limit}\)") \
            as info:
        load_pt(bomb)
    assert isinstance(info.value, LimitError)


def test_tensor_elements_are_bounded(tmp_path, monkeypatch):
    path = save_pt(payload(), tmp_path / "p.pt")
    total = sum(t.numel() for e in torch.load(path, weights_only=True)["image_embeds"].values()
                for t in e) + 5 * D
    monkeypatch.setenv("OWL_MAX_PT_TENSOR_ELEMENTS", str(total - 1))
    with pytest.raises(LimitError, match=r"p\.pt: tensor elements: .*max_pt_tensor_elements"):
        load_pt(path)
    monkeypatch.setenv("OWL_MAX_PT_TENSOR_ELEMENTS", str(total))
    assert len(load_pt(path).exemplars) == 5


def test_messages_name_the_file_not_its_folder(tmp_path):
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "upload.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(PtFormatError) as info:
        load_pt(folder / "upload.pt")
    assert "upload.pt" in str(info.value) and str(folder) not in str(info.value)


# ---------------------------------------------------------------------------- tensor contents
def unit(n: int, d: int = D) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.ones(n, d), dim=1)


@pytest.mark.parametrize("tensor, message", [
    # sparse
    (unit(1).to_sparse(), r"sparse_coo / quantized / meta tensor"),
    # bool
    (torch.ones(1, D, dtype=torch.bool), (r"must be a float \(N, D\) tensor or None, got a "
                                         r"torch\.bool tensor")),
    # integer
    (torch.ones(1, D, dtype=torch.int32), r"got a torch\.int32 tensor"),
    # zero-width rows
    (torch.zeros(2, 0), r"zero-width rows \(shape \(2, 0\)\)"),
    # wider than any OWLv2 embedding
    (unit(1, 5000), r"embedding width: 5,000 is over the limit of 4,096"),
    # huge vectors: (cos + 1) / 2 would leave [0, 1]
    (unit(1) * 1e3, r"rows must be L2-normalised embeddings; their norms range from 1e\+03"),
    # zero vector
    (torch.zeros(1, D), r"rows must be L2-normalised .* from 0 to 0"),
    # inf
    (torch.full((1, D), float("inf")), r"holds NaN/inf"),
    # complex
    (torch.ones(1, D, dtype=torch.complex64), r"got a torch\.complex64 tensor"),
])
def test_bad_exemplar_tensors_are_refused(tensor, message, tmp_path):
    data = payload(small=True)
    data["train_data_dict"]["cup"]["positive"] = tensor
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(PtFormatError, match=r"bad\.pt: .*" + message):
        load_pt(tmp_path / "bad.pt")


def test_near_unit_rows_are_renormalised_and_grads_dropped(tmp_path):
    data = payload()
    data["train_data_dict"]["cup"]["positive"] = (unit(1) * 1.01).requires_grad_(True)
    key = next(iter(data["image_embeds"]))
    obj, boxes, embeds, shift, scale = data["image_embeds"][key]
    data["image_embeds"][key] = (obj.requires_grad_(True), boxes, embeds.half(), shift,
                                 scale[:, None])  # fp16 and (K, 1): as Roboflow stores them
    torch.save(data, tmp_path / "p.pt")
    loaded = load_pt(tmp_path / "p.pt")
    ex = loaded.exemplars
    assert not ex.embeds.requires_grad and ex.embeds.dtype == torch.float32
    torch.testing.assert_close(torch.linalg.vector_norm(ex.embeds, dim=1),
                               torch.ones(len(ex)), rtol=0, atol=1e-6)
    emb = loaded.image_embeds[key]
    assert all(not t.requires_grad and t.dtype == torch.float32 for t in emb.reference_tuple())
    assert emb.logit_scale.shape == (K,)


@pytest.mark.parametrize("index, value, message", [
    # objectness is a probability
    (0, torch.full((K,), 2.0), r"objectness and boxes must lie in \[0, 1\]"),
    # boxes are normalised to the padded square
    (1, torch.full((K, 4), -3.0), r"objectness and boxes must lie in \[0, 1\]"),
    # class embeddings are unit rows
    (2, unit(K) * 50, r"class embeddings rows must be L2-normalised"),
    # integer tensors
    (3, torch.zeros(K, dtype=torch.long), r"must hold float tensors"),
])
def test_bad_image_embeddings_are_refused(index, value, message, tmp_path):
    data = payload()
    entry = list(data["image_embeds"][HASH_A])
    entry[index] = value
    data["image_embeds"][HASH_A] = tuple(entry)
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(PtFormatError, match=r"bad\.pt: .*" + message):
        load_pt(tmp_path / "bad.pt")


def test_unknown_metadata_keeps_only_plain_values(tmp_path):
    data = payload(note="hello", count=3, blob=torch.ones(3), nested={"a": [1]})
    meta = load_pt(save_pt(data, tmp_path / "p.pt")).meta
    assert meta["note"] == "hello" and meta["count"] == 3
    assert "blob" not in meta and "nested" not in meta


def test_settings_are_validated_and_unknown_keys_dropped(tmp_path):
    good = payload(settings={"confidence": 0.5, "score_mode": "calibrated", "project": "coins",
                             "junk": {"x": 1}})
    loaded = load_pt(save_pt(good, tmp_path / "ok.pt"))
    assert loaded.settings is not None and loaded.settings.confidence == 0.5
    assert loaded.settings.score_mode == "calibrated"
    assert loaded.meta["settings"] == {"confidence": 0.5, "score_mode": "calibrated",
                                       "project": "coins"}
    for bad in ({"confidence": 7}, {"max_detections": -1}, {"score_mode": "magic"},
                {"iou_threshold": "high"}, [1, 2]):
        with pytest.raises(PtFormatError, match=r"bad\.pt: .*(bad saved settings|settings must)"):
            load_pt(save_pt(payload(settings=bad), tmp_path / "bad.pt"))


def test_pickle_payload_is_reported_as_needing_code_not_as_corrupt(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(os.system, protocol=4))  # STACK_GLOBAL, no zip around it
    with pytest.raises(PtFormatError, match=r"evil\.pt: refused to load: .*\(posix\.system\)"):
        load_pt(path)


def test_pickle_opcodes_torch_rejects_without_naming_a_global_are_reported_as_code(tmp_path):
    """An INST opcode (old-style "call this with these args") inside a torch.save archive:
    torch's message names no global, the file is still refused as needing code."""
    plain = save_pt(payload(small=True), tmp_path / "plain.pt")
    evil = b"(S'touch owl-pwned'\nios\nsystem\n."
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(tmp_path / "inst.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, evil if info.filename.endswith("data.pkl") else src.read(info))
    with pytest.raises(PtFormatError, match=r"inst\.pt: refused to load: .*\(os\.system\)"):
        load_pt(tmp_path / "inst.pt")


# ---------------------------------------------------------------------------- Roboflow files
def test_default_roboflow_id_is_what_roboflows_loader_needs(tmp_path):
    data = build_payload(huggingface_id="google/owlv2-base-patch16-ensemble",
                         exemplars=make_exemplars(), image_embeds=None, meta={})
    assert data["roboflow_id"] == "owlv2/owlv2-base-patch16-ensemble"
    local = build_payload(huggingface_id="/models/my-owl", exemplars=make_exemplars(),
                          image_embeds=None, meta={}, roboflow_id="  ")
    assert local["roboflow_id"] == "owlv2/my-owl"
    assert load_pt(save_pt(data, tmp_path / "a.pt")).roboflow_id == data["roboflow_id"]


def test_class_order_survives_and_both_roboflow_readings_agree(tmp_path):
    raw = torch.load(save_pt(payload(), tmp_path / "p.pt"), weights_only=True)
    # newer Roboflow loader: class id = index in sorted(class_names); older: file order
    assert raw["class_names"] == sorted(raw["class_names"]) == list(raw["train_data_dict"])
    loaded = load_pt(tmp_path / "p.pt")
    assert loaded.exemplars.class_names == ("coin", "cup", "nut", "bolt")  # ours restored
    original = make_exemplars()
    for cls in original.class_names:
        for negative in (False, True):
            assert rows_of(loaded.exemplars, cls, negative) == rows_of(original, cls, negative)
    raw[META_KEY]["class_order"] = ["coin", "cup", "nut"]  # not a permutation
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(PtFormatError, match="class order is not a permutation"):
        load_pt(tmp_path / "bad.pt")


def test_class_names_roboflow_allows_load_exactly_as_written(tmp_path):
    """Roboflow's `cls` is any string: a file of its with names our own projects would clean
    or refuse (spacing, case-only twins, a "NOT " prefix) loaded before the one class-name
    rule and loads after it, each name kept as written (its exemplars and detections use it)."""
    names = ["  red  cup ", "Cup", "cup", "NOT coin", "ünïcode ☕"]
    raw = {"huggingface_id": "google/owlv2-base-patch16-ensemble", "roboflow_id": "ws/p/1",
           "class_names": names,
           "train_data_dict": {n: {"positive": unit_rows(1, i), "negative": None}
                               for i, n in enumerate(names)},
           "image_embeds": {}}
    torch.save(raw, tmp_path / "roboflow.pt")
    loaded = load_pt(tmp_path / "roboflow.pt")
    assert loaded.exemplars.class_names == tuple(names)
    assert [loaded.exemplars.class_names[int(c)] for c in loaded.exemplars.class_ids] == names


def test_class_names_of_a_file_follow_the_length_bound(tmp_path):
    raw = payload(small=True)
    raw["class_names"] = ["c" * 201 if n == "cup" else n for n in raw["class_names"]]
    raw["train_data_dict"]["c" * 201] = raw["train_data_dict"].pop("cup")
    raw.pop(META_KEY)
    torch.save(raw, tmp_path / "long.pt")
    with pytest.raises(PtLimitError, match=r"201 is over the limit of 200 "
                                           r"\(max_class_name_chars\)"):
        load_pt(tmp_path / "long.pt")


ROBOFLOW_MODULE = "inference.models.owlv2.owlv2"


def fake_roboflow_module(monkeypatch, class_name: str = "LimitedSizeDict") -> type:
    """A stand-in for Roboflow's module, so pickle records the exact module / class path."""
    import collections
    import types

    cls = type(class_name, (collections.OrderedDict,), {"__module__": ROBOFLOW_MODULE})
    parts = ROBOFLOW_MODULE.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    setattr(sys.modules[ROBOFLOW_MODULE], class_name, cls)
    return cls


def pickled_globals(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def test_roboflow_limited_size_dict_loads_as_plain_data(tmp_path, monkeypatch):
    cls = fake_roboflow_module(monkeypatch)
    data = payload()
    del data[META_KEY]
    cache = cls()
    cache.size_limit = 10  # what Roboflow's __init__ sets
    for key, value in data["image_embeds"].items():
        cache[key] = value
    data["image_embeds"] = cache
    data["class_names"] = ["coin", "cup", "nut", "bolt"]  # the older exporter's order
    torch.save(data, tmp_path / "roboflow-small.pt")
    assert f"{ROBOFLOW_MODULE}.LimitedSizeDict" in pickled_globals(tmp_path / "roboflow-small.pt")
    monkeypatch.delitem(sys.modules, ROBOFLOW_MODULE)  # nothing of Roboflow's is importable
    loaded = load_pt(tmp_path / "roboflow-small.pt")
    assert loaded.exemplars.class_names == ("coin", "cup", "nut", "bolt")
    assert len(loaded.exemplars) == 5 and loaded.image_embeds == {}  # no sizes: not usable


def test_only_that_exact_roboflow_class_is_allowed(tmp_path, monkeypatch):
    cls = fake_roboflow_module(monkeypatch, "SomethingElse")
    data = payload(small=True)
    data["image_embeds"] = cls()
    torch.save(data, tmp_path / "other.pt")
    with pytest.raises(PtFormatError,
                       match=rf"refused to load: .*{ROBOFLOW_MODULE}\.SomethingElse"):
        load_pt(tmp_path / "other.pt")


# ---------------------------------------------------------------------------- temp files
def test_stale_temp_files_of_a_crashed_save_are_removed_on_the_next_save(tmp_path):
    stale = tmp_path / ".prompts.pt.owl-abc_1234.tmp"  # what a save killed mid-way leaves
    fresh = tmp_path / ".other.pt.owl-zzz99999.tmp"  # a save in progress right now
    foreign = tmp_path / ".someone-elses.tmp"
    for p in (stale, fresh, foreign):
        p.write_bytes(b"")
    old = time.time() - serialization.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(foreign, (old, old))
    save_pt(payload(small=True), tmp_path / "prompts.pt")
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, foreign.name, "prompts.pt"])
