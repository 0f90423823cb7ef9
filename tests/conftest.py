"""Shared fixtures: the tiny random OWLv2 checkpoint, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from owl_core.engine.loading import OwlModel, load_model
from owl_core.engine.random_model import make_random_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the "tiny" random checkpoint (256 px input, 8 px patches, 32x32 grid)."""
    return make_random_model("tiny", tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture
def tiny_model(tiny_model_dir: Path) -> OwlModel:
    """The shared CPU, fp32, eager `OwlModel` of the tiny checkpoint (same object every test)."""
    return load_model(str(tiny_model_dir), device="cpu", dtype="fp32", compile=False)
