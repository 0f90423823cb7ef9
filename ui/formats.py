"""The bundled files: sample photos and example projects (read, like every project file, by
`owl_core.project.model`). Datasets (COCO / YOLO / Pascal VOC) are written by the one dataset
writer, `owl_core.dataset_formats` (the studio's download: `owl_core.project.dataset_export`).
"""

from __future__ import annotations

from pathlib import Path

from owl_core.errors import OwlError
from owl_core.images import is_image_name
from owl_core.project.model import read_json

#: Sample photos and example projects: ui/assets/ when installed (pyproject.toml ships
#: assets/ there), assets/ next to ui/ in a checkout.
ASSETS_DIR = next((d for d in (Path(__file__).resolve().parent / "assets",
                               Path(__file__).resolve().parent.parent / "assets") if d.is_dir()),
                  Path(__file__).resolve().parent.parent / "assets")


def bundled_images(assets_dir: Path = ASSETS_DIR) -> list[Path]:
    """The sample photos shipped in ``assets/images`` (sorted by name)."""
    folder = assets_dir / "images"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_name(p))


def bundled_projects(assets_dir: Path = ASSETS_DIR) -> dict[str, Path]:
    """Display name -> ``project.json`` path of every bundled example project; the coins
    project (``example_project``) first."""
    found: dict[str, Path] = {}
    if not assets_dir.is_dir():
        return found
    files = sorted(assets_dir.glob("*/project.json"),
                   key=lambda p: (p.parent.name != "example_project", p.parent.name))
    for path in files:
        try:
            data = read_json(path)
        except OwlError:
            continue
        name = data.get("name") if isinstance(data, dict) else None
        found[str(name or path.parent.name)] = path
    return found
