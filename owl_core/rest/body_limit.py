"""ASGI middleware: refuse request bodies over a byte limit with 413, before they are read.

The limit is checked twice: on the declared ``Content-Length`` (refused before a byte of the
body is read) and while the body streams in (a chunked or lying client is cut off as soon as
it passes the limit), so the server never holds more than the limit of one body. A body that
stalls, or that takes longer than ``max_body_seconds`` in total (one byte every few seconds
never stalls), is cut off too (408), and the number of REST requests in progress is bounded
(503). The studio uses the same middleware for its uploads with the time bounds only.

A client that goes away before its body is complete (a closed tab, a cancelled upload) is one
log line here: the app's own error (Starlette's ``ClientDisconnect`` inside Gradio's upload
route) used to reach the server's log twice with its traceback (the REST app's error log and
uvicorn's "Exception in ASGI application"), though nothing is wrong and nobody waits for an
answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from owl_core import limits

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
log = logging.getLogger("owl_core.rest.body_limit")


class _Refused(Exception):
    """Raised from `receive` when the body breaks a bound."""


class BodyLimitMiddleware:
    """Apply `max_bytes()` to HTTP requests whose path starts with one of `paths`; answer 503
    while `max_in_flight` of them are already being received or handled (bodies are read
    before a request can be sized, so their number is bounded here), and 408 when a body
    stalls for `receive_timeout_s` or is not complete `body_seconds()` after the request
    came (a slow client can't hold a slot for ever). `max_bytes` / `max_in_flight` None:
    no such bound (the studio's uploads: Gradio bounds their size itself)."""

    def __init__(self, app: Any, paths: tuple[str, ...], max_bytes: Callable[[], int] | None,
                 max_in_flight: int | None = 32, receive_timeout_s: float = 30.0,
                 body_seconds: Callable[[], float] | None = None) -> None:
        self.app = app
        self.receive_timeout_s = receive_timeout_s
        self.paths = tuple(paths)
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.body_seconds = body_seconds or _max_body_seconds
        self.in_flight = 0  # only touched on the event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.paths):
            await self.app(scope, receive, send)
            return
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            await _reply(send, 503, f"the server is busy ({self.in_flight} requests in "
                                    "progress); retry in a few seconds.",
                         [(b"retry-after", b"5")])
            return
        self.in_flight += 1
        try:
            await self._limited(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline_s = float(self.body_seconds())
        deadline = time.monotonic() + deadline_s
        limit = None if self.max_bytes is None else int(self.max_bytes())
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and limit is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(send, 400, "the Content-Length header is not a number.")
                return
            if length > limit:
                await _reply(send, 413, _message(limit, length))
                return
        received = 0
        # set when the body broke a bound: whatever the app answers becomes this reply
        failure: tuple[int, str] | None = None
        started = False

        body_done = False
        gone = False  # the client disconnected before its body was complete

        async def limited_receive() -> Message:
            nonlocal received, failure, body_done, gone
            if body_done:  # e.g. waiting for a disconnect: no bound applies any more
                return await receive()
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), min(self.receive_timeout_s, left))
            except TimeoutError:
                failure = (408, _slow_message(deadline_s) if left <= self.receive_timeout_s
                           else f"the request body stopped arriving for more than "
                                f"{self.receive_timeout_s:g} s; send it at once.")
                raise _Refused() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    failure = (413, _message(limit, None))
                    raise _Refused()
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if failure is not None:  # the app turned our signal into its own reply: replace it
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _reply(send, *failure)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if failure is None and gone and not started:
                log.warning("%s %s: the client disconnected after %d bytes of its body; "
                            "nothing kept", scope.get("method", ""), scope.get("path", ""),
                            received)
                return  # nobody to answer; no traceback for a closed tab
            if failure is None:
                raise
            if not started:
                await _reply(send, *failure)


def _max_body_seconds() -> float:
    return limits.current().max_body_seconds


def _slow_message(seconds: float) -> str:
    return (f"the request body took more than {seconds:g} s to arrive (max_body_seconds); send "
            "it faster, or raise the limit with OWL_MAX_BODY_SECONDS.")


def _message(limit: int, length: int | None) -> str:
    size = f"{length:,} bytes" if length is not None else "more bytes than allowed"
    return (f"the request body ({size}) is over the limit of {limit:,} bytes "
            "(max_request_bytes); send fewer or smaller images per request, or raise the limit "
            "with OWL_MAX_REQUEST_BYTES.")


async def _reply(send: Send, status: int, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
