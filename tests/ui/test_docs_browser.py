"""The REST API's /docs page works offline: Swagger UI's script and style come from the installed
`fastapi-offline` package, not a CDN. The page is opened with every request to another host
aborted, as on a machine without internet, and must list the API's operations. (The studio's
server mounts Gradio next to the same routes; tests/test_rest_mount.py checks its /docs.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from conftest import free_port

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@contextmanager
def uvicorn_server(app) -> Iterator[str]:
    """`app` served by uvicorn on a free local port in a thread; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                          log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_docs_lists_the_operations_with_every_outside_request_blocked(browser, tiny_model):
    from owl_core.rest import RestConfig, create_app

    blocked: list[str] = []

    def only_local(route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with uvicorn_server(create_app(tiny_model, RestConfig())) as url:
        context = browser.new_context()
        context.route("**/*", only_local)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(f"{url}/docs")
            for path in ("/owlv2/infer", "/infer", "/weights"):
                page.wait_for_selector(f".opblock-summary-path[data-path='{path}']",
                                       timeout=30_000)
            shown = page.locator(".opblock-summary-path").evaluate_all(
                "els => els.map(e => e.getAttribute('data-path'))")
            assert {"/owlv2/infer", "/infer", "/weights"} <= set(shown), shown
            assert page.locator(".swagger-ui .info .title").inner_text().startswith(
                "OWL Studio REST API")
        finally:
            context.close()
    assert not errors, f"JavaScript errors on /docs: {errors}"
    assert not blocked, f"/docs asked for outside resources: {blocked}"
