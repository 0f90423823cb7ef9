"""Phrases per class in the project file (issue 18 item 6): saved, versioned, validated, carried
by renames, dropped with their class, kept by the studio's save and by a library copy."""

from __future__ import annotations

import json

import pytest

from owl_core.errors import LimitError, ProjectError
from owl_core.project.library import ProjectLibrary
from owl_core.project.model import (
    FORMAT_VERSION,
    PROJECT_FILE,
    Project,
    load_project,
    save_project,
)


def test_phrases_round_trip_in_the_project_file(tmp_path):
    project = Project(name="p", classes=["coin", "cup"])
    assert project.set_phrases("coin", ["a coin", "  a   penny ", "a coin"]) == ("a coin",
                                                                                  "a penny")
    save_project(project, tmp_path / "p")
    data = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    assert data["version"] == FORMAT_VERSION >= 5
    assert data["phrases"] == {"coin": ["a coin", "a penny"]}
    loaded = load_project(tmp_path / "p")
    assert loaded == project and loaded.prompt_phrases() == {"coin": ["a coin", "a penny"]}
    project.set_phrases("coin", [])
    assert project.phrases == {}


def test_a_version_3_project_loads_without_phrases(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / PROJECT_FILE).write_text(json.dumps({
        "format": "owl-studio-project", "version": 3, "name": "old", "classes": ["coin"],
        "settings": {"confidence": 0.5}, "images": []}))
    project = load_project(folder)
    assert project.phrases == {} and project.settings.combine == "max"


def test_rename_carries_phrases_and_remove_drops_them():
    project = Project(name="p", classes=["coin", "cup"], phrases={"coin": ["a coin"],
                                                                  "cup": ["a mug"]})
    project.rename_class("coin", "penny")
    assert project.phrases == {"penny": ("a coin",), "cup": ("a mug",)}
    project.remove_class("cup")
    assert project.phrases == {"penny": ("a coin",)}


@pytest.mark.parametrize("phrases, match", [
    # a class the project does not have
    ({"dog": ["a dog"]}, "not a class of the project"),
    # an empty phrase
    ({"coin": [""]}, "the phrase is empty"),
    # control characters
    ({"coin": ["a\x07coin"]}, "control characters"),
    # a string instead of a list
    ({"coin": "a coin"}, "expected a list of phrases"),
    # not a mapping
    (["a coin"], "must map class names"),
])
def test_bad_phrases_are_refused(phrases, match):
    with pytest.raises(ProjectError, match=match):
        Project(name="p", classes=["coin"], phrases=phrases)


def test_phrase_count_is_bounded(monkeypatch):
    monkeypatch.setenv("OWL_MAX_PHRASES_PER_CLASS", "2")
    with pytest.raises(LimitError, match="OWL_MAX_PHRASES_PER_CLASS"):
        Project(name="p", classes=["coin"], phrases={"coin": ["a", "b", "c"]})


def test_a_library_copy_keeps_the_phrases(tmp_path):
    library = ProjectLibrary(tmp_path / "projects")
    outside = Project(name="outside", classes=["coin"], phrases={"coin": ["a coin"]})
    save_project(outside, tmp_path / "outside")
    copy = library.adopt(load_project(tmp_path / "outside"))
    assert load_project(copy.folder).phrases == {"coin": ("a coin",)}


def test_the_studio_save_keeps_phrases_and_combine_mode(tmp_path):
    """The page has no phrase field yet: its edits (a slider, a rename) and its save must keep
    the file's phrases and combine mode (the page edits the project model itself)."""
    from ui.handlers.common import read_settings
    from ui.session import TabSessions

    library = ProjectLibrary(tmp_path / "projects")
    core = library.create("p", classes=["coin", "cup"])
    core.phrases = {"coin": ("a coin",)}
    core.set_settings({"combine": "fused"})
    save_project(core)
    tabs = TabSessions(lambda: None, tmp_path / "scratch", library)
    try:
        s = tabs.open_tab("tab", core.folder.name)
        with s.lock:
            s.core.set_settings(read_settings(0.5, 0.3, 300, "reference", s.settings))
            s.core.rename_class("cup", "mug")
            assert s.save()
        again = load_project(core.folder)
        assert again.phrases == {"coin": ("a coin",)} and again.settings.combine == "fused"
        assert again.settings.confidence == 0.5 and again.classes == ["coin", "mug"]
    finally:
        tabs.close()


def test_negative_phrases_round_trip_and_survive_the_journal(tmp_path):
    """Issue 18 gap: negative phrases are stored (version 5), carried by renames, dropped with
    their class, and a journal line (the studio's save) keeps them."""
    from owl_core.project.model import save_changes

    project = Project(name="p", classes=["coin", "cup"])
    save_project(project, tmp_path / "p")
    project = load_project(tmp_path / "p")
    assert project.set_phrases("coin", ["a button", " a  button"], negative=True) == (
        "a button",)
    project.set_phrases("coin", ["a coin"])
    save_changes(project)  # one journal line
    again = load_project(tmp_path / "p")
    assert again.negative_phrases == {"coin": ("a button",)} and again == project
    assert again.prompt_phrases() == {"coin": ["a coin", {"text": "a button",
                                                           "negative": True}]}
    data = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    assert data["version"] >= 5
    again.rename_class("coin", "penny")
    assert again.negative_phrases == {"penny": ("a button",)}
    again.remove_class("penny")
    assert again.negative_phrases == {}


def test_a_version_4_project_loads_without_negative_phrases(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / PROJECT_FILE).write_text(json.dumps({
        "format": "owl-studio-project", "version": 4, "name": "old", "classes": ["coin"],
        "phrases": {"coin": ["a coin"]}, "negative_phrases": {"coin": ["ignored"]},
        "images": []}))
    project = load_project(folder)
    assert project.phrases == {"coin": ("a coin",)} and project.negative_phrases == {}


def test_a_refused_negative_phrase_changes_nothing():
    project = Project(name="p", classes=["coin"], negative_phrases={"coin": ["a button"]})
    with pytest.raises(ProjectError, match="control characters"):
        project.set_phrases("coin", ["a\x1bbutton"], negative=True)
    assert project.negative_phrases == {"coin": ("a button",)}


def test_negative_phrases_reach_the_cli_prompt(tmp_path):
    """`--project` reads negative phrases as negative (`with_text_flags` kept them)."""
    import argparse

    from owl_core.project.prompt_sources import read_prompts

    project = Project(name="p", classes=["coin"], phrases={"coin": ["a coin"]},
                      negative_phrases={"coin": ["a button"]})
    save_project(project, tmp_path / "p")
    args = argparse.Namespace(project=str(tmp_path / "p"), text=None, weights=None,
                              training_data=None, model="m", top_k=None)
    prompts = read_prompts(args)
    assert prompts.phrases == {"coin": ["a coin", {"text": "a button", "negative": True}]}
