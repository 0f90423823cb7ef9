"""Adding images from a folder on the server (``--data-dir``), through the studio's handlers:
only files inside the data folder are read (``..``, absolute paths elsewhere and links that
leave it are refused with nothing added), the count is bounded, uploads' per-file checks
apply, and a folder added twice adds nothing new. Without ``--data-dir`` nothing is read."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from ui.main import parse_args


def _png(path: Path, shade: int) -> Path:
    """A small image whose bytes differ by `shade` (distinct content hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (shade, 100, 200)).save(path)
    return path


@pytest.fixture()
def tree(tmp_path) -> SimpleNamespace:
    """data/ (the data folder) with images, hidden entries and a text file; secret/ beside it
    (never to be read)."""
    data = tmp_path / "data"
    _png(data / "b.png", 1)
    _png(data / "a.jpg.png", 2)
    _png(data / "sub" / "c.png", 3)
    _png(data / ".hidden.png", 4)
    _png(data / ".cache" / "d.png", 5)
    (data / "notes.txt").write_text("not an image")
    secret = tmp_path / "secret"
    _png(secret / "s.png", 6)
    return SimpleNamespace(data=data, secret=secret)


def _studio(tiny_model, tmp_path, data_dirs: tuple[str, ...]):
    from ui import Studio, StudioConfig, build_demo

    config = StudioConfig(work_dir=str(tmp_path / "work"), data_dirs=data_dirs)
    studio = Studio(tiny_model, config)
    build_demo(tiny_model, config, studio=studio)  # the components the handlers address
    return studio


@pytest.fixture()
def studio(tiny_model, tmp_path, tree):
    return _studio(tiny_model, tmp_path, (str(tree.data.resolve()),))


def _names(items) -> list[str]:
    return [i.name for i in items]


def test_a_folder_adds_its_images_sorted_and_recursively_as_queries(studio, tree):
    request = SimpleNamespace(session_hash="adds")
    out = studio.images.on_folder_queries(".", request)
    s = studio.session(request)
    # sorted by path below the folder; hidden files and folders and the .txt are left out
    assert _names(s.queries()) == ["a.jpg.png", "b.png", "c.png"]
    assert s.examples() == []
    assert list(out) == [studio.c.status]  # the status line (the embedding step's progress)
    # copied into the project folder: the data folder is only read
    assert all(not Path(s.path(r)).resolve().is_relative_to(tree.data.resolve())
               for r in s.queries())


def test_a_subfolder_by_absolute_or_relative_path_as_examples(studio, tree):
    request = SimpleNamespace(session_hash="examples")
    studio.images.on_folder_examples(str(tree.data / "sub"), request)
    s = studio.session(request)
    assert s.view.current == s.examples()[0].id
    studio.images.on_folder_examples("sub/../b.png", request)  # `..` that stays inside: fine
    assert _names(s.examples()) == ["c.png", "b.png"]
    assert s.view.current == s.examples()[1].id  # the first image added opens in the annotator


OUTSIDE = "is outside the folders this server may read"


@pytest.mark.parametrize("typed, refusal", [
    ("..", OUTSIDE),                      # the data folder's parent
    ("../secret", OUTSIDE),               # a sibling folder
    ("sub/../../secret/s.png", OUTSIDE),  # `..` inside the path
    ("{secret}", OUTSIDE),                # an absolute path elsewhere
    ("/", OUTSIDE),                       # the root
    ("link-out", OUTSIDE),                # a link inside the data folder to a folder outside
    ("link-out/s.png", OUTSIDE),          # a file through that link
    ("", "Type a folder inside"),         # nothing typed
    ("missing", "no such folder"),        # no such folder
])
def test_paths_outside_the_data_folder_are_refused_and_nothing_is_added(studio, tree, typed,
                                                                        refusal):
    (tree.data / "link-out").symlink_to(tree.secret, target_is_directory=True)
    request = SimpleNamespace(session_hash="escape")
    for handler in (studio.images.on_folder_queries, studio.images.on_folder_examples):
        with pytest.raises(gr.Error, match=refusal) as info:
            handler(typed.format(secret=tree.secret), request)
        if "secret" not in typed:  # never says where a link leads
            assert "secret" not in str(info.value)
    s = studio.session(request)
    assert s.queries() == [] and s.examples() == []


def test_a_linked_file_that_leaves_the_data_folder_refuses_the_whole_folder(studio, tree):
    (tree.data / "sub" / "z.png").symlink_to(tree.secret / "s.png")
    request = SimpleNamespace(session_hash="link")
    with pytest.raises(gr.Error, match=r"z\.png.*outside the folders"):
        studio.images.on_folder_queries("sub", request)
    assert studio.session(request).queries() == []


def test_a_link_that_stays_inside_is_followed(studio, tree):
    (tree.data / "sub" / "again.png").symlink_to(tree.data / "b.png")
    request = SimpleNamespace(session_hash="inner-link")
    studio.images.on_folder_queries("sub", request)
    assert _names(studio.session(request).queries()) == ["again.png", "c.png"]


def test_more_images_than_the_limit_are_refused(studio, tree, monkeypatch):
    monkeypatch.setenv("OWL_MAX_FOLDER_IMAGES", "2")
    request = SimpleNamespace(session_hash="limit")
    with pytest.raises(gr.Error, match="OWL_MAX_FOLDER_IMAGES"):
        studio.images.on_folder_queries(".", request)
    assert studio.session(request).queries() == []
    monkeypatch.setenv("OWL_MAX_FOLDER_IMAGES", "3")  # exactly at the limit: accepted
    studio.images.on_folder_queries(".", request)
    assert len(studio.session(request).queries()) == 3


def test_the_search_itself_stops_past_the_limit(tree, monkeypatch):
    """The folder is not listed to its end first: a huge tree fails as soon as it is over."""
    from owl_core.errors import LimitError
    from owl_core.project.data_dir import data_roots, folder_images

    monkeypatch.setenv("OWL_MAX_FOLDER_IMAGES", "2")
    with pytest.raises(LimitError, match="max_folder_images"):
        folder_images(".", data_roots([tree.data]))


def test_images_already_in_the_project_are_not_added_twice(studio, tree):
    _png(tree.data / "sub" / "c-copy.png", 3)  # same bytes as sub/c.png
    request = SimpleNamespace(session_hash="dupes")
    studio.images.on_folder_queries("sub", request)
    s = studio.session(request)
    assert _names(s.queries()) == ["c-copy.png"]  # the second copy was skipped
    studio.images.on_folder_queries(".", request)  # sub/ again, plus the new ones
    assert _names(s.queries()) == ["c-copy.png", "a.jpg.png", "b.png"]
    studio.images.on_folder_examples("sub", request)  # another role: added there
    assert _names(s.examples()) == ["c-copy.png"]


def test_uploads_per_file_checks_apply(studio, tree, monkeypatch):
    (tree.data / "bad").mkdir()
    (tree.data / "bad" / "fake.png").write_bytes(b"not an image at all")
    request = SimpleNamespace(session_hash="checks")
    with pytest.raises(gr.Error, match=r"fake\.png: not an image"):
        studio.images.on_folder_queries("bad", request)
    monkeypatch.setenv("OWL_MAX_UPLOAD_BYTES", "10")
    with pytest.raises(gr.Error, match="OWL_MAX_UPLOAD_BYTES"):
        studio.images.on_folder_queries("sub", request)
    assert studio.session(request).queries() == []


def test_without_a_data_dir_the_handlers_read_nothing(tiny_model, tmp_path, tree, monkeypatch):
    studio = _studio(tiny_model, tmp_path, ())
    request = SimpleNamespace(session_hash="none")
    s = studio.session(request)

    def no_disk(*args, **kwargs):
        raise AssertionError("the disk was read without --data-dir")

    import owl_core.project.data_dir as data_dir

    monkeypatch.setattr(data_dir, "Path", no_disk)
    monkeypatch.setattr(data_dir.os, "walk", no_disk)
    for handler in (studio.images.on_folder_queries, studio.images.on_folder_examples):
        with pytest.raises(gr.Error, match="--data-dir"):
            handler(str(tree.data), request)
    assert s.queries() == [] and s.examples() == []
    assert "data_dir_path" not in vars(studio.c)  # and the page has no folder row


def test_the_flag_is_repeatable_and_a_missing_folder_fails_at_start(tree, capsys):
    args = parse_args(["--data-dir", str(tree.data), "--data-dir", str(tree.secret)])
    assert args.data_dirs == [str(tree.data.resolve()), str(tree.secret.resolve())]
    assert parse_args([]).data_dirs is None
    for bad, why in ((tree.data / "nope", "no such folder"), (tree.data / "b.png", "not a folder")):
        with pytest.raises(SystemExit) as info:
            parse_args(["--data-dir", str(bad)])
        assert info.value.code == 2
        assert f"argument --data-dir: {bad}: {why}" in capsys.readouterr().err


def test_a_second_data_dir_is_readable_too(tiny_model, tmp_path, tree):
    studio = _studio(tiny_model, tmp_path, (str(tree.data), str(tree.secret)))
    request = SimpleNamespace(session_hash="two")
    studio.images.on_folder_queries(str(tree.secret), request)  # absolute, in the second
    studio.images.on_folder_queries("sub", request)  # relative: the first where it exists
    assert _names(studio.session(request).queries()) == ["s.png", "c.png"]
