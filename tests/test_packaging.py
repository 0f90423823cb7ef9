"""Packaging: `pip install .` ships the engine, the app, the example assets and the
`owl-studio` console script; the in-repo entry points keep working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("app", "predict", "export", "make-random-model")
SOURCES = ("pyproject.toml", "README.md", "requirements.txt", "owl_core", "ui", "assets")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def run(*argv, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})}, check=False)


def test_every_package_in_the_tree_is_listed():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for top in ("owl_core", "ui") for p in (REPO / top).rglob("__init__.py")
               if "__pycache__" not in p.parts}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"ui.assets"}  # the data folder (assets/ in the checkout)


def test_dependencies_are_requirements_txt():
    project = pyproject()["project"]
    assert project["name"] == "owl-studio"
    assert project["scripts"]["owl-studio"] == "ui.cli:main"
    assert pyproject()["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == [
        "requirements.txt"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps --target` of a copy of the sources (so the build never writes
    into the checkout); returns the target folder."""
    root = tmp_path_factory.mktemp("pkg")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    target = root / "target"
    proc = run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
               "--no-index", "--target", target, src, cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def test_console_script_lists_the_subcommands_from_another_folder(installed, tmp_path):
    script = installed / "bin" / "owl-studio"
    assert script.is_file()
    proc = run(sys.executable, script, "--help", cwd=tmp_path,
               env={"PYTHONPATH": str(installed)})
    assert proc.returncode == 0, proc.stderr
    for command in SUBCOMMANDS:
        assert f"    {command} " in proc.stdout or f"    {command}\n" in proc.stdout, command
    assert proc.stdout.startswith("usage: owl-studio")


def test_every_source_and_asset_file_is_installed(installed):
    """A data file added under owl_core/ or ui/ (CSS, JS, JSON) needs package-data: this
    says which."""
    wanted = {f"{top}/{p.relative_to(REPO / top).as_posix()}"
              for top in ("owl_core", "ui") for p in (REPO / top).rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    wanted |= {f"ui/assets/{p.relative_to(REPO / 'assets').as_posix()}"
               for p in (REPO / "assets").rglob("*") if p.is_file()}
    missing = sorted(f for f in wanted if not (installed / f).is_file())
    assert missing == [], "add to [tool.setuptools.package-data] in pyproject.toml"


INSTALLED_CHECKS = """
import contextlib, io
import owl_core, ui, ui.formats as f, ui.main as m
from owl_core.project.model import load_project
from ui.cli import main
print(ui.__file__); print(owl_core.__file__); print(f.ASSETS_DIR)
print(len(f.bundled_images())); print(sorted(f.bundled_projects())); print(m.RANDOM_WEIGHTS_DIR)
p = load_project(f.bundled_projects()["coins"], allow_external=True)
print(p.image_path(p.images[0]))
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    main(["app", "--help"])
print(out.getvalue().splitlines()[0])
"""


def test_installed_package_runs_from_its_copy_with_its_assets(installed, tmp_path):
    proc = run(sys.executable, "-c", INSTALLED_CHECKS, cwd=tmp_path,
               env={"PYTHONPATH": str(installed)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    ui_file, core_file, assets, n_images, projects, random_dir, coins, app_usage = lines[-8:]
    for path in (ui_file, core_file, assets, coins):
        assert Path(path).is_relative_to(installed), path
    assert Path(assets) == installed / "ui" / "assets"
    assert int(n_images) == len(list((REPO / "assets" / "images").iterdir()))
    assert "coins" in projects and Path(coins).is_file()
    assert not Path(random_dir).is_relative_to(installed)  # not inside site-packages
    assert app_usage.startswith("usage: owl-studio app")


@pytest.mark.parametrize("argv", [
    # the thin app.py wrapper
    ["app.py", "--help"],
    # the engine's own CLI
    ["-m", "owl_core", "--help"],
])
def test_in_repo_entry_points_still_work(argv, tmp_path):
    args = [str(REPO / argv[0]), *argv[1:]] if argv[0].endswith(".py") else argv
    proc = run(sys.executable, *args, cwd=REPO if argv[0] == "-m" else tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
