"""Old flat module paths (`owl_core.predictor`, ...) still import, as the new module itself and
with a DeprecationWarning that names the new path; pyproject.toml turns that warning into an
error anywhere else, so our own code and tests use the new paths."""

from __future__ import annotations

import importlib
import sys

import pytest

import owl_core


@pytest.mark.parametrize("old, new", sorted(owl_core.MOVED_MODULES.items()))
def test_an_old_module_path_is_the_new_module_with_a_warning(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, f"owl_core.{old}", raising=False)
    with pytest.warns(DeprecationWarning, match=rf"owl_core\.{old} moved to owl_core\.{new};"):
        module = importlib.import_module(f"owl_core.{old}")
    assert module is importlib.import_module(f"owl_core.{new}")
