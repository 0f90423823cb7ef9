"""A request body that trickles in (one byte every half second never stalls) or never comes
is cut off with 408 once ``max_body_seconds`` have passed: the REST API's and the studio's
upload route, on the server `python app.py` runs (REST + studio in one app) and on the studio
as Gradio's own launcher runs it (``--share``). Real servers, real sockets (issue 19 item 5)."""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from conftest import free_port

#: the test's own give-up time: far over the 2 s deadline the tests set
GIVE_UP_S = 25.0
UPLOAD_HEAD = ("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
               "Content-Type: multipart/form-data; boundary=b\r\n\r\n")
JSON_HEAD = ("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
             "Content-Type: application/json\r\n\r\n")


@pytest.fixture()
def short_deadline(monkeypatch):
    monkeypatch.setenv("OWL_MAX_BODY_SECONDS", "2")


def trickle(port: int, head: str, byte_every: float | None) -> bytes:
    """Send `head`, then one byte of body every `byte_every` seconds (None: nothing); the
    server's answer, or b"" if none came within `GIVE_UP_S`."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head.encode())
        sock.sendall(b"--b\r\n" if byte_every else b"")
        give_up = time.monotonic() + GIVE_UP_S
        while time.monotonic() < give_up:
            ready, _, _ = select.select([sock], [], [], byte_every or 0.5)
            if ready:
                sock.settimeout(5)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                    if b"}" in answer:  # the JSON message is complete
                        break
                return answer
            if byte_every:
                sock.sendall(b"x")
    return b""


def assert_408(answer: bytes) -> None:
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"max_body_seconds" in answer, answer[-300:]


@contextmanager
def uvicorn_server(app) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def full_server(tiny_model, tmp_path_factory):
    """The app `python app.py` serves: REST routes with the studio mounted at "/"."""
    from ui import StudioConfig, build_demo
    from ui.main import build_server_app, parse_args

    config = StudioConfig(random_preset="tiny", max_sessions=2,
                          work_dir=str(tmp_path_factory.mktemp("slow-studio")),
                          projects_dir=str(tmp_path_factory.mktemp("slow-projects")),
                          cache_bytes=64 * 2**20)
    demo = build_demo(tiny_model, config)
    demo.queue(default_concurrency_limit=2)
    try:
        app = build_server_app(tiny_model, demo, parse_args(["--host", "127.0.0.1"]))
        with uvicorn_server(app) as port:
            yield port
    finally:
        demo.studio.close()


@pytest.mark.parametrize("head", [JSON_HEAD.format(path="/owlv2/infer"),
                                  UPLOAD_HEAD.format(path="/infer")])
def test_rest_body_one_byte_at_a_time_gets_408(full_server, short_deadline, head):
    assert_408(trickle(full_server, head, byte_every=0.5))


@pytest.mark.parametrize("byte_every", [None, 0.5])  # nothing at all / a byte now and then
def test_studio_upload_that_never_completes_gets_408(full_server, short_deadline, byte_every):
    assert_408(trickle(full_server, UPLOAD_HEAD.format(path="/gradio_api/upload"), byte_every))


def test_studio_upload_on_gradios_own_launcher_gets_408(studio_app, short_deadline):
    port = int(studio_app[0].rsplit(":", 1)[1])
    assert_408(trickle(port, UPLOAD_HEAD.format(path="/gradio_api/upload"), byte_every=0.5))


def test_a_normal_upload_still_works(full_server):
    import httpx

    files = {"files": ("a.txt", b"hello", "text/plain")}
    response = httpx.post(f"http://127.0.0.1:{full_server}/gradio_api/upload", files=files,
                          timeout=30)
    assert response.status_code == 200, response.text


class Records(logging.Handler):
    """Every log record of the server (uvicorn's loggers do not propagate to the root)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def server_log() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"),
               logging.getLogger("uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def disconnect_mid_upload(port: int) -> None:
    """A real client socket that sends part of a multipart upload and closes."""
    body = (b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + b"x" * 5000)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(UPLOAD_HEAD.format(path="/gradio_api/upload").encode() + body)
        time.sleep(0.3)  # the server is reading the body when the client goes


@pytest.mark.parametrize("which", ["python app.py", "gradio launcher"])
def test_a_client_gone_mid_upload_is_one_log_line(full_server, studio_app, capfd, which):
    """Before: two tracebacks per disconnect (the REST app's error log and uvicorn's
    'Exception in ASGI application', both around Starlette's ClientDisconnect raised in
    Gradio's upload route)."""
    port = full_server if which == "python app.py" else int(studio_app[0].rsplit(":", 1)[1])
    with server_log() as log:
        disconnect_mid_upload(port)
        give_up = time.monotonic() + GIVE_UP_S
        while not any("disconnect" in r.getMessage().lower() or r.exc_info
                      for r in log.records) and time.monotonic() < give_up:
            time.sleep(0.1)
        time.sleep(1.0)  # anything else it would log about this request
    about = [r for r in log.records if r.levelno >= logging.WARNING]
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    assert not [r for r in about if r.exc_info], [r.getMessage() for r in about]
    assert len(about) == 1, [r.getMessage() for r in about]
    assert "disconnected" in about[0].getMessage()
