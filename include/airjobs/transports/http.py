"""A read-only source for ``http://`` and ``https://`` inputs (spec §4.2 Table 2), streamed with httpx.

It quacks like the reading half of a ``Transport`` (``exists``, ``is_dir``, ``open_read``), so
``transports.copy`` can stream from it: one GET per open, redirects followed, the body read as it
arrives (never whole in memory). A non-2xx answer raises ``HTTPStatusError`` naming the URL and status;
network failures become ``ConnectFailed`` (a ``ConnectionError``) or ``OSError``, so callers need not know
httpx.

Every connection, the first and each redirect's, goes through the egress guard (``airjobs.egress``): the
host is resolved, refused with ``EgressRefused`` naming the URL when any of its addresses is refused, and
otherwise connected to at one of the checked addresses (TLS still verifies the URL's host name)."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from airjobs import egress

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


@contextmanager
def _errors(url: str) -> Iterator[None]:
    """httpx errors as OSError; a refusal of the egress guard names the URL that led to it."""
    try:
        yield
    except httpx.TransportError as e:
        raise _os_error(url, e) from None
    except egress.EgressRefused as e:
        raise egress.EgressRefused(f"{url}: {e.message}") from None


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to addresses the egress guard allows. It resolves the
    host itself and connects to the checked address, so what is checked is what is reached."""

    def __init__(self) -> None:
        self._plain = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = egress.resolve_checked(host, port)
        except socket.gaierror as e:  # an unknown host, as httpcore reports it
            raise httpcore.ConnectError(str(e)) from e
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for *_, sockaddr in addresses:  # in the resolver's order, like socket.create_connection
            try:
                return self._plain.connect_tcp(sockaddr[0], port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error


class _GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` over ``_GuardedBackend``. httpx (0.28) has no parameter for httpcore's network
    backend, so the connection pool it made (its only state) is replaced by one that has it, with the same
    TLS context (made once: loading the CA bundle is the slow part) and httpx's default limits."""

    def __init__(self) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(),
        )


class _Body:
    """An open GET: ``read(n)`` returns what has arrived (at most n bytes); ``length`` is Content-Length."""

    def __init__(self, client: httpx.Client, url: str):
        self.url = url
        self._cm = client.stream("GET", url, headers={"Accept-Encoding": "identity"})
        with _errors(url):
            self._resp = self._cm.__enter__()
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

    def __exit__(self, *exc: object) -> None:
        self.close()


class HTTPSource:
    """Reads URLs; ``close()`` it (or use ``with``) to release its connection pool."""

    def __init__(self, timeout: httpx.Timeout = TIMEOUT):
        self.timeout = timeout
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        """Made on first use: building one loads the CA bundle (~0.4 s), which jobs without URLs never need.
        ``trust_env=False``: no proxy (nor .netrc) from the environment, so nothing connects past the guard."""
        if self._client is None:
            self._client = httpx.Client(
                transport=_GuardedTransport(), follow_redirects=True, timeout=self.timeout, trust_env=False
            )
        return self._client

    def exists(self, url: str) -> bool:  # known only by fetching it: open_read raises for a missing URL
        return True

    def is_dir(self, url: str) -> bool:
        return False

    def open_read(self, url: str) -> _Body:
        return _Body(self.client, url)

    def size(self, url: str) -> int | None:
        """Content-Length from a HEAD request, None when the server does not say."""
        with _errors(url):
            r = self.client.head(url, headers={"Accept-Encoding": "identity"})
        if not r.is_success:
            raise HTTPStatusError(url, r.status_code, r.reason_phrase)
        n = r.headers.get("Content-Length", "")
        return int(n) if n.isdigit() else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> HTTPSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
