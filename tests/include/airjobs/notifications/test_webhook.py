"""Webhook delivery against a real HTTP receiver on 127.0.0.2 (the address the test suite's
AIRJOBS_EGRESS_ALLOW lets through), and the egress guard keeping deliveries away from 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks

from airjobs import tls
from airjobs.errors import BadRequest
from airjobs.notifications import webhook
from airjobs.notifications.webhook import Outcome, check_url, deliver, new_secret, sign_headers

OLD, NEW = new_secret(), new_secret()
BODY = json.dumps({"id": "0001-abc-0001-007", "status": "FINISHED", "name": "ü & <b>"}).encode()


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that give up (timeouts, refused certificates) are what several tests do


class Receiver:
    """A ThreadingHTTPServer recording (method, path, headers, body) and answering per path."""

    def __init__(self, host: str = "127.0.0.2", context: ssl.SSLContext | None = None):
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.trap_port = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name.replace("_", "-"), value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeouts, bounded reads)
                    self.close_connection = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(("POST", self.path, dict(self.headers.items()), body))
                path = self.path.split("?")[0]
                if path == "/ok":
                    self._answer(200, b'{"ok": true}')
                elif path == "/accepted":
                    self._answer(202)
                elif path == "/gone":
                    self._answer(410, b"no such hook")
                elif path == "/busy":
                    self._answer(503, b"later", Retry_After="7")
                elif path == "/busy-date":
                    when = datetime.now(UTC) + timedelta(seconds=120)
                    self._answer(429, b"", Retry_After=when.strftime("%a, %d %b %Y %H:%M:%S GMT"))
                elif path == "/redirect-out":
                    self._answer(302, Location=f"http://127.0.0.1:{receiver.trap_port}/stolen")
                elif path == "/redirect-in":
                    self._answer(307, Location=f"http://user:pw-in-location@{receiver.base_host}/ok")
                elif path == "/error":
                    self._answer(500, b"E" * 200_000)
                elif path == "/slow":
                    time.sleep(3)
                    self._answer(200)
                elif path == "/trickle":  # each byte well within 1 s, the whole answer not
                    try:
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 12:
                            self.wfile.write(bytes([byte]))
                            time.sleep(0.25)
                    except OSError:
                        pass
                    self.close_connection = True
                else:
                    self._answer(404, b"not here")

        self.httpd = _QuietServer((host, 0), Handler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base_host = f"{host}:{self.port}"
        self.base = f"{'https' if context else 'http'}://{self.base_host}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]


class Trap:
    """A listener on 127.0.0.1 (refused by the guard) counting the connections that reach it: none may."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def seen(self) -> int:
        """Connections so far (a connection the kernel accepted reaches the count within moments)."""
        time.sleep(0.1)
        return self.connections

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def trap():
    t = Trap()
    yield t
    t.sock.close()


@pytest.fixture(scope="module")
def server(trap):
    r = Receiver()
    r.trap_port = trap.port
    yield r
    r.httpd.shutdown()


@pytest.fixture(autouse=True)
def _fresh(request, monkeypatch):
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.2")
    for name in ("server", "trap"):
        if name in request.fixturenames:
            fixture = request.getfixturevalue(name)
            if name == "server":
                fixture.requests.clear()
            else:
                fixture.connections = 0


def send(url: str, **kw) -> Outcome:
    kw.setdefault("secrets", [NEW, OLD])
    return deliver(url, BODY, msg_id="msg_1", notification_id="N-1", attempt_id="A-1", **kw)


# ---------------------------------------------------------------- signing


def test_new_secret():
    s = new_secret()
    assert s.startswith("whsec_") and len(base64.b64decode(s[6:])) == 24 and s != new_secret()


def test_sign_headers_verify_with_both_secrets_of_a_rotation():
    ts = datetime.now(UTC)
    headers = sign_headers([NEW, OLD], "msg_2", ts, BODY)
    assert headers["webhook-id"] == "msg_2"
    assert headers["webhook-timestamp"] == str(int(ts.timestamp()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(sig.startswith("v1,") for sig in headers["webhook-signature"].split(" "))
    for secret in (NEW, OLD):
        assert standardwebhooks.Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(NEW).verify(BODY + b" ", headers)
    expected = hmac.new(base64.b64decode(NEW[6:]), BODY, hashlib.sha256).hexdigest()
    assert headers["X-Airjobs-Signature"] == f"sha256={expected}"  # the current (first) secret only


def test_sign_headers_timestamp_in_any_zone():
    ts = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    east = ts.astimezone(__import__("datetime").timezone(timedelta(hours=5)))
    assert sign_headers([NEW], "m", east, BODY) == sign_headers([NEW], "m", ts, BODY)
    assert sign_headers([NEW], "m", ts.replace(tzinfo=None), BODY) == sign_headers([NEW], "m", ts, BODY)
    with pytest.raises(ValueError):
        sign_headers([], "m", ts, BODY)


# ---------------------------------------------------------------- delivery


def test_delivery_headers_body_and_signatures(server):
    out = send(f"{server.base}/ok?x=1")
    assert out.ok and out.status == 200 and out.error is None and not out.gone and not out.permanent
    assert out.latency_ms >= 0
    [(method, path, headers, body)] = server.requests
    assert (method, path, body) == ("POST", "/ok?x=1", BODY)
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["content-type"] == "application/json"
    assert lower["user-agent"] == "Agave-Hookbot/airjobs"
    assert lower["x-agave-delivery"] == "A-1"
    assert lower["x-agave-notification"] == "N-1"
    assert lower["webhook-id"] == "msg_1"
    assert "authorization" not in lower
    for secret in (NEW, OLD):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(body, headers)
    key = base64.b64decode(NEW[len("whsec_") :])
    assert lower["x-airjobs-signature"] == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def test_any_2xx_is_success(server):
    out = send(f"{server.base}/accepted")
    assert out.ok and out.status == 202


def test_gone(server):
    out = send(f"{server.base}/gone")
    assert not out.ok and out.gone and out.status == 410 and not out.permanent
    assert out.error == "HTTP 410 Gone: no such hook"


def test_retry_after_seconds(server):
    out = send(f"{server.base}/busy")
    assert not out.ok and out.status == 503 and out.retry_after == 7.0 and not out.gone
    assert "later" in out.error


def test_retry_after_http_date(server):
    out = send(f"{server.base}/busy-date")
    assert out.status == 429 and 100 < out.retry_after <= 121


def test_error_body_is_bounded(server):
    out = send(f"{server.base}/error")
    assert not out.ok and out.status == 500 and out.retry_after is None
    assert out.error.startswith("HTTP 500 Internal Server Error: EEEE")
    assert len(out.error) < 1100


def test_not_found(server):
    out = send(f"{server.base}/nowhere")
    assert not out.ok and out.status == 404 and not out.permanent


def test_redirect_is_not_followed(server, trap):
    out = send(f"{server.base}/redirect-out")
    assert not out.ok and out.status == 302
    assert f"redirect to http://127.0.0.1:{trap.port}/stolen not followed" in out.error
    out = send(f"{server.base}/redirect-in")
    assert not out.ok and out.status == 307
    assert f"redirect to http://{server.base_host}/ok not followed" in out.error
    assert "pw-in-location" not in out.error
    assert server.paths() == ["/redirect-out", "/redirect-in"]  # never /ok
    assert trap.seen() == 0


def test_timeout(server):
    t0 = time.monotonic()
    out = send(f"{server.base}/slow", timeout=1)
    assert not out.ok and out.status is None and not out.permanent
    assert "timed out" in out.error
    assert time.monotonic() - t0 < 2.5 and 900 <= out.latency_ms < 2500


def test_timeout_is_for_the_whole_attempt(server):
    t0 = time.monotonic()
    out = send(f"{server.base}/trickle", timeout=1)
    assert not out.ok and "timed out" in out.error
    assert time.monotonic() - t0 < 2.0


def test_connection_refused_is_retryable():
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    out = send(f"http://user:hunter2-secret@127.0.0.2:{port}/ok")
    assert not out.ok and not out.permanent and out.status is None
    assert out.error and "hunter2-secret" not in out.error


def test_basic_auth_from_the_url_never_in_errors(server):
    out = send(f"http://hook-user:s3cr%40t-pw@{server.base_host}/ok")
    assert out.ok
    auth = {k.lower(): v for k, v in server.requests[-1][2].items()}["authorization"]
    assert auth == "Basic " + base64.b64encode(b"hook-user:s3cr@t-pw").decode()
    out = send(f"http://hook-user:s3cr%40t-pw@{server.base_host}/gone")
    assert out.gone and "s3cr" not in out.error and "hook-user" not in out.error


def test_tls_is_verified(tmp_path):
    cert = tls.self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.cert, cert.key)
    r = Receiver(context=context)
    try:
        out = send(f"{r.base}/ok")
        assert not out.ok and not out.permanent and out.status is None
        assert "CERTIFICATE_VERIFY_FAILED" in out.error or "certificate" in out.error.lower()
        assert r.requests == []
    finally:
        r.httpd.shutdown()


REFUSED = [
    "127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "0x7f000001",
    "2130706433",
    "127.1",
    "[::ffff:127.0.0.1]",
    "localhost",
    "LOCALHOST.",
    "hooks.localhost",
    "[::1]",
    "0177.0.0.1",
    "0",
    "a@b@127.0.0.1",
    "h.example;@127.0.0.1",
    "%31%32%37.0.0.1",
    "１２７.0.0.1",
    "[::ffff:7f00:1]",
]


@pytest.mark.parametrize("host", REFUSED)
def test_refused_hosts(host, trap):
    url = f"http://user:pa55word-x@{host}:{trap.port}/hook"
    with pytest.raises(BadRequest) as e:
        check_url(url)
    assert e.value.status_code == 400 and "egress guard" in e.value.message
    assert "pa55word-x" not in e.value.message
    out = send(url)
    assert not out.ok and out.permanent and out.status is None
    assert "egress guard" in out.error and "pa55word-x" not in out.error
    assert trap.seen() == 0


def test_refused_at_connect_time_too(trap, monkeypatch):
    """A name that resolves to loopback only at delivery (rebinding): the guard refuses it when connecting."""
    real = socket.getaddrinfo

    def fake(host, port, *args, **kw):
        if host == "rebound.example.org":
            return real("127.0.0.1", port, *args, **kw)
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    out = send(f"http://rebound.example.org:{trap.port}/hook")
    assert not out.ok and out.permanent and "egress guard" in out.error
    assert trap.seen() == 0
    with pytest.raises(BadRequest, match=r"resolves to 127\.0\.0\.1"):
        check_url(f"http://rebound.example.org:{trap.port}/hook")


def test_allowed_host_works(server):
    check_url(f"{server.base}/ok")
    check_url(f"https://u:p@{server.base_host}/ok?job=${{JOB_ID}}")
    check_url("https://does-not-resolve.invalid/hook")  # checked again when delivering
    assert send(f"{server.base}/ok").ok


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "mailto:alice@example.org",
        "http:///x",
        "http://",
        "example.org/hook",
        "https://example.org/" + "x" * 1024,
        "http://exa mple.org/x",
        "http://example.org\\@127.0.0.2/x",
        "http://${JOB_NAME}.example.org/x",
        "http://example.org:99999/x",
        "",
    ],
)
def test_bad_urls(url):
    with pytest.raises(BadRequest):
        check_url(url)
    out = send(url)
    assert not out.ok and out.permanent


def test_httpx_and_urlsplit_must_agree_on_the_host():
    webhook._same_host("http://u@h.example/x", "h.example")
    webhook._same_host("http://0x7f000002/x", "0x7f000002")
    webhook._same_host("http://bücher.example/x", "bücher.example")
    webhook._same_host("http://xn--bcher-kva.example/x", "xn--bcher-kva.example")
    webhook._same_host("http://[::FFFF:7f00:2]/x", "::ffff:7f00:2")
    with pytest.raises(BadRequest, match="ambiguous"):
        webhook._same_host("http://h.example/x", "other.example")


def test_no_userinfo_in_redact():
    assert webhook.redact("https://u:p@h.example:1/x?y#z") == "https://h.example:1/x?y#z"
    assert webhook.redact("https://h.example/x") == "https://h.example/x"
