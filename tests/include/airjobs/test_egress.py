"""The egress guard (airjobs.egress): which addresses the service may fetch from, in every spelling, at submit
time, at DNS resolution, and through the real HTTP source and staging against real local HTTP servers:
an allowed one on 127.0.0.2 (AIRJOBS_EGRESS_ALLOW) and a "secret" one on 127.0.0.1, where the service
itself listens."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from airjobs import egress, registry, store, submission
from airjobs.egress import EgressRefused
from airjobs.errors import BadRequest, StepError
from airjobs.steps import stage as staging
from airjobs.transports.http import HTTPSource

IP = ipaddress.ip_address

# ---------------------------------------------------------------- spellings

REFUSED = [  # (URL host, the address it names)
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("0x7f.0.0.1", "127.0.0.1"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0177.0000.0.01", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),
    ("127.000.000.001", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("127.0.0.1.", "127.0.0.1"),
    ("127.0.0.1..", "127.0.0.1"),
    ("127.255.255.254", "127.255.255.254"),
    ("%31%32%37.0.0.1", "127.0.0.1"),
    ("\uff11\uff12\uff17\u3002\uff10\uff0e\uff10\uff0e\uff11", "127.0.0.1"),  # full-width digits and dots
    ("[::1]", "::1"),
    ("[0:0:0:0:0:0:0:1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ("[::ffff:7f00:1]", "::ffff:127.0.0.1"),
    ("[0:0:0:0:0:ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ("[::127.0.0.1]", "::127.0.0.1"),  # IPv4-compatible
    ("[::ffff:a9fe:a9fe]", "::ffff:169.254.169.254"),
    ("[fe80::1%25eth0]", "fe80::1%eth0"),
    ("[fe80::1]", "fe80::1"),
    ("0.0.0.0", "0.0.0.0"),
    ("0", "0.0.0.0"),
    ("[::]", "::"),
    ("10.0.0.1", "10.0.0.1"),
    ("172.16.5.4", "172.16.5.4"),
    ("172.31.255.255", "172.31.255.255"),
    ("192.168.1.1", "192.168.1.1"),
    ("169.254.169.254", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("169.254.1.1", "169.254.1.1"),
    ("100.100.100.200", "100.100.100.200"),
    ("100.64.0.1", "100.64.0.1"),
    ("100.127.255.254", "100.127.255.254"),
    ("192.0.0.170", "192.0.0.170"),
    ("198.18.0.1", "198.18.0.1"),
    ("198.19.255.1", "198.19.255.1"),
    ("192.0.2.1", "192.0.2.1"),
    ("198.51.100.7", "198.51.100.7"),
    ("203.0.113.9", "203.0.113.9"),
    ("224.0.0.1", "224.0.0.1"),
    ("239.255.255.250", "239.255.255.250"),
    ("255.255.255.255", "255.255.255.255"),
    ("240.0.0.1", "240.0.0.1"),
    ("[fd00:ec2::254]", "fd00:ec2::254"),
    ("[fc00::1]", "fc00::1"),
    ("[fdff:ffff::1]", "fdff:ffff::1"),
    ("[ff02::1]", "ff02::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("[3fff::1]", "3fff::1"),
    ("[100::1]", "100::1"),  # discard-only: outside global unicast
    ("[2002:7f00:1::1]", "2002:7f00:1::1"),  # 6to4 of 127.0.0.1
    ("[2002:c0a8:101::]", "2002:c0a8:101::"),  # 6to4 of 192.168.1.1
    ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1"),  # NAT64 of 127.0.0.1
    ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe"),  # NAT64 of the metadata endpoint
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "2001:0:4136:e378:8000:63bf:80ff:fffe"),  # Teredo, client 127.0.0.1
    ("[2001:0:a00:1::1]", "2001:0:a00:1::1"),  # Teredo, server 10.0.0.1
]


@pytest.mark.parametrize("host, address", REFUSED, ids=[h for h, _ in REFUSED])
def test_every_spelling_of_a_forbidden_address_is_refused(host, address, monkeypatch):
    monkeypatch.delenv("AIRJOBS_EGRESS_ALLOW", raising=False)
    assert egress.parse_host(host) == IP(address)
    assert not egress.allowed(IP(address))
    url = f"http://{host}:8081/data/x.csv"
    with pytest.raises(EgressRefused) as refused:
        egress.check_url(url)
    assert refused.value.status_code == 400 and isinstance(refused.value, BadRequest)
    assert f"{url} is refused by the egress guard" in refused.value.message
    assert "AIRJOBS_EGRESS_ALLOW" in refused.value.message


def test_messages_say_what_the_address_is():
    def why(host):
        return egress.refusal(egress.parse_host(host))

    assert why("127.1") == "a loopback address"
    assert why("169.254.169.254") == why("[fd00:ec2::254]") == "the cloud metadata endpoint"
    assert why("[::ffff:7f00:1]") == "a loopback address (127.0.0.1) in IPv6 form"
    assert why("[2002:c0a8:101::]") == "a private address (192.168.1.1) tunnelled in IPv6"
    assert why("100.64.1.1") == "a carrier-grade NAT address"


@pytest.mark.parametrize(
    "host",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "134744072",
        "0x08080808",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.1.1",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.255",
        "[2606:4700:4700::1111]",
        "[2a00:1450:4001:80b::200e]",
        "[::ffff:8.8.8.8]",
        "[2002:808:808::1]",
        "[64:ff9b::808:808]",
        "[2001:0:4136:e378:8000:63bf:f7f7:f7f7]",
    ],
)
def test_public_addresses_are_allowed(host, monkeypatch):
    monkeypatch.delenv("AIRJOBS_EGRESS_ALLOW", raising=False)
    ip = egress.parse_host(host)
    assert ip is not None and egress.allowed(ip), egress.refusal(ip)
    egress.check_url(f"https://{host}/data/x.csv")


@pytest.mark.parametrize(
    "host",
    [
        "example.org",
        "data.example.org.",
        "localhost",
        "08.0.0.1",
        "1.2.3.4.5",
        "0x7g.0.0.1",
        "127.0.0.256",
        "4294967296",
        "+127.0.0.1",
        "1_27.0.0.1",
        "\u0661\u0662\u0667.0.0.1",
    ],
)
def test_host_names_are_no_addresses_and_pass_at_submit(host):
    """Names are checked when they are resolved (below), not at submit, where no DNS is done."""
    assert egress.parse_host(host) is None
    egress.check_url(f"http://{host}/x")


def test_a_url_that_does_not_parse_is_a_bad_request_not_a_refusal():
    assert egress.parse_host("[not:an:address]") is None
    with pytest.raises(BadRequest, match="Invalid URL") as raised:
        egress.check_url("http://[not:an:address]/x")
    assert not isinstance(raised.value, EgressRefused)


def test_an_allow_entry_with_a_port_opens_that_port_only(monkeypatch):
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.1:2222,[::1]:2223")
    assert egress.refusal(IP("127.0.0.1"), 2222) is None and egress.refusal(IP("::1"), 2223) is None
    assert egress.refusal(IP("127.0.0.1"), 8080) and egress.refusal(IP("127.0.0.1")) and egress.refusal(IP("::1"), 2222)
    egress.check_url("http://127.0.0.1:2222/x")
    with pytest.raises(EgressRefused):
        egress.check_url("http://127.0.0.1:8080/x")
    egress.check_host("127.0.0.1", 2222)
    with pytest.raises(EgressRefused):
        egress.check_host("127.0.0.1", 22)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "0x7f000001", "10.0.0.5", "169.254.169.254", "[::ffff:127.0.0.1]", "::1"]
)
def test_a_users_system_host_is_refused_when_it_is_or_resolves_inside(host):
    with pytest.raises(EgressRefused):
        egress.check_host(host.strip("[]"), 22)


def test_a_users_system_host_that_does_not_resolve_yet_passes_registration():
    egress.check_host("h.example.invalid", 22)
    egress.check_host("8.8.8.8", 22)


def test_the_allow_list_wins_and_is_read_at_each_call(monkeypatch):
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", " 127.0.0.5, 10.1.0.0/16,fd00:ec2::254 ,not-an-address,")
    assert egress.allowed(IP("127.0.0.5")) and egress.allowed(IP("::ffff:127.0.0.5"))
    assert not egress.allowed(IP("127.0.0.6")) and not egress.allowed(IP("127.0.0.1"))
    assert egress.allowed(IP("10.1.255.3")) and not egress.allowed(IP("10.2.0.1"))
    assert egress.allowed(IP("fd00:ec2::254")) and not egress.allowed(IP("fd00:ec2::253"))
    egress.check_url("http://0x7f000005:9000/x")  # 127.0.0.5
    with pytest.raises(EgressRefused):
        egress.check_url("http://127.0.0.6:9000/x")
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.0/8")
    assert egress.allowed(IP("127.0.0.6")) and not egress.allowed(IP("10.1.255.3"))
    monkeypatch.delenv("AIRJOBS_EGRESS_ALLOW")
    assert not egress.allowed(IP("127.0.0.5"))


# ---------------------------------------------------------------- DNS


def test_names_resolving_to_a_forbidden_address_are_refused(monkeypatch):
    monkeypatch.delenv("AIRJOBS_EGRESS_ALLOW", raising=False)
    with pytest.raises(EgressRefused) as refused:
        egress.resolve_checked("localhost", 8080)
    message = refused.value.message
    assert message.startswith("Connection to localhost:8080 refused by the egress guard: localhost resolves to ")
    assert "a loopback address" in message and "AIRJOBS_EGRESS_ALLOW" in message
    # what the system resolver accepts as a number is checked as the address it is
    for host in ("0x7f000001", "2130706433", "127.1", "0177.0.0.1", "::ffff:127.0.0.1"):
        with pytest.raises(EgressRefused, match="refused by the egress guard"):
            egress.resolve_checked(host, 80)
    with pytest.raises(socket.gaierror):
        egress.resolve_checked("no-such-host.invalid", 80)
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.1,::1")
    assert {info[4][0] for info in egress.resolve_checked("localhost", 8080)} <= {"127.0.0.1", "::1"}


# ---------------------------------------------------------------- this service's own outputs


def test_urls_of_this_services_outputs_are_recognised_and_not_refused(monkeypatch):
    monkeypatch.setenv("AIRJOBS_PORT", "8080")
    monkeypatch.delenv("AIRJOBS_PUBLIC_URL", raising=False)
    job = "0001414144065563-5056a550b8-0001-007"
    for base in (
        "http://localhost:8080",
        "http://LOCALHOST.:8080",
        "http://127.0.0.1:8080",
        "http://127.1:8080",
        "https://0x7f000001:8080",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]:8080",
    ):
        url = f"{base}/jobs/v2/{job}/outputs/media/out/a%20b.txt"
        assert egress.is_service_output_url(url) == (job, "out/a b.txt"), url
        egress.check_url(url)
    for url in (
        f"http://127.0.0.1:8081/jobs/v2/{job}/outputs/media/x",  # another port: another server
        f"http://127.0.0.1:8080/jobs/v2/{job}/outputs/listings/x",
        f"http://127.0.0.1:8080/other/jobs/v2/{job}/outputs/media/x",
        f"http://10.0.0.1:8080/jobs/v2/{job}/outputs/media/x",
        f"ftp://localhost:8080/jobs/v2/{job}/outputs/media/x",
    ):
        assert egress.is_service_output_url(url) is None, url
    with pytest.raises(EgressRefused):
        egress.check_url(f"http://127.0.0.1:8081/jobs/v2/{job}/outputs/media/x")

    monkeypatch.setenv("AIRJOBS_PUBLIC_URL", "https://jobs.example.org/agave/")
    assert egress.is_service_output_url(f"https://jobs.example.org/agave/jobs/v2/{job}/outputs/media/x.txt") == (
        job,
        "x.txt",
    )
    assert egress.is_service_output_url(f"http://jobs.example.org:8080/agave/jobs/v2/{job}/outputs/media/y") == (
        job,
        "y",
    )
    assert egress.is_service_output_url(f"https://jobs.example.org/jobs/v2/{job}/outputs/media/x.txt") is None
    assert egress.is_service_output_url(f"https://jobs.example.org:8443/agave/jobs/v2/{job}/outputs/media/x") is None
    assert egress.is_service_output_url(f"https://other.example.org/agave/jobs/v2/{job}/outputs/media/x") is None


# ---------------------------------------------------------------- the real HTTP source


class Server:
    """A real HTTP server on ``host``: ``/data/...`` answers a body, ``/redirect?to=<url>`` a 302 to it;
    every request is noted in ``requests``."""

    BODY = b"the data\n"

    def __init__(self, host: str):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                target = parse_qs(urlsplit(self.path).query).get("to")
                if target:
                    self.send_response(302)
                    self.send_header("Location", target[0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.BODY if self.path.startswith("/data/") else b"not here"
                self.send_response(200 if self.path.startswith("/data/") else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def redirect(self, to: str, name: str = "x.txt") -> str:
        return f"{self.base}/redirect/{name}?to={to}"


@pytest.fixture(scope="module")
def servers():
    """(the allowed server on 127.0.0.2, the one on 127.0.0.1 that must never be reached)."""
    allowed, secret = Server("127.0.0.2"), Server("127.0.0.1")
    yield allowed, secret
    allowed.httpd.shutdown()
    secret.httpd.shutdown()


@pytest.fixture
def only_127_0_0_2(monkeypatch, servers):
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.2")
    for server in servers:
        server.requests.clear()
    return servers


def _read(url: str) -> bytes:
    with HTTPSource() as source, source.open_read(url) as body:
        return body.read()


def test_a_redirect_to_loopback_is_refused_before_connecting(only_127_0_0_2):
    allowed, secret = only_127_0_0_2
    assert _read(f"{allowed.base}/data/fine.txt") == Server.BODY  # an allowed server is read as before
    url = allowed.redirect(f"http://127.0.0.1:{secret.port}/data/secret.txt")
    with pytest.raises(EgressRefused) as refused:
        _read(url)
    assert refused.value.message == (
        f"{url}: Connection to 127.0.0.1:{secret.port} refused by the egress guard: 127.0.0.1 is a loopback "
        "address. To allow it, add it to AIRJOBS_EGRESS_ALLOW (comma-separated addresses, CIDRs or address:port)."
    )
    assert allowed.requests[-1].startswith("/redirect/") and secret.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/data/s",
        "http://0x7f000001:{port}/data/s",
        "http://127.1:{port}/data/s",
        "http://[::ffff:127.0.0.1]:{port}/data/s",
    ],
)
def test_redirects_to_other_spellings_and_names_of_loopback_are_refused(only_127_0_0_2, target):
    allowed, secret = only_127_0_0_2
    with pytest.raises(EgressRefused, match="refused by the egress guard"):
        _read(allowed.redirect(target.format(port=secret.port)))
    assert secret.requests == []


def test_a_direct_url_naming_loopback_is_refused_at_connect_time_too(only_127_0_0_2):
    """Jobs submitted before the submit-time check, or URLs it lets pass (names), meet the same rule."""
    _, secret = only_127_0_0_2
    for url in (f"http://127.0.0.1:{secret.port}/data/s", f"http://localhost:{secret.port}/data/s"):
        with pytest.raises(EgressRefused):
            _read(url)
    assert secret.requests == []


def test_the_allow_list_also_opens_connections(only_127_0_0_2, monkeypatch):
    """The control for the tests above: allowed, the same redirect reaches the server on 127.0.0.1."""
    allowed, secret = only_127_0_0_2
    monkeypatch.setenv("AIRJOBS_EGRESS_ALLOW", "127.0.0.2,127.0.0.1")
    assert _read(allowed.redirect(f"http://127.0.0.1:{secret.port}/data/secret.txt")) == Server.BODY
    assert secret.requests == ["/data/secret.txt"]


def test_a_proxy_from_the_environment_does_not_bypass_the_guard(only_127_0_0_2, monkeypatch):
    allowed, secret = only_127_0_0_2
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, allowed.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(EgressRefused):
        _read(f"http://127.0.0.1:{secret.port}/data/s")
    assert allowed.requests == [] and secret.requests == []


# ---------------------------------------------------------------- submit and staging

OWNER = "egress-tester"
APP = "egresstest-1.0"


@pytest.fixture(scope="module")
def app(pg):
    registry.put_app(
        {
            "name": "egresstest",
            "version": "1.0",
            "executionSystem": "demo-fork",
            "executionType": "CLI",
            "parallelism": "SERIAL",
            "isPublic": True,
            "deploymentSystem": "demo-storage",
            "deploymentPath": "/apps/wc-1.0",
            "templatePath": "wc.sh",
            "inputs": [{"id": "data", "value": {"required": False}, "semantics": {"maxCardinality": -1}}],
        },
        "admin",
    )
    return APP


def _build(inputs: dict):
    return submission.build_job({"name": "egress test", "appId": APP, "inputs": inputs}, OWNER)


def test_submit_refuses_an_input_url_naming_a_forbidden_address(app, monkeypatch):
    monkeypatch.setenv("AIRJOBS_PORT", "8080")
    with pytest.raises(EgressRefused) as refused:
        _build({"data": ["http://0x7f000001:8081/x.csv"]})
    assert refused.value.status_code == 400
    assert refused.value.message.startswith(
        "Invalid input value for data: http://0x7f000001:8081/x.csv is refused "
        "by the egress guard: its host 0x7f000001 is a loopback address."
    )
    with pytest.raises(EgressRefused, match="the cloud metadata endpoint"):
        _build({"data": ["https://example.org/a.csv", "http://169.254.169.254/latest/meta-data/x"]})
    # names (resolved at staging), public addresses and this service's own outputs are accepted
    job = _build(
        {
            "data": [
                "https://example.org/a.csv",
                "http://8.8.8.8/b.csv",
                "http://localhost:8080/jobs/v2/0001414144065563-5056a550b8-0001-007/outputs/media/c.txt",
            ]
        }
    )
    assert len(job.inputs["data"]) == 3


def test_staging_an_input_redirecting_to_loopback_fails_at_once(app, only_127_0_0_2, monkeypatch):
    monkeypatch.setenv("AIRJOBS_STAGING_BACKOFF_SECONDS", "30")  # a retry would make this test time out
    allowed, secret = only_127_0_0_2
    url = allowed.redirect(f"http://127.0.0.1:{secret.port}/data/secret.txt", "secret.txt")
    job, _ = store.create_job(_build({"data": [url]}), created_by=OWNER)
    t0 = time.monotonic()
    with pytest.raises(StepError, match="refused by the egress guard"):
        staging.stage(job.id)
    assert time.monotonic() - t0 < 10
    job = store.get_job(job.id)
    assert job.status == "FAILED"
    assert job.message == (
        f"Input data: {url}: Connection to 127.0.0.1:{secret.port} refused by the egress guard: 127.0.0.1 is a "
        "loopback address. To allow it, add it to AIRJOBS_EGRESS_ALLOW (comma-separated addresses, CIDRs or "
        "address:port)."
    )
    history = [e.status for e in store.history(job.id, limit=100, offset=0)]
    assert history.count("PROCESSING_INPUTS") == 1 and history[-1] == "FAILED" and "PENDING" not in history[1:]
    assert secret.requests == [] and len(allowed.requests) == 1
