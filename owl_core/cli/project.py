"""``owl-studio project ...``: manage the projects folder the studio uses, from the shell.

    owl-studio project list
    owl-studio project new NAME [--class coin --class cup]
    owl-studio project from-folder PHOTOS [--name N] [--coco ANN.json | --yolo LABELS --yolo-data-yaml data.yaml]
    owl-studio project import FILE_OR_ZIP [--name N]     # a zip, a project folder or project.json
    owl-studio project export-zip ID OUT.zip [--embeddings]
    owl-studio project delete ID

Every command takes ``--projects-dir`` (default: the studio's, `default_projects_dir`) and
prints the project's id and folder (or, for ``list``, one JSON object per project).
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from owl_core.project.model import Project


def default_projects_dir() -> Path:
    """Where the studio keeps projects unless told otherwise: ``$OWL_PROJECTS_DIR``, else
    ``projects/`` in the user's data folder (``~/.local/share/owl-studio`` on Linux)."""
    env = os.environ.get("OWL_PROJECTS_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("owl-studio", appauthor=False)) / "projects"


def add_subcommand(subparsers) -> argparse.ArgumentParser:
    """Register ``project`` with its own sub-commands (see the module docstring)."""
    parser = subparsers.add_parser("project", help="list, create, import, export or delete "
                                                   "projects (the studio's projects folder)",
                                   description=__doc__.split("\n")[0])
    parser.add_argument("--projects-dir", default=None,
                        help="projects folder (default: $OWL_PROJECTS_DIR, else the user's data "
                             "folder, as the studio)")
    sub = parser.add_subparsers(dest="project_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="one JSON line per project, most recent first")
    new = sub.add_parser("new", help="create an empty project")
    new.add_argument("name")
    new.add_argument("--class", dest="classes", action="append", default=[],
                     help="a class name (repeat for more)")
    folder = sub.add_parser("from-folder", help="a new project from a folder of images "
                                                "(recursive), with optional COCO / YOLO labels")
    folder.add_argument("images", help="folder of images (JPEG, PNG, WebP, BMP, TIFF)")
    folder.add_argument("--name", default=None, help="project name (default: the folder's)")
    labels = folder.add_mutually_exclusive_group()
    labels.add_argument("--coco", default=None, help="COCO annotations JSON (file_name relative "
                                                     "to the images folder)")
    labels.add_argument("--yolo", default=None, help="YOLO labels folder (needs "
                                                     "--yolo-data-yaml)")
    folder.add_argument("--yolo-data-yaml", default=None, help="data.yaml with the class names")
    imp = sub.add_parser("import", help="a new project from a project zip, folder or "
                                        "project.json (images copied in)")
    imp.add_argument("source")
    imp.add_argument("--name", default=None)
    exp = sub.add_parser("export-zip", help="write a project as a zip")
    exp.add_argument("id")
    exp.add_argument("out")
    exp.add_argument("--embeddings", action="store_true", help="include its embedding store")
    delete = sub.add_parser("delete", help="delete a project")
    delete.add_argument("id")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run one ``project`` action; errors (`OwlError`) propagate to the CLI's one-line report."""
    from owl_core.project.library import ProjectLibrary

    store = ProjectLibrary(args.projects_dir or default_projects_dir())
    action = args.project_command
    if action == "list":
        for info in store.list():
            print(json.dumps({"id": info.id, "name": info.name, "images": info.images,
                              "folder": str(info.folder)}))
        return 0
    if action == "export-zip":
        print(store.export_zip(args.id, args.out, include_embeddings=args.embeddings))
        return 0
    if action == "delete":
        store.delete(args.id)
        return 0
    if action == "new":
        project = store.create(args.name, classes=args.classes)
    elif action == "from-folder":
        project = store.open_folder(args.images, args.name, coco=args.coco, yolo=args.yolo,
                                    yolo_data_yaml=args.yolo_data_yaml)
    else:
        source = Path(args.source)
        project = (store.import_zip(source, args.name) if source.suffix.lower() == ".zip"
                   else store.import_file(source, args.name))
    _print(project)
    return 0


def _print(project: Project) -> None:
    assert project.folder is not None
    print(json.dumps({"id": project.folder.name, "name": project.name,
                      "images": len(project.images), "classes": project.classes,
                      "folder": str(project.folder)}))
