"""`python -m owl_core.rest`: the REST API served alone, and its flags."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from owl_core.rest.server import parse_args, rest_config_from_args

ROOT = Path(__file__).resolve().parent.parent


def test_weights_flags_name_files_and_refuse_duplicates():
    args = parse_args(["--weights", "coins=/data/coins.pt", "--weights", "/data/dogs-v2.pt",
                       "--allow-url-images"])
    config = rest_config_from_args(args)
    assert config.weights == {"coins": "/data/coins.pt", "dogs-v2": "/data/dogs-v2.pt"}
    assert config.allow_url_images and config.policy().allowed
    assert not rest_config_from_args(parse_args([])).policy().allowed  # off by default
    with pytest.raises(SystemExit):
        rest_config_from_args(parse_args(["--weights", "a=/x.pt", "--weights", "a=/y.pt"]))
    with pytest.raises(SystemExit):
        parse_args(["--weights", "=/x.pt"])


def _run(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "owl_core.rest", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def test_unloadable_weights_stop_the_start_with_a_message(tiny_model_dir, tmp_path):
    missing = tmp_path / "secret-folder" / "gone.pt"
    proc = _run(["--model", str(tiny_model_dir), "--weights", f"gone={missing}"])
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 2
    assert "Cannot start the REST API" in out and "Traceback" not in out
    assert "gone" in out and "secret-folder" not in out  # named, without the server path


def test_serve_is_a_cli_subcommand_with_the_same_flags(tiny_model_dir, tmp_path):
    from owl_core.cli.main import build_parser, run

    args = build_parser().parse_args(["serve", "--model", "m", "--port", "1234",
                                      "--allow-url-images"])
    assert (args.port, args.allow_url_images, args.model) == (1234, True, "m")
    missing = tmp_path / "secret-folder" / "gone.pt"  # same start-up refusal as serve_main
    assert run(["serve", "--model", str(tiny_model_dir), "--weights", f"gone={missing}"]) == 2


def test_standalone_server_answers_reference_requests(tiny_model_dir):
    proc = _run(["--model", str(tiny_model_dir), "--port", "0"])
    try:
        port = None
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the server exited"
            found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else None
        assert port, "the server did not say where it listens"
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, format="PNG")
        ref = {"type": "base64", "value": base64.b64encode(buf.getvalue()).decode()}
        body = {"image": ref, "training_data": [{"image": ref, "boxes": [
            {"x": 20, "y": 20, "w": 16, "h": 16, "cls": "green"}]}], "confidence": 0.0}
        response = httpx.post(f"http://127.0.0.1:{port}/owlv2/infer", json=body, timeout=120)
        assert response.status_code == 200
        assert response.json()["image"] == {"width": 64, "height": 48}
        refused = httpx.post(f"http://127.0.0.1:{port}/owlv2/infer", timeout=60, json={
            **body, "image": {"type": "file", "value": "/etc/hostname"}})
        assert refused.status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=60)
