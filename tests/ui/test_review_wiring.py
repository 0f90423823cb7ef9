"""The review panel's event chains, read from the built app's dependency graph: after a review
-> prompt action (Rejected -> negatives, Labels -> positives) the new example image is embedded
first, and only then are the preview (box diagnostics), the `.pt` downloads (exemplar counts),
the per-class counts and the meter brought up to date (issue 16 review trap 5: they ran before
the embedding and stayed stale: "13 boxes on an image still being embedded", 24 exemplars in
the download instead of 37)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def demo(tiny_model, tmp_path_factory):
    from ui import StudioConfig, build_demo

    demo = build_demo(tiny_model, StudioConfig(work_dir=str(tmp_path_factory.mktemp("w"))))
    try:
        yield demo
    finally:
        demo.studio.close()


def chain(demo, component, event: str = "click") -> list[str]:
    """Names of the functions an event runs, in order (following `.then()`)."""
    deps = demo.config["dependencies"]
    first = next(d for d in deps if [component._id, event] in [list(t) for t in d["targets"]])
    out, current = [], first
    while current is not None:
        fn = demo.fns[current["id"]].fn
        out.append(getattr(fn, "__name__", "js") if fn is not None else "js")
        current = next((d for d in deps if d.get("trigger_after") == current["id"]), None)
    return out


@pytest.mark.parametrize("button", ["review_to_negatives", "review_to_positives"])
def test_review_to_prompt_actions_refresh_after_the_embedding(demo, button):
    names = chain(demo, getattr(demo.studio.c, button))
    assert "on_embed" in names
    after = names[names.index("on_embed") + 1:]
    for follower in ("on_settings", "on_downloads", "on_counts", "on_meter"):
        assert follower in after, f"{follower} does not follow the embedding: {names}"
