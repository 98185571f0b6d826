"""Notification objects of a job request (spec §6.1) and the outbox rows they produce.

``parse`` validates what a request names (``notifications`` and the ``callbackUrl`` shortcut) before the job
exists: a bad object is a 400 naming its field, and no job row is written. ``create`` stores the validated
subscriptions in the transaction that inserts the job; ``enqueue`` writes one outbox row
(``NotificationDelivery``) per matching subscription in the transaction of every status change, so no change
ever lacks its notification, and tells the deliverer with PostgreSQL ``NOTIFY`` (delivered at commit).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from airjobs.errors import BadRequest
from airjobs.models import Job, Notification, NotificationDelivery
from airjobs.notifications import retry, webhook
from airjobs.statuses import JobStatus
from airjobs.timeutil import now

#: the PostgreSQL channel the deliverer listens on (payload: the job id)
CHANNEL = "airjobs_outbox"
NOTIFICATION_SUFFIX = "0001-011"

#: job event names a notification may name (spec §6.3), besides every status and ``*``
OTHER_EVENTS = frozenset(
    {
        "PERMISSION_GRANT",
        "PERMISSION_REVOKE",
        "DELETED",
        "RESTORED",
        "EMPTY_STATUS_RESPONSE",
        "REMOTE_STATUS_CHANGE",
        "UNKNOWN_TERMINATION",
        "JOB_RUNTIME_CALLBACK_EVENT",
        "CREATED",
        "UPDATED",
    }
)
EVENTS = frozenset(s.value for s in JobStatus) | OTHER_EVENTS | {"*"}
#: the events the callbackUrl shortcut subscribes to (spec §4: three non-persistent notifications)
CALLBACK_EVENTS = ("FINISHED", "FAILED", "STOPPED")
FIELDS = ("url", "event", "persistent", "policy")
MAX_NOTIFICATIONS = 100

_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+"
)


def new_id() -> str:
    return f"{time.time_ns() // 1000:016d}-{secrets.token_hex(5)}-{NOTIFICATION_SUFFIX}"


def is_email(url: str) -> bool:
    return bool(_EMAIL.fullmatch(url))


def check_target(value: Any, field: str = "notification url") -> str:
    """An e-mail address or an http(s) URL the egress guard lets the service reach (``webhook.check_url``)."""
    if not isinstance(value, str):
        raise BadRequest(f"Invalid {field}: expected a text value, got {type(value).__name__}.")
    url: str = value.strip()
    if not 4 <= len(url) <= 1024:
        raise BadRequest(f"Invalid {field}: it must be 4 to 1024 characters long.")
    if is_email(url):
        return url
    if not re.match(r"(?i)https?://", url):
        raise BadRequest(
            f"Invalid {field} {url!r}: expected an e-mail address or an http(s):// URL "
            "(SMS, Slack and realtime channels are not supported)."
        )
    try:
        webhook.check_url(url)
    except BadRequest as e:
        why = e.message.removeprefix("Invalid callback url ")
        raise BadRequest(f"Invalid {field} {why}" if why != e.message else f"Invalid {field}: {why}") from None
    return url


def check_event(event: Any, field: str = "notification event") -> str:
    if not isinstance(event, str) or not event.strip():
        raise BadRequest(f"Invalid {field}: expected a job event name or *.")
    name = event.strip().upper()
    if name not in EVENTS:
        raise BadRequest(
            f"Invalid {field} {event!r}: not a job event. Valid events are * and {', '.join(sorted(EVENTS - {'*'}))}."
        )
    return name


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"Invalid {field}: expected true or false.")


def parse_one(doc: Any, where: str = "notifications[0]") -> dict[str, Any]:
    """One notification object, validated and normalised: ``{url, event, persistent, policy}``."""
    if isinstance(doc, str):  # a bare URL or address: every event? Agave reads it as a callback target
        doc = {"url": doc, "event": "*"}
    if not isinstance(doc, dict):
        raise BadRequest(f"Invalid {where}: expected a notification object with url and event.")
    unknown = sorted(set(doc) - set(FIELDS) - {"id", "associatedUuid", "owner"})
    if unknown:
        raise BadRequest(f"Invalid {where}: unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}.")
    if "url" not in doc:
        raise BadRequest(f"Invalid {where}.url: a notification needs a url (an http(s) URL or e-mail address).")
    if "event" not in doc:
        raise BadRequest(f"Invalid {where}.event: a notification needs an event (a job event name or *).")
    url = check_target(doc["url"], f"{where}.url")
    event = check_event(doc["event"], f"{where}.event")
    persistent = _bool(doc.get("persistent", False), f"{where}.persistent")
    try:
        policy = retry.Policy.from_json(doc.get("policy"))
    except BadRequest as e:
        raise BadRequest(e.message.replace("Invalid notification policy", f"Invalid {where}.policy", 1)) from None
    return {"url": url, "event": event, "persistent": persistent, "policy": policy.to_json()}


def parse(notifications: Any, callback_url: Any = None) -> list[dict[str, Any]]:
    """The validated notification objects of a job request: ``notifications`` (a list, one object, or JSON
    text of either, as forms send it) plus the three that ``callbackUrl`` stands for."""
    specs: list[dict[str, Any]] = []
    if isinstance(notifications, str) and notifications.strip()[:1] in ("[", "{"):
        try:
            notifications = json.loads(notifications)
        except ValueError:
            raise BadRequest("Invalid notifications: not valid JSON.") from None
    if notifications not in (None, "", []):
        items = notifications if isinstance(notifications, list) else [notifications]
        if len(items) > MAX_NOTIFICATIONS:
            raise BadRequest(f"Invalid notifications: at most {MAX_NOTIFICATIONS} per job.")
        specs += [parse_one(item, f"notifications[{i}]") for i, item in enumerate(items)]
    if callback_url not in (None, ""):
        if isinstance(callback_url, str) and callback_url.strip()[:1] in ("[", "{"):
            return specs + parse(callback_url)  # spec §4: JSON text in callbackUrl is notification JSON
        url = check_target(callback_url, "callbackUrl")
        specs += [
            {"url": url, "event": e, "persistent": False, "policy": retry.Policy().to_json()} for e in CALLBACK_EVENTS
        ]
    return specs


def create(s: Session, job: Job, specs: list[dict[str, Any]], owner: str | None = None) -> list[Notification]:
    """Store ``specs`` as notifications of ``job`` (in the caller's transaction)."""
    t = now()
    rows = [
        Notification(
            id=new_id(),
            owner=owner or job.owner,
            associated_uuid=job.id,
            url=spec["url"],
            event=spec["event"],
            persistent=bool(spec["persistent"]),
            policy=spec["policy"],
            active=True,
            created=t,
            last_updated=t,
        )
        for spec in specs
    ]
    s.add_all(rows)
    s.flush()
    return rows


def enqueue(s: Session, job: Job, event: str, payload: Callable[[], dict[str, Any]]) -> int:
    """Outbox rows for ``event`` of ``job``, one per active subscription that matches it, in the caller's
    transaction; a non-persistent subscription fires once and is deactivated here. ``payload()`` gives the job
    JSON at this moment (computed once, only when something matches). Returns the rows written."""
    subs = s.scalars(
        select(Notification)
        .where(Notification.associated_uuid == job.id, Notification.active.is_(True))
        .where(Notification.event.in_((event, "*")))
        .order_by(Notification.created, Notification.id)
        .with_for_update()
    ).all()
    if not subs:
        return 0
    body = payload()
    t = now()
    for sub in subs:
        s.add(
            NotificationDelivery(
                notification_id=sub.id,
                job_id=job.id,
                event=event,
                msg_id=f"msg_{uuid.uuid4().hex}",
                payload=body,
                state="PENDING",
                attempts=0,
                next_attempt=t,
                created=t,
            )
        )
        if not sub.persistent:
            sub.active = False
            sub.status_reason = f"fired once, on {event}"
            sub.last_updated = t
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": job.id})
    return len(subs)
