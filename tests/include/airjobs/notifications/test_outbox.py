"""The outbox (``airjobs.notifications.subscriptions`` and ``outbox``) against the real embedded PostgreSQL and a
real HTTP receiver: rows written with the status change, delivered once, in order per notification, retried on
the policy's schedule, dropped after 410, taken over after a dead deliverer's lease, e-mail kept as .eml."""

from __future__ import annotations

import email
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select, update

from airjobs import db, store, submission
from airjobs.lifecycle import transition
from airjobs.models import Notification, NotificationAttempt, NotificationDelivery
from airjobs.notifications import outbox, subscriptions
from airjobs.timeutil import now

DEMO = json.loads((Path(__file__).resolve().parents[4] / "include/examples/demo-job.json").read_text())


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        self.answer = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.got.append((self.path, body))
                self.send_response(outer.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.2:{self.server.server_address[1]}"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _job(pg, notifications) -> str:
    job = submission.build_job({**DEMO, "notifications": notifications}, "olive")
    return store.create_job(job, created_by="olive")[0].id


def _deliveries(job_id: str) -> list[NotificationDelivery]:
    with db.session() as s:
        q = select(NotificationDelivery).where(NotificationDelivery.job_id == job_id)
        return list(s.scalars(q.order_by(NotificationDelivery.id)))


def _drain(job_id: str) -> None:
    for _ in range(20):
        if not outbox.deliver_due():
            break


def test_rows_are_written_with_the_status_change_and_delivered_once_in_order(pg, receiver):
    job_id = _job(pg, [{"url": receiver.base + "/all?s=${JOB_STATUS}", "event": "*", "persistent": True}])
    for status in ("STAGED", "SUBMITTING", "QUEUED"):
        transition(job_id, status)
    assert [d.event for d in _deliveries(job_id)] == ["PENDING", "STAGED", "SUBMITTING", "QUEUED"]
    # only the earliest pending row of a notification is due: in order, one at a time
    assert [d.event for d in outbox.claim(limit=10) if d.job_id == job_id] == ["PENDING"]
    with db.transaction() as s:
        s.execute(update(NotificationDelivery).values(leased_until=None))
    _drain(job_id)
    assert [p for p, _ in receiver.got] == [f"/all?s={s}" for s in ("PENDING", "STAGED", "SUBMITTING", "QUEUED")]
    assert [b["status"] for _, b in receiver.got] == ["PENDING", "STAGED", "SUBMITTING", "QUEUED"]
    assert {d.state for d in _deliveries(job_id)} == {"DELIVERED"}
    assert outbox.deliver_due() == 0  # a success is never sent again
    assert len(receiver.got) == 4


def test_a_one_shot_notification_fires_once_and_event_filters_hold(pg, receiver):
    job_id = _job(
        pg,
        [{"url": receiver.base + "/once", "event": "*"}, {"url": receiver.base + "/queued", "event": "QUEUED"}],
    )
    for status in ("STAGED", "SUBMITTING", "QUEUED", "RUNNING"):
        transition(job_id, status)
    _drain(job_id)
    # two notifications: each in its own order, not waiting for each other
    assert sorted((p, b["status"]) for p, b in receiver.got) == [("/once", "PENDING"), ("/queued", "QUEUED")]


def test_failures_are_retried_on_the_policy_schedule_and_listed(pg, receiver):
    receiver.answer = 503
    policy = {"retryStrategy": "DELAYED", "retryDelay": 30, "retryRate": 60, "retryLimit": 2}
    job_id = _job(pg, [{"url": receiver.base + "/r", "event": "PENDING", "policy": policy}])
    before = now()
    _drain(job_id)
    [d] = _deliveries(job_id)
    assert d.state == "PENDING" and d.attempts == 1 and d.leased_until is None
    assert timedelta(seconds=29) < d.next_attempt - before < timedelta(seconds=32)
    for expected_state in ("PENDING", "FAILED"):  # the 2 retries of retryLimit 2
        with db.transaction() as s:
            s.execute(update(NotificationDelivery).where(NotificationDelivery.id == d.id).values(next_attempt=now()))
        _drain(job_id)
        [d] = _deliveries(job_id)
        assert d.state == expected_state
    assert d.attempts == 3 and len(receiver.got) == 3
    with db.session() as s:
        attempts = list(s.scalars(select(NotificationAttempt).where(NotificationAttempt.delivery_id == d.id)))
    assert [(a.response_code, a.success) for a in attempts] == [(503, False)] * 3


def test_410_disables_the_notification_and_drops_what_is_queued(pg, receiver):
    receiver.answer = 410
    job_id = _job(pg, [{"url": receiver.base + "/gone", "event": "*", "persistent": True}])
    transition(job_id, "STAGED")
    _drain(job_id)
    assert [d.state for d in _deliveries(job_id)] == ["FAILED", "FAILED"]
    assert len(receiver.got) == 1
    with db.session() as s:
        n = s.scalars(select(Notification).where(Notification.associated_uuid == job_id)).one()
    assert not n.active and "410" in n.status_reason
    transition(job_id, "SUBMITTING")  # an inactive notification writes no more rows
    assert len(_deliveries(job_id)) == 2


def test_a_dead_deliverers_lease_runs_out_and_the_row_is_sent(pg, receiver):
    job_id = _job(pg, [{"url": receiver.base + "/lease", "event": "PENDING"}])
    claimed = [d for d in outbox.claim(limit=50) if d.job_id == job_id]
    assert claimed  # ... and the deliverer that claimed it dies here
    assert not [d for d in outbox.claim(limit=50) if d.job_id == job_id]  # leased: nobody else sends it
    with db.transaction() as s:
        s.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.job_id == job_id)
            .values(leased_until=now() - timedelta(seconds=1))
        )
    _drain(job_id)
    assert [p for p, _ in receiver.got] == ["/lease"]
    assert [d.state for d in _deliveries(job_id)] == ["DELIVERED"]


def test_email_without_smtp_is_kept_as_an_eml_file(pg, tmp_path, monkeypatch):
    monkeypatch.setattr(outbox, "_eml_dir", lambda: tmp_path)
    job_id = _job(pg, [{"url": "olive@example.org", "event": "PENDING"}])
    _drain(job_id)
    [eml] = list(tmp_path.glob("*.eml"))
    msg = email.message_from_bytes(eml.read_bytes())
    assert msg["Subject"] == f"Job {job_id} received a PENDING event" and msg["To"] == "olive@example.org"
    assert [d.state for d in _deliveries(job_id)] == ["DELIVERED"]


def test_a_bad_notification_leaves_no_job(pg):
    before = store.count_jobs()
    with pytest.raises(Exception, match=r"notifications\[0\]\.event"):
        submission.build_job({**DEMO, "notifications": [{"url": "x@example.org", "event": "SOMETIME"}]}, "olive")
    assert store.count_jobs() == before
    assert subscriptions.parse(None, "olive@example.org")[0]["event"] == "FINISHED"
