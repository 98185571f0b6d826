"""The email a job notification sends (spec §6.2, SRC ``JobNotificationEvent``): Agave's subject and plain
body, with the macros of ``airjobs.notifications.macros`` resolved, plus the same text as an HTML alternative
(every value HTML-escaped)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from airjobs.notifications import macros
from airjobs.timeutil import now

#: the body's first line, then its ``label: ${VARIABLE}`` lines, as Agave writes them
HEADLINE = 'The status of job ${JOB_ID}, "${JOB_NAME}," has changed to ${EVENT}.'
LINES = (
    ("Name", "JOB_NAME"),
    ("ID", "JOB_ID"),
    ("App ID", "APP_ID"),
    ("Execution System", "JOB_SYSTEM"),
    ("Message", "JOB_ERROR"),
    ("Submit Time", "JOB_SUBMIT_TIME"),
    ("Start Time", "JOB_START_TIME"),
    ("End Time", "JOB_END_TIME"),
    ("Output Path", "JOB_ARCHIVE_PATH"),
    ("Output URL", "JOB_ARCHIVE_URL"),
)
_MACRO = re.compile(r"\$\{([A-Z_]+)\}")
PLAIN_TEMPLATE = HEADLINE + "\n\n" + "".join(f"{label}: ${{{name}}}\n" for label, name in LINES)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def subject(job_id: str, event: str) -> str:
    """``Job <id> received a <EVENT> event`` (line breaks, which no header may hold, become spaces)."""
    return _one_line(f"Job {job_id} received a {event} event")


def plain_body(job: Mapping[str, Any], event: str, *, owner: str, jobs_base: str) -> str:
    return macros.resolve(PLAIN_TEMPLATE, job, event, owner=owner, jobs_base=jobs_base)


def html_body(job: Mapping[str, Any], event: str, *, owner: str, jobs_base: str) -> str:
    values = {k: html.escape(v) for k, v in macros.variables(job, event, owner=owner, jobs_base=jobs_base).items()}
    headline = _MACRO.sub(lambda m: values.get(m.group(1), m.group(0)), html.escape(HEADLINE, quote=False))
    rows = "".join(
        f"<tr><th align='left'>{html.escape(label)}:</th><td>{values[name]}</td></tr>\n" for label, name in LINES
    )
    return f"<!DOCTYPE html>\n<html><body>\n<p>{headline}</p>\n<table>\n{rows}</table>\n</body></html>\n"


def email_message(
    job: Mapping[str, Any], event: str, *, to: str, sender: str, owner: str, jobs_base: str
) -> EmailMessage:
    """The notification email of ``job`` at ``event``: headers Subject, From, To, Date, Message-ID; a
    ``text/plain`` body (spec §6.2) and its ``text/html`` alternative."""
    msg = EmailMessage()
    msg["Subject"] = subject(str(job.get("id") or ""), event)
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(now())
    domain = parseaddr(sender)[1].rpartition("@")[2] or "airjobs.invalid"
    msg["Message-ID"] = make_msgid("airjobs", domain=domain)  # a domain given: no slow getfqdn()
    msg.set_content(plain_body(job, event, owner=owner, jobs_base=jobs_base))
    msg.add_alternative(html_body(job, event, owner=owner, jobs_base=jobs_base), subtype="html")
    return msg
