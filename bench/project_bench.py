"""How project operations scale with the number of images (no model, no image files): build,
one prompt-box edit, save (atomic, with .bak) and load of a project with N image records.

    python bench/project_bench.py [N_IMAGES]      # default 10000
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from owl_core.project.model import (  # noqa: E402
    ImageRecord,
    Project,
    Prompt,
    load_project,
    save_project,
)


def main(n: int) -> None:
    folder = Path(tempfile.mkdtemp())
    records = [ImageRecord(id=f"img{i:06d}", file=f"images/{i:032x}.png", name=f"{i}.png",
                           size=(640, 480), content_hash=f"{i:032x}",
                           role="query" if i % 2 else "example") for i in range(n)]
    t = time.perf_counter()
    project = Project(name="bench", classes=["a", "b"], images=records, folder=folder)
    build = time.perf_counter() - t
    edits = []
    for i in range(20):
        t = time.perf_counter()
        project.set_prompt_boxes(records[(i * 7919) % n].id,
                                 [Prompt((10, 10, 50, 60), "a"),
                                  Prompt((100, 100, 150, 170), "b", True)])
        edits.append(time.perf_counter() - t)
    saves = []
    for _ in range(5):
        t = time.perf_counter()
        save_project(project)
        saves.append(time.perf_counter() - t)
    t = time.perf_counter()
    again = load_project(folder)
    load = time.perf_counter() - t
    assert again == project
    size_mb = (folder / "project.json").stat().st_size / 1e6
    print(f"{n} images: build {build * 1e3:.0f} ms, set_prompt_boxes median "
          f"{statistics.median(edits) * 1e3:.1f} ms, save median "
          f"{statistics.median(saves) * 1e3:.0f} ms ({size_mb:.1f} MB), load {load * 1e3:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
