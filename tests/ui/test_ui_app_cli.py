"""`python app.py`: flags, the random-weights checkpoint, and a clear exit when the model can't
be loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import app

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_listen_locally_without_share():
    args = app.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    assert args.model == "google/owlv2-base-patch16-ensemble" and args.random_weights is None
    args = app.parse_args(["--share", "--random-weights", "tiny", "--host-cache-mb", "64",
                           "--device", "cpu", "--port", "9000"])
    assert args.share and args.random_weights == "tiny" and args.cache_mb == 64
    assert args.embed_batch_size is None  # chosen by device: see default_embed_batch_size
    assert app.parse_args(["--embed-batch-size", "2"]).embed_batch_size == 2


def test_embed_batch_size_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        app.parse_args(["--embed-batch-size", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_unloadable_model_exits_with_instructions_and_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model",
                           str(tmp_path / "no-such-folder")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Could not load the OWLv2 model" in proc.stderr
    assert "--model /path/to" in proc.stderr and "--random-weights tiny" in proc.stderr


def test_random_weights_are_created_once_and_loaded(tmp_path):
    args = app.parse_args(["--random-weights", "tiny", "--random-weights-dir", str(tmp_path),
                           "--device", "cpu"])
    model = app.load_owl_model(args)
    folder = tmp_path / "random-tiny"
    assert (folder / "config.json").is_file()
    assert model.input_size == 256
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert app.load_owl_model(args) is model          # reused, not re-created
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def test_a_model_folder_made_by_make_random_model_shows_the_random_weights_banner(
        tiny_model_dir, tmp_path):
    from ui.main import parse_args, random_preset

    assert random_preset(parse_args(["--model", str(tiny_model_dir)])) == "tiny"
    assert random_preset(parse_args(["--random-weights", "tiny"])) == "tiny"
    assert random_preset(parse_args(["--model", "google/owlv2-base-patch16"])) is None
    assert random_preset(parse_args(["--model", str(tmp_path)])) is None  # no marker
