"""ASGI middleware: the REST routes answer only requests that carry the server's key.

A studio open to a network (``--share``, a non-loopback ``--host``) serves its REST API with a
key (``--rest-key``, else made at start and printed): ``X-API-Key: <key>`` or
``Authorization: Bearer <key>``. Checked before a byte of the body is read; compared in
constant time.
"""

from __future__ import annotations

import secrets
from typing import Any

from owl_core.rest.body_limit import Receive, Scope, Send, _reply


class ApiKeyMiddleware:
    """Answer 401 to HTTP requests under `paths` without ``key`` in their headers."""

    def __init__(self, app: Any, paths: tuple[str, ...], key: str) -> None:
        self.app = app
        self.paths = tuple(paths)
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.paths) \
                and not self._carries_key(scope):
            await _reply(send, 401, "this server needs its API key: send it in the X-API-Key "
                                    "header (or Authorization: Bearer <key>); the server "
                                    "printed it when it started.",
                         [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    def _carries_key(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        if given is None:
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            given = token.strip() if scheme.lower() == b"bearer" else b""
        return secrets.compare_digest(given, self.key)
