"""Notifications end to end (issue 13): a job's webhooks reach a real HTTP receiver, signed per Standard Webhooks
with the owner's secret and with Agave's macros resolved; e-mail reaches a real SMTP server (aiosmtpd) through
Airflow's ``smtp_default`` Connection; ``/notifications/v2`` lists, shows, changes and deletes them under the
job's permissions, with every attempt recorded; bad objects and targets inside the service's network are 400s
that leave no job behind; a receiver that is down at first gets every event once it is back."""

from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import standardwebhooks

from conftest import SMTP_PORT

pytestmark = pytest.mark.e2e

DEMO = json.loads((Path(__file__).resolve().parents[2] / "include/examples/demo-job.json").read_text())
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")


class Receiver:
    """A real HTTP server on 127.0.0.2 (the test suite's egress allow-list) that records every request.
    ``down_until``: until then it answers 503 (no Retry-After) as a receiver that is down would."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.down_until = 0.0
        self.redirect_to = ""
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                down = time.monotonic() < outer.down_until
                if self.path.startswith("/redirect") and outer.redirect_to:
                    with outer.lock:
                        outer.requests.append({"path": self.path, "headers": {}, "body": body, "answered": 302})
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with outer.lock:
                    outer.requests.append(
                        {
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "body": body,
                            "answered": 503 if down else 200,
                            "at": time.time(),
                        }
                    )
                self.send_response(503 if down else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.2:{self.port}{path}"

    def received(self, prefix: str, answered: int | None = 200) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(prefix) and answered in (None, r["answered"])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp():
    """aiosmtpd on 127.0.0.2 at the port of the tests' ``smtp_default`` Connection (conftest)."""
    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self) -> None:
            self.messages: list[Message] = []

        async def handle_DATA(self, server, session, envelope) -> str:
            msg = message_from_bytes(envelope.original_content or envelope.content)
            msg["X-Rcpt"] = ",".join(envelope.rcpt_tos)
            self.messages.append(msg)
            return "250 OK"

    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.2", port=SMTP_PORT)
    controller.start()
    yield handler
    controller.stop()


def _wait(what: str, fn, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _statuses(service, job_id: str) -> list[str]:
    return [e["status"] for e in service.history(job_id, user="alice")]


def test_every_status_reaches_the_receiver_signed_in_order_with_macros(service, receiver):
    hook = receiver.url("/all/${JOB_ID}?status=${JOB_STATUS}&name=${JOB_NAME}&event=${EVENT}")
    body = {
        **DEMO,
        "name": "notify me & you",
        "notifications": [
            {"url": hook, "event": "*", "persistent": True},
            {"url": receiver.url("/finished/${JOB_ID}"), "event": "FINISHED"},
            {"url": receiver.url("/once/${JOB_ID}"), "event": "*"},  # not persistent: the first event only
        ],
    }
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json=body)
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
        secret = c.get("/notifications/v2/secret").json()["result"]["current"]
    assert secret.startswith("whsec_")
    job = service.wait_terminal(job_id, "alice", timeout=180)
    assert job["status"] == "FINISHED", job
    history = _statuses(service, job_id)
    got = _wait(
        "every status at the receiver", lambda: (g := receiver.received("/all/")) and len(g) >= len(history) and g
    )
    time.sleep(1.0)  # nothing more may come
    got = receiver.received("/all/")
    events = [json.loads(r["body"])["status"] for r in got]
    assert events == history, (events, history)
    wh = standardwebhooks.Webhook(secret)
    ids = set()
    for r, status in zip(got, history, strict=True):
        url = urlsplit(r["path"])
        assert url.path == f"/all/{job_id}"
        q = parse_qs(url.query)
        assert q["status"] == [status] and q["event"] == [status] and q["name"] == ["notify me & you"], q
        payload = wh.verify(r["body"], r["headers"])  # raises when the signature does not match
        assert payload["id"] == job_id and payload["status"] == status
        assert r["headers"]["x-agave-notification"] and r["headers"]["x-agave-delivery"]
        assert r["headers"]["content-type"].startswith("application/json")
        assert r["headers"]["user-agent"].startswith("Agave-Hookbot/")
        ids.add(r["headers"]["webhook-id"])
    assert len(ids) == len(got)  # one webhook-id per delivery
    finished = receiver.received(f"/finished/{job_id}")
    assert len(finished) == 1 and json.loads(finished[0]["body"])["status"] == "FINISHED"
    once = receiver.received(f"/once/{job_id}")
    assert [json.loads(r["body"])["status"] for r in once] == ["PENDING"]

    with service.client("alice") as c:
        listed = c.get("/notifications/v2", params={"associatedUuid": job_id}).json()["result"]
        assert len(listed) == 3 and {n["associatedUuid"] for n in listed} == {job_id}
        by_event = {n["url"]: n for n in listed}
        star = by_event[hook]
        assert star["status"] == "ACTIVE" and star["persistent"] is True
        assert by_event[receiver.url("/once/${JOB_ID}")]["status"] == "INACTIVE"
        attempts = c.get(f"/notifications/v2/{star['id']}/attempts").json()["result"]
        assert len(attempts) == len(history) and all(a["success"] and a["responseCode"] == 200 for a in attempts)
        assert attempts[0]["url"].startswith(f"http://127.0.0.2:{receiver.port}/all/{job_id}?status=PENDING")
        one = c.get(f"/notifications/v2/{star['id']}").json()["result"]
        assert one["attempts"] == len(history) and one["success"] is True
    with service.client("bob") as c:  # another user: the notifications do not exist for him
        assert c.get(f"/notifications/v2/{star['id']}").status_code == 404
        assert c.get(f"/notifications/v2/{star['id']}/attempts").status_code == 404
        assert c.get("/notifications/v2", params={"associatedUuid": job_id}).json()["result"] == []
        assert c.delete(f"/notifications/v2/{star['id']}").status_code == 404
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": receiver.url("/bob"), "event": "*"})
        assert r.status_code == 404, r.text


def test_a_reader_sees_notifications_but_only_a_writer_changes_them(service, receiver):
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json=DEMO).json()["result"]["id"]
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": receiver.url("/x"), "event": "RUNNING"})
        assert r.status_code == 201, r.text
        nid = r.json()["result"]["id"]
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "READ"}).status_code in (200, 201)
    with service.client("bob") as c:
        assert c.get(f"/notifications/v2/{nid}").json()["result"]["event"] == "RUNNING"
        assert c.post(f"/notifications/v2/{nid}", json={"event": "FAILED"}).status_code == 403
        assert c.delete(f"/notifications/v2/{nid}").status_code == 403
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": receiver.url("/b"), "event": "*"})
        assert r.status_code == 403
    with service.client("alice") as c:
        r = c.post(f"/notifications/v2/{nid}", json={"event": "failed", "persistent": "true"})
        assert r.status_code == 200 and r.json()["result"]["event"] == "FAILED" and r.json()["result"]["persistent"]
        assert c.delete(f"/notifications/v2/{nid}").status_code == 200
        assert c.get(f"/notifications/v2/{nid}").status_code == 404
    service.wait_terminal(job_id, "alice", timeout=180)


@pytest.mark.parametrize(
    ("notification", "field"),
    [
        ({"url": "http://127.0.0.2/x"}, "event"),
        ({"event": "*"}, "url"),
        ({"url": "http://127.0.0.2/x", "event": "NOT_AN_EVENT"}, "event"),
        ({"url": "ftp://example.org/x", "event": "*"}, "url"),
        ({"url": "http://127.0.0.2/x", "event": "*", "policy": {"retryStrategy": "SOMETIMES"}}, "retryStrategy"),
        ({"url": "http://127.0.0.2/x", "event": "*", "policy": {"retryLimit": 99999}}, "retryLimit"),
        ({"url": "http://127.0.0.2/x", "event": "*", "persistent": "maybe"}, "persistent"),
        ({"url": "http://127.0.0.2/x", "event": "*", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_notification_is_a_400_naming_its_field_and_leaves_no_job(service, notification, field):
    with service.client("alice") as c:
        before = len(c.get("/jobs/v2", params={"limit": 1000}).json()["result"])
        r = c.post("/jobs/v2", json={**DEMO, "notifications": [notification]})
        assert r.status_code == 400, r.text
        assert field in r.json()["message"], r.json()["message"]
        assert len(c.get("/jobs/v2", params={"limit": 1000}).json()["result"]) == before


EGRESS = [
    "http://127.0.0.1:8080/jobs/v2",
    "http://localhost/x",
    "http://10.0.0.1/x",
    "http://192.168.1.1/x",
    "http://172.16.0.1/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433/x",
    "http://0x7f000001/x",
    "http://127.1/x",
    "http://0177.0.0.1/x",
    "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[fe80::1]/x",
    "http://0.0.0.0/x",
]


@pytest.mark.parametrize("url", EGRESS)
def test_targets_inside_the_service_network_are_refused_at_registration(service, url):
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json={**DEMO, "notifications": [{"url": url, "event": "*"}]})
        assert r.status_code == 400, (url, r.text)
        assert "url" in r.json()["message"]
        r = c.post("/jobs/v2", json={**DEMO, "callbackUrl": url})
        assert r.status_code == 400, (url, r.text)


def test_email_reaches_a_real_smtp_server_with_the_agave_subject_and_body(service, smtp):
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json={**DEMO, "callbackUrl": "alice@example.org"})
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
    job = service.wait_terminal(job_id, "alice", timeout=180)
    assert job["status"] == "FINISHED"
    mails = _wait("the FINISHED mail", lambda: [m for m in smtp.messages if job_id in str(m["Subject"])])
    assert len(mails) == 1
    mail = mails[0]
    assert mail["Subject"] == f"Job {job_id} received a FINISHED event"
    assert mail["X-Rcpt"] == "alice@example.org" and mail["From"] == "airjobs@localhost"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in mail.walk() if not p.is_multipart()}
    plain, html = parts["text/plain"], parts["text/html"]
    assert plain.startswith(f'The status of job {job_id}, "wc-demo," has changed to FINISHED.')
    for line in (f"ID: {job_id}", "Name: wc-demo", "App ID: wc-1.0", "Execution System: demo-fork", "Output URL: "):
        assert line in plain, (line, plain)
    assert job_id in html and "<" in html


def test_a_receiver_down_at_first_gets_every_event_after_it_returns(service, receiver):
    receiver.down_until = time.monotonic() + 12
    policy = {"retryStrategy": "EXPONENTIAL", "retryLimit": 10}
    body = {
        **DEMO,
        "notifications": [{"url": receiver.url("/late"), "event": "*", "persistent": True, "policy": policy}],
    }
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json=body).json()["result"]["id"]
    job = service.wait_terminal(job_id, "alice", timeout=180)
    assert job["status"] == "FINISHED"
    history = _statuses(service, job_id)
    ok = _wait(
        "every event after the outage",
        lambda: (g := receiver.received("/late")) and len(g) >= len(history) and g,
        timeout=90,
    )
    assert [json.loads(r["body"])["status"] for r in ok] == history
    failed = receiver.received("/late", answered=503)
    assert failed, "the receiver was down: some attempts must have failed"
    # a retry of a delivery keeps its webhook-id; no delivery succeeded twice
    ok_ids = [r["headers"]["webhook-id"] for r in ok]
    assert len(ok_ids) == len(set(ok_ids))
    assert {r["headers"]["webhook-id"] for r in failed} <= set(ok_ids)
    with service.client("alice") as c:
        nid = c.get("/notifications/v2", params={"associatedUuid": job_id}).json()["result"][0]["id"]
        attempts = c.get(f"/notifications/v2/{nid}/attempts", params={"limit": 1000}).json()["result"]
    assert len(attempts) == len(ok) + len(failed)
    assert sum(not a["success"] and a["responseCode"] == 503 for a in attempts) == len(failed)


def test_secret_rotation_signs_with_both_for_a_day(service, receiver):
    with service.client("carol") as c:
        old = c.get("/notifications/v2/secret").json()["result"]["current"]
        rotated = c.post("/notifications/v2/secret").json()["result"]
        assert rotated["previous"] == old and rotated["current"] != old and rotated["previousExpires"]
        body = {**DEMO, "notifications": [{"url": receiver.url("/rot"), "event": "PENDING"}]}
        job_id = c.post("/jobs/v2", json=body).json()["result"]["id"]
    got = _wait("the PENDING webhook", lambda: receiver.received("/rot"))
    for secret in (old, rotated["current"]):
        assert standardwebhooks.Webhook(secret).verify(got[0]["body"], got[0]["headers"])["id"] == job_id
    service.wait_terminal(job_id, "carol", timeout=180)


def test_a_redirect_to_loopback_is_not_followed(service, receiver):
    import socket

    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(5)
    trap.settimeout(0.2)
    receiver.redirect_to = f"http://127.0.0.1:{trap.getsockname()[1]}/jobs/v2"
    policy = {"retryStrategy": "NONE"}
    body = {**DEMO, "notifications": [{"url": receiver.url("/redirect"), "event": "PENDING", "policy": policy}]}
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json=body).json()["result"]["id"]
        nid = c.get("/notifications/v2", params={"associatedUuid": job_id}).json()["result"][0]["id"]
        attempts = _wait("the attempt", lambda: c.get(f"/notifications/v2/{nid}/attempts").json()["result"])
    assert len(receiver.received("/redirect", answered=302)) == 1
    [a] = attempts
    assert not a["success"] and a["responseCode"] == 302 and "redirect" in a["error"].lower(), a
    try:
        trap.accept()
        raise AssertionError("the service followed the redirect to loopback")
    except TimeoutError:
        pass
    finally:
        trap.close()
    service.wait_terminal(job_id, "alice", timeout=180)


def test_a_write_only_grantee_cannot_route_the_job_json_to_himself_and_readers_see_no_password(service, receiver):
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json=DEMO).json()["result"]["id"]
        secret_url = receiver.url("/pw").replace("http://", "http://hook:s3cr3t@")
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": secret_url, "event": "FINISHED"})
        assert r.status_code == 201 and r.json()["result"]["url"] == secret_url, r.text
        nid = r.json()["result"]["id"]
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "WRITE"}).status_code in (200, 201)
        assert c.post(f"/jobs/v2/{job_id}/pems/carol", json={"permission": "READ"}).status_code in (200, 201)
    with service.client("bob") as c:  # may change the job, may not read it: no webhook with its JSON for him
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": receiver.url("/bob"), "event": "*"})
        assert r.status_code == 404, r.text
        assert c.post(f"/notifications/v2/{nid}", json={"url": receiver.url("/bob")}).status_code == 404
    with service.client("carol") as c:
        shown = c.get(f"/notifications/v2/{nid}").json()["result"]["url"]
        assert "s3cr3t" not in shown and shown == f"http://127.0.0.2:{receiver.port}/…", shown  # where it goes only
    service.wait_terminal(job_id, "alice", timeout=180)
    got = _wait("the FINISHED webhook with Basic auth", lambda: receiver.received("/pw"))
    assert got[0]["headers"]["authorization"].startswith("Basic ")
    assert not receiver.received("/bob")


def test_a_revoked_grantee_gets_no_more_webhooks_nor_events_and_cannot_take_over_the_owners(service, receiver):
    from conftest import install_app

    install_app("nap", "sleep 6\n")
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json={"name": "nap", "appId": "nap-1.0", "archive": False}).json()["result"]["id"]
        r = c.post("/notifications/v2", json={"associatedUuid": job_id, "url": receiver.url("/alice"), "event": "*"})
        alices = r.json()["result"]["id"]
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "READ_WRITE"}).status_code in (200, 201)
    with service.client("bob") as c:
        body = {"associatedUuid": job_id, "url": receiver.url("/bob"), "event": "*", "persistent": True}
        r = c.post("/notifications/v2", json=body)
        assert r.status_code == 201, r.text
        bobs = r.json()["result"]["id"]
        # the owner's notification is signed with the owner's secret: a grantee may not point it elsewhere
        assert c.post(f"/notifications/v2/{alices}", json={"url": receiver.url("/bob2")}).status_code == 403
        assert c.delete(f"/notifications/v2/{alices}").status_code == 403
    with service.client("alice") as c:
        assert c.delete(f"/jobs/v2/{job_id}/pems/bob").status_code == 200
        revoked_at = time.time()
        service.wait_terminal(job_id, "alice", timeout=180)
        time.sleep(2.0)
        n = c.get(f"/notifications/v2/{bobs}").json()["result"]
        assert n["status"] == "INACTIVE" and "may no longer read" in n["statusReason"], n
    late = [r for r in receiver.received("/bob") if r["at"] > revoked_at]
    assert late == [], [json.loads(r["body"])["status"] for r in late]
    assert not receiver.received("/bob2")
    with service.client("bob") as c:
        assert c.get(f"/jobs/v2/{job_id}/events").status_code == 404


def test_resubmit_preserves_only_the_callers_own_notifications(service, receiver):
    secret_url = receiver.url("/mine").replace("http://", "http://alice:pw@")
    with service.client("alice") as c:
        body = {**DEMO, "notifications": [{"url": secret_url, "event": "FINISHED"}]}
        job_id = c.post("/jobs/v2", json=body).json()["result"]["id"]
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "READ_WRITE"}).status_code in (200, 201)
    service.wait_terminal(job_id, "alice", timeout=180)
    with service.client("bob") as c:
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "preserveNotifications": True})
        assert r.status_code == 201, r.text
        new_id = r.json()["result"]["id"]
        assert c.get("/notifications/v2", params={"associatedUuid": new_id}).json()["result"] == []
        shown = c.get("/notifications/v2", params={"associatedUuid": job_id}).json()["result"]
        assert shown and all("pw" not in n["url"] and "/mine" not in n["url"] for n in shown), shown
    service.wait_terminal(new_id, "bob", timeout=180)
