"""With logins, a user is served only the files the studio handed to them.

Gradio serves every file in its upload/cache folder (``/gradio_api/file=<path>``: uploads,
project images and preview pictures shown in the page, the project's export downloads) to
anyone logged in: the folder names are content hashes, hard to guess, but a link that leaks (a
shared screenshot, a forwarded URL, a browser history) opened one user's project files to every
other user. `UserFilesMiddleware` (on the studio's own app, inside Gradio's compression) reads
what the app sends each logged-in user (the page config, event streams, upload answers) and
notes the cache folders named there; a file request is answered only for a folder noted for
the requesting user (403 otherwise). Without logins it does nothing. Files outside Gradio's
folders (the bundled example images, ``allowed_paths``) are Gradio's to judge.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

Scope = dict[str, Any]
Message = dict[str, Any]
#: cache folders remembered per user (least recently handed out forgotten first)
MAX_FOLDERS_PER_USER = 100_000
_HASH_DIR = rb"([0-9a-fA-F]{16,128})"


def _roots() -> list[str]:
    """Gradio's folders of files it made or received (uploads and its block cache)."""
    from gradio import utils

    roots = {os.path.realpath(utils.get_upload_folder()),
             os.path.realpath(str(utils.get_cache_folder()))}
    return sorted(roots)


class UserFilesMiddleware:
    """See the module docstring. ``roots``: the served folders to guard (default Gradio's)."""

    def __init__(self, app: Any, roots: list[str] | None = None) -> None:
        self.app = app
        self.roots = [os.path.realpath(r) for r in (roots or _roots())]
        alternatives = b"|".join(re.escape(r.encode()) for r in self.roots)
        self._pattern = re.compile(rb"(?:" + alternatives + rb")/" + _HASH_DIR)
        self._keep = max(len(r) for r in self.roots) + 140  # a name split between chunks
        self._granted: dict[str, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gradio_app = scope.get("app")
        user = _user(gradio_app, scope) if _logins(gradio_app) else None
        if user is None:  # no logins (or not logged in: Gradio answers 401 itself)
            await self.app(scope, receive, send)
            return
        folder = self._requested_folder(scope.get("path", ""))
        if folder is not None and not self._allowed(user, folder):
            await _forbidden(send)
            return
        tail = b""

        async def noting_send(message: Message) -> None:
            nonlocal tail
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                seen = tail + body
                found = self._pattern.findall(seen)
                if found:
                    self._grant(user, {f.decode() for f in found})
                tail = seen[-self._keep:]
            await send(message)

        await self.app(scope, receive, noting_send)

    # ---------------------------------------------------------------- bookkeeping
    def _requested_folder(self, path: str) -> str | None:
        """The guarded cache folder a file request names (None: not a file request, or a
        file outside the guarded folders)."""
        at = path.find("/file=")
        if at < 0:
            return None
        wanted = os.path.realpath(unquote(path[at + len("/file="):]))
        for root in self.roots:
            if wanted.startswith(root + os.sep):
                return Path(wanted[len(root) + 1:]).parts[0]
        return None

    def _allowed(self, user: str, folder: str) -> bool:
        with self._lock:
            granted = self._granted.get(user)
            if granted is None or folder not in granted:
                return False
            granted.move_to_end(folder)
            return True

    def _grant(self, user: str, folders: set[str]) -> None:
        with self._lock:
            granted = self._granted.setdefault(user, OrderedDict())
            for folder in folders:
                granted[folder] = None
                granted.move_to_end(folder)
            while len(granted) > MAX_FOLDERS_PER_USER:
                granted.popitem(last=False)


def _logins(app: Any) -> bool:
    return getattr(app, "auth", None) is not None or \
        getattr(app, "auth_dependency", None) is not None


def _user(app: Any, scope: Scope) -> str | None:
    """The logged-in user of a request, as Gradio's own login check finds it (its cookie)."""
    if getattr(app, "auth_dependency", None) is not None:
        return None  # a custom login (not the studio's): Gradio's own checks only
    cookie_id = getattr(app, "cookie_id", "")
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                cookies[key] = val
    token = cookies.get(f"access-token-{cookie_id}") or \
        cookies.get(f"access-token-unsecure-{cookie_id}")
    user = getattr(app, "tokens", {}).get(token) if token else None
    return user if isinstance(user, str) else None


async def _forbidden(send: Callable[[Message], Awaitable[None]]) -> None:
    body = json.dumps({"detail": "File not allowed: it was not shown to this user."}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
