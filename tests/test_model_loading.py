"""load_model: geometry from the checkpoint files, devices, dtypes, the shared registry, and
the errors a user sees when the weights cannot be had."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from dataclasses import replace

import huggingface_hub
import huggingface_hub.constants as hf_constants
import pytest
import torch

from owl_core.engine import loading as model_loading
from owl_core.engine.loading import (
    DEFAULT_MODEL_ID,
    ModelLoadError,
    OwlModel,
    load_model,
    resolve_autocast_dtype,
    resolve_device,
)
from owl_core.engine.random_model import PRESETS, build_random_model

REMEDIES = ["local folder", "HF_HUB_OFFLINE=1",
            "python -m owl_core make-random-model --preset base DIR", "--model DIR",
            "--random-weights"]


#: An endpoint that refuses connections at once: the "hub" every test here sees.
REFUSING_ENDPOINT = "http://127.0.0.1:9"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No OWL_* / offline settings from the caller's shell; an empty Hugging Face cache; a hub
    endpoint that refuses connections; and any attempt to reach a non-loopback host recorded
    and failed, so no test depends on whether this machine has internet."""
    for name in ["OWL_DEVICE", "OWL_DTYPE", "OWL_COMPILE", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(hf_constants, "ENDPOINT", REFUSING_ENDPOINT)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        REFUSING_ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if str(host) not in _LOOPBACK:
            attempts.append(str(host))
            raise OSError(f"the tests may not reach {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    yield
    assert attempts == [], f"a test tried to reach the network: {attempts}"


def assert_names_model_and_remedies(error: ModelLoadError, model_id: str) -> None:
    message = str(error)
    assert isinstance(error, RuntimeError)
    assert repr(model_id) in message
    for remedy in REMEDIES:
        assert remedy in message, remedy


def write_checkpoint(folder, *, input_size=192, patch_size=16, mean=(0.5, 0.4, 0.3),
                     std=(0.2, 0.25, 0.3), preprocessor=True):
    """A random checkpoint with a non-default geometry (not any preset's)."""
    spec = replace(PRESETS["tiny"], name="odd", input_size=input_size, patch_size=patch_size)
    build_random_model(spec, seed=0).save_pretrained(folder)
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "Owlv2ImageProcessor", "do_pad": True,
            "size": {"height": input_size, "width": input_size},
            "image_mean": list(mean), "image_std": list(std),
        }))
    return folder


# ---------------------------------------------------------------------------- loading
def test_tiny_model_fields_come_from_its_files(tiny_model, tiny_model_dir):
    pre = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert tiny_model.input_size == pre["size"]["height"] == 256
    assert tiny_model.image_mean == tuple(pre["image_mean"])
    assert tiny_model.image_std == tuple(pre["image_std"])
    assert (tiny_model.patch_size, tiny_model.grid_size, tiny_model.class_embed_dim) == (8, 32, 32)
    assert tiny_model.device == torch.device("cpu")
    assert tiny_model.autocast_dtype is None and tiny_model.compiled is False
    assert tiny_model.model_id == str(tiny_model_dir)
    model = tiny_model.model
    assert not model.training
    assert model.config._attn_implementation == "sdpa"
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())


def test_geometry_is_read_from_the_checkpoint_not_hard_coded(tmp_path):
    folder = write_checkpoint(tmp_path / "odd")
    owl = load_model(str(folder), device="cpu")
    assert (owl.input_size, owl.patch_size, owl.grid_size) == (192, 16, 12)
    assert owl.image_mean == (0.5, 0.4, 0.3) and owl.image_std == (0.2, 0.25, 0.3)
    feature_map = owl.image_embedder(torch.zeros(2, 3, 192, 192))[0]
    assert feature_map.shape == (2, 12, 12, 64)


def test_without_preprocessor_file_falls_back_to_vision_config_and_clip(tmp_path, caplog):
    folder = write_checkpoint(tmp_path / "bare", input_size=160, preprocessor=False)
    with caplog.at_level(logging.WARNING, logger="owl_core.engine.loading"):
        owl = load_model(str(folder), device="cpu")
    assert owl.input_size == 160 and owl.grid_size == 10
    assert owl.image_mean == model_loading.CLIP_MEAN and owl.image_std == model_loading.CLIP_STD
    assert "no preprocessor_config.json" in caplog.text


def test_preprocessor_size_that_disagrees_with_the_model_is_an_error(tmp_path):
    folder = write_checkpoint(tmp_path / "bad")
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre["size"] = {"height": 224, "width": 224}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ModelLoadError, match="224 px but the vision config says 192 px"):
        load_model(str(folder), device="cpu")


def test_image_embedder_checks_its_input(tiny_model):
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 256\).*got \(1, 3, 960, 960\)"):
        tiny_model.image_embedder(torch.zeros(1, 3, 960, 960))
    out = tiny_model.image_embedder(torch.zeros(1, 3, 256, 256, dtype=torch.float64))
    feature_map = out[0]
    assert feature_map.shape == (1, 32, 32, 64) and feature_map.dtype == torch.float32
    assert torch.is_inference(feature_map) and not feature_map.requires_grad


def test_bf16_autocast_on_cpu_keeps_fp32_weights(tiny_model_dir, tiny_model):
    bf16 = load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    assert bf16 is not tiny_model and bf16.autocast_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    low = bf16.image_embedder(pixels)[0].float()
    full = tiny_model.image_embedder(pixels)[0]
    assert not torch.equal(low, full)  # autocast really ran
    cos = torch.nn.functional.cosine_similarity(low.flatten(0, 2), full.flatten(0, 2))
    assert cos.min() > 0.99


# ---------------------------------------------------------------------------- registry
def test_one_shared_instance_per_folder_device_dtype(tiny_model_dir, tiny_model, monkeypatch):
    assert load_model(str(tiny_model_dir), device="cpu") is tiny_model
    assert load_model(tiny_model_dir, device=torch.device("cpu"), dtype="fp32") is tiny_model
    monkeypatch.chdir(tiny_model_dir.parent)
    assert load_model("./tiny", device="cpu") is tiny_model  # same folder, other spelling
    monkeypatch.setenv("OWL_DTYPE", "bf16")
    assert load_model(str(tiny_model_dir), device="cpu").autocast_dtype == torch.bfloat16


def test_concurrent_first_loads_load_once(tiny_model_dir, tmp_path, monkeypatch):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "copy")  # a key nobody loaded yet
    calls = []
    original = model_loading._load_uncached

    def counting(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.2)  # keep the door open for the other threads
        return original(*args, **kwargs)

    monkeypatch.setattr(model_loading, "_load_uncached", counting)
    barrier = threading.Barrier(8)
    results: list[OwlModel] = []

    def worker():
        barrier.wait()
        results.append(load_model(str(folder), device="cpu"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(results) == 8 and all(r is results[0] for r in results)


def cpp_compiler() -> str:
    """The C++ compiler torch.compile's CPU backend (inductor) will use, or a clear failure
    naming what to install: a missing compiler is a machine problem, not a code one."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 -- any failure to find one means: install one
        pytest.fail(f"torch.compile on CPU needs a C++ compiler and none was found ({exc}). "
                    "Install one (Debian/Ubuntu: sudo apt-get install g++; or set CXX to a "
                    "compiler), then run the test again.")


@pytest.mark.slow  # compiling with inductor on CPU takes ~30 s; real, never skipped
def test_compile_gives_the_same_features(tiny_model_dir, tiny_model, tmp_path):
    assert cpp_compiler()
    folder = shutil.copytree(tiny_model_dir, tmp_path / "compiled")
    owl = load_model(str(folder), device="cpu", compile=True)
    assert owl.compiled is True  # inductor works with this machine's C++ compiler
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(owl.image_embedder(pixels)[0],
                               tiny_model.image_embedder(pixels)[0], atol=1e-4, rtol=1e-4)
    assert load_model(str(folder), device="cpu", compile=True) is owl


def test_compile_failure_falls_back_to_eager(tiny_model_dir, tmp_path, monkeypatch, caplog):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "nocompile")

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="owl_core.engine.loading"):
        owl = load_model(str(folder), device="cpu", compile=True)
    assert owl.compiled is False and "no compiler here" in caplog.text
    assert owl.image_embedder(torch.zeros(1, 3, 256, 256))[0].shape == (1, 32, 32, 64)


def test_compile_flag_from_environment(monkeypatch):
    assert model_loading._resolve_compile(None) is False
    monkeypatch.setenv("OWL_COMPILE", "1")
    assert model_loading._resolve_compile(None) is True
    assert model_loading._resolve_compile(False) is False  # the argument wins


# ---------------------------------------------------------------------------- options
def test_resolve_device_argument_then_env_then_auto(monkeypatch):
    auto = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
        else torch.device("cpu")
    assert resolve_device() == auto
    assert resolve_device("auto") == auto
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("OWL_DEVICE", "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setenv("OWL_DEVICE", "cuda:7")
    assert resolve_device("cpu") == torch.device("cpu")  # the argument wins
    monkeypatch.setenv("OWL_DEVICE", "toaster")
    with pytest.raises(ValueError, match="OWL_DEVICE 'toaster' is not a device"):
        resolve_device()


def test_resolve_device_refuses_a_missing_gpu():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("name, device, expected", [
    (None, "cpu", None),  # auto: fp32 on CPU
    (None, "cuda", torch.float16),  # auto: fp16 autocast on CUDA
    ("fp32", "cuda", None),
    ("fp16", "cpu", torch.float16),
    ("bf16", "cpu", torch.bfloat16),
    ("BF16", "cpu", torch.bfloat16),
    ("auto", "cpu", None),
])
def test_resolve_autocast_dtype(name, device, expected):
    assert resolve_autocast_dtype(name, torch.device(device)) == expected


def test_autocast_dtype_env_and_errors(monkeypatch):
    monkeypatch.setenv("OWL_DTYPE", "bf16")
    assert resolve_autocast_dtype(None, torch.device("cpu")) == torch.bfloat16
    assert resolve_autocast_dtype("fp32", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        resolve_autocast_dtype("int8", torch.device("cpu"))
    monkeypatch.setenv("OWL_DTYPE", "fp64")
    with pytest.raises(ValueError, match="OWL_DTYPE 'fp64'"):
        load_model("unused", device="cpu")


# ---------------------------------------------------------------------------- errors
def count_probes(monkeypatch) -> list[dict]:
    """Record each hub metadata request (the probe) and its keyword arguments."""
    calls: list[dict] = []
    real = huggingface_hub.get_hf_file_metadata

    def counting(url, **kwargs):
        calls.append({"url": url, **kwargs})
        return real(url, **kwargs)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", counting)
    return calls


@pytest.mark.parametrize("model_id", [DEFAULT_MODEL_ID, "someone/some-owl"])
def test_unreachable_hub_is_reported_after_one_request(model_id, monkeypatch):
    """The hub cannot be reached (here: the endpoint refuses connections, on any machine): one
    metadata request, no retries, then an error that names the model and the remedies."""
    probes = count_probes(monkeypatch)
    with pytest.raises(ModelLoadError, match="cannot be reached") as info:
        load_model(model_id, device="cpu")
    assert_names_model_and_remedies(info.value, model_id)
    assert len(probes) == 1 and probes[0]["retry_on_errors"] is False
    assert probes[0]["url"].startswith(REFUSING_ENDPOINT)


def test_reachable_hub_goes_on_to_download(monkeypatch):
    """The hub answers the probe (faked): the loader goes on to download; the test stops it
    there instead of fetching 600 MB."""
    answered, reached = [], []

    def metadata(url, **kwargs):
        answered.append(url)
        return object()

    def stop(model_id):
        reached.append(model_id)
        raise ModelLoadError(model_id, "stopped by the test before downloading.")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", metadata)
    monkeypatch.setattr(model_loading, "_download_and_load", stop)
    with pytest.raises(ModelLoadError, match="stopped by the test"):
        load_model(device="cpu")
    assert len(answered) == 1 and reached == [DEFAULT_MODEL_ID]


def test_offline_mode_fails_at_once_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(model_id):
        raise AssertionError("offline mode must not touch the network")

    monkeypatch.setattr(model_loading, "_probe_hub", no_network)
    with pytest.raises(ModelLoadError, match="offline mode is on") as info:
        load_model(DEFAULT_MODEL_ID, device="cpu")
    assert_names_model_and_remedies(info.value, DEFAULT_MODEL_ID)
    assert hf_constants.HF_HUB_CACHE in str(info.value)


def test_offline_mode_loads_from_a_prefilled_cache(tiny_model_dir, tmp_path, monkeypatch):
    """The remedy works: a hub id found in the Hugging Face cache loads with HF_HUB_OFFLINE=1."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--owl-core-tests--tiny-random"
    revision = "0" * 40
    shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    owl = load_model("owl-core-tests/tiny-random", device="cpu")
    assert owl.model_id == owl.source == "owl-core-tests/tiny-random"
    assert (owl.input_size, owl.grid_size) == (256, 32)


def test_unknown_hub_id_is_named(monkeypatch):
    """What the hub answers for a model it does not know (HTTP 404 on config.json)."""
    import httpx2

    def not_found(url, **kwargs):
        response = httpx2.Response(404, request=httpx2.Request("HEAD", url))
        raise huggingface_hub.errors.RepositoryNotFoundError("404 Repository Not Found",
                                                             response=response)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", not_found)
    with pytest.raises(ModelLoadError, match="has no such model") as info:
        load_model("google/owlv3-imaginary", device="cpu")
    assert_names_model_and_remedies(info.value, "google/owlv3-imaginary")


@pytest.mark.parametrize("model_id, problem", [
    ("./no/such/folder", "there is no folder at"),  # relative path
    ("/no/such/folder", "there is no folder at"),  # absolute path
    ("", "non-empty"),
])
def test_missing_folder(model_id, problem):
    with pytest.raises(ModelLoadError, match=problem) as info:
        load_model(model_id, device="cpu")
    assert_names_model_and_remedies(info.value, model_id)


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="has no config.json") as info:
        load_model(str(tmp_path), device="cpu")
    assert_names_model_and_remedies(info.value, str(tmp_path))


def test_a_file_instead_of_a_folder(tiny_model_dir):
    path = str(tiny_model_dir / "config.json")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(path, device="cpu")


@pytest.mark.parametrize("model_type, problem", [
    ("bert", "model_type 'bert', not an OWLv2 checkpoint"),  # another architecture
    ("owlvit", "OWL-ViT \\(v1\\) checkpoint"),  # the first OWL generation
    (None, "model_type None"),  # a config without model_type
])
def test_folder_with_another_models_config(tmp_path, model_type, problem):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ModelLoadError, match=problem) as info:
        load_model(str(tmp_path), device="cpu")
    assert "owlv2" in str(info.value)


def test_folder_with_config_but_no_weights(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="weights could not be loaded") as info:
        load_model(str(tmp_path), device="cpu")
    assert_names_model_and_remedies(info.value, str(tmp_path))


def test_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(str(tmp_path), device="cpu")
