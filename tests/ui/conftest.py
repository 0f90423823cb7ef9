"""Fixtures for the UI tests: the tiny random model, the app running in-process, a browser.

The app is started once per test session (`prevent_thread_lock=True`) on the tiny random
checkpoint made by our own maker, and closed in `finally`; API and browser tests share it.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from another folder
    sys.path.insert(0, str(ROOT))
ASSETS = ROOT / "assets"
ARTIFACTS = ROOT / "test-artifacts"
#: JS condition: the page's load event and first refresh are done (downloads prepared)
DOWNLOADS_READY = ("() => (document.querySelector('#export-info')?.innerText || '')"
                   ".includes('Downloads ready')")
CHROMIUM = os.environ.get("OWL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from owl_core import make_random_model

    return make_random_model("tiny", tmp_path_factory.mktemp("random-tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from owl_core import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@contextmanager
def serve(demo) -> Iterator[str]:
    """Run a studio app (from `ui.build_demo`) in-process on a free local port; yields its URL.
    The server and the studio (sessions, scratch files) are closed afterwards."""
    from ui import launch_kwargs

    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                    server_port=free_port(), quiet=True))
        yield demo.local_url.rstrip("/")
    finally:
        demo.close()
        demo.studio.close()


@contextmanager
def open_tab(browser, url: str, viewport: dict | None = None, *, downloads: bool = False,
             ready: bool = True) -> Iterator:
    """A fresh browser tab (its own Gradio session) on `url`; with `ready`, once the page's
    load event and first refresh are done. The test fails on any JavaScript error on the page."""
    context = browser.new_context(viewport=viewport or {"width": 1600, "height": 1200},
                                  accept_downloads=downloads)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        if ready:
            page.wait_for_selector("#annotator")
            page.wait_for_function(DOWNLOADS_READY)
        yield page
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


@pytest.fixture(scope="session")
def studio_app(tiny_model, tmp_path_factory):
    """(url, demo) of the studio on the tiny random model, as `python app.py --random-weights
    tiny` would run it."""
    from ui import StudioConfig, build_demo

    config = StudioConfig(random_preset="tiny", max_sessions=6,
                          work_dir=str(tmp_path_factory.mktemp("studio")),
                          projects_dir=str(tmp_path_factory.mktemp("projects")),
                          cache_bytes=512 * 2**20)
    demo = build_demo(tiny_model, config)
    with serve(demo) as url:
        yield url, demo


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (scripts/test.sh does) "
                    "or point OWL_TEST_CHROMIUM at a Chromium binary.")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(browser, studio_app, tmp_path):
    """A fresh browser session on the studio (own Gradio session, downloads allowed)."""
    with open_tab(browser, studio_app[0], downloads=True) as page:
        yield page


@pytest.fixture()
def coins_copy(tmp_path) -> Path:
    """coins.png under a new name (uploads keep their file name)."""
    target = tmp_path / "coins-upload.png"
    shutil.copyfile(ASSETS / "images" / "coins.png", target)
    return target


@pytest.fixture()
def spy_studio(tiny_model, tmp_path):
    """A `Studio` whose tabs get `SpyPredictor`s (to count the engine's calls), with its
    components built (the handlers address them); closed after the test, so its saver stops
    before the temporary folder goes."""
    from spies import SpyPredictor

    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), embed_batch_size=2)
    studio = Studio(tiny_model, config, make_predictor=lambda: SpyPredictor(tiny_model))
    build_demo(tiny_model, config, studio=studio)
    try:
        yield studio
    finally:
        studio.close()
