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

import dataclasses
import hashlib
import json
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
from typing import Any

from owl_core import limits
from owl_core.errors import OwlError, ProjectError
from owl_core.params import DetectParams
from owl_core.project import journal
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
#: The user a project belongs to (a studio with logins): a text file in its folder.
OWNER_FILE = "owner"
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
            shown = repr(project_id[:64]) + (f"... ({len(project_id):,} characters)"
                                             if len(project_id) > 64 else "") \
                if isinstance(project_id, str) else type(project_id).__name__
            raise ProjectError(f"{shown} is not a project id (lowercase letters, digits, "
                               "'-' and '_', at most 64).")
        return self.root / project_id

    def exists(self, project_id: str, owner: str | None = None) -> bool:
        """Whether the project is there (and, with `owner`, belongs to that user)."""
        return (self.folder(project_id) / PROJECT_FILE).is_file() and (
            owner is None or self.owner(project_id) == owner)

    # ---------------------------------------------------------------- owners
    def owner(self, project_id: str) -> str | None:
        """The user a project belongs to (a studio with logins), None for nobody's."""
        try:
            return (self.folder(project_id) / OWNER_FILE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None

    def set_owner(self, project_id: str, owner: str) -> None:
        """Make `owner` the user the project belongs to (kept next to project.json, never in
        a project zip)."""
        (self.folder(project_id) / OWNER_FILE).write_text(owner, encoding="utf-8")

    def list(self, owner: str | None = None) -> list[ProjectInfo]:
        """Every readable project (with `owner`: that user's only), most recently saved first
        (unreadable folders are skipped)."""
        found = []
        for folder in self.root.iterdir():
            file = folder / PROJECT_FILE
            if not PROJECT_ID.match(folder.name) or not file.is_file():
                continue
            if owner is not None and self.owner(folder.name) != owner:
                continue
            try:
                data = read_json(file)
                if isinstance(data, dict) and "version" in data:  # changes saved since
                    journal.apply_lines(data, journal.read_journal(
                        folder, limits.current().max_project_json_bytes).lines)
            except OwlError:
                continue
            if not isinstance(data, dict):
                continue
            images = data.get("images", data.get("training_data", []))
            log = folder / journal.JOURNAL_FILE
            found.append(ProjectInfo(
                id=folder.name, name=str(data.get("name") or folder.name)[:200], folder=folder,
                images=len(images) if isinstance(images, list) else 0,
                modified=max(file.stat().st_mtime,
                             log.stat().st_mtime if log.is_file() else 0.0)))
        return sorted(found, key=lambda info: (-info.modified, info.id))

    def unique_name(self, name: str) -> str:
        """`name`, or "name 2", "name 3", ... when a project is called that already (case
        ignored): the list then tells copies apart without their ids."""
        taken = {info.name.casefold() for info in self.list()}
        if name.casefold() not in taken:
            return name
        n = 2
        while f"{name} {n}".casefold() in taken:
            n += 1
        return f"{name} {n}"

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
                       folder=project.folder, imported=list(project.imported),
                       phrases=dict(project.phrases))
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
                # the project as read (project.json + its journal), not the file alone
                zf.writestr(PROJECT_FILE, json.dumps(project.to_dict(), indent=2,
                                                     ensure_ascii=False) + "\n",
                            zipfile.ZIP_DEFLATED)
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

        Bounded before anything is unpacked: the member count and the central directory's size
        are read from the end-of-central-directory record before the directory itself;
        project.json is read with a byte cap and its lists are counted before objects are
        built; only the images project.json refers to are unpacked, each under
        ``max_upload_bytes`` and the compression-ratio cap, hashed as it streams to disk and
        kept only when hash and size match its record. Members nothing refers to are not
        unpacked (more than ``max_project_zip_unreferenced`` of them: refused).

        Raises:
            ProjectError: not a zip, no project.json, a hostile member (absolute path, ``..``,
                link, encrypted, unknown compression), or an image whose bytes don't match.
            LimitError: over a count or byte bound (also a `ProjectError`).
        """
        source = Path(source)
        with limits.pinned() as lim:
            _check_directory_record(source, source.name, lim)
            try:
                zf = zipfile.ZipFile(source)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) \
                    as exc:
                raise ProjectError(f"{source.name}: not a readable zip ({exc}); export the "
                                   "project again.") from exc
            with zf:
                scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}import-",
                                                dir=self.root))
                try:
                    project = _unpack_project(zf, source.name, scratch, lim)
                    if name is not None:
                        project.name = Project(name=name).name
                    save_project(project)
                    target = self._new_folder(project.name)  # reserved, empty
                    try:
                        os.replace(scratch, target)  # the whole project appears at once
                    except OSError:
                        target.rmdir()
                        raise
                    project.folder = target
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        return project

    # ---------------------------------------------------------------- internals
    def _new_folder(self, name: str) -> Path:
        while True:
            folder = self.root / project_id_for(name)
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return folder


#: Bytes of the central directory allowed per declared member (46 fixed + name + extras).
_CD_BYTES_PER_MEMBER = 1024
#: Compression methods `zipfile` reads (stored, deflated, bzip2, lzma).
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
#: Free disk space an import leaves untouched.
_DISK_MARGIN = 256 * 1024**2
_IMAGE_MEMBER = re.compile(r"^images/[^/\\]{1,255}$")
_PROMPT_MEMBER = re.compile(r"^prompts/[0-9a-f]{64}\.pt$")


def _check_directory_record(path: Path, label: str, lim: limits.Limits) -> None:
    """Bound the central directory from the end-of-central-directory record (what `zipfile`
    itself reads to find it) before `zipfile` parses it: a 1.3 M-entry directory costs
    seconds and hundreds of MB before any count can be checked."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:  # a future Python without it: the counts are checked after parsing
        return
    try:
        with path.open("rb") as fh:
            record = end_record(fh)
    except OSError as exc:
        raise ProjectError(f"{label}: cannot read the file ({exc.strerror or exc}).") from exc
    if not record:
        raise ProjectError(f"{label}: not a zip (no end-of-central-directory record); export "
                           "the project again.")
    entries, size = record[zipfile._ECD_ENTRIES_TOTAL], record[zipfile._ECD_SIZE]
    lim.check("max_project_zip_files", entries, f"{label}: files in the zip",
              limits.ProjectLimitError)
    if size > max(entries, 1) * _CD_BYTES_PER_MEMBER or \
            size > lim.max_project_zip_files * _CD_BYTES_PER_MEMBER:
        raise limits.ProjectLimitError(
            f"{label}: the zip's directory is {size:,} bytes for {entries:,} files, more than "
            f"{_CD_BYTES_PER_MEMBER:,} bytes per file; it is damaged or not a project zip.")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a member is refused whether or not anything refers to it, or None."""
    name = info.filename
    parts = PurePosixPath(name).parts
    if (name.startswith(("/", "\\")) or "\\" in name or "\0" in name or ".." in parts
            or (parts and ":" in parts[0])):
        return "absolute path or '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted; a project zip is never encrypted, unpack and zip it again"
    if info.compress_type not in _METHODS:
        return (f"compression method {info.compress_type} is not one this program reads "
                "(stored, deflated, bzip2, lzma)")
    return None


def _checked_members(zf: zipfile.ZipFile, label: str,
                     lim: limits.Limits) -> tuple[dict[str, zipfile.ZipInfo], str]:
    """Members by name and the folder prefix holding project.json; refuses hostile zips
    before a byte is read."""
    infos = zf.infolist()
    lim.check("max_project_zip_files", len(infos), f"{label}: files in the zip",
              limits.ProjectLimitError)
    total = 0
    for info in infos:
        problem = _member_problem(info)
        if problem:
            raise ProjectError(f"{label}: refused member {info.filename[:200]!r} ({problem}); "
                               "a project zip only holds its own files.")
        total += info.file_size
    lim.check("max_project_zip_bytes", total, f"{label}: uncompressed bytes",
              limits.ProjectLimitError)
    tops = sorted((info.filename for info in infos
                   if PurePosixPath(info.filename).name == PROJECT_FILE and not info.is_dir()
                   and len(PurePosixPath(info.filename).parts) <= 2), key=len)
    if not tops:
        raise ProjectError(f"{label}: no {PROJECT_FILE} at the top of the zip; is it a project "
                           "exported by OWL Studio?")
    prefix = str(PurePosixPath(tops[0]).parent)
    prefix = "" if prefix == "." else prefix + "/"
    return {info.filename: info for info in infos}, prefix


def _check_member_size(info: zipfile.ZipInfo, label: str, cap: str,
                       lim: limits.Limits) -> None:
    lim.check(cap, info.file_size, f"{label}: bytes of {info.filename[:200]!r}",
              limits.ProjectLimitError)
    if info.compress_type != zipfile.ZIP_STORED:
        lim.check("max_project_zip_compression_ratio",
                  info.file_size // max(info.compress_size, 1),
                  f"{label}: compression ratio of {info.filename[:200]!r}",
                  limits.ProjectLimitError)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, cap: int) -> bytes:
    """A member's bytes, never more than ``cap`` whatever its header declares."""
    try:
        with zf.open(info) as fh:
            data = fh.read(cap + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise ProjectError(f"{label}: cannot unpack {info.filename[:200]!r} ({exc}); the zip "
                           "is damaged.") from exc
    if len(data) > cap:
        raise limits.ProjectLimitError(f"{label}: {info.filename[:200]!r} unpacks to more than "
                                       f"{cap:,} bytes.")
    return data


def _unpack_project(zf: zipfile.ZipFile, label: str, scratch: Path,
                    lim: limits.Limits) -> Project:
    """Read project.json (bounded), then unpack and verify only the images it refers to into
    ``scratch/images/``; returns the project with ``folder = scratch`` (not saved yet)."""
    from owl_core.images import IMAGE_FORMATS, content_hasher
    from owl_core.project.model import parse_json_bounded, project_from_dict

    members, prefix = _checked_members(zf, label, lim)
    meta = members[prefix + PROJECT_FILE]
    _check_member_size(meta, label, "max_project_json_bytes", lim)
    text = _read_member(zf, meta, label, lim.max_project_json_bytes)
    where = f"{label}: {PROJECT_FILE}"
    project = project_from_dict(parse_json_bounded(text, where, lim=lim), scratch,
                                source=where)
    wanted: dict[str, list[int]] = {}
    for index, record in enumerate(project.images):
        rel = os.path.normpath(record.file).replace("\\", "/")
        if not _IMAGE_MEMBER.match(rel):
            raise ProjectError(f"{where}: image {record.name!r}: file {record.file[:200]!r} is "
                               f"not in {IMAGES_DIR}/; a project keeps its images there.")
        if prefix + rel not in members:
            raise ProjectError(f"{label}: image {record.name!r} ({rel}) is missing from the "
                               "zip.")
        wanted.setdefault(prefix + rel, []).append(index)
    known = {prefix + PROJECT_FILE, prefix + BACKUP_FILE, *wanted}
    extra = [n for n, info in members.items() if n not in known and not info.is_dir()
             and not n.startswith(f"{prefix}{EMBEDDINGS_DIR}/")]  # a cache: not imported
    prompts = {}
    for entry in project.imported:
        rel = os.path.normpath(entry.file).replace("\\", "/")
        if not _PROMPT_MEMBER.match(rel) or prefix + rel not in members:
            raise ProjectError(f"{where}: imported prompt {entry.name!r} ({entry.file[:200]!r}) "
                               f"is not a {PROMPTS_DIR}/<sha256>.pt file of the zip.")
        prompts[prefix + rel] = rel
    known |= set(prompts)
    extra = [n for n in extra if n not in known]
    lim.check("max_project_zip_unreferenced", len(extra),
              f"{label}: files that project.json does not refer to (e.g. {extra[:1]})",
              limits.ProjectLimitError)
    needed = meta.file_size
    for member in [*wanted, *prompts]:
        _check_member_size(members[member], label, "max_upload_bytes", lim)
        needed += members[member].file_size
    lim.check("max_project_zip_bytes", needed, f"{label}: bytes to unpack",
              limits.ProjectLimitError)
    free = shutil.disk_usage(scratch).free
    if needed > free - _DISK_MARGIN:
        raise ProjectError(f"{label}: unpacking needs {needed:,} bytes, but the projects folder "
                           f"has {max(free - _DISK_MARGIN, 0):,} free (keeping "
                           f"{_DISK_MARGIN // 1024**2} MiB spare); free some disk space.")
    images = list(project.images)
    (scratch / IMAGES_DIR).mkdir()
    for member, indexes in wanted.items():
        info, first = members[member], images[indexes[0]]
        tmp = scratch / IMAGES_DIR / f".part-{secrets.token_hex(4)}"
        digest = _stream_member(zf, info, label, tmp, content_hasher())
        try:
            found = inspect_image(tmp, first.name, content_hash=digest)
        except OwlError as exc:
            raise ProjectError(f"{label}: {exc}") from None
        for index in indexes:
            record = images[index]
            if (digest, found.size) != (record.content_hash, record.size) \
                    or found.suffix not in IMAGE_FORMATS.values():
                raise ProjectError(f"{label}: image {record.name!r} ({info.filename[:200]}) "
                                   "does not match its record (content hash or size); the zip "
                                   "is damaged or was edited.")
        rel = f"{IMAGES_DIR}/{found.content_hash}{found.suffix}"
        os.replace(tmp, scratch / rel)
        for index in indexes:
            if images[index].file != rel:
                images[index] = dataclasses.replace(images[index], file=rel)
    project.images = images
    for member, rel in prompts.items():
        (scratch / PROMPTS_DIR).mkdir(exist_ok=True)
        tmp = scratch / PROMPTS_DIR / f".part-{secrets.token_hex(4)}"
        if _stream_member(zf, members[member], label, tmp, hashlib.sha256()) \
                != PurePosixPath(rel).stem:
            raise ProjectError(f"{label}: {rel} does not match its name (SHA-256); the zip is "
                               "damaged or was edited.")
        os.replace(tmp, scratch / rel)
    return project


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, dest: Path,
                   hasher: Any) -> str:
    """Copy a member to ``dest`` in chunks, hashing as it goes (never held whole; zipfile stops
    at the declared size and checks the CRC). Returns the hex digest."""
    try:
        with zf.open(info) as src, open(dest, "wb") as dst:
            while chunk := src.read(_COPY_CHUNK):
                hasher.update(chunk)
                dst.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise ProjectError(f"{label}: cannot unpack {info.filename[:200]!r} ({exc}); the zip is "
                           "damaged.") from exc
    return hasher.hexdigest()


#: The name before 2026-12 (it was confused with the embedding store and the tab sessions).
ProjectStore = ProjectLibrary
