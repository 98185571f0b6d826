"""Request limits in front of the REST facade (issue 10): a pure ASGI middleware and a JSON depth scanner.

``RequestLimits`` answers with the Agave error envelope, before the facade sees the request:

* **413** for a body larger than ``AIRJOBS_MAX_BODY_BYTES`` (default 1 MiB, 1048576 bytes), whatever its type
  (JSON, form, multipart, anything). A ``Content-Length`` above the limit is refused at once, without reading a
  byte of the body; a body without one (``Transfer-Encoding: chunked``) is counted as it arrives and refused at
  the limit. At most the limit is ever held in memory. The connection is closed after a 413.
* **408** when no body bytes arrive for ``AIRJOBS_BODY_TIMEOUT_SECONDS`` (default 30) while the body is not
  complete (a client that stops half-way); the connection is closed.
* **400** for a control character in the decoded path (``%00``..``%1f``, ``%7f``) or a NUL in the query
  string (decoded names or values).
* **414 URI Too Long** for a path longer than ``MAX_PATH_BYTES`` (4096) bytes as sent, or a query string
  longer than ``MAX_QUERY_BYTES`` (8192): 414 is the status RFC 9110 defines for it, so not a 400.

The facade reads whole bodies anyway (job requests, app and system descriptions, forms), so the middleware
reads the body itself, bounded by the limit and the timeout, and hands it to the facade in one piece; later
``receive`` calls (a streamed download waiting for a disconnect) go to the server as usual.

``too_deep``/``check_json_depth`` (``airjobs.jsonlimits``, re-exported): a JSON text nested more than
``MAX_JSON_DEPTH`` (64) levels is refused before ``json.loads``, in time linear in its size.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import anyio

from airjobs import SERVICE_VERSION

#: the JSON depth scanner lives in the core (``airjobs.jsonlimits``: submission uses it too); re-exported here
from airjobs.jsonlimits import MAX_JSON_DEPTH, check_json_depth, json_depth, too_deep  # noqa: F401

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_BODY_TIMEOUT_SECONDS = 30.0
MAX_PATH_BYTES = 4096
MAX_QUERY_BYTES = 8192

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _env_number(name: str, default: float, cast: Callable[[str], float]) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def max_body_bytes() -> int:
    return int(_env_number("AIRJOBS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int))


def body_timeout_seconds() -> float:
    return _env_number("AIRJOBS_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS, float)


def error_body(message: str) -> bytes:
    return json.dumps({"status": "error", "message": message, "version": SERVICE_VERSION}).encode()


async def reply(
    send: Send, status: int, message: str, *, close: bool = False, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """An Agave error envelope; ``close`` asks the server to close the connection after it."""
    payload = error_body(message)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def target_problem(scope: Scope) -> tuple[int, str] | None:
    """(status, message) when the request target breaks a limit, else None."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    if len(raw_path) > MAX_PATH_BYTES:
        return 414, f"Request path too long: {len(raw_path)} bytes, the limit is {MAX_PATH_BYTES} bytes."
    if _CONTROL.search(scope.get("path", "")):
        return 400, "Invalid request path: it contains a control character (%00-%1f or %7f)."
    query: bytes = scope.get("query_string") or b""
    if len(query) > MAX_QUERY_BYTES:
        return 414, f"Query string too long: {len(query)} bytes, the limit is {MAX_QUERY_BYTES} bytes."
    if query:
        text = query.decode("latin-1")
        if "\x00" in text or any("\x00" in k or "\x00" in v for k, v in parse_qsl(text, keep_blank_values=True)):
            return 400, "Invalid query string: parameter names and values may not contain NUL (%00)."
    return None


def _content_length(scope: Scope) -> int | str | None:
    """The declared body length, None without the header, "bad" when it is not one non-negative number."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        return "bad"
    return int(values[0])


class RequestLimits:
    """Pure ASGI middleware: body size, body stall, path and query limits (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body: int | None = None, body_timeout: float | None = None) -> None:
        self.app = app
        self.max_body = max_body if max_body is not None else max_body_bytes()
        self.body_timeout = body_timeout if body_timeout is not None else body_timeout_seconds()

    def _too_large(self) -> str:
        return (
            f"Request body too large: the limit is {self.max_body} bytes. The service's operator can change "
            f"it with AIRJOBS_MAX_BODY_BYTES."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = target_problem(scope)
        if problem:
            await reply(send, *problem)
            return
        declared = _content_length(scope)
        if declared == "bad":
            await reply(send, 400, "Invalid Content-Length header.", close=True)
            return
        if isinstance(declared, int) and declared > self.max_body:
            await reply(send, 413, self._too_large(), close=True)  # no byte of the body is read
            return
        body = await self._read_body(receive, send)
        if body is None:
            return  # answered already, or the client went away
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                with anyio.fail_after(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                await reply(
                    send,
                    408,
                    (
                        f"Request body timed out: no bytes arrived for {self.body_timeout:g} "
                        f"seconds. The service's operator can change this with "
                        f"AIRJOBS_BODY_TIMEOUT_SECONDS."
                    ),
                    close=True,
                )
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body") or b""
            size += len(chunk)
            if size > self.max_body:
                await reply(send, 413, self._too_large(), close=True)
                return None
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
