"""The notification email (spec §6.2)."""

from __future__ import annotations

import email
import email.policy
from email.utils import parsedate_to_datetime

from airjobs.notifications.messages import email_message, subject

JOB = {
    "id": "0001414144065563-5056a550b8-0001-007",
    "name": "wc <script>alert(1)</script> & co",
    "owner": "alice",
    "appId": "wc-1.00",
    "executionSystem": "demo.exec",
    "status": "FAILED",
    "submitTime": "2026-12-02T10:00:00.000+00:00",
    "startTime": "2026-12-02T10:00:05.000+00:00",
    "endTime": "2026-12-02T10:01:00.000+00:00",
    "archive": True,
    "archivePath": "alice/archive/jobs/job-1",
    "message": "Exit code 1 <oops>",
    "_links": {"archiveData": {"href": "https://jobs.example.org/jobs/v2/j/outputs/listings?x=1&y=2"}},
}
KW = {"to": "alice@example.org", "sender": "Airjobs <noreply@jobs.example.org>", "owner": "alice"}
KW["jobs_base"] = "https://jobs.example.org"


def _message(job=JOB, event="FAILED"):
    return email_message(job, event, **KW)


def test_subject():
    assert subject("J-1", "FINISHED") == "Job J-1 received a FINISHED event"
    assert subject("J-1", "X\r\nBcc: eve@example.org") == "Job J-1 received a X Bcc: eve@example.org event"


def test_headers():
    msg = _message()
    assert msg["Subject"] == f"Job {JOB['id']} received a FAILED event"
    assert msg["From"] == KW["sender"]
    assert msg["To"] == "alice@example.org"
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@jobs.example.org>")
    assert msg.get_content_type() == "multipart/alternative"


def test_plain_body_every_line():
    plain = _message().get_body(("plain",)).get_content()
    assert plain.splitlines() == [
        f'The status of job {JOB["id"]}, "{JOB["name"]}," has changed to FAILED.',
        "",
        f"Name: {JOB['name']}",
        f"ID: {JOB['id']}",
        "App ID: wc-1.00",
        "Execution System: demo.exec",
        "Message: Exit code 1 <oops>",
        "Submit Time: 2026-12-02T10:00:00.000+00:00",
        "Start Time: 2026-12-02T10:00:05.000+00:00",
        "End Time: 2026-12-02T10:01:00.000+00:00",
        "Output Path: alice/archive/jobs/job-1",
        "Output URL: https://jobs.example.org/jobs/v2/j/outputs/listings?x=1&y=2",
    ]


def test_plain_body_missing_values_are_empty():
    plain = _message({"id": "J-2", "name": "n"}, "RUNNING").get_body(("plain",)).get_content()
    assert "Message: \n" in plain and "Output Path: \n" in plain
    assert "Output URL: https://jobs.example.org/jobs/v2/J-2/outputs/listings" in plain
    assert "${" not in plain


def test_html_part_is_escaped():
    html = _message().get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "wc &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "Exit code 1 &lt;oops&gt;" in html
    assert "listings?x=1&amp;y=2" in html
    assert f"The status of job {JOB['id']}, &quot;" not in html  # the template's own quotes stay quotes
    assert f'The status of job {JOB["id"]}, "wc &lt;script&gt;' in html
    for label in ("Name", "ID", "App ID", "Execution System", "Message", "Submit Time", "Start Time", "End Time"):
        assert f">{label}:</th>" in html
    assert "${" not in html


def test_round_trips_as_mime():
    msg = _message()
    again = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert again["Subject"] == msg["Subject"]
    assert JOB["name"] in again.get_body(("plain",)).get_content()
