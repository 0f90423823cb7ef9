"""Who may use a studio server: logins for the page, a key for the REST API.

On this machine only (``--host 127.0.0.1``, no ``--share``) nothing is asked unless
``--users`` is given. Open to a network (``--share``, or a ``--host`` that is not a loopback
address) the page needs a login and the REST API a key, unless the person starts it with
``--insecure-no-login``: without ``--users`` one user ``owl`` gets a password made at start,
and without ``--rest-key`` a key is made; both are printed (`summary`). With logins, each user
sees and opens only their own projects (`owl_core.project.library.ProjectLibrary.owner`).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: the user made at start when a studio is open to a network without --users
GENERATED_USER = "owl"


class AccessError(ValueError):
    """A users file that can't be used (the message names the line and the fix)."""


@dataclass(frozen=True)
class Access:
    """What a server start exposes and how it is guarded.

    Attributes:
        exposed: reachable from other machines (``--share`` or a non-loopback ``--host``).
        users: user name -> password (empty: no login).
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
            return known is not None and secrets.compare_digest(known.encode(),
                                                                str(password).encode())
        return check


def is_loopback(host: str) -> bool:
    """Whether `host` listens on this machine only ("localhost", 127.x, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def read_users(path: str | Path) -> dict[str, str]:
    """``name:password`` per line (blank lines and ``#`` comments skipped).

    Raises:
        AccessError: unreadable file, a line without ``:``, an empty name or password, a name
            given twice, or no user at all.
    """
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
    if not users:
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
        users = dict([generated])
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
