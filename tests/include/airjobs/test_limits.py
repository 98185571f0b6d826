"""Request limits (issue 10): the ASGI middleware around a tiny app, the JSON depth scanner, the login
throttle with a fake clock."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from airjobs import SERVICE_VERSION
from airjobs.api import limits
from airjobs.api.limits import RequestLimits, check_json_depth, json_depth, too_deep
from airjobs.api.throttle import LoginThrottle, client_address
from airjobs.errors import BadRequest

# ---------------------------------------------------------------- the middleware


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    form = {}
    if request.headers.get("content-type", "").startswith(("multipart/", "application/x-www-form")):
        form = {k: len(v) if isinstance(v, str) else "file" for k, v in (await request.form()).items()}
    return JSONResponse({"size": len(body), "path": request.url.path, "form": form})


def make_client(**kwargs) -> TestClient:
    app = Starlette(routes=[Route("/{rest:path}", echo, methods=["GET", "POST", "PUT"])])
    return TestClient(RequestLimits(app, **{"max_body": 1000, "body_timeout": 5, **kwargs}))


def envelope(r, code: int) -> str:
    assert r.status_code == code, r.text
    body = r.json()
    assert body["status"] == "error" and body["version"] == SERVICE_VERSION
    return body["message"]


def test_bodies_up_to_the_limit_pass_and_larger_ones_are_413():
    with make_client() as c:
        assert c.post("/jobs/v2", content=b"x" * 1000).json()["size"] == 1000
        message = envelope(c.post("/jobs/v2", content=b"x" * 1001), 413)
        assert "1000 bytes" in message and "AIRJOBS_MAX_BODY_BYTES" in message
        envelope(c.post("/jobs/v2", data={"a": "y" * 2000}), 413)
        envelope(c.post("/jobs/v2", files={"fileToUpload": ("j.json", b"{" * 2000, "application/json")}), 413)
        assert c.post("/jobs/v2", data={"a": "y" * 10}).json()["form"] == {"a": 10}
        assert c.get("/jobs/v2").json()["size"] == 0


def test_the_default_limit_is_1_mib_and_set_by_the_environment(monkeypatch):
    monkeypatch.delenv("AIRJOBS_MAX_BODY_BYTES", raising=False)
    monkeypatch.delenv("AIRJOBS_BODY_TIMEOUT_SECONDS", raising=False)
    m = RequestLimits(None)
    assert m.max_body == 1048576 and m.body_timeout == 30
    monkeypatch.setenv("AIRJOBS_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("AIRJOBS_BODY_TIMEOUT_SECONDS", "2.5")
    m = RequestLimits(None)
    assert m.max_body == 2048 and m.body_timeout == 2.5
    monkeypatch.setenv("AIRJOBS_MAX_BODY_BYTES", "lots")
    with pytest.raises(ValueError, match="AIRJOBS_MAX_BODY_BYTES"):
        RequestLimits(None)


class Wire:
    """A fake server side: ``receive`` hands out the given messages (a float: wait that long first)."""

    def __init__(self, *messages):
        self.messages = list(messages)
        self.received = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        while self.messages:
            m = self.messages.pop(0)
            if isinstance(m, (int, float)):
                await asyncio.sleep(m)
                continue
            self.received += 1
            return m
        await asyncio.sleep(3600)  # the client sends nothing more
        raise AssertionError("unreachable")

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def scope(path="/jobs/v2", headers=(), query=b"", raw_path=None) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": raw_path or path.encode(),
        "query_string": query,
        "headers": list(headers),
        "http_version": "1.1",
    }


class Recorder:
    def __init__(self):
        self.calls = 0
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(app, sc, wire):
    asyncio.run(app(sc, wire.receive, wire.send))


def test_content_length_over_the_limit_is_refused_without_reading_the_body():
    inner = Recorder()
    wire = Wire({"type": "http.request", "body": b"x" * 10, "more_body": True})
    run(RequestLimits(inner, max_body=1000, body_timeout=5), scope(headers=[(b"content-length", b"10485760")]), wire)
    assert wire.status == 413 and wire.received == 0 and inner.calls == 0
    assert wire.headers[b"connection"] == b"close"
    assert "1000 bytes" in wire.body["message"]


def test_chunked_bodies_are_counted_as_they_arrive_and_stopped_at_the_limit():
    inner = Recorder()
    chunks = [{"type": "http.request", "body": b"y" * 300, "more_body": True} for _ in range(100)]
    wire = Wire(*chunks)
    run(RequestLimits(inner, max_body=1000, body_timeout=5), scope(headers=[(b"transfer-encoding", b"chunked")]), wire)
    assert wire.status == 413 and wire.received == 4 and inner.calls == 0  # 1200 > 1000 after the 4th chunk
    # within the limit: the app gets the whole body in one piece
    inner = Recorder()
    wire = Wire(*chunks[:3], {"type": "http.request", "body": b"z", "more_body": False})
    run(RequestLimits(inner, max_body=1000, body_timeout=5), scope(), wire)
    assert wire.status == 200 and inner.bodies == [b"y" * 900 + b"z"]


def test_a_stalled_body_is_408_and_closes_the_connection():
    inner = Recorder()
    wire = Wire(
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
        0.3,
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
    )  # then nothing
    t0 = time.monotonic()
    run(RequestLimits(inner, max_body=1000, body_timeout=0.5), scope(headers=[(b"content-length", b"1000")]), wire)
    waited = time.monotonic() - t0
    assert wire.status == 408 and inner.calls == 0
    assert wire.headers[b"connection"] == b"close"
    assert "AIRJOBS_BODY_TIMEOUT_SECONDS" in wire.body["message"] and "0.5 seconds" in wire.body["message"]
    assert 0.75 <= waited < 2, waited  # the timeout counts from the last bytes, not from the start


def test_a_client_that_goes_away_gets_nothing():
    inner = Recorder()
    wire = Wire({"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"})
    run(RequestLimits(inner, max_body=1000, body_timeout=5), scope(), wire)
    assert wire.sent == [] and inner.calls == 0


def test_after_the_body_receive_goes_to_the_server():
    seen = []

    async def app(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())  # e.g. a streamed download listening for the disconnect
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wire = Wire({"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"})
    run(RequestLimits(app, max_body=1000, body_timeout=5), scope(), wire)
    assert seen == [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]


@pytest.mark.parametrize("value", [b"ten", b"-1", b"1e3", b""])
def test_a_bad_content_length_is_400(value):
    inner = Recorder()
    wire = Wire()
    run(RequestLimits(inner, max_body=1000, body_timeout=5), scope(headers=[(b"content-length", value)]), wire)
    assert wire.status == 400 and inner.calls == 0


def test_lifespan_and_websocket_scopes_pass_through():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["type"])

    for kind in ("lifespan", "websocket"):
        asyncio.run(RequestLimits(app, max_body=1, body_timeout=1)({"type": kind}, None, None))
    assert calls == ["lifespan", "websocket"]


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/v2/abc%00def",
        "/jobs/v2/a%01",
        "/jobs/v2/a%1fb",
        "/jobs/v2/a%7f",
        "/jobs/v2/a%0a",
        "/jobs/v2/%0d%0aSet-Cookie:x",
    ],
)
def test_control_characters_in_the_path_are_400(path):
    with make_client() as c:
        message = envelope(c.get(path), 400)
        assert "control character" in message


def test_nul_in_the_query_is_400_other_values_pass():
    with make_client() as c:
        for q in ("a=%00", "a=b%00c", "%00=1", "x=1&filter=id%00"):
            assert "NUL" in envelope(c.get(f"/jobs/v2?{q}"), 400), q
        assert c.get("/jobs/v2?filter=id,name&x=%0a&y=%e2%80%ae").status_code == 200


def test_long_paths_and_queries_are_414():
    with make_client() as c:
        assert c.get("/jobs/v2/" + "a" * (4096 - 9)).status_code == 200  # exactly 4096 bytes
        assert "4096" in envelope(c.get("/jobs/v2/" + "a" * (4096 - 8)), 414)
        assert "4096" in envelope(c.get("/jobs/v2/" + "%41" * 2000), 414)  # counted as sent, not decoded
        assert "8192" in envelope(c.get("/jobs/v2?q=" + "b" * 9000), 414)


# ---------------------------------------------------------------- JSON depth


def _reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    return 0


def _random_doc(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, "s", 'br[ck{ts"}]', "\\", '\\"[', None, True, 2.5, "\u00e9\U0001f4a9"])
    if rng.random() < 0.5:
        return [_random_doc(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": _random_doc(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_json_depth_matches_the_parsed_structure():
    rng = random.Random(7)
    for _ in range(500):
        doc = _random_doc(rng, rng.randint(0, 12))
        for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), json.dumps(doc, indent=1)):
            assert json_depth(text) == _reference_depth(doc), text
            assert json_depth(text.encode()) == _reference_depth(doc)
            for limit in (1, 3, 5, 8):
                assert too_deep(text, limit) == (_reference_depth(doc) > limit), (limit, text)


def test_too_deep_at_64_levels():
    assert not too_deep("[" * 64 + "]" * 64)
    assert too_deep("[" * 65 + "]" * 65)
    assert too_deep(b'{"a":' * 65 + b"1" + b"}" * 65)
    assert not too_deep(json.dumps({"s": "[" * 10000}))  # brackets in strings do not count
    assert not too_deep(json.dumps([[i] for i in range(10000)]))  # many, but shallow
    with pytest.raises(BadRequest, match="nested more than 64 levels"):
        check_json_depth(b"[" * 10000 + b"]" * 10000, "job request")
    check_json_depth(b"[[[]]]", "job request")
    # not JSON: unclosed or stray brackets still count
    assert too_deep(b"[" * 10000) and too_deep(b"]" * 10 + b"[" * 100) and not too_deep(b"]" * 10000)
    assert too_deep(b"[" * 30 + b"[" * 40 + b"]" * 40)


def test_the_depth_scan_is_linear_even_for_hostile_text():
    size = limits.DEFAULT_MAX_BODY_BYTES
    for text in (
        b'"\\"' * (size // 3),
        b'"\\' * (size // 2),
        b"[" * size,
        b'["' * (size // 2),
        b"\\" * size,
        b'{"a":[' * (size // 6),
        b"[]" * (size // 2),
        (b"[" * 64 + b"]" * 64) * (size // 128),
        b"[" * 64 + b"[]" * (size // 2 - 64) + b"]" * 64,
    ):
        t0 = time.monotonic()
        too_deep(text)
        assert time.monotonic() - t0 < 0.5, text[:10]  # ~0.1 s on one core


# ---------------------------------------------------------------- login throttle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_lock_that_user_on_that_address_for_the_rest_of_the_minute():
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for _i in range(5):
        assert t.retry_after("alice", "10.0.0.1") is None
        t.failure("alice", "10.0.0.1")
        clock.now += 1
    assert t.retry_after("alice", "10.0.0.1") == 55  # the first failure leaves the window at 1060
    assert t.retry_after("ALICE", "10.0.0.1") == 55  # user names are compared case-insensitively
    assert t.retry_after("alice", "10.0.0.2") is None  # another address is not locked out
    assert t.retry_after("bob", "10.0.0.1") is None
    clock.now = 1059.5
    assert t.retry_after("alice", "10.0.0.1") == 1
    clock.now = 1060.0
    assert t.retry_after("alice", "10.0.0.1") is None  # 4 failures left in the window
    t.failure("alice", "10.0.0.1")
    assert t.retry_after("alice", "10.0.0.1") == 1  # the second one leaves at 1061


def test_success_resets_only_its_own_key():
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for _ in range(4):
        t.failure("alice", "10.0.0.1")
        t.failure("alice", "10.0.0.2")
    t.success("alice", "10.0.0.1")
    for _ in range(4):
        t.failure("alice", "10.0.0.1")
    assert t.retry_after("alice", "10.0.0.1") is None
    t.failure("alice", "10.0.0.2")
    assert t.retry_after("alice", "10.0.0.2") == 60


def test_spraying_from_one_address_is_capped_across_user_names():
    clock = Clock()
    t = LoginThrottle(clock=clock)
    for i in range(20):
        assert t.retry_after(f"user{i}", "10.0.0.9") is None
        t.failure(f"user{i}", "10.0.0.9")
        clock.now += 0.5
    assert t.retry_after("someone-new", "10.0.0.9") == 50
    assert t.retry_after("user1", "10.0.0.9") == 50
    t.success("user3", "10.0.0.9")  # one good password does not reopen the address
    assert t.retry_after("user3", "10.0.0.9") == 50
    assert t.retry_after("someone-new", "10.0.0.10") is None
    clock.now += 50
    assert t.retry_after("someone-new", "10.0.0.9") is None


def test_memory_stays_bounded():
    clock = Clock()
    t = LoginThrottle(clock=clock, max_keys=100)
    for i in range(1000):
        t.failure(f"u{i}", f"10.1.{i // 256}.{i % 256}")
    assert len(t) <= 100
    for _ in range(50):
        t.failure("x", "10.2.0.1")
    assert len(t._failures[("address", "10.2.0.1")]) <= 20
    clock.now += 61
    t.failure("y", "10.3.0.1")
    assert len(t) == 2  # expired keys were swept


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIRJOBS_LOGIN_MAX_FAILURES", "2")
    monkeypatch.setenv("AIRJOBS_LOGIN_MAX_FAILURES_PER_ADDRESS", "3")
    t = LoginThrottle.from_env()
    assert (t.per_user, t.per_address) == (2, 3)


def test_client_address_trusts_x_forwarded_for_only_when_told(monkeypatch):
    monkeypatch.delenv("AIRJOBS_TRUST_PROXY", raising=False)
    assert client_address("10.0.0.1", "1.2.3.4") == "10.0.0.1"
    assert client_address(None) == "unknown"
    monkeypatch.setenv("AIRJOBS_TRUST_PROXY", "1")
    assert client_address("10.0.0.1", "6.6.6.6, 1.2.3.4") == "1.2.3.4"  # the entry our proxy added
    assert client_address("10.0.0.1", "") == "10.0.0.1"
    assert client_address("10.0.0.1", "1.2.3.4", trust_proxy=False) == "10.0.0.1"
