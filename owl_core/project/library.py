"""`ProjectLibrary`: the folder of projects a person keeps (list, create, open, duplicate, delete)
and project zips (export, bounded import).

Each project is a sub-folder named by its id (a slug of its name plus a random suffix, never
reused); see `owl_core.project.model` for what is inside. Every change to a project folder
holds that folder's file lock (`project.LOCK_FILE`), so two writers, in one process or two, never
interleave. A zip from elsewhere is checked before anything is written: member count and total
uncompressed size under `Limits`, no absolute paths, no ``..``, no links; it is unpacked into a
scratch folder, validated by the project reader (every image's bytes must match its hash) and
only then moved into place.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from owl_core import limits
from owl_core.errors import OwlError, ProjectError
from owl_core.params import DetectParams
from owl_core.project.model import (
    BACKUP_FILE,
    EMBEDDINGS_DIR,
    IMAGES_DIR,
    LOCK_FILE,
    PROJECT_FILE,
    PROMPTS_DIR,
    Project,
    inspect_image,
    load_project,
    read_json,
    save_project,
)

PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LOCK_TIMEOUT_S = 30.0
_SCRATCH_PREFIX = ".tmp-"
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ProjectInfo:
    """A project as listed: its id (folder name), name, image count, last save time."""

    id: str
    name: str
    folder: Path
    images: int
    modified: float


def project_id_for(name: str) -> str:
    """A fresh id for a project called ``name``: ASCII slug + 6 random hex digits."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:40].strip("-")
    return f"{slug or 'project'}-{secrets.token_hex(3)}"


@contextmanager
def project_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold a project folder's lock (the same one `save_project` takes)."""
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(Path(folder) / LOCK_FILE), timeout=timeout):
            yield
    except Timeout:
        raise ProjectError(f"{folder}: the project is busy (another program holds "
                           f"{LOCK_FILE} for more than {timeout:.0f} s); try again.") from None


class ProjectLibrary:
    """The projects under one root folder (e.g. the server's ``--projects-dir``)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{self.root}: cannot create the projects folder "
                               f"({exc.strerror or exc}); pick another folder.") from exc

    # ---------------------------------------------------------------- lookup
    def folder(self, project_id: str) -> Path:
        """The folder of a project id (validated: an id can't name anything outside the root)."""
        if not isinstance(project_id, str) or not PROJECT_ID.match(project_id):
            raise ProjectError(f"{project_id!r} is not a project id (lowercase letters, digits, "
                               "'-' and '_', at most 64).")
        return self.root / project_id

    def exists(self, project_id: str) -> bool:
        return (self.folder(project_id) / PROJECT_FILE).is_file()

    def list(self) -> list[ProjectInfo]:
        """Every readable project, most recently saved first (unreadable folders are skipped)."""
        found = []
        for folder in self.root.iterdir():
            file = folder / PROJECT_FILE
            if not PROJECT_ID.match(folder.name) or not file.is_file():
                continue
            try:
                data = read_json(file)
            except OwlError:
                continue
            if not isinstance(data, dict):
                continue
            images = data.get("images", data.get("training_data", []))
            found.append(ProjectInfo(
                id=folder.name, name=str(data.get("name") or folder.name)[:200], folder=folder,
                images=len(images) if isinstance(images, list) else 0,
                modified=file.stat().st_mtime))
        return sorted(found, key=lambda info: (-info.modified, info.id))

    # ---------------------------------------------------------------- life cycle
    def create(self, name: str = "my-project", classes: list[str] | tuple[str, ...] = (),
               settings: DetectParams | None = None) -> Project:
        """A new, empty, saved project."""
        project = Project(name=name, classes=list(classes), settings=settings or DetectParams())
        project.folder = self._new_folder(project.name)
        save_project(project)
        return project

    def open(self, project_id: str) -> Project:
        folder = self.folder(project_id)
        if not (folder / PROJECT_FILE).is_file():
            raise ProjectError(f"no project {project_id!r} in {self.root}; it was deleted or "
                               "never saved.")
        return load_project(folder)

    def save(self, project: Project) -> Path:
        """Save a project of this store (its folder must be one of the store's)."""
        folder = project._require_folder("saving")
        if folder.resolve().parent != self.root:
            raise ProjectError(f"{folder} is not a project of {self.root}.")
        return save_project(project)

    def adopt(self, project: Project, name: str | None = None) -> Project:
        """Save a copy of a project from anywhere (another folder, an old-form file read in
        place, e.g. a bundled example) as a new project of this store, images copied in."""
        copy = Project(name=name or project.name, classes=list(project.classes),
                       images=list(project.images), settings=project.settings,
                       folder=project.folder, imported=list(project.imported))
        target = self._new_folder(copy.name)
        try:
            save_project(copy, target)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return copy

    def import_file(self, path: str | os.PathLike, name: str | None = None,
                    allow_external: bool = True) -> Project:
        """A new project from a project file or folder (either form), images copied in. Meant
        for files a person picked (``allow_external`` lets their image paths leave the folder)."""
        return self.adopt(load_project(path, allow_external=allow_external), name)

    def open_folder(self, images_dir: str | os.PathLike, name: str | None = None,
                    **labels: str | os.PathLike | None) -> Project:
        """A new project from a folder of images (recursive), optionally with COCO / YOLO
        labels: see `owl_core.project.folder_import.open_image_folder` for ``coco``, ``yolo``,
        ``yolo_data_yaml``."""
        from owl_core.project.folder_import import open_image_folder

        images_dir = Path(images_dir)
        target = self._new_folder(name or images_dir.resolve().name or "images")
        try:
            return open_image_folder(images_dir, target, name, **labels)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def duplicate(self, project_id: str, name: str | None = None) -> Project:
        """A copy under a new id (default name: "<name> copy"); embeddings are not copied."""
        source = self.folder(project_id)
        with project_lock(source):  # no image of the source goes away while it is copied
            project = self.open(project_id)
            return self.adopt(project, name or f"{project.name} copy")

    def delete(self, project_id: str) -> None:
        """Delete a project folder (holding its lock, so no save is half-way through)."""
        folder = self.folder(project_id)
        if not folder.is_dir():
            raise ProjectError(f"no project {project_id!r} in {self.root}.")
        trash = self.root / f"{_SCRATCH_PREFIX}deleted-{project_id}-{secrets.token_hex(3)}"
        with project_lock(folder):
            folder.rename(trash)  # atomic: the id is gone at once
        shutil.rmtree(trash, ignore_errors=True)

    def clean_scratch(self) -> None:
        """Remove scratch folders left by an interrupted import or delete."""
        for folder in self.root.glob(f"{_SCRATCH_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)

    # ---------------------------------------------------------------- zips
    def export_zip(self, project_id: str, dest: str | os.PathLike,
                   include_embeddings: bool = False) -> Path:
        """Write the project (project.json + images, optionally its embedding store) as a zip,
        atomically. Returns the zip path."""
        folder = self.folder(project_id)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            with project_lock(folder), zipfile.ZipFile(tmp, "w") as zf:
                project = load_project(folder)
                zf.write(folder / PROJECT_FILE, PROJECT_FILE, zipfile.ZIP_DEFLATED)
                files = {r.file for r in project.images} | {i.file for i in project.imported}
                for file in sorted(files):
                    zf.write(folder / file, file, zipfile.ZIP_STORED)  # images: compressed
                store = folder / EMBEDDINGS_DIR
                if include_embeddings and store.is_dir():
                    for file in sorted(store.rglob("*")):
                        if file.is_file() and not file.is_symlink():
                            zf.write(file, file.relative_to(folder).as_posix(),
                                     zipfile.ZIP_STORED)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def import_zip(self, source: str | os.PathLike, name: str | None = None) -> Project:
        """A new project from a zip made by `export_zip` (or a zipped project folder).

        Raises:
            ProjectError: not a zip, no project.json, a hostile member (absolute path, ``..``,
                link), or an image whose bytes don't match its record.
            LimitError: too many members or too many uncompressed bytes.
        """
        source = Path(source)
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ProjectError(f"{source.name}: not a readable zip ({exc}); export the project "
                               "again.") from exc
        with zf:
            members, prefix = _checked_members(zf, source.name)
            scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}import-", dir=self.root))
            try:
                _extract(zf, members, prefix, scratch)
                project = load_project(scratch)  # no external paths: the zip's own files only
                _check_image_hashes(project)
                copy = self.adopt(project, name)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return copy

    # ---------------------------------------------------------------- internals
    def _new_folder(self, name: str) -> Path:
        while True:
            folder = self.root / project_id_for(name)
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder


def _checked_members(zf: zipfile.ZipFile, label: str) -> tuple[list[zipfile.ZipInfo], str]:
    """The members to unpack and the folder prefix holding project.json; refuses hostile zips
    before a byte is written."""
    lim = limits.current()
    infos = zf.infolist()
    lim.check("max_project_zip_files", len(infos), f"{label}: files in the zip",
              limits.ProjectLimitError)
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        mode = info.external_attr >> 16
        if (name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ".." in parts
                or (parts and ":" in parts[0])):
            raise ProjectError(f"{label}: refused member {name[:200]!r} (absolute path or '..'); "
                               "a project zip only holds its own files.")
        if stat.S_ISLNK(mode):
            raise ProjectError(f"{label}: refused member {name[:200]!r} (a symbolic link).")
        total += info.file_size
    lim.check("max_project_zip_bytes", total, f"{label}: uncompressed bytes",
              limits.ProjectLimitError)
    tops = sorted((info.filename for info in infos
                   if PurePosixPath(info.filename).name == PROJECT_FILE
                   and len(PurePosixPath(info.filename).parts) <= 2), key=len)
    if not tops:
        raise ProjectError(f"{label}: no {PROJECT_FILE} at the top of the zip; is it a project "
                           "exported by OWL Studio?")
    prefix = str(PurePosixPath(tops[0]).parent)
    prefix = "" if prefix == "." else prefix + "/"
    keep = []
    for info in infos:
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        first = PurePosixPath(rel).parts[0]
        if rel == PROJECT_FILE or first in (IMAGES_DIR, EMBEDDINGS_DIR, PROMPTS_DIR):
            keep.append(info)
    return keep, prefix


def _extract(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], prefix: str,
             scratch: Path) -> None:
    """Unpack members (already checked) below `scratch`, never writing more than each declares."""
    for info in members:
        rel = info.filename[len(prefix):]
        target = (scratch / rel).resolve()
        if scratch.resolve() not in target.parents:
            raise ProjectError(f"refused member {info.filename!r}: it leads outside the project.")
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel == BACKUP_FILE or target.exists():
            continue
        try:
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ProjectError(f"{info.filename}: cannot unpack ({exc}); the zip is damaged.") \
                from exc


def _check_image_hashes(project: Project) -> None:
    for record in project.images:
        path = project.image_path(record)
        if not path.is_file():
            raise ProjectError(f"image {record.name!r} ({record.file}) is missing from the zip.")
        info = inspect_image(path.read_bytes(), record.name)
        if info.content_hash != record.content_hash or info.size != record.size:
            raise ProjectError(f"image {record.name!r} ({record.file}) does not match its record "
                               "(content hash or size); the zip is damaged or was edited.")


#: The name before 2026-12 (it was confused with the embedding store and the tab sessions).
ProjectStore = ProjectLibrary
