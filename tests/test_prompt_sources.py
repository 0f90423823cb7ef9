"""One prompt reader for every command (`owl_core.project.prompt_sources`): the same flags give
the same prompts (boxes, .pt, the project's phrases and ``--text``) whether the command is
``predict``, ``export``, ``label`` or ``evaluate``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from owl_core.cli.main import build_parser
from owl_core.errors import ProjectError, SettingsError
from owl_core.params import DetectParams
from owl_core.project import prompt_sources
from owl_core.project.evaluate import project_predictor
from owl_core.project.model import Project, save_project
from owl_core.project.prompt_sources import SOURCES, TEXT_HELP, Prompts, read_prompts


def _parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


@pytest.fixture
def fake_pt(monkeypatch):
    """`load_pt` answering a .pt exported with confidence 0.42, top_k 77, a named model."""
    meta = {"settings": {"confidence": 0.42}, "top_k": 77}
    pt = SimpleNamespace(huggingface_id="org/from-the-pt", meta=meta)
    monkeypatch.setattr("owl_core.engine.prompt_file.load_pt", lambda path: pt)
    return "exported.pt"


def test_weights_give_the_same_prompts_to_predict_and_label(fake_pt, tmp_path):
    predict = read_prompts(_parse("predict", "--weights", fake_pt, "a.png"))
    label = read_prompts(_parse("label", tmp_path, "--weights", fake_pt, "--out", tmp_path / "o"))
    for prompts in (predict, label):
        assert (prompts.model, prompts.top_k, prompts.weights) == ("org/from-the-pt", 77, fake_pt)
        assert prompts.base.confidence == 0.42  # the .pt's settings, before any flag
    flags = _parse("predict", "--weights", fake_pt, "--confidence", "0.8", "--top-k", "5", "a.png")
    assert read_prompts(flags).params(flags).confidence == 0.8
    assert read_prompts(flags).top_k == 5


def test_training_data_reads_the_same_for_predict_export_and_label(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    train = tmp_path / "train.json"
    train.write_text(json.dumps([{"image": "a.png", "boxes": [
        {"x": 10, "y": 10, "w": 8, "h": 8, "cls": "coin"}]}]))
    got = [read_prompts(_parse(*argv)) for argv in (
        ("predict", "--training-data", train, "a.png"),
        ("export", "--training-data", train, "--out", tmp_path / "x.pt"),
        ("label", tmp_path, "--training-data", train, "--out", tmp_path / "o"))]
    assert all(p.data == got[0].data and p.classes == got[0].classes for p in got)
    assert got[0].data[0]["image"] == str(tmp_path / "a.png")


def test_a_project_without_example_boxes_is_refused_the_same_way_everywhere(tmp_path):
    project = Project(name="empty", classes=["coin"], folder=tmp_path / "p")
    save_project(project)
    message = r"the project has no example boxes or phrases yet; draw some first, add --text"
    for argv in (("predict", "--project", project.folder),
                 ("export", "--project", project.folder, "--out", tmp_path / "x.pt"),
                 ("label", "--project", project.folder, "--out", tmp_path / "o")):
        with pytest.raises(SettingsError, match=message):
            read_prompts(_parse(*argv))
        assert read_prompts(_parse(*argv, "--text", "coin")).phrases == {"coin": ["coin"]}
    args = _parse("evaluate", "--project", project.folder)
    with pytest.raises(SettingsError, match=message):  # before any model is loaded
        project_predictor(args, project, project.settings)


def test_every_command_takes_its_prompt_flags_from_the_one_declaration():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command, sources in (("predict", SOURCES), ("label", SOURCES),
                             ("export", ("training_data", "project")),
                             ("evaluate", ("project", "weights")),
                             ("export-dataset", ("project", "weights"))):
        flags = {a.dest: a for a in sub[command]._actions}
        assert "model" in flags
        for source in sources:
            assert flags[source].help.startswith(prompt_sources.SOURCES[source]) or \
                source == "project"
        assert flags["text"].help.startswith(TEXT_HELP)
        assert flags["combine"].choices == ("max", "fused")


def test_no_prompt_at_all_names_the_commands_sources_and_text():
    with pytest.raises(SettingsError, match=r"^predict: give the prompts: --training-data, "
                                            r"--project, --weights and/or --text"):
        read_prompts(_parse("predict", "a.png"))
    with pytest.raises(SettingsError, match=r"^export: give the prompts: --training-data, "
                                            r"--project and/or --text"):
        read_prompts(_parse("export", "--out", "x.pt"))


def test_text_alone_and_beside_the_projects_phrases(tmp_path):
    alone = read_prompts(_parse("export", "--text", "coin", "--text", "cup=a mug",
                                "--combine", "fused", "--out", "x.pt"))
    assert (alone.data, alone.classes) == ([], None)  # zero-shot: the engine orders classes
    assert alone.phrases == {"coin": ["coin"], "cup": ["a mug"]}
    assert alone.params(_parse("export", "--combine", "fused", "--out", "x.pt")).combine == \
        "fused"
    project = Project(name="p", classes=["coin"], folder=tmp_path / "p")
    project.set_phrases("coin", ["a round coin"])  # phrases, no boxes: enough to detect
    save_project(project)
    for argv in (("predict", "--project", project.folder),
                 ("label", "--project", project.folder, "--out", tmp_path / "o")):
        got = read_prompts(_parse(*argv, "--text", "cup=a mug"))
        assert got.classes == ["coin", "cup"]
        assert got.phrases == {"coin": ["a round coin"], "cup": ["a mug"]}


def test_evaluate_text_names_the_projects_classes(fake_pt, tmp_path):
    project = Project(name="p", classes=["Coin"], folder=tmp_path / "p")
    project.set_phrases("Coin", ["a round coin"])
    save_project(project)
    args = _parse("evaluate", "--project", project.folder, "--text", "coin=a disc")
    assert read_prompts(args, project).phrases == {"Coin": ["a round coin", "a disc"]}
    with pytest.raises(ProjectError, match="no class 'dog'"):  # its labels are measured
        read_prompts(_parse("evaluate", "--project", project.folder, "--text", "dog"), project)
    args = _parse("evaluate", "--project", project.folder, "--weights", fake_pt, "--text", "COIN")
    assert read_prompts(args, project).phrases == {"Coin": ["COIN"]}  # the .pt's, not the project's


def test_apply_gives_the_phrases_beside_the_pt_or_the_examples():
    calls = []
    predictor = SimpleNamespace(
        load_pt=lambda path: calls.append(("load_pt", path)),
        set_examples=lambda data, classes=None, phrases=None: calls.append(
            ("set_examples", data, classes, phrases)) or SimpleNamespace(unmatched=[]))
    phrases = {"cup": ["a mug"]}
    Prompts(model="m", top_k=1, base=DetectParams(), weights="w.pt",
            phrases=phrases).apply(predictor, print)
    Prompts(model="m", top_k=1, base=DetectParams(), data=[], classes=["cup"],
            phrases=phrases).apply(predictor, print)
    assert calls == [("load_pt", "w.pt"), ("set_examples", [], None, phrases),
                     ("set_examples", [], ["cup"], phrases)]
