"""The "Folder on the server" row in a real browser (Debian's headless Chromium): a studio started
with a data folder; typing a folder fills the preview, and a path outside it is refused on the
page with nothing added. Screenshots: test-artifacts/data_dir_row.png, data_dir_preview.png."""

from __future__ import annotations

import shutil

import pytest
from browser_helpers import ASSETS, wait_ready
from conftest import open_tab, serve
from playwright.sync_api import expect

QUERIES = ("chelsea.png", "rocket.jpg")


@pytest.fixture(scope="module")
def data_dir_app(tiny_model, tmp_path_factory):
    """(url, data folder) of the studio started as ``app.py --data-dir <folder>``; the folder
    holds photos/ with two bundled images, and a sibling folder outside it holds another."""
    from ui import StudioConfig, build_demo

    root = tmp_path_factory.mktemp("served")
    data = root / "data"
    (data / "photos").mkdir(parents=True)
    for name in QUERIES:
        shutil.copyfile(ASSETS / "images" / name, data / "photos" / f"server-{name}")
    (root / "outside").mkdir()
    shutil.copyfile(ASSETS / "images" / "coins.png", root / "outside" / "coins.png")
    config = StudioConfig(random_preset="tiny", work_dir=str(root / "work"),
                          cache_bytes=256 * 2**20, data_dirs=(str(data),))
    demo = build_demo(tiny_model, config)
    with serve(demo) as url:
        yield url, data


def test_typing_a_folder_fills_the_preview(browser, data_dir_app, artifacts):
    url, data = data_dir_app
    with open_tab(browser, url) as page:
        box = page.get_by_role("textbox", name="Folder on the server")  # the hidden label
        expect(box).to_have_attribute("placeholder", f"Folder on the server, inside {data} "
                                      "(relative or absolute; \".\" = all of it)")

        # outside the data folder: refused on the page, nothing added
        box.fill("../outside")
        page.click("#data-dir-queries")
        expect(page.locator(".toast-body").first).to_contain_text(
            "'../outside' is outside the folders this server may read", timeout=30_000)
        assert page.locator("#preview img").count() == 0

        box.fill("photos")
        page.click("#data-dir-queries")
        wait_ready(page)
        expect(page.locator("#status")).to_contain_text("2 query image(s)")
        assert page.locator("#preview img").count() > 0
        page.locator("#data-dir-row").screenshot(path=str(artifacts / "data_dir_row.png"))
        page.screenshot(path=str(artifacts / "data_dir_preview.png"), full_page=True)

        # the same folder again adds nothing new
        page.click("#data-dir-queries")
        expect(page.locator(".toast-body").last).to_contain_text("not added again",
                                                                 timeout=30_000)
        expect(page.locator("#status")).to_contain_text("2 query image(s)")
