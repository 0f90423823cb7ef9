"""Folders on the server that a browser may add images from (the studio's ``--data-dir``).

A person types a path; the server reads images from it only when, after `Path.resolve`
(symlinks followed, ``..`` collapsed), the folder and every file taken lie inside one of the
data folders. Without a data folder nothing is read at all. Rules:

* a relative path is taken inside the data folders (the first one where it exists); an
  absolute path must point inside one of them;
* the folder is searched recursively, hidden files and folders skipped, linked subfolders not
  entered; a linked file is refused (the whole request, nothing added) when its target is
  outside the data folder;
* image files are those `owl_core.images.IMAGE_SUFFIXES` names (JPEG, PNG,
  WebP, BMP, GIF, TIFF), sorted by their path below the typed folder; at most ``max_folder_images``
  (``OWL_MAX_FOLDER_IMAGES``): the search stops as soon as one more is found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from owl_core import limits
from owl_core.errors import DataDirError
from owl_core.images import IMAGE_SUFFIXES, is_image_name

NO_DATA_DIR = ("This server reads no folders: start it with --data-dir DIR to add images from a "
               "folder on the server, or upload the images.")


def data_roots(folders: Iterable[str | os.PathLike]) -> tuple[Path, ...]:
    """The data folders, resolved (checked once, at start).

    Raises:
        DataDirError: a folder that does not exist or is not a folder.
    """
    roots: list[Path] = []
    for folder in folders:
        root = Path(folder).expanduser().resolve()
        if not root.is_dir():
            what = "not a folder" if root.exists() else "no such folder"
            raise DataDirError(f"--data-dir {os.fspath(folder)}: {what}; give an existing folder "
                               "the server may read images from.")
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_inside(text: str, roots: Sequence[Path]) -> tuple[Path, Path]:
    """(resolved path, its data folder) of a path a person typed.

    Raises:
        DataDirError: no data folders (nothing is read), an empty path, a path outside every
            data folder (after ``..`` and links are resolved) or one that does not exist.
    """
    if not roots:
        raise DataDirError(NO_DATA_DIR)
    text = (text or "").strip()
    if not text or "\0" in text:
        raise DataDirError(f"Type a folder inside {_names(roots)} (\".\" for all of "
                           f"{roots[0]}).")
    typed = Path(text)
    candidates = [typed] if typed.is_absolute() else [root / typed for root in roots]
    outside = True
    for candidate in candidates:
        resolved = candidate.resolve()
        root = next((r for r in roots if _inside(resolved, r)), None)
        if root is None:
            continue
        outside = False
        if resolved.exists():
            return resolved, root
    if outside:
        raise DataDirError(f"{text!r} is outside the folders this server may read "
                           f"({_names(roots)}); pick a folder inside them.")
    raise DataDirError(f"{text!r}: no such folder in {_names(roots)}.")


def folder_images(text: str, roots: Sequence[Path]) -> list[tuple[Path, str]]:
    """(resolved file, name below the typed folder) of every image a typed path names: the
    images below a folder, or one image file.

    Raises:
        DataDirError: see `resolve_inside`; a linked file whose target is outside the data
            folder; no images found.
        LimitError: more than ``max_folder_images`` images.
    """
    target, root = resolve_inside(text, roots)
    if target.is_file():
        if target.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataDirError(f"{text!r}: not an image file ({', '.join(IMAGE_SUFFIXES)}).")
        return [(target, target.name)]
    lim = limits.current()
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(target):  # linked folders are not entered
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not is_image_name(name):
                continue
            path = here / name
            rel = path.relative_to(target).as_posix()
            real = path.resolve()
            if not _inside(real, root):
                raise DataDirError(f"{rel} in {text!r} links to a file outside the folders this "
                                   "server may read; nothing was added. Remove the link or copy "
                                   "the file into the folder.")
            if not real.is_file():  # a broken link, a socket named *.png
                continue
            found.append((real, rel))
            lim.check("max_folder_images", len(found), f"{text!r}: images in the folder")
    if not found:
        raise DataDirError(f"{text!r}: no images found (looked for "
                           f"{', '.join(IMAGE_SUFFIXES)}, hidden files skipped).")
    return sorted(found, key=lambda item: item[1])


def _names(roots: Sequence[Path]) -> str:
    return ", ".join(str(r) for r in roots)
