"""The deliverer's side of the outbox: claim the deliveries that are due, send them, record each attempt.

At least once, in order per notification:

* ``claim`` takes due PENDING rows with ``FOR UPDATE SKIP LOCKED`` and leases them (``LEASE``): two
  deliverers never send the same row at once, and a deliverer killed mid-attempt lets its rows go when the
  lease ends, so they are sent again (with the same ``webhook-id``: a receiver can tell a repeat).
  A row is only due when no earlier row of the same notification is still PENDING (in order).
* ``record`` writes the attempt and the row's new state in one transaction right after the answer:
  DELIVERED (never sent again), a retry at ``next_attempt`` by the notification's policy (``retry``;
  ``Retry-After`` honoured), or FAILED (retries used up, 410 Gone, a target no retry can reach).
  The retry schedule lives in the rows, so it resumes after any restart.
* ``Listener`` waits on PostgreSQL ``NOTIFY`` (``subscriptions.CHANNEL``, sent at the commit of a status
  change that wrote rows), so a delivery starts within milliseconds of its event without polling.
"""

from __future__ import annotations

import json
import logging
import select as _select
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import aliased

from airjobs import access, config, db
from airjobs.models import Job, JobPermission, Notification, NotificationAttempt, NotificationDelivery
from airjobs.notifications import macros, messages, retry, secrets, subscriptions, webhook
from airjobs.notifications.webhook import Outcome
from airjobs.timeutil import now

log = logging.getLogger(__name__)

#: how long a claimed delivery is the claimer's: longer than one attempt can take (webhook.TIMEOUT, SMTP)
LEASE = timedelta(seconds=90)
#: deliveries sent at once (a slow receiver holds one worker for at most webhook.TIMEOUT)
WORKERS = 8
BATCH = 32
#: the longest a deliverer sleeps without a NOTIFY (what is due by time: retries)
IDLE_WAIT = 5.0
SENDER = "airjobs@localhost"

EmailSender = Callable[[EmailMessage], None]


@dataclass(frozen=True)
class Due:
    id: int
    notification_id: str
    job_id: str
    event: str
    msg_id: str
    payload: dict[str, Any]
    attempts: int
    url: str
    owner: str
    policy: dict[str, Any]


def claim(limit: int = BATCH, lease: timedelta = LEASE) -> list[Due]:
    t = now()
    earlier = aliased(NotificationDelivery)
    d = NotificationDelivery
    q = (
        select(d, Notification)
        .join(Notification, Notification.id == d.notification_id)
        .where(d.state == "PENDING", d.next_attempt <= t, or_(d.leased_until.is_(None), d.leased_until < t))
        .where(
            ~exists().where(earlier.notification_id == d.notification_id, earlier.state == "PENDING", earlier.id < d.id)
        )
        .order_by(d.next_attempt, d.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=d)
    )
    out = []
    with db.transaction() as s:
        pairs = s.execute(q).all()
        allowed = _still_readable(s, [(row.job_id, n.owner) for row, n in pairs])
        for row, n in pairs:
            if (row.job_id, n.owner) not in allowed:
                _refuse(s, row, n, t)
                continue
            row.leased_until = t + lease
            out.append(
                Due(
                    row.id, n.id, row.job_id, row.event, row.msg_id, row.payload, row.attempts, n.url, n.owner, n.policy
                )
            )
    return out


def _still_readable(s: Any, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (job, notification owner) pairs where the owner may read the job now (its owner, or a grant with
    READ) and the job is visible: a delivery carries the job's JSON, so a revoked grant or a hidden job stops it."""
    if not pairs:
        return set()
    jobs = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_({job for job, _ in pairs})))}
    readers = [name for name, p in access.PERMISSIONS.items() if p.read]
    grants = set(
        s.execute(
            select(JobPermission.job_id, JobPermission.username).where(
                JobPermission.job_id.in_({job for job, _ in pairs}),
                JobPermission.username.in_({owner for _, owner in pairs}),
                JobPermission.permission.in_(readers),
            )
        ).all()
    )
    return {
        (job, owner)
        for job, owner in pairs
        if job in jobs and jobs[job].visible and (jobs[job].owner == owner or (job, owner) in grants)
    }


def _refuse(s: Any, row: NotificationDelivery, n: Notification, t: datetime) -> None:
    """Not sent: listed as a failed attempt, and the notification stops."""
    why = "not sent: the job is hidden, or the notification's owner may no longer read it"
    s.add(
        NotificationAttempt(
            id=str(uuid.uuid4()),
            notification_id=n.id,
            delivery_id=row.id,
            event=row.event,
            url=webhook.redact(n.url),
            started=t,
            response_code=None,
            error=why,
            latency_ms=0,
            success=False,
        )
    )
    row.state, row.finished, row.attempts = "FAILED", t, row.attempts + 1
    n.active, n.status_reason, n.last_updated = False, f"disabled: {why}", t


def _eml_dir() -> Path:
    return config.var_dir() / "mail"


def eml_sender(message: EmailMessage) -> None:
    """Keep the e-mail as an ``.eml`` file under the var directory (no SMTP connection configured)."""
    folder = _eml_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{now().strftime('%Y%m%dT%H%M%S.%f')}-{uuid.uuid4().hex[:8]}.eml"
    (folder / name).write_bytes(bytes(message))


def send(due: Due, attempt_id: str, email: EmailSender) -> tuple[str, Outcome]:
    """One attempt of ``due``: (the URL or address after macros, what happened). Never raises."""
    base = config.public_base()
    if subscriptions.is_email(due.url):
        start = now()
        try:
            message = messages.email_message(
                due.payload, due.event, to=due.url, sender=SENDER, owner=due.owner, jobs_base=base
            )
            email(message)
        except Exception as e:
            took = int((now() - start).total_seconds() * 1000)
            return due.url, Outcome(ok=False, error=f"{type(e).__name__}: {e}"[:1024], latency_ms=took)
        return due.url, Outcome(ok=True, status=250, latency_ms=int((now() - start).total_seconds() * 1000))
    try:
        url = macros.resolve(due.url, due.payload, due.event, owner=due.owner, jobs_base=base, url=True)
    except Exception as e:
        return webhook.redact(due.url), Outcome(ok=False, error=f"the URL's macros: {e}", permanent=True)
    body = json.dumps(due.payload, separators=(",", ":")).encode()
    signing = secrets.signing_secrets(due.owner)
    outcome = webhook.deliver(
        url, body, msg_id=due.msg_id, secrets=signing, notification_id=due.notification_id, attempt_id=attempt_id
    )
    return webhook.redact(url), outcome


def record(due: Due, attempt_id: str, url: str, started: datetime, outcome: Outcome) -> str:
    """The attempt and the delivery's next state, in one transaction; returns that state."""
    t = now()
    with db.transaction() as s:
        row = s.get(NotificationDelivery, due.id, with_for_update=True)
        if row is None or row.state != "PENDING":  # deleted with its notification, or recorded by another
            return row.state if row is not None else "DELETED"
        s.add(
            NotificationAttempt(
                id=attempt_id,
                notification_id=due.notification_id,
                delivery_id=due.id,
                event=due.event,
                url=url,
                started=started,
                response_code=outcome.status,
                error=outcome.error,
                latency_ms=outcome.latency_ms,
                success=outcome.ok,
            )
        )
        row.attempts += 1
        row.leased_until = None
        if outcome.ok:
            row.state, row.finished = "DELIVERED", t
            return row.state
        delay = None
        if not (outcome.gone or outcome.permanent):
            policy = retry.Policy.from_json(due.policy)
            delay = retry.with_retry_after(retry.next_delay(policy, row.attempts), outcome.retry_after)
        if delay is None:
            row.state, row.finished = "FAILED", t
            if outcome.gone:  # 410: the receiver wants no more; what is still queued for it is dropped
                n = s.get(Notification, due.notification_id)
                if n is not None:
                    n.active, n.last_updated = False, t
                    n.status_reason = "disabled: the receiver answered 410 Gone"
                s.execute(
                    update(NotificationDelivery)
                    .where(NotificationDelivery.notification_id == due.notification_id)
                    .where(NotificationDelivery.state == "PENDING")
                    .values(state="FAILED", finished=t)
                )
            return row.state
        row.next_attempt = t + timedelta(seconds=delay)
        return "RETRY"


def _one(due: Due, email: EmailSender) -> str:
    attempt_id = str(uuid.uuid4())
    started = now()
    try:
        url, outcome = send(due, attempt_id, email)
    except Exception as e:  # a bug or the database away: the lease ends and the row is tried again
        log.exception("delivery %s of notification %s failed before it was sent", due.id, due.notification_id)
        url, outcome = webhook.redact(due.url), Outcome(ok=False, error=f"{type(e).__name__}: {e}"[:1024])
    state = record(due, attempt_id, url, started, outcome)
    log.info(
        "notification %s of job %s, %s to %s: %s (%s)",
        due.notification_id,
        due.job_id,
        due.event,
        url,
        state,
        outcome.status if outcome.ok else outcome.error,
    )
    return state


_pool: ThreadPoolExecutor | None = None


def deliver_due(email: EmailSender = eml_sender, limit: int = BATCH) -> int:
    """Send what is due now (in parallel, in order per notification); the number of attempts made."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="airjobs-deliver")
    due = claim(limit)
    # rows of one notification are never claimed together (only the earliest PENDING one is due)
    list(_pool.map(lambda d: _one(d, email), due))
    return len(due)


def seconds_to_next() -> float:
    """Until the earliest PENDING delivery is due (IDLE_WAIT at most; 0 when one is due now)."""
    with db.session() as s:
        first = s.scalar(
            select(func.min(NotificationDelivery.next_attempt)).where(NotificationDelivery.state == "PENDING")
        )
    if first is None:
        return IDLE_WAIT
    return max(0.0, min(IDLE_WAIT, (first - now()).total_seconds()))


class Listener:
    """``LISTEN`` on the outbox channel over its own connection (psycopg2, autocommit)."""

    def __init__(self, url: str | None = None) -> None:
        import psycopg2

        u = make_url(url or config.db_url()).set(drivername="postgresql")
        self.conn = psycopg2.connect(u.render_as_string(hide_password=False))
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f"LISTEN {subscriptions.CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """True when a NOTIFY came within ``timeout`` seconds."""
        if not self.conn.notifies:
            ready, _, _ = _select.select([self.conn], [], [], timeout)
            if ready:
                self.conn.poll()
        got = bool(self.conn.notifies)
        self.conn.notifies.clear()
        return got

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass
