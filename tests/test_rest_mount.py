"""One server: the studio (Gradio) mounted next to the REST routes, as `app.py` serves it."""

from __future__ import annotations

import base64
import io
import re

from fastapi.testclient import TestClient
from PIL import Image

from owl_core.engine.predictor import OwlPredictor
from ui.main import build_server_app, parse_args


def test_studio_and_rest_api_share_one_app(tiny_model, tmp_path):
    from ui import StudioConfig, build_demo

    pred = OwlPredictor(tiny_model)
    img = Image.new("RGB", (96, 64), (200, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    pred.set_examples([{"image": buf.getvalue(), "boxes": [
        {"x": 30, "y": 30, "w": 20, "h": 20, "cls": "red"}]}])
    pt = pred.export(tmp_path / "red.pt")

    args = parse_args(["--weights", f"red={pt}", "--allow-url-images"])
    assert args.allow_url_images and args.weights == [("red", str(pt))]
    demo = build_demo(tiny_model, StudioConfig(work_dir=str(tmp_path)))
    demo.queue()
    app = build_server_app(tiny_model, demo, args)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert client.get("/weights").json()[0]["name"] == "red"
        ref = {"type": "base64", "value": base64.b64encode(buf.getvalue()).decode()}
        answer = client.post("/owlv2/infer", json={"image": ref, "training_data": []})
        assert answer.status_code == 200 and answer.json()["predictions"] == []
        assert "/owlv2/infer" in client.get("/openapi.json").json()["paths"]
        # /docs is the REST API's, with Swagger UI served here, not from a CDN (works offline;
        # tests/ui/test_docs_browser.py opens it in a browser with outside requests blocked)
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", docs.text)
        assert assets and not [a for a in assets if "://" in a], assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
