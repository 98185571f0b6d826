"""Webhook delivery (spec §6.2, decision D9): one signed ``POST`` of the job JSON, through the egress guard.

Where airjobs differs from Agave, on purpose (D9): TLS certificates are verified, redirects are NOT followed
(a 3xx is a failed attempt: following one would let a receiver point the service anywhere), and every
delivery is signed twice:

* the Standard Webhooks headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (one ``v1,...``
  per secret: while a secret is rotated the old and the new one both sign, so the receiver may switch at
  any time). ``webhook-id`` is the caller's message id: keep it the same for every attempt of one event
  (receivers de-duplicate on it); ``X-Agave-Delivery`` names the attempt;
* ``X-Airjobs-Signature: sha256=<hex HMAC-SHA256 of the body>``, keyed with the raw bytes of the first
  (current) secret.

Every connection goes through the egress guard (``airjobs.transports.http._GuardedBackend``): the host is
resolved and refused when any address is refused (``localhost`` too), so a webhook cannot reach the
service's loopback, its private network or the cloud metadata endpoint. ``check_url`` refuses the same at
registration. Credentials in the URL (``user:pass@``) are sent as HTTP basic auth (httpx does it from the
URL) and never appear in an error text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import re
import secrets as _secrets
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import standardwebhooks

from airjobs import egress
from airjobs.errors import BadRequest
from airjobs.timeutil import now
from airjobs.transports.http import _GuardedBackend

USER_AGENT = "Agave-Hookbot/airjobs"
TIMEOUT = 15.0
MAX_URL = 1024
#: at most this much of a response body is read, and at most ERROR_BODY of it kept in the error text
MAX_BODY = 64 * 1024
ERROR_BODY = 1024
SECRET_PREFIX = "whsec_"  # noqa: S105 (the secrets' prefix, no secret)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt gave. ``gone``: the receiver answered 410 (disable the notification);
    ``permanent``: no retry can help (the egress guard refused the target, or the URL is unusable);
    ``retry_after``: seconds the receiver asked to wait (429/503 with ``Retry-After``)."""

    ok: bool
    status: int | None = None
    error: str | None = None
    latency_ms: int = 0
    retry_after: float | None = None
    gone: bool = False
    permanent: bool = False


# ---------------------------------------------------------------- signatures


def new_secret() -> str:
    """A new signing secret, ``whsec_`` + base64 of 24 random bytes (the Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode("ascii")


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw + "==")  # as standardwebhooks reads it: padding optional


def sign_headers(secrets: list[str], msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The signature headers of ``body`` (see the module doc). ``secrets``: the current secret first, then
    any still valid during a rotation. A naive ``timestamp`` is taken as UTC."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    ts = timestamp.replace(tzinfo=UTC) if timestamp.tzinfo is None else timestamp.astimezone(UTC)
    text = body.decode("utf-8")
    signatures = [standardwebhooks.Webhook(s).sign(msg_id, ts, text) for s in secrets]
    digest = hmac.new(_key(secrets[0]), body, hashlib.sha256).hexdigest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(ts.timestamp())),
        "webhook-signature": " ".join(signatures),
        "X-Airjobs-Signature": f"sha256={digest}",
    }


# ---------------------------------------------------------------- URLs


def redact(url: str) -> str:
    """``url`` without its ``user:pass@`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/?#]*@", "//", url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _scrub(text: str, url: str) -> str:
    """``text`` with the credentials of ``url`` (as written and percent-decoded) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return text
    if "@" not in parts.netloc:
        return text
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in sorted({userinfo, userinfo.partition(":")[2], password or ""} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _refuse(url: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid callback url {redact(url)}: {why}")


_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def _hosts(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, checked for what no webhook may be; BadRequest otherwise. The host is
    the one httpx will connect to, and must be the one ``urlsplit`` sees too."""
    if not isinstance(url, str) or not url:
        raise BadRequest("Invalid callback url: expected a URL.")
    if len(url) > MAX_URL:
        raise BadRequest(f"Invalid callback url: longer than {MAX_URL} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _refuse(url, f"{e}.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _refuse(url, "only http:// and https:// URLs can be webhooks.")
    authority = parts.netloc.rpartition("@")[2]
    if _BAD_CHARS.search(url):
        raise _refuse(url, "it contains spaces or control characters.")
    if "\\" in parts.netloc:  # some parsers read it as "/": the host would be another one
        raise _refuse(url, "its host part contains a backslash.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse(url, "it names no host.")
    if "${" in authority:
        raise _refuse(url, "macros are not resolved in the host or port of a webhook URL.")
    return host, port or (443 if parts.scheme.lower() == "https" else 80)


def _same_host(url: str, host: str) -> None:
    """BadRequest unless httpx, which will connect, reads the host ``urlsplit`` saw (checked) in ``url``."""
    try:
        seen = httpx.URL(url).raw_host.decode("ascii").rstrip(".").lower()
    except (httpx.InvalidURL, ValueError) as e:
        raise _refuse(url, f"{e}.") from None
    checked = host.rstrip(".").lower()
    try:
        checked = checked.encode("idna").decode("ascii")
    except UnicodeError:
        pass
    ip = egress.parse_host(seen)
    if seen != checked and (ip is None or ip != egress.parse_host(host)):
        raise _refuse(url, "its host is ambiguous.")


def _literal_refusal(host: str, port: int) -> str | None:
    """Why a host is refused without asking DNS: an address in any spelling (``egress.parse_host``) or a
    ``localhost`` name (RFC 6761: always loopback, whatever a resolver says), None when it is not."""
    name = host.lower()
    ip = egress.parse_host(host)
    if ip is None and (name == "localhost" or name.endswith(".localhost")):
        ip = ipaddress.IPv4Address("127.0.0.1")
    why = egress.refusal(ip, port) if ip is not None else None
    return f"{host} is {why}" if why else None


def check_url(url: str) -> None:
    """Refuse (BadRequest) a webhook URL at registration: not http(s), no host, longer than 1024 characters,
    a host the egress guard refuses in any spelling (``127.1``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, with
    or without ``user:pass@`` before it), a ``localhost`` name, or a name that resolves NOW to a refused
    address. A name that does not resolve passes: every delivery checks again when it connects. Unlike
    ``egress.check_url`` no URL of the service's own outputs is let through."""
    host, port = _hosts(url)
    why = _literal_refusal(host, port)
    if why:
        raise egress.EgressRefused(f"{_refused(url, why)} {egress.HOW_TO_ALLOW}")
    _same_host(url, host)
    if egress.parse_host(host) is None:
        try:
            egress.resolve_checked(host, port)
        except egress.EgressRefused as e:
            raise egress.EgressRefused(f"Invalid callback url {redact(url)}: {e.message}") from None
        except (OSError, UnicodeError):  # socket.gaierror: does not resolve (yet)
            pass


def _refused(url: str, why: str) -> str:
    return f"Invalid callback url {redact(url)}: refused by the egress guard: {why}."


# ---------------------------------------------------------------- delivery


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read, write and TLS handshake ends by one deadline: ``timeout`` is the
    whole attempt's, not each read's (a receiver trickling bytes cannot hold a delivery)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float):
        self._stream, self._deadline = stream, deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the delivery's time is up")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(_GuardedBackend):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ConnectTimeout("the delivery's time is up")
        timeout = left if timeout is None else min(timeout, left)
        stream = super().connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)


_ssl_lock = threading.Lock()
_ssl_context: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    """httpx's default verifying TLS context (certifi's CAs), made once: loading the CA bundle is slow."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


class _WebhookTransport(httpx.HTTPTransport):
    """Like ``airjobs.transports.http._GuardedTransport`` (egress-guarded connections, verified TLS), with one
    deadline for the whole attempt; one per delivery."""

    def __init__(self, deadline: float) -> None:
        ssl_context = _tls()
        super().__init__(verify=ssl_context)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, max_connections=1, keepalive_expiry=0.0, network_backend=_DeadlineBackend(deadline)
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header (delay-seconds or an HTTP date), None when absent or unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def _egress_refusal(e: BaseException) -> egress.EgressRefused | None:
    """The guard's refusal behind ``e`` (httpx or httpcore may have wrapped it), None when there is none."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, egress.EgressRefused):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _read_some(response: httpx.Response) -> bytes:
    """At most MAX_BODY bytes of the response body, as sent (the request asked for no compression, and
    raw bytes are counted, so a compressed body cannot expand past the bound)."""
    got = b""
    for chunk in response.iter_raw(8192):
        got += chunk
        if len(got) >= MAX_BODY:
            break
    return got[:MAX_BODY]


def _answer(response: httpx.Response, body: bytes) -> str:
    text = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    excerpt = body[:ERROR_BODY].decode("utf-8", "replace").strip()
    return f"{text}: {excerpt}" if excerpt else text


def _network_error(e: BaseException) -> str:
    if isinstance(e, httpx.TimeoutException):
        return f"timed out ({type(e).__name__}{': ' + str(e) if str(e) else ''})"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def deliver(
    url: str,
    body: bytes,
    *,
    msg_id: str,
    secrets: list[str],
    notification_id: str,
    attempt_id: str,
    timeout: float = TIMEOUT,
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """POST ``body`` (JSON) to ``url`` (macros already resolved) once and say how it went; never raises for
    what the receiver or the network does. ``timeout`` bounds the whole attempt (connect, TLS, sending,
    the answer) when the default transport is used; a given ``transport`` (tests) gets httpx's per-phase
    timeouts only. 2xx is success; 3xx is a failure (redirects are not followed); 410 is ``gone``;
    429/503 give ``retry_after`` from ``Retry-After``; a refusal of the egress guard or an unusable URL
    is ``permanent``."""
    start = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - start) * 1000)

    def failed(error: str, **kw: Any) -> Outcome:
        return Outcome(ok=False, error=_scrub(error, url), latency_ms=took(), **kw)

    try:
        host, port = _hosts(url)
        why = _literal_refusal(host, port)
        if why:
            raise egress.EgressRefused(_refused(url, why))
        _same_host(url, host)
    except BadRequest as e:
        return failed(e.message, permanent=True)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        "X-Agave-Delivery": attempt_id,
        "X-Agave-Notification": notification_id,
        **sign_headers(secrets, msg_id, now(), body),
    }
    try:
        client = httpx.Client(
            transport=transport or _WebhookTransport(start + timeout),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            trust_env=False,  # no proxy nor .netrc from the environment: nothing connects past the guard
        )
        with client, client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
            if response.is_success:
                return Outcome(ok=True, status=status, latency_ms=took())
            answer = _answer(response, _read_some(response))
            if response.is_redirect:
                location = redact(response.headers.get("Location", ""))[:MAX_URL]
                return failed(f"{answer[:ERROR_BODY]}; redirect to {location} not followed", status=status)
            retry_after = _retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
            return failed(answer, status=status, retry_after=retry_after, gone=status == 410)
    except Exception as e:  # the receiver and the network may do anything: report it, never raise
        refused = _egress_refusal(e)
        if refused is not None:
            return failed(refused.message, permanent=True)
        if isinstance(e, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return failed(f"Invalid callback url {redact(url)}: {e}", permanent=True)
        return failed(_network_error(e))
