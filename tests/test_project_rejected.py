"""Detections the person deleted in review are part of the project (`ImageRecord.rejected`,
project file version 6): saved, journalled, renamed and removed with their class, and an older
file without them still loads. (The studio side: tests/ui/test_review_traps.py.)"""

from __future__ import annotations

import json

import pytest
from test_project import make_png

from owl_core.errors import ProjectError
from owl_core.project.model import (
    PROJECT_FILE,
    Project,
    Rejection,
    load_project,
    save_changes,
    save_project,
)


@pytest.fixture
def project(tmp_path) -> Project:
    project = Project(name="p", classes=["coin", "cup"])
    save_project(project, tmp_path / "p")
    project = load_project(tmp_path / "p")
    project.add_image(make_png(tmp_path / "in" / "q.png"), role="query")
    save_project(project)
    return project


def test_rejected_round_trip_full_save_and_journal(project, tmp_path):
    image = project.images[0]
    project.set_rejected(image.id, [Rejection((1, 2, 30, 40), "coin", 0.61),
                                    {"xyxy": [5, 5, 20, 20], "cls": "CUP", "confidence": 0.4}])
    save_changes(project)  # one journal line (the studio's save)
    again = load_project(tmp_path / "p")
    assert again == project
    assert again.images[0].rejected == (Rejection((1.0, 2.0, 30.0, 40.0), "coin", 0.61),
                                        Rejection((5.0, 5.0, 20.0, 20.0), "cup", 0.4))
    save_project(again)  # a full rewrite keeps them too
    data = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    assert data["version"] == 6
    assert data["images"][0]["rejected"][0] == {"xyxy": [1.0, 2.0, 30.0, 40.0], "cls": "coin",
                                                "confidence": 0.61}
    assert load_project(tmp_path / "p") == project


def test_a_version_5_file_without_rejected_loads(project, tmp_path):
    data = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    data["version"] = 5
    for image in data["images"]:
        del image["rejected"]
    (tmp_path / "p" / PROJECT_FILE).write_text(json.dumps(data))
    (tmp_path / "p" / "project.journal").unlink(missing_ok=True)
    again = load_project(tmp_path / "p")
    assert again.images[0].rejected == () and again.images[0].id == project.images[0].id


def test_rejected_follow_renames_and_go_with_their_class(project):
    image = project.images[0]
    project.set_rejected(image.id, [Rejection((1, 2, 30, 40), "coin", 0.5),
                                    Rejection((5, 5, 20, 20), "cup", 0.5)])
    project.rename_class("coin", "penny")
    assert [r.cls for r in project.images[0].rejected] == ["penny", "cup"]
    project.remove_class("cup")
    assert [r.cls for r in project.images[0].rejected] == ["penny"]


@pytest.mark.parametrize("bad, words", [
    ({"xyxy": [1, 2, 3], "cls": "coin", "confidence": 0.5}, "xyxy"),   # 3 numbers
    ({"xyxy": [1, 2, 3, 4], "cls": "coin", "confidence": 2.0}, "confidence"),  # out of [0, 1]
    ("a box", "rejected detection"),                                   # not an object
])
def test_bad_rejected_detections_are_refused_by_name(project, tmp_path, bad, words):
    data = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    data["images"][0]["rejected"] = [bad]
    (tmp_path / "p" / PROJECT_FILE).write_text(json.dumps(data))
    (tmp_path / "p" / "project.journal").unlink(missing_ok=True)
    with pytest.raises(ProjectError, match=words):
        load_project(tmp_path / "p")


def test_a_rejected_detection_of_an_unknown_class_is_refused(project):
    with pytest.raises(ProjectError, match="dog"):
        project.set_rejected(project.images[0].id, [Rejection((1, 2, 30, 40), "dog", 0.5)])
