"""Who may use a studio server: logins for the page, a key for the REST API.

On this machine only (``--host 127.0.0.1``, no ``--share``) nothing is asked unless
``--users`` is given. Open to a network (``--share``, or a ``--host`` that is not a loopback
address) the page needs a login and the REST API a key, unless the person starts it with
``--insecure-no-login``: without ``--users`` one user ``owl`` gets a password made at start,
and without ``--rest-key`` a key is made; both are printed (`summary`). With logins, each user
sees and opens only their own projects (`owl_core.project.library.ProjectLibrary.owner`).

The users file holds a salted scrypt hash per user, never a password (``name:$scrypt$...``);
make and change lines with ``python -m ui.access add-user FILE NAME``. A file with plain-text
passwords (the first form) is refused at start with the command that hashes it in place
(``python -m ui.access hash-file FILE``). Projects made before logins were on belong to nobody:
no user sees them until a person gives them to one, explicitly
(``python -m ui.access claim PROJECTS_DIR NAME``).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import ipaddress
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: the user made at start when a studio is open to a network without --users
GENERATED_USER = "owl"
#: how a users file line stores a password: scrypt (RFC 7914) with these costs, salted
HASH_PREFIX = "$scrypt$"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AccessError(ValueError):
    """A users file that can't be used (the message names the line and the fix)."""


@dataclass(frozen=True)
class Access:
    """What a server start exposes and how it is guarded.

    Attributes:
        exposed: reachable from other machines (``--share`` or a non-loopback ``--host``).
        users: user name -> salted password hash (`hash_password`; empty: no login).
        rest_key: the key REST requests must carry (None: none needed).
        generated: the user and password made at start (printed once), if any.
        users_file: where `users` came from.
    """

    exposed: bool
    users: dict[str, str] = field(default_factory=dict)
    rest_key: str | None = None
    generated: tuple[str, str] | None = None
    users_file: str | None = None

    def auth(self) -> Callable[[str, str], bool] | None:
        """Gradio's ``auth``: checks a user name and password (None: no login)."""
        if not self.users:
            return None
        users = dict(self.users)

        def check(name: str, password: str) -> bool:
            known = users.get(name)
            return known is not None and verify_password(known, str(password))
        return check


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The users file's form of a password: ``$scrypt$n$r$p$<salt hex>$<hash hex>``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return (f"{HASH_PREFIX}{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}$"
            f"{digest.hex()}")


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` is the one `stored` (a `hash_password` value) was made from."""
    try:
        n, r, p, salt, digest = stored[len(HASH_PREFIX):].split("$")
        found = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(bytes.fromhex(digest)))
    except (ValueError, MemoryError):
        return False
    return secrets.compare_digest(found, bytes.fromhex(digest))


def is_loopback(host: str) -> bool:
    """Whether `host` listens on this machine only ("localhost", 127.x, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_users(path: str | Path) -> dict[str, str]:
    """``name:$scrypt$...`` per line (blank lines and ``#`` comments skipped): name -> hash.

    Raises:
        AccessError: unreadable file, a line without ``:``, an empty name or password, a name
            given twice, no user at all, or a password stored as plain text (the message names
            the command that hashes the file).
    """
    users = _read_lines(path)
    plain = [name for name, value in users.items() if not value.startswith(HASH_PREFIX)]
    if plain:
        raise AccessError(f"--users {path}: the password of {plain[0]!r}"
                          + (f" and {len(plain) - 1} more" if len(plain) > 1 else "")
                          + " is stored as plain text; store salted hashes instead: run "
                          f"'python -m ui.access hash-file {path}' (rewrites the file in "
                          "place), or make each line with 'python -m ui.access add-user FILE "
                          "NAME'.")
    return users


def _read_lines(path: str | Path, allow_empty: bool = False) -> dict[str, str]:
    """name -> the stored value (hash or, in an old file, the password)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(f"--users {path}: cannot read the file ({exc}).") from None
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        name = name.strip()
        if not sep or not name or not password:
            raise AccessError(f"--users {path}, line {n}: expected 'name:password'.")
        if name in users:
            raise AccessError(f"--users {path}, line {n}: the user {name!r} is given twice.")
        users[name] = password
    if not users and not allow_empty:
        raise AccessError(f"--users {path}: no user in the file; add lines 'name:password'.")
    return users


def plan_access(host: str, share: bool, users_file: str | None, rest_key: str | None,
                no_login: bool) -> Access:
    """The guard of a server start (see the module docstring)."""
    exposed = share or not is_loopback(host)
    users = read_users(users_file) if users_file else {}
    if no_login:
        return Access(exposed, users, rest_key, None, users_file)
    generated = None
    if exposed and not users:
        generated = (GENERATED_USER, secrets.token_urlsafe(12))
        users = {GENERATED_USER: hash_password(generated[1])}
    if exposed and not rest_key:
        rest_key = secrets.token_urlsafe(24)
    return Access(exposed, users, rest_key, generated, users_file)


def summary(access: Access, studio_url: str, rest: bool) -> str:
    """What the start exposes, for the console: address, login, REST key."""
    where = ("OPEN TO THE NETWORK" if access.exposed else "this machine only")
    lines = [f"Studio: {studio_url} ({where})"]
    if access.generated:
        lines.append(f"  login: on, user {access.generated[0]!r}, password "
                     f"{access.generated[1]!r} (made for this start; --users FILE to choose)")
    elif access.users:
        lines.append(f"  login: on, {len(access.users)} user(s) from {access.users_file}; "
                     "each sees only their own projects")
    else:
        lines.append("  login: OFF" + (" (--insecure-no-login: anyone who reaches it can "
                                        "open, change and delete every project)"
                                        if access.exposed else ""))
    if rest:
        lines.append("  REST API: POST /owlv2/infer, POST /infer; " + (
            f"key required: X-API-Key: {access.rest_key}" if access.rest_key else
            "no key needed" + (" (open to the network!)" if access.exposed else "")))
    else:
        lines.append("  REST API: not served (--share)")
    return "\n".join(lines)


# ---------------------------------------------------------------- the command line
def _write_users(path: Path, users: dict[str, str]) -> None:
    """The users file, atomically, readable by its owner only (comments are not kept)."""
    text = "".join(f"{name}:{value}\n" for name, value in users.items())
    fd, tmp = tempfile.mkstemp(prefix=".users.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(path: str | Path, name: str, password: str) -> None:
    """Add `name` to the users file (or change their password); the file is made if needed."""
    if not name or ":" in name or name != name.strip() or "\n" in name:
        raise AccessError(f"user name {name!r}: no ':', line breaks or spaces around it.")
    if not password:
        raise AccessError("the password is empty.")
    path = Path(path)
    users = _read_lines(path, allow_empty=True) if path.exists() else {}
    users[name] = hash_password(password)
    _write_users(path, users)


def hash_file(path: str | Path) -> int:
    """Replace the plain-text passwords of an old users file by their hashes, in place.
    Returns how many were hashed."""
    users = _read_lines(path)
    plain = [n for n, v in users.items() if not v.startswith(HASH_PREFIX)]
    for name in plain:
        users[name] = hash_password(users[name])
    _write_users(Path(path), users)
    return len(plain)


def claim(projects_dir: str | Path, name: str, project_ids: list[str] | None = None) -> list[str]:
    """Give the projects that belong to nobody (made before logins were on) to user `name`
    (all of them, or the ids given). Returns the ids given."""
    from owl_core.project.library import ProjectLibrary

    library = ProjectLibrary(projects_dir)
    wanted = project_ids or [info.id for info in library.list()
                             if library.owner(info.id) is None]
    given = []
    for project_id in wanted:
        if library.owner(project_id) is None and library.exists(project_id):
            library.set_owner(project_id, name)
            given.append(project_id)
    return given


def main(argv: list[str] | None = None) -> int:
    """``python -m ui.access add-user FILE NAME`` | ``hash-file FILE`` |
    ``claim PROJECTS_DIR NAME [ID ...]``."""
    parser = argparse.ArgumentParser(prog="python -m ui.access",
                                     description="Users of a studio with logins (--users).")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add-user", help="add a user (or change their password); the "
                                          "password is asked for, or read from stdin")
    add.add_argument("file")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    hashed = sub.add_parser("hash-file", help="hash the plain-text passwords of an old file")
    hashed.add_argument("file")
    owner = sub.add_parser("claim", help="give projects that belong to nobody (made before "
                                         "logins were on) to a user")
    owner.add_argument("projects_dir")
    owner.add_argument("name")
    owner.add_argument("ids", nargs="*", help="only these project ids (default: all of them)")
    args = parser.parse_args(argv)
    try:
        if args.command == "add-user":
            password = (sys.stdin.readline().rstrip("\n") if args.password_stdin
                        else getpass.getpass(f"password for {args.name}: "))
            add_user(args.file, args.name, password)
            print(f"{args.file}: user {args.name!r} saved (salted scrypt hash)")
        elif args.command == "hash-file":
            print(f"{args.file}: {hash_file(args.file)} password(s) hashed")
        else:
            given = claim(args.projects_dir, args.name, args.ids)
            print(f"{len(given)} project(s) now belong to {args.name!r}: {', '.join(given)}")
    except AccessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
