"""Names from a shared project (project, classes, images) are shown as text in the real
browser: no request leaves for an ``<img src>`` in them, no link, form or password field is
created from them, in the page or in its pop-ups (issue 19 item 4)."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from browser_helpers import ASSETS
from conftest import open_tab
from playwright.sync_api import TimeoutError as PlaywrightTimeout

#: markup that would fire a request (x1..x5), add a link and a password form if rendered
PROJECT = 'P<img src=x1><a href="https://canary.invalid/p">link</a><form><input type=password>'
CLASS = "C<img src=x2>"
MD_CLASS = "[md](https://canary.invalid/m) ![i](x3)"
EXAMPLE = "E<img src=x4>.png"
QUERY = "Q<img src=x5>.png"
CANARIES = {"x1", "x2", "x3", "x4", "x5"}
#: elements the hostile names would create if they were rendered
CREATED = ("img[src^=x]", "a[href*=canary]", "form", "input[type=password]")


@pytest.fixture()
def hostile_project(studio_app) -> str:
    """A project as a hostile zip would bring it; returns its id."""
    library = studio_app[1].studio.projects
    project = library.create(PROJECT, classes=[CLASS, MD_CLASS])
    example = project.add_image(ASSETS / "images" / "coins.png", name=EXAMPLE)
    project.add_image(ASSETS / "images" / "coins.png", name=QUERY, role="query")
    project.set_prompt_boxes(example.id, [{"xyxy": [10, 10, 60, 60], "cls": CLASS}])
    library.save(project)
    return project.folder.name


def _canary_requests(urls: list[str]) -> list[str]:
    """Requests to another server, or for one of the canaries' file names."""
    return [u for u in urls if urlparse(u).hostname != "127.0.0.1"
            or urlparse(u).path.rsplit("/", 1)[-1] in CANARIES]


def _created(page) -> dict[str, int]:
    return {sel: page.locator(sel).count() for sel in CREATED}


def _toast(page, text: str) -> str:
    """The text of the pop-up that contains `text` (then closed)."""
    toast = page.locator("[data-testid='toast-body']", has_text=text).first
    toast.wait_for(timeout=60_000)
    shown = toast.inner_text()
    assert toast.locator("img, a, form, input").count() == 0, toast.inner_html()
    try:  # it may have timed out and gone by itself
        toast.locator("[data-testid='toast-close']").click(timeout=2000)
    except PlaywrightTimeout:
        pass
    return shown


def test_hostile_names_render_as_text(browser, studio_app, hostile_project):
    url = studio_app[0]
    with open_tab(browser, "about:blank", ready=False) as page:
        requests: list[str] = []
        page.context.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/?project={hostile_project}")
        page.wait_for_selector("#annotator", timeout=120_000)
        page.wait_for_function(
            "() => (document.querySelector('#review-info')?.innerText || '').includes('.png')",
            timeout=120_000)
        # the Markdown line of the image under review and the legend show the names as text
        assert QUERY in page.inner_text("#review-info")
        assert CLASS in page.inner_text("#legend") and MD_CLASS in page.inner_text("#legend")
        assert PROJECT in page.input_value("#project-name textarea, #project-name input")

        # an engine refusal that echoes the name (a class that exists already) -> gr.Error
        page.fill("#class-name textarea, #class-name input", CLASS.lower())
        page.click("#add-class")
        assert CLASS in _toast(page, "already")
        # gr.Warning naming the class (remove it with its box?), then gr.Info once removed
        page.click("#remove-class")
        assert CLASS in _toast(page, "Confirm remove")
        page.click("#remove-class")
        assert CLASS in _toast(page, "Removed class")
        # gr.Info naming the project
        page.click("#duplicate-project")
        assert PROJECT in _toast(page, "Duplicated")
        page.wait_for_timeout(500)

        assert _canary_requests(requests) == [], requests
        assert _created(page) == dict.fromkeys(CREATED, 0)
