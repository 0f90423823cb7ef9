"""URL images over REST: off by default; with --allow-url-images only public hosts, checked on
every hop, bounded in size. Every server here is local (127.0.0.1); "public" is simulated by
replacing the address check or the resolver, so nothing leaves the machine."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from owl_core.rest import RestConfig, UrlPolicy, create_app
from owl_core.rest import images as rest_images
from owl_core.rest.images import ImageRefusedError, fetch_url, is_public_address

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "images"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.open(ASSETS / "coins.png").convert("RGB").resize((160, 128)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[tuple[str, dict]]:
    """An HTTP server on 127.0.0.1 (ephemeral port) and its path -> response table."""
    routes: dict = {"/coins.png": (200, {"Content-Type": "image/png"}, PNG)}
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()


def _body(url: str) -> dict:
    ref = {"type": "base64", "value": base64.b64encode(PNG).decode()}
    return {"image": {"type": "url", "value": url}, "confidence": 0.0,
            "training_data": [{"image": ref, "boxes": [
                {"x": 50, "y": 40, "w": 30, "h": 30, "cls": "coin"}]}]}


@pytest.mark.parametrize("address,public", [
    ("127.0.0.1", False), ("127.8.9.10", False),            # loopback
    ("10.1.2.3", False), ("172.16.5.4", False), ("192.168.0.10", False),  # private
    ("169.254.169.254", False),                             # link-local (cloud metadata)
    ("100.64.0.1", False),                                  # carrier-grade NAT
    ("0.0.0.0", False), ("224.0.0.1", False), ("240.0.0.1", False),  # unspec., mcast, reserved
    ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False), ("ff02::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),  # IPv4-mapped private
    ("2002:7f00:1::", False),                               # 6to4 wrapping 127.0.0.1
    ("not an address", False),
    ("8.8.8.8", True), ("93.184.216.34", True), ("2606:4700:4700::1111", True),
    ("::ffff:8.8.8.8", True),                               # mapped public: its IPv4 decides
])
def test_address_check(address, public):
    assert is_public_address(address) is public


def test_urls_are_refused_unless_switched_on(tiny_model, local_server):
    base, _ = local_server
    client = TestClient(create_app(tiny_model, RestConfig()))
    response = client.post("/owlv2/infer", json=_body(f"{base}/coins.png"))
    assert response.status_code == 403 and "--allow-url-images" in response.json()["message"]


def test_loopback_server_is_refused_with_urls_on(tiny_model, local_server):
    base, _ = local_server
    client = TestClient(create_app(tiny_model, RestConfig(allow_url_images=True)))
    response = client.post("/owlv2/infer", json=_body(f"{base}/coins.png"))
    assert response.status_code == 403 and "non-public" in response.json()["message"]


@pytest.mark.parametrize("answers", [["10.0.0.7"], ["93.184.216.34", "127.0.0.1"],
                                     ["::ffff:192.168.1.1"], ["169.254.169.254"]])
def test_names_resolving_to_private_addresses_are_refused(tiny_model, answers):
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers

    client = TestClient(create_app(tiny_model, RestConfig(allow_url_images=True,
                                                          resolver=resolver)))
    response = client.post("/owlv2/infer", json=_body("http://images.example.com/a.png"))
    assert asked == ["images.example.com"]
    assert response.status_code == 403 and "non-public" in response.json()["message"]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "file:///etc/passwd",
                                 "gopher://example.com/", "http://user:pw@example.com/a.png",
                                 "http:///nohost"])
def test_other_schemes_and_credentials_are_refused(url):
    with pytest.raises(ImageRefusedError):
        fetch_url(url, UrlPolicy(allowed=True), "image", resolver=lambda h, p: ["8.8.8.8"])


@pytest.fixture
def loopback_is_public(monkeypatch):
    """Let 127.0.0.1 count as public (only it), so the local server stands for a public one."""
    real = is_public_address
    monkeypatch.setattr(rest_images, "is_public_address",
                        lambda a: a == "127.0.0.1" or real(a))


def test_public_url_is_fetched_and_detected_like_base64(tiny_model, local_server,
                                                        loopback_is_public):
    base, _ = local_server
    client = TestClient(create_app(tiny_model, RestConfig(allow_url_images=True)))
    by_url = client.post("/owlv2/infer", json=_body(f"{base}/coins.png"))
    ref = {"type": "base64", "value": base64.b64encode(PNG).decode()}
    by_b64 = client.post("/owlv2/infer", json={**_body(""), "image": ref})
    assert by_url.status_code == 200, by_url.text
    assert by_url.json()["predictions"] and (
        [p["x"] for p in by_url.json()["predictions"]]
        == [p["x"] for p in by_b64.json()["predictions"]])


def test_redirect_to_a_private_host_is_refused(tiny_model, local_server, loopback_is_public):
    base, routes = local_server
    routes["/hop"] = (302, {"Location": "http://internal.example/secret.png"}, b"")
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["10.20.30.40"]

    client = TestClient(create_app(tiny_model, RestConfig(allow_url_images=True,
                                                          resolver=resolver)))
    response = client.post("/owlv2/infer", json=_body(f"{base}/hop"))
    assert resolved == ["internal.example"]  # the redirect target was checked...
    assert response.status_code == 403      # ...and refused before any connection


def test_redirect_loops_and_oversized_images_are_bounded(local_server, loopback_is_public):
    base, routes = local_server
    routes["/loop"] = (302, {"Location": "/loop"}, b"")
    routes["/big"] = (200, {"Content-Type": "image/png"}, b"\0" * 5000)
    policy = UrlPolicy(allowed=True, max_bytes=4000, max_redirects=2)
    with pytest.raises(ImageRefusedError, match="redirects"):
        fetch_url(f"{base}/loop", policy, "image")
    with pytest.raises(Exception, match="over the limit"):
        fetch_url(f"{base}/big", policy, "image")
    assert fetch_url(f"{base}/coins.png", UrlPolicy(allowed=True), "image") == PNG
