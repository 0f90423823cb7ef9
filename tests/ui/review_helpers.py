"""Shared by the review / meter tests: a predictor whose detections on one picture are
scripted (so a browser test knows where each box is and a meter reading can be computed by
hand), the studio running with it, and mouse helpers for the review annotator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from browser_helpers import image_origin
from PIL import Image

from owl_core import OwlPredictor
from owl_core.engine.scoring import DetectionResult
from owl_core.params import DetectParams

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CHELSEA = ASSETS / "images" / "chelsea.png"
REVIEW = "#review-annotator"
CHELSEA_SIZE = (451, 300)
#: The scripted detections on chelsea.png: (xyxy, class, score), best first.
SCRIPT = [((20.0, 20.0, 120.0, 120.0), "coin", 0.95),
          ((160.0, 20.0, 260.0, 120.0), "coin", 0.85),
          ((300.0, 20.0, 420.0, 140.0), "coin", 0.75)]


class ScriptedPredictor(OwlPredictor):
    """The real predictor, except that on a picture of `CHELSEA_SIZE` it "detects" `SCRIPT`
    (classes the prompt has; thresholded at the confidence asked for, like the engine)."""

    def detect_many(self, images, params=None, **overrides):
        images = list(images)
        real = super().detect_many(images, params, **overrides)
        p = params or DetectParams()
        p = p.replace(**{k: v for k, v in overrides.items() if v is not None})
        out = []
        for image, res in zip(images, real, strict=True):
            with Image.open(image) as img:
                size = img.size
            if size != CHELSEA_SIZE:
                out.append(res)
                continue
            names = tuple(res.class_names)
            kept = [(xyxy, names.index(c), s) for xyxy, c, s in SCRIPT
                    if c in names and s >= p.confidence]
            out.append(DetectionResult(
                xyxy=np.array([k[0] for k in kept], dtype=np.float32).reshape(-1, 4),
                confidence=np.array([k[2] for k in kept], dtype=np.float32),
                class_id=np.array([k[1] for k in kept], dtype=np.int64),
                class_names=names, image_size=size))
        return out


def review_origin(page, natural_width: int) -> tuple[float, float, float]:
    """`browser_helpers.image_origin` of the review annotator."""
    return image_origin(page, natural_width, REVIEW)


def session_of(page, demo):
    """The server-side session of the page (found by the project id in its address)."""
    from urllib.parse import parse_qs, urlparse

    project = parse_qs(urlparse(page.url).query).get("project", [None])[0]
    found = [s for s in demo.studio.store.live() if s.project_id == project]
    assert found, f"no live session has project {project!r}"
    return found[0]
