"""Property-based fuzzing (hypothesis) of the parsers that read outside input: the training-data
parser, the `.pt` loader and `DetectParams.from_dict`. Whatever arrives, only the documented
`OwlError` subclasses come out (never OverflowError, IndexError, RuntimeError, ...).

Derandomized (a fixed seed per test) and without an example database: every run tries the same
few hundred cases, so a failure reproduces and the suite cannot flake.
"""

from __future__ import annotations

import copy
import io
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owl_core.engine.prompt_file import META_KEY, load_pt, parse_payload
from owl_core.engine.training_data import parse_training_data
from owl_core.errors import OwlError, PtFormatError, SettingsError, TrainingDataError
from owl_core.params import DetectParams

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------- strategies
numbers = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.integers(min_value=10**300, max_value=10**400),  # beyond float
    st.integers(max_value=-10**300, min_value=-10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
scalars = st.one_of(st.none(), numbers, st.text(max_size=30), st.binary(max_size=20))
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
arrays = st.one_of(  # what Python callers pass: numpy / torch scalars and arrays
    st.builds(lambda n: torch.ones(n), st.integers(0, 3)),
    st.builds(lambda n: np.ones(n), st.integers(0, 3)),
    st.builds(lambda v: np.float32(v), st.floats(width=32)),
)
box_values = st.one_of(numbers, st.text(max_size=12), st.none(), st.lists(numbers, max_size=2),
                       arrays)
boxes = st.fixed_dictionaries(
    {},
    optional={"x": box_values, "y": box_values, "w": box_values, "h": box_values,
              "cls": st.one_of(st.text(max_size=250), numbers, st.none()),
              "negative": st.one_of(st.booleans(), numbers, st.text(max_size=5), arrays),
              "class": st.text(max_size=5)},
)
entries = st.fixed_dictionaries(
    {},
    optional={"image": st.one_of(st.just("a.png"), st.text(max_size=10), numbers, st.none()),
              "boxes": st.one_of(st.lists(st.one_of(boxes, json_like), max_size=4),
                                 json_like)},
)
training_data = st.one_of(
    json_like,
    st.lists(st.one_of(entries, json_like), max_size=4),
    st.fixed_dictionaries({"training_data": st.lists(entries, max_size=3)}),
)


def paths(node, prefix=()) -> list[tuple]:
    """Every place in a payload a value can be put (dict keys, list/tuple positions)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, prefix + (key,))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            out += paths(value, prefix + (i,))
    return out


def put(node, path: tuple, value):
    """`node` with `value` at `path` (tuples rebuilt, as they are immutable)."""
    if not isinstance(node, (dict, list, tuple)):  # an earlier edit put a value (an array,
        raise TypeError("no such place")          # a tensor) here: never index into it
    key, rest = path[0], path[1:]
    new = value if not rest else put(node[key], rest, value)
    if isinstance(node, tuple):
        return node[:key] + (new,) + node[key + 1:]
    node[key] = new
    return node


# ---------------------------------------------------------------------------- training data
@settings(FUZZ, max_examples=80)
@given(training_data)
def test_training_data_parser_raises_only_documented_errors(data):
    try:
        parsed = parse_training_data(data)
    except TrainingDataError:
        return
    for entry in parsed:  # what is accepted is usable: finite, positive sizes, named classes
        for b in entry.boxes:
            assert all(math.isfinite(v) for v in (b.x, b.y, b.w, b.h)) and b.w > 0 and b.h > 0
            assert isinstance(b.cls, str) and b.cls and len(b.cls) <= 200


VALID_TRAINING = [{"image": "a.png", "boxes": [
    {"x": 10, "y": 10, "w": 4, "h": 4, "cls": "a", "negative": False},
    {"x": 20.5, "y": 5, "w": 3, "h": 8.5, "cls": "b", "negative": True}]},
    {"image": "b.png", "boxes": []}]


@settings(FUZZ, max_examples=80)
@given(st.lists(st.tuples(st.sampled_from(paths(VALID_TRAINING)),
                          st.one_of(arrays, box_values, json_like)), min_size=1, max_size=3))
def test_training_data_parser_on_valid_data_with_parts_replaced(edits):
    data = copy.deepcopy(VALID_TRAINING)
    for path, value in edits:
        try:
            data = put(data, path, value)
        except (KeyError, IndexError, TypeError):  # an earlier edit removed that place
            continue
    test_training_data_parser_raises_only_documented_errors.hypothesis.inner_test(data)


# ---------------------------------------------------------------------------- settings
setting_values = st.one_of(numbers, st.text(max_size=12), st.none(), json_like,
                           st.sampled_from(["reference", "calibrated"]))


@settings(FUZZ, max_examples=80)
@given(st.one_of(
    st.dictionaries(st.sampled_from(["confidence", "iou_threshold", "max_detections",
                                     "score_mode", "match_threshold", "other"]),
                    setting_values, max_size=6),
    json_like,
))
def test_detect_params_from_dict_raises_only_settings_errors(data):
    try:
        params = DetectParams.from_dict(data)
    except SettingsError:
        return
    assert 0.0 <= params.confidence <= 1.0 and 0.0 <= params.iou_threshold <= 1.0
    assert 0.0 < params.match_threshold <= 1.0 and isinstance(params.max_detections, int)


# ---------------------------------------------------------------------------- .pt files
@pytest.fixture(scope="module")
def scratch() -> Path:
    with tempfile.TemporaryDirectory(prefix="owl-fuzz-") as folder:
        yield Path(folder)


def load_bytes(folder: Path, data: bytes) -> None:
    path = folder / "fuzz.pt"
    path.write_bytes(data)
    try:
        load_pt(path)
    except OwlError:
        pass


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def valid_payload() -> dict:
    """A small valid prompt set with every part our loader reads."""
    return {
        "huggingface_id": "google/owlv2-base-patch16-ensemble", "roboflow_id": "owlv2/x",
        "class_names": ["a", "b"],
        "train_data_dict": {"a": {"positive": torch.eye(4)[:2], "negative": None},
                            "b": {"positive": None, "negative": torch.eye(4)[2:3]}},
        "image_embeds": {"f" * 32: (torch.rand(3), torch.rand(3, 4), torch.eye(4)[:3],
                                    torch.zeros(3), torch.ones(3))},
        META_KEY: {"image_sizes": {"f" * 32: [64, 48]}, "class_order": ["b", "a"],
                   "settings": {"confidence": 0.5, "project": "p"}, "fingerprint": "x",
                   "preprocessing": "hf", "top_k": 3,
                   "exemplars": [{"image_hash": "f" * 32, "box_xyxy": [1, 2, 3, 4],
                                  "cls": "a", "negative": False, "iou": 0.5}] * 2
                   + [{"image_hash": "f" * 32, "box_xyxy": [1, 2, 3, 4], "cls": "b",
                       "negative": True, "iou": 0.5}]},
    }


VALID = saved(valid_payload())
PATHS = paths(valid_payload())


@settings(FUZZ, max_examples=40)
@given(st.one_of(
    st.binary(max_size=2000),
    # a valid file with some bytes changed (zip headers, pickle opcodes, tensor data)
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1,
             max_size=8).map(lambda edits: bytes(
                 _apply(bytearray(VALID), edits))),
    # a valid file cut short
    st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n]),
))
def test_pt_loader_on_random_and_damaged_bytes(scratch, data):
    load_bytes(scratch, data)


def _apply(buffer: bytearray, edits: list[tuple[int, int]]) -> bytearray:
    for position, value in edits:
        buffer[position] = value
    return buffer


tensors = st.one_of(
    st.builds(lambda n, d: torch.randn(n, d), st.integers(0, 3), st.integers(0, 5)),
    st.builds(lambda n: torch.nn.functional.normalize(torch.randn(n, 4), dim=1),
              st.integers(0, 3)),
    st.builds(lambda n: torch.ones(n, 4, dtype=torch.bool), st.integers(0, 2)),
    st.builds(lambda n: torch.arange(n), st.integers(0, 5)),
    st.builds(lambda: torch.full((1, 4), float("nan"))),
    st.builds(lambda: torch.eye(4)[:1].requires_grad_(True)),
    st.builds(lambda: torch.eye(4)[:2].to_sparse()),
    st.builds(lambda: torch.eye(4)[:1].half()),
    st.builds(lambda: torch.zeros(())),
)
leaves = st.one_of(scalars, tensors)
nested = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10,
)
provenance = st.fixed_dictionaries({}, optional={
    "image_hash": leaves, "cls": leaves, "negative": leaves, "iou": leaves,
    "box_xyxy": st.one_of(leaves, st.lists(leaves, max_size=5))})
payloads = st.fixed_dictionaries(
    {},
    optional={"huggingface_id": st.one_of(st.just("google/owlv2-base-patch16-ensemble"),
                                          nested),
              "roboflow_id": nested,
              "class_names": st.one_of(st.just(["a", "b"]), st.lists(st.text(max_size=5),
                                                                     max_size=3), nested),
              "train_data_dict": st.one_of(
                  st.dictionaries(st.sampled_from(["a", "b", "c"]),
                                  st.fixed_dictionaries({}, optional={"positive": nested,
                                                                      "negative": nested}),
                                  max_size=3),
                  nested),
              "image_embeds": st.one_of(
                  st.dictionaries(st.just("f" * 32), st.tuples(*[tensors] * 5), max_size=1),
                  nested),
              META_KEY: st.one_of(
                  st.fixed_dictionaries({}, optional={
                      "image_sizes": st.one_of(st.just({"f" * 32: [64, 48]}), nested),
                      "class_order": st.one_of(st.just(["b", "a"]), nested),
                      "settings": st.one_of(st.dictionaries(
                          st.sampled_from(["confidence", "score_mode", "project"]),
                          setting_values, max_size=3), nested),
                      "exemplars": st.one_of(nested, st.lists(provenance, max_size=2)),
                      "fingerprint": leaves, "preprocessing": leaves, "top_k": leaves,
                      "note": leaves}),
                  nested)},
)


@settings(FUZZ, max_examples=60)
@given(st.one_of(payloads, nested))
def test_pt_loader_on_random_structures(scratch, payload):
    check_payload(scratch, payload)


@settings(FUZZ, max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(tensors, leaves, nested)),
                min_size=1, max_size=3))
def test_pt_loader_on_valid_payloads_with_parts_replaced(scratch, edits):
    payload = valid_payload()
    for path, value in edits:
        try:
            payload = put(payload, path, value)
        except (KeyError, IndexError, TypeError):  # an earlier edit removed that place
            continue
    check_payload(scratch, payload)


def check_payload(scratch: Path, payload) -> None:
    """Only PtFormatError comes out of parsing; what is accepted is usable."""
    try:
        prompts = parse_payload(payload, "fuzz.pt")
    except PtFormatError:
        prompts = None
    if prompts is not None:  # what is accepted is usable: float32 unit rows, no grads
        embeds = prompts.exemplars.embeds
        assert embeds.dtype == torch.float32 and not embeds.requires_grad
        if len(embeds):
            norms = torch.linalg.vector_norm(embeds, dim=1)
            assert torch.all((norms - 1).abs() < 1e-3)
    load_bytes(scratch, saved(payload))
