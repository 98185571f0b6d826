"""The egress guard: the service fetches ``http(s)://`` inputs for its users, so without it a job input could
make the service read its own loopback, the private network it runs in or the cloud metadata endpoint.

Two checks, one rule (``allowed``):

* at submit time ``check_url`` refuses a URL whose host *literally* names a refused address, in any spelling
  a resolver or browser accepts (``127.1``, ``0x7f000001``, ``2130706433``, ``[::ffff:127.0.0.1]`` ...), so
  the user gets a 400 at once; no DNS is done there;
* at connect time ``resolve_checked`` resolves the host and refuses it when ANY of its addresses is refused;
  the HTTP source (``airjobs.transports.http``) then connects to one of those checked addresses itself, for
  the first request and every redirect, so neither a redirect nor a DNS answer that changes between check
  and connect (rebinding) gets past it.

``AIRJOBS_EGRESS_ALLOW`` (comma-separated addresses or CIDRs, read at each call) lets addresses through whatever
the rule says: e.g. a data server on the private network, or the test suite's local servers on 127.0.0.2.

URLs naming this service's own job outputs (``is_service_output_url``) are not fetched over HTTP at all but
read inside the service, so ``check_url`` lets them pass.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import unicodedata
from typing import Any
from urllib.parse import unquote, urlsplit

from airjobs.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
log = logging.getLogger(__name__)

ALLOW_VAR = "AIRJOBS_EGRESS_ALLOW"
HOW_TO_ALLOW = f"To allow it, add it to {ALLOW_VAR} (comma-separated addresses, CIDRs or address:port)."


class EgressRefused(BadRequest):
    """A URL or connection names an address the service may not reach; a 400 at submit, and a permanent
    staging error (retrying cannot change the rule)."""


# ---------------------------------------------------------------- what a host names


_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")  # hex, octal (and 0), decimal; ASCII only


def _ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of inet_aton / the WHATWG URL standard: 1 to 4 parts, each decimal, octal (leading
    0) or hex (0x); the last part fills the remaining bytes (``127.1`` = 127.0.0.1, ``2130706433``)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    numbers = [
        int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if len(p) > 1 and p[0] == "0" else 10)
        for p in parts
    ]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def parse_host(host: str) -> IPAddress | None:
    """The IP address a URL host names literally, in any spelling (see ``_ipv4``; trailing dots,
    percent-encoding and full-width characters too, as browsers and resolvers accept them; IPv6 with or
    without brackets, with a zone id); None for a host name (or anything that is no address)."""
    host = unquote(host.strip())
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    host = unicodedata.normalize("NFKC", host).translate({0x3002: ".", 0xFF61: "."}).rstrip(".")
    return _ipv4(host)


# ---------------------------------------------------------------- the rule

_N = ipaddress.ip_network
#: refused IPv4 networks (IANA special-purpose registry), the most specific first so messages name them
_V4: list[tuple[ipaddress.IPv4Network, str]] = [
    (ipaddress.IPv4Network("169.254.169.254/32"), "the cloud metadata endpoint"),
    (ipaddress.IPv4Network("100.100.100.200/32"), "a cloud metadata endpoint"),
    (ipaddress.IPv4Network("0.0.0.0/8"), "an unspecified ('this network') address"),
    (ipaddress.IPv4Network("10.0.0.0/8"), "a private address"),
    (ipaddress.IPv4Network("100.64.0.0/10"), "a carrier-grade NAT address"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.IPv4Network("172.16.0.0/12"), "a private address"),
    (ipaddress.IPv4Network("192.0.0.0/24"), "an IETF protocol assignment"),
    (ipaddress.IPv4Network("192.0.2.0/24"), "a documentation address"),
    (ipaddress.IPv4Network("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (ipaddress.IPv4Network("192.168.0.0/16"), "a private address"),
    (ipaddress.IPv4Network("198.18.0.0/15"), "a benchmarking address"),
    (ipaddress.IPv4Network("198.51.100.0/24"), "a documentation address"),
    (ipaddress.IPv4Network("203.0.113.0/24"), "a documentation address"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "the broadcast address"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "a reserved address"),
]
#: refused IPv6 networks inside global unicast 2000::/3 (everything outside it is refused anyway), and
#: the special addresses outside it that deserve their own name in messages
_V6: list[tuple[ipaddress.IPv6Network, str]] = [
    (ipaddress.IPv6Network("::/128"), "the unspecified address"),
    (ipaddress.IPv6Network("::1/128"), "the loopback address"),
    (ipaddress.IPv6Network("fd00:ec2::254/128"), "the cloud metadata endpoint"),
    (ipaddress.IPv6Network("fc00::/7"), "a private (unique local) address"),
    (ipaddress.IPv6Network("fe80::/10"), "a link-local address"),
    (ipaddress.IPv6Network("ff00::/8"), "a multicast address"),
    (ipaddress.IPv6Network("2001:db8::/32"), "a documentation address"),
    (ipaddress.IPv6Network("3fff::/20"), "a documentation address"),
    (ipaddress.IPv6Network("2001:2::/48"), "a benchmarking address"),
    (ipaddress.IPv6Network("2001::/23"), "an IETF protocol assignment"),
]
_GLOBAL_UNICAST = _N("2000::/3")
_COMPATIBLE = _N("::/96")  # ::a.b.c.d, IPv4-compatible (deprecated)
_NAT64 = _N("64:ff9b::/96")  # the well-known NAT64 prefix: the IPv4 address is the last 32 bits
_TEREDO = _N("2001::/32")


Allowed = list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]]


def _allow_list() -> Allowed:
    """``AIRJOBS_EGRESS_ALLOW`` entries: an address or CIDR (any port), or ``address:port`` / ``[v6]:port``
    (that port only, e.g. a test host's sshd on loopback without opening the rest of loopback)."""
    nets: Allowed = []
    for entry in filter(None, (e.strip() for e in os.environ.get(ALLOW_VAR, "").split(","))):
        host, port = entry, None
        m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:\[\]]+):(\d+)", entry)
        if m:
            host, port = (m.group(1) or m.group(3)), int(m.group(2) or m.group(4))
        try:
            nets.append((ipaddress.ip_network(host, strict=False), port))
        except ValueError:
            log.warning("%s: %r is neither an address, a CIDR nor address:port; ignored", ALLOW_VAR, entry)
    return nets


def _refusal(ip: IPAddress, allow: Allowed, port: int | None = None) -> str | None:
    """Why the service may not connect to ``ip`` (at ``port``, when known) (a phrase for messages), None when
    it may."""
    if any(ip in net and (only is None or only == port) for net, only in allow):
        return None
    if ip.version == 4:
        return next((why for net, why in _V4 if ip in net), None)
    embedded = ip.ipv4_mapped or (
        ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if (ip in _COMPATIBLE and int(ip) > 1) or ip in _NAT64 else None
    )
    if embedded is not None:
        why = _refusal(embedded, allow, port)
        return why and f"{why} ({embedded}) in IPv6 form"
    tunnelled = [ip.sixtofour] if ip.sixtofour else list(ip.teredo or ())
    for v4 in tunnelled:
        if why := _refusal(v4, allow, port):
            return f"{why} ({v4}) tunnelled in IPv6"
    if ip in _TEREDO:  # its IPv4 addresses were fine: the rest of 2001::/23 does not apply
        return None
    why = next((why for net, why in _V6 if ip in net), None)
    return why or (None if ip in _GLOBAL_UNICAST else "a reserved address (not global unicast)")


def refusal(ip: IPAddress, port: int | None = None) -> str | None:
    """Why ``ip`` is refused ("a loopback address", ...), None when the service may connect to it."""
    return _refusal(ip, _allow_list(), port)


def allowed(ip: IPAddress) -> bool:
    """May the service connect to ``ip``? No for loopback, private, link-local, multicast, unspecified,
    reserved, broadcast, carrier-grade NAT, cloud metadata, IETF, benchmarking and documentation
    addresses, IPv6 outside global unicast, and IPv4-mapped/compatible, NAT64, 6to4 or Teredo IPv6 whose
    IPv4 address is one of those; yes otherwise, and always for addresses in AIRJOBS_EGRESS_ALLOW."""
    return refusal(ip) is None


# ---------------------------------------------------------------- URLs and connections


def _default_port(scheme: str) -> int:
    return 443 if scheme.lower() == "https" else 80


def _service_port() -> int:
    return int(os.environ.get("AIRJOBS_PORT", "8080"))


def _public() -> tuple[str, int, str] | None:
    """(host, port, path prefix) of AIRJOBS_PUBLIC_URL, None when unset or unusable."""
    try:
        public = urlsplit(os.environ.get("AIRJOBS_PUBLIC_URL", ""))
        port = public.port or _default_port(public.scheme)
    except ValueError:
        return None
    return (public.hostname.rstrip("."), port, public.path.rstrip("/")) if public.hostname else None


_OUTPUT_PATH = re.compile(r"/jobs/v2/([^/]+)/outputs/media/(.*)")


def is_service_output_url(url: str) -> tuple[str, str] | None:
    """``(job id, path)`` when ``url`` names one of this service's job outputs,
    ``http(s)://<this service>/jobs/v2/<job id>/outputs/media/<path>`` (both percent-decoded; the path is
    relative to the job's output root and not yet confined to it); None otherwise. This service is
    ``localhost`` or any loopback address at port AIRJOBS_PORT (default 8080), or the host of
    AIRJOBS_PUBLIC_URL at that URL's port or AIRJOBS_PORT (the URL's path, if any, prefixes the routes)."""
    try:
        parts = urlsplit(url)
        port = parts.port or _default_port(parts.scheme)
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    ip = parse_host(host)
    loopback = host == "localhost" or (
        ip is not None
        and (ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback))
    )
    public = _public()
    if loopback and port == _service_port():
        prefix = ""
    elif public and host == public[0] and port in (public[1], _service_port()):
        prefix = public[2]
    else:
        return None
    m = _OUTPUT_PATH.fullmatch(parts.path[len(prefix) :]) if parts.path.startswith(prefix) else None
    return (unquote(m.group(1)), unquote(m.group(2))) if m else None


def check_url(url: str) -> None:
    """Raise EgressRefused when the host of ``url`` literally names an address the service may not reach
    (see ``allowed``). Host names pass: they are checked when resolved (``resolve_checked``). URLs of this
    service's own outputs pass too: they are read inside the service."""
    if is_service_output_url(url):
        return
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _default_port(parts.scheme)
    except ValueError as e:
        raise BadRequest(f"Invalid URL {url}: {e}.") from None
    ip = parse_host(host) if host else None
    why = refusal(ip, port) if ip is not None else None
    if why:
        raise EgressRefused(f"{url} is refused by the egress guard: its host {host} is {why}. {HOW_TO_ALLOW}")


def resolve_checked(host: str, port: int) -> list[tuple[Any, ...]]:
    """``socket.getaddrinfo(host, port)`` (TCP) when every address the host resolves to is allowed; one
    refused address refuses the host (EgressRefused), whichever one a connection would have picked.
    ``socket.gaierror`` when it does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allow = _allow_list()
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if why := _refusal(ip, allow, port):
            named = f"{ip} is" if parse_host(host) == ip else f"{host} resolves to {ip}, which is"
            raise EgressRefused(
                f"Connection to {host}:{port} refused by the egress guard: {named} {why}. {HOW_TO_ALLOW}"
            )
    return infos


def check_host(host: str, port: int) -> None:
    """For a host a non-admin names in a system (SSH/SFTP): refused when it literally is, or now resolves to,
    an address the service may not reach (the service would connect there with the user's credentials, so
    loopback sshd, the database or cloud metadata would be one registration away). A name that does not
    resolve yet passes; the SSH transport checks again at every connection (``resolve_checked``)."""
    ip = parse_host(host)
    if ip is not None:
        if why := refusal(ip, port):
            raise EgressRefused(f"Host {host} is refused by the egress guard: it is {why}. {HOW_TO_ALLOW}")
        return
    try:
        resolve_checked(host, port)
    except (socket.gaierror, UnicodeError):
        return
