"""Nothing a user does is lost (issue 7), in a real browser: the tab's project lives on disk, so
a reload, a new tab, a restarted server or "Load example project" never empties or replaces it.
Screenshots of the project controls land in test-artifacts/."""

from __future__ import annotations

import contextlib
import time
import zipfile

from browser_helpers import (
    COINS,
    draw_box,
    pick_label,
    poll,
    upload,
    wait_counts,
    wait_ready,
    wait_rows,
)
from conftest import DOWNLOADS_READY, free_port
from playwright.sync_api import expect

COIN_BOX = (131, 28, 180, 74)


@contextlib.contextmanager
def running_studio(model, projects_dir, work_dir, disk_dir=None):
    """The studio on `projects_dir` (as `python app.py --projects-dir ...` runs it)."""
    from ui import StudioConfig, build_demo, launch_kwargs

    config = StudioConfig(random_preset="tiny", work_dir=str(work_dir),
                          projects_dir=str(projects_dir), cache_bytes=256 * 2**20,
                          disk_cache_dir=None if disk_dir is None else str(disk_dir))
    demo = build_demo(model, config)
    demo.queue(default_concurrency_limit=4)
    try:
        demo.launch(**launch_kwargs(prevent_thread_lock=True, server_name="127.0.0.1",
                                    server_port=free_port(), quiet=True))
        yield demo.local_url.rstrip("/"), demo.studio
    finally:
        demo.close()
        demo.studio.close()


def open_page(context, url):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function(DOWNLOADS_READY)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def project_id(page) -> str:
    page.wait_for_function("() => new URL(location.href).searchParams.get('project')")
    return page.evaluate("() => new URL(location.href).searchParams.get('project')")


def label_a_coin(page, coins_copy) -> str:
    """A class "coin", the coins photo as example and query, one coin box; returns the id."""
    page.fill("#class-name textarea", "coin")
    page.press("#class-name textarea", "Enter")
    expect(page.locator("#legend")).to_contain_text("NOT coin")
    upload(page, "#upload-examples", coins_copy)
    page.wait_for_selector("#examples-gallery img")
    upload(page, "#upload-queries", COINS)
    wait_ready(page)
    draw_box(page, COIN_BOX)
    pick_label(page, "coin")
    wait_rows(page, "#diag-table", lambda rows: len(rows) == 1 and rows[0][2] == "coin")
    return project_id(page)


def saved_prompts(studio, pid: str, timeout: float = 10.0) -> list:
    """The prompt boxes on disk, once the debounced save wrote them."""
    deadline = time.monotonic() + timeout
    while True:
        core = studio.projects.open(pid)
        prompts = [p for r in core.images for p in r.prompts]
        if prompts or time.monotonic() > deadline:
            return prompts
        time.sleep(0.1)


def assert_coin_project(page) -> None:
    """The page shows the labelled project: class, example, query, the drawn box."""
    expect(page.locator("#legend")).to_contain_text("NOT coin")
    wait_ready(page)
    expect(page.locator("#examples-gallery img")).to_have_count(1)
    rows = wait_rows(page, "#diag-table", lambda rows: len(rows) == 1)
    assert rows[0][2:4] == ["coin", "positive"] and rows[0][6] == "matched"
    wait_counts(page, lambda rows: rows[0][0] == "coins.png")  # counts follow the preview


def test_reload_and_a_new_tab_bring_back_boxes_and_classes(browser, studio_app, coins_copy,
                                                            artifacts):
    url, demo = studio_app
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        page = open_page(context, url)
        pid = label_a_coin(page, coins_copy)
        page.fill("#project-name textarea, #project-name input", "Coins, reloaded")
        page.press("#project-name textarea, #project-name input", "Enter")
        assert len(saved_prompts(demo.studio, pid)) == 1
        # the rename reached the server (a reload before that would cancel the event itself)
        poll(lambda: any(s.core.name == "Coins, reloaded"
                         for s in demo.studio.store.live() if s.project_id == pid),
             bool, "the rename reached the server")
        page.screenshot(path=str(artifacts / "20_project_bar.png"), full_page=False)

        page.reload()
        page.wait_for_function(DOWNLOADS_READY)
        assert project_id(page) == pid
        assert_coin_project(page)
        expect(page.locator("#project-name textarea, #project-name input")) \
            .to_have_value("Coins, reloaded")

        # a new tab without ?project= opens the project this browser had open last
        other = open_page(context, url)
        assert project_id(other) == pid
        assert_coin_project(other)
        other.screenshot(path=str(artifacts / "21_reopened_in_new_tab.png"), full_page=True)
        assert not page.errors and not other.errors
    finally:
        context.close()


def test_a_restarted_server_reopens_the_project_without_embedding_again(
        browser, tiny_model, tmp_path, coins_copy):
    projects, disk = tmp_path / "projects", tmp_path / "embeddings"
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        with running_studio(tiny_model, projects, tmp_path / "w1", disk) as (url, studio):
            page = open_page(context, url)
            pid = label_a_coin(page, coins_copy)
            assert len(saved_prompts(studio, pid)) == 1
            page.close()
        with running_studio(tiny_model, projects, tmp_path / "w2", disk) as (url, studio):
            page = open_page(context, f"{url}/?project={pid}")
            assert_coin_project(page)
            stats = studio.cache.stats()
            assert stats.misses == 0 and stats.hits_disk >= 1  # from the disk tier
            assert not page.errors
    finally:
        context.close()


def test_load_example_project_opens_a_new_project_and_keeps_the_open_one(
        browser, studio_app, coins_copy, artifacts):
    url, demo = studio_app
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    try:
        page = open_page(context, url)
        pid = label_a_coin(page, coins_copy)
        before = saved_prompts(demo.studio, pid)
        page.click("#load-example-project")
        page.wait_for_function(
            f"() => !location.href.includes('{pid}') && location.href.includes('project=')")
        wait_rows(page, "#diag-table", lambda rows: len(rows) == 5)  # the example's boxes
        example_id = project_id(page)
        assert example_id != pid
        assert demo.studio.projects.open(pid).images  # untouched on disk
        assert saved_prompts(demo.studio, pid) == before

        # back to the first project with the project list
        page.locator("#project-list input").click()
        page.locator(f"#project-list li[role=option][aria-label$='{pid}']").click()
        page.click("#open-project")
        page.wait_for_function(f"() => location.href.includes('{pid}')")
        assert_coin_project(page)
        page.screenshot(path=str(artifacts / "22_project_list.png"), full_page=False)
        assert not page.errors
    finally:
        context.close()


def test_duplicate_delete_and_zip_round_trip(browser, studio_app, coins_copy, tmp_path,
                                             artifacts):
    url, demo = studio_app
    projects = demo.studio.projects
    context = browser.new_context(viewport={"width": 1600, "height": 1200}, accept_downloads=True)
    try:
        page = open_page(context, url)
        pid = label_a_coin(page, coins_copy)
        saved_prompts(demo.studio, pid)

        # download the project as a zip: project.json and its images
        page.click("#download-zip")
        link = page.locator("#project-zip a[download]")
        link.wait_for()
        with page.expect_download() as download:
            link.click()
        zipped = tmp_path / "project.zip"
        download.value.save_as(zipped)
        with zipfile.ZipFile(zipped) as zf:
            names = set(zf.namelist())
        # the example and the query are the same picture: one file, named by its content
        assert "project.json" in names and sum(n.startswith("images/") for n in names) == 1

        # duplicate: a new id, the same boxes
        page.click("#duplicate-project")
        page.wait_for_function(f"() => !location.href.includes('{pid}')")
        copy_id = project_id(page)
        assert_coin_project(page)
        assert saved_prompts(demo.studio, copy_id) == saved_prompts(demo.studio, pid)

        # delete the copy (confirmed): the tab moves to the most recently saved other
        # project, and no new empty project is made
        before = {info.id for info in projects.list()}
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#delete-project")
        page.wait_for_function(f"() => !location.href.includes('{copy_id}')")
        assert not projects.exists(copy_id) and projects.exists(pid)
        after = {info.id for info in projects.list()}
        assert after == before - {copy_id} and project_id(page) in after

        # open the zip: a new project with the same content
        upload(page, "#open-zip", zipped)
        page.wait_for_function(
            f"() => !location.href.includes('{copy_id}') && location.href.includes('project=')")
        page.wait_for_timeout(200)
        zip_id = project_id(page)
        assert zip_id not in (pid, copy_id)
        assert_coin_project(page)
        page.screenshot(path=str(artifacts / "23_opened_from_zip.png"), full_page=False)
        assert not page.errors
    finally:
        context.close()


def test_api_calls_keep_a_tab_and_an_evicted_tab_comes_back_from_disk(
        browser, studio_app, coins_copy, artifacts):
    from gradio_client import Client, handle_file

    url, demo = studio_app
    store = demo.studio.store
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    others = []
    try:
        page = open_page(context, url)
        pid = label_a_coin(page, coins_copy)
        mine = next(s.id for s in store.live() if s.project_id == pid)

        # eight API clients: none takes the tab's place
        training = '[{"image": 0, "boxes": [{"x": 155.5, "y": 51, "w": 49, "h": 46, ' \
                   '"cls": "coin", "negative": false}]}]'
        for _ in range(8):
            client = Client(url, verbose=False)
            out = client.predict(training_data=training,
                                 example_images=[handle_file(str(COINS))],
                                 query_images=[handle_file(str(COINS))], confidence=0.5,
                                 iou_threshold=0.3, max_detections=300,
                                 score_mode="reference", api_name="/infer")
            assert out["classes"] == ["coin"]
        assert mine in store.ids()

        # as many other tabs as the server keeps: this tab's session is dropped from memory
        for _ in range(store.max_sessions):
            other = browser.new_context()
            others.append(other)
            open_page(other, url)
        assert mine not in store.ids()
        restored = store.restored

        # its next edit: the project comes back from disk, nothing lost, and the edit counts
        draw_box(page, (180, 230, 240, 290))
        pick_label(page, "coin")
        wait_rows(page, "#diag-table",
                  lambda rows: len(rows) == 2 and [r[2] for r in rows] == ["coin", "coin"])
        assert store.restored == restored + 1
        assert len(saved_prompts(demo.studio, pid)) >= 1
        page.screenshot(path=str(artifacts / "24_back_from_disk.png"), full_page=False)
        assert not page.errors
    finally:
        for other in others:
            other.close()
        context.close()
