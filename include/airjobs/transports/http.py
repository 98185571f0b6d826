"""A read-only source for ``http://`` and ``https://`` inputs (spec §4.2 Table 2), streamed with httpx.

It quacks like the reading half of a ``Transport`` (``exists``, ``is_dir``, ``open_read``), so
``transports.copy`` can stream from it: one GET per open, redirects followed, the body read as it
arrives (never whole in memory). A non-2xx answer raises ``HTTPStatusError`` naming the URL and status;
network failures become ``ConnectFailed`` (a ``ConnectionError``) or ``OSError``, so callers need not know
httpx."""

from __future__ import annotations

import httpx

TIMEOUT = httpx.Timeout(30.0, read=60.0)


class HTTPStatusError(Exception):
    def __init__(self, url: str, status: int, reason: str = ""):
        self.url, self.status, self.reason = url, status, reason
        answer = f"HTTP {status} {reason}".strip()
        super().__init__(f"{url} does not exist ({answer})" if status in (404, 410) else f"{url} answered {answer}")


class ConnectFailed(ConnectionError):
    """The server could not be reached (refused, unknown host, connect timeout)."""


def _os_error(url: str, e: httpx.TransportError) -> OSError:
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
        return ConnectFailed(str(e) or type(e).__name__)
    return OSError(f"{type(e).__name__} reading {url}: {e}")


class _Body:
    """An open GET: ``read(n)`` returns what has arrived (at most n bytes); ``length`` is Content-Length."""

    def __init__(self, client: httpx.Client, url: str):
        self.url = url
        self._cm = client.stream("GET", url, headers={"Accept-Encoding": "identity"})
        try:
            self._resp = self._cm.__enter__()
        except httpx.TransportError as e:
            raise _os_error(url, e) from None
        if not self._resp.is_success:
            self.close()
            raise HTTPStatusError(url, self._resp.status_code, self._resp.reason_phrase)
        declared = self._resp.headers.get("Content-Length")
        encoded = self._resp.headers.get("Content-Encoding", "identity") != "identity"
        self.length = int(declared) if declared and declared.isdigit() and not encoded else None
        self._pieces = self._resp.iter_bytes()
        self._rest = b""

    def read(self, n: int = -1) -> bytes:
        if not self._rest:
            try:
                self._rest = next(self._pieces, b"")
            except httpx.TransportError as e:
                raise _os_error(self.url, e) from None
        out, self._rest = (self._rest, b"") if n < 0 else (self._rest[:n], self._rest[n:])
        return out

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HTTPSource:
    """Reads URLs; ``close()`` it (or use ``with``) to release its connection pool."""

    def __init__(self, timeout: httpx.Timeout = TIMEOUT):
        self.timeout = timeout
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        """Made on first use: building one loads the CA bundle (~0.4 s), which jobs without URLs never need."""
        if self._client is None:
            self._client = httpx.Client(follow_redirects=True, timeout=self.timeout)
        return self._client

    def exists(self, url: str) -> bool:  # known only by fetching it: open_read raises for a missing URL
        return True

    def is_dir(self, url: str) -> bool:
        return False

    def open_read(self, url: str) -> _Body:
        return _Body(self.client, url)

    def size(self, url: str) -> int | None:
        """Content-Length from a HEAD request, None when the server does not say."""
        try:
            r = self.client.head(url, headers={"Accept-Encoding": "identity"})
        except httpx.TransportError as e:
            raise _os_error(url, e) from None
        if not r.is_success:
            raise HTTPStatusError(url, r.status_code, r.reason_phrase)
        n = r.headers.get("Content-Length", "")
        return int(n) if n.isdigit() else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> HTTPSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
