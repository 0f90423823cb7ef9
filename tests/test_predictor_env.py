"""`OwlPredictor` reads its cache budgets from the environment when it is built, not when the
module is imported (a process that sets OWL_HOST_CACHE_MB after importing owl_core gets it)."""

from __future__ import annotations

import pytest

from owl_core.engine.predictor import OwlPredictor
from owl_core.errors import SettingsError

MB = 1024**2


def test_cache_budgets_come_from_the_environment_at_construction(tiny_model, monkeypatch):
    monkeypatch.setenv("OWL_DEVICE_CACHE_MB", "3")
    monkeypatch.setenv("OWL_HOST_CACHE_MB", "5")
    stats = OwlPredictor(tiny_model).cache_stats()
    # on a CPU device both tiers are one RAM tier of the two budgets together
    assert stats.budget_device + stats.budget_host == 8 * MB
    monkeypatch.setenv("OWL_HOST_CACHE_MB", "7")
    stats = OwlPredictor(tiny_model).cache_stats()
    assert stats.budget_device + stats.budget_host == 10 * MB


def test_explicit_budgets_win_over_the_environment(tiny_model, monkeypatch):
    monkeypatch.setenv("OWL_HOST_CACHE_MB", "5")
    stats = OwlPredictor(tiny_model, device_cache_bytes=MB, host_cache_bytes=2 * MB).cache_stats()
    assert stats.budget_device + stats.budget_host == 3 * MB


def test_a_bad_budget_names_the_variable(tiny_model, monkeypatch):
    monkeypatch.setenv("OWL_HOST_CACHE_MB", "lots")
    with pytest.raises(SettingsError, match=r"OWL_HOST_CACHE_MB='lots': expected a whole number"):
        OwlPredictor(tiny_model)
