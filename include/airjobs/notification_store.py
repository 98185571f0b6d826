"""The notifications a user may see and change (``/notifications/v2``) and their attempts.

A notification obeys its job's permissions: who may read the job sees its notifications, who may change the
job (WRITE) adds, updates and deletes them; for anyone else the notification does not exist (404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select

from airjobs import db, store
from airjobs.errors import BadRequest, Forbidden, NotFound
from airjobs.models import Job, Notification, NotificationAttempt, NotificationDelivery
from airjobs.notifications import subscriptions
from airjobs.timeutil import iso, now


@dataclass(frozen=True)
class Stats:
    attempts: int = 0
    last_sent: Any = None
    response_code: int | None = None
    success: bool | None = None


def _readable(s: Any, user: str, is_admin: bool) -> Any:
    q = select(Notification).join(Job, Job.id == Notification.associated_uuid).where(Job.visible.is_(True))
    return q if is_admin else q.where(store.readable_by(user))


def stats(s: Any, ids: list[str]) -> dict[str, Stats]:
    """Attempt count and the last attempt's answer of each notification."""
    if not ids:
        return {}
    counts = dict(
        s.execute(
            select(NotificationAttempt.notification_id, func.count())
            .where(NotificationAttempt.notification_id.in_(ids))
            .group_by(NotificationAttempt.notification_id)
        ).all()
    )
    last = (
        select(NotificationAttempt)
        .where(NotificationAttempt.notification_id.in_(ids))
        .distinct(NotificationAttempt.notification_id)
        .order_by(NotificationAttempt.notification_id, NotificationAttempt.started.desc())
    )
    out = {i: Stats(attempts=int(counts.get(i, 0))) for i in ids}
    for a in s.scalars(last):
        out[a.notification_id] = Stats(int(counts.get(a.notification_id, 0)), a.started, a.response_code, a.success)
    return out


def listing(
    user: str, is_admin: bool, job_id: str | None, *, limit: int, offset: int
) -> list[tuple[Notification, Stats]]:
    with db.session() as s:
        q = _readable(s, user, is_admin)
        if job_id:
            q = q.where(Notification.associated_uuid == job_id)
        rows = s.scalars(q.order_by(Notification.created.desc(), Notification.id).limit(limit).offset(offset)).all()
        st = stats(s, [n.id for n in rows])
        return [(n, st[n.id]) for n in rows]


def get(nid: str, user: str, is_admin: bool, action: str = "read") -> tuple[Notification, Stats]:
    """The notification when the caller may ``action`` ("read" or "write") its job; NotFound (404) when they
    may not see it, Forbidden (403) when they may read but not change it. Changing one needs READ as well:
    its webhooks carry the job's JSON."""
    with db.session() as s:
        n = s.get(Notification, nid)
        if n is None:
            raise NotFound(f"No notification found matching {nid}")
        try:
            job = store.job_for(n.associated_uuid, user, is_admin, "read")
            if action != "read":
                store.job_for(n.associated_uuid, user, is_admin, action)
        except NotFound:
            raise NotFound(f"No notification found matching {nid}") from None
        if action != "read" and user not in (n.owner, job.owner) and not is_admin:
            # its deliveries are signed with its owner's secret: nobody else points them elsewhere
            raise Forbidden(f"Notification {nid} belongs to {n.owner}: only they or the job's owner may change it.")
        return n, stats(s, [n.id])[n.id]


def add(job: Job, doc: dict[str, Any], owner: str) -> Notification:
    spec = subscriptions.parse_one({k: v for k, v in doc.items() if k != "associatedUuid"}, "notification")
    with db.transaction() as s:
        s.get(Job, job.id, with_for_update=True)  # one add at a time per job: the count holds
        count = s.scalar(select(func.count()).where(Notification.associated_uuid == job.id)) or 0
        if count >= subscriptions.MAX_NOTIFICATIONS:
            raise BadRequest(f"Job {job.id} has {count} notifications, the most a job may have.")
        return subscriptions.create(s, job, [spec], owner=owner)[0]


def update(nid: str, doc: dict[str, Any]) -> Notification:
    """Replace url, event, persistent and policy (what the body does not name stays); it is active again."""
    with db.transaction() as s:
        n = s.get(Notification, nid, with_for_update=True)
        if n is None:
            raise NotFound(f"No notification found matching {nid}")
        if doc.get("associatedUuid") not in (None, "", n.associated_uuid):
            raise BadRequest("Invalid associatedUuid: a notification cannot move to another job.")
        merged = {"url": n.url, "event": n.event, "persistent": n.persistent, "policy": n.policy}
        merged.update({k: v for k, v in doc.items() if k in subscriptions.FIELDS})
        spec = subscriptions.parse_one(merged, "notification")
        n.url, n.event, n.persistent, n.policy = spec["url"], spec["event"], spec["persistent"], spec["policy"]
        n.active, n.status_reason, n.last_updated = True, None, now()
        return n


def delete(nid: str) -> None:
    with db.transaction() as s:
        n = s.get(Notification, nid)
        if n is not None:
            s.delete(n)


def attempts(nid: str, *, limit: int, offset: int) -> list[NotificationAttempt]:
    with db.session() as s:
        q = (
            select(NotificationAttempt)
            .where(NotificationAttempt.notification_id == nid)
            .order_by(NotificationAttempt.started, NotificationAttempt.id)
        )
        return list(s.scalars(q.limit(limit).offset(offset)))


def pending(job_id: str) -> int:
    """Deliveries of the job's notifications not yet sent or retried (for tests and the README's bench)."""
    with db.session() as s:
        q = select(func.count()).where(NotificationDelivery.job_id == job_id, NotificationDelivery.state == "PENDING")
        return int(s.scalar(q) or 0)


# ---------------------------------------------------------------- JSON


def _href(base: str, path: str) -> dict[str, str]:
    return {"href": f"{base.rstrip('/')}{path}"}


def shown_url(url: str, owner: str, viewer: str | None) -> str:
    """A webhook URL as ``viewer`` may see it: whole for its owner; for other readers of the job only where it
    goes (scheme, host, port), since a path or query often carries a secret (a Slack hook, a token)."""
    if viewer in (None, owner) or subscriptions.is_email(url):
        return url
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(hidden)"
    return f"{parts.scheme}://{host}/…"


def notification_json(n: Notification, st: Stats, base: str, viewer: str | None = None) -> dict[str, Any]:
    """The notification as ``viewer`` sees it (``shown_url``)."""
    path = f"/notifications/v2/{n.id}"
    return {
        "id": n.id,
        "owner": n.owner,
        "url": shown_url(n.url, n.owner, viewer),
        "associatedUuid": n.associated_uuid,
        "event": n.event,
        "persistent": n.persistent,
        "status": "ACTIVE" if n.active else "INACTIVE",
        "statusReason": n.status_reason,
        "policy": n.policy,
        "attempts": st.attempts,
        "lastSent": iso(st.last_sent) if st.last_sent else None,
        "responseCode": st.response_code,
        "success": st.success,
        "created": iso(n.created),
        "lastUpdated": iso(n.last_updated),
        "_links": {
            "self": _href(base, path),
            "attempts": _href(base, f"{path}/attempts"),
            "job": _href(base, f"/jobs/v2/{n.associated_uuid}"),
            "owner": _href(base, f"/profiles/v2/{n.owner}"),
        },
    }


def attempt_json(a: NotificationAttempt, owner: str | None = None, viewer: str | None = None) -> dict[str, Any]:
    return {
        "id": a.id,
        "notificationId": a.notification_id,
        "event": a.event,
        "url": a.url if owner is None else shown_url(a.url, owner, viewer),
        "startTime": iso(a.started),
        "responseCode": a.response_code,
        "error": a.error,
        "latencyMs": a.latency_ms,
        "success": a.success,
    }
