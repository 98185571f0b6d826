"""Reading and writing jobs and their history in the project's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, exists, func, or_, select, text, union, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from airjobs import access, db, errors
from airjobs.errors import NotFound
from airjobs.lifecycle import notify, record_event
from airjobs.models import Job, JobEvent, JobPermission, Notification
from airjobs.notifications import subscriptions
from airjobs.search import Search
from airjobs.statuses import ACTIVE, JobStatus, values
from airjobs.timeutil import now


def check_quotas(s: Session, job: Job, system: dict[str, Any]) -> None:
    """Spec §4.3/§11.2 limits, counted over the system's active (non-terminal) jobs. Runs inside the
    inserting transaction under a per-system advisory lock, so concurrent submissions cannot overshoot."""
    from sqlalchemy import text

    from airjobs.errors import BadRequest

    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "airjobs-quota:" + job.execution_system})
    queue: dict[str, Any] = next((q for q in system.get("queues") or [] if q.get("name") == job.batch_queue), {})
    checks: list[tuple[Any, dict[str, bool], str]] = [
        (system.get("maxSystemJobs", -1), {}, f"system {system['id']} allows at most {{n}} active jobs"),
        (
            system.get("maxSystemJobsPerUser", -1),
            {"owner": True},
            f"system {system['id']} allows at most {{n}} active jobs per user",
        ),
        (queue.get("maxJobs", -1), {"queue": True}, f"queue {job.batch_queue} allows at most {{n}} active jobs"),
        (
            queue.get("maxUserJobs", -1),
            {"owner": True, "queue": True},
            f"queue {job.batch_queue} allows at most {{n}} active jobs per user",
        ),
    ]
    for limit, scope, text_ in checks:
        if limit in (None, -1, "-1"):
            continue
        q = (
            select(func.count())
            .select_from(Job)
            .where(Job.execution_system == job.execution_system, Job.status.in_(values(ACTIVE)))
        )
        if scope.get("owner"):
            q = q.where(Job.owner == job.owner)
        if scope.get("queue"):
            q = q.where(Job.batch_queue == job.batch_queue)
        if int(s.scalar(q) or 0) >= int(limit):
            raise BadRequest(f"Quota exceeded: {text_.format(n=limit)}. Try again when some have finished.")


def create_job(
    job: Job, *, created_by: str, system: dict[str, Any] | None = None, description: str | None = None
) -> tuple[Job, bool]:
    """Insert a PENDING job and its first history event in one transaction, after the quota check when
    the execution system is given.

    With an idempotency key that this owner used before, nothing is written and the first job is
    returned; the boolean says whether the job is new.
    """
    if job.idempotency_key:
        existing = find_by_idempotency_key(job.owner, job.idempotency_key)
        if existing is not None:
            return existing, False
    try:
        with db.transaction() as s:
            if system is not None:
                check_quotas(s, job, system)
            s.add(job)
            s.flush()
            record_event(
                s, job, JobStatus.PENDING.value, description or JobStatus.PENDING.description, created_by=created_by
            )
            if job.notifications:
                subscriptions.create(s, job, job.notifications)
                notify(s, job, JobStatus.PENDING.value)
    except IntegrityError:
        if job.idempotency_key:
            existing = find_by_idempotency_key(job.owner, job.idempotency_key)
            if existing is not None:
                return existing, False
        raise
    return job, True


def find_by_idempotency_key(owner: str, key: str) -> Job | None:
    with db.session() as s:
        return s.scalars(select(Job).where(Job.owner == owner, Job.idempotency_key == key)).first()


def get_job(job_id: str) -> Job | None:
    with db.session() as s:
        return s.get(Job, job_id)


def _grant(s: Session, job_id: str, user: str) -> str | None:
    grant: str | None = s.scalar(
        select(JobPermission.permission).where(JobPermission.job_id == job_id, JobPermission.username == user)
    )
    return grant


def permission_of(job: Job, user: str, is_admin: bool) -> access.Perm:
    if is_admin or job.owner == user:
        return access.ALL
    with db.session() as s:
        return access.job_permission(job, user, is_admin, _grant(s, job.id, user))


def job_for(job_id: str, user: str, is_admin: bool, action: str = "read", hidden_ok: bool = False) -> Job:
    """The job when ``user`` may do ``action`` (read or write) on it (``access.check_job``): 404 for unknown,
    hidden or unreadable jobs, 403 for a readable job one may not change."""
    if "\x00" in job_id or len(job_id) > 64:
        raise NotFound(f"No job found with job id {job_id}.")
    job = get_job(job_id)
    perm = permission_of(job, user, is_admin) if job is not None else access.NONE
    access.check_job(job, job_id, perm, action, hidden_ok)
    if job is None:  # check_job refuses a missing job; this keeps the type checker informed
        raise NotFound(f"No job found with job id {job_id}.")
    return job


def readable_job(job_id: str, user: str, is_admin: bool) -> Job:
    return job_for(job_id, user, is_admin, "read")


def writable_job(job_id: str, user: str, is_admin: bool) -> Job:
    return job_for(job_id, user, is_admin, "write")


def readable_by(user: str) -> ColumnElement[bool]:
    """Jobs ``user`` owns or holds a grant with READ on (spec §9.2: listings include shared jobs)."""
    readers = [name for name, p in access.PERMISSIONS.items() if p.read]
    shared = exists().where(
        JobPermission.job_id == Job.id, JobPermission.username == user, JobPermission.permission.in_(readers)
    )
    return or_(Job.owner == user, shared)


def list_jobs(user: str, is_admin: bool, *, limit: int, offset: int, search: Search | None = None) -> list[Job]:
    """The jobs ``user`` may read (admins: all), visible ones only, that match ``search`` (``airjobs.search``),
    newest first unless it orders them. Hidden jobs never appear for a non-admin; an admin's search that names
    ``visible`` (``visible.eq=false``) decides visibility itself, so admins can find hidden jobs to restore."""
    search = search or Search()
    q = select(Job)
    if not (is_admin and "visible" in search.fields):
        q = q.where(Job.visible.is_(True))
    q = q.where(*search.where)
    with db.session() as s:
        if not is_admin:
            # most users hold no grant: then the owner's index (owner, created) serves the listing alone
            shared = s.scalar(select(JobPermission.job_id).where(JobPermission.username == user).limit(1))
            q = q.where(Job.id.in_(_readable_ids(user)) if shared is not None else Job.owner == user)
        q = q.order_by(*search.order_by([Job.created.desc(), Job.id.desc()])).limit(limit).offset(offset)
        return _searched(s, q)


def _readable_ids(user: str) -> Any:
    """The ids of the jobs ``user`` owns or holds a READ grant on (``readable_by`` as a set: the owner's index
    and the grants' index answer it, where an OR over both would scan every job)."""
    readers = [name for name, p in access.PERMISSIONS.items() if p.read]
    return union(
        select(Job.id).where(Job.owner == user),
        select(JobPermission.job_id).where(JobPermission.username == user, JobPermission.permission.in_(readers)),
    )


#: the longest a listing or search query may run (then a 400)
SEARCH_TIMEOUT_MS = 5000


def _searched(s: Session, q: Any) -> list[Any]:
    """The rows; a term the database refuses (a regular expression PostgreSQL cannot compile) is a 400."""
    if s.get_bind().dialect.name == "postgresql":  # no search holds a connection for long (a costly regex)
        s.execute(text(f"SET LOCAL statement_timeout = {SEARCH_TIMEOUT_MS}"))
    try:
        return list(s.scalars(q))
    except OperationalError as exc:
        if getattr(getattr(exc, "orig", None), "pgcode", None) != "57014":  # query_canceled
            raise
        s.rollback()
        raise errors.BadRequest(
            f"Search took longer than {SEARCH_TIMEOUT_MS // 1000} s: narrow it (fewer like/rlike terms)."
        ) from None
    except DataError as exc:
        s.rollback()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
        raise errors.BadRequest(f"Invalid search term: {reason}.") from None


def history(job_id: str, *, limit: int, offset: int, search: Search | None = None) -> list[JobEvent]:
    """A job's events, oldest first unless ``search`` (``airjobs.search.history_search``) orders them."""
    search = search or Search()
    q = select(JobEvent).where(JobEvent.job_id == job_id, *search.where)
    q = q.order_by(*search.order_by([JobEvent.id.asc()])).limit(limit).offset(offset)
    with db.session() as s:
        return _searched(s, q)


def insert_many(jobs: list[Job], events: list[JobEvent]) -> None:
    """Bulk insert of ready jobs and their history events in one transaction (the search benchmark, tests):
    no quota check, no notification, no lifecycle; ids, times and statuses are the caller's."""
    with db.transaction() as s:
        s.add_all(jobs)
        s.flush()
        s.add_all(events)


def count_jobs(*statuses: str) -> int:
    q = select(func.count()).select_from(Job)
    if statuses:
        q = q.where(Job.status.in_(statuses))
    with db.session() as s:
        return int(s.scalar(q) or 0)


def jobs_by_ids(ids: list[str]) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).where(Job.id.in_(ids)))) if ids else []


def has_event(job_id: str, status: str) -> bool:
    with db.session() as s:
        q = select(JobEvent.id).where(JobEvent.job_id == job_id, JobEvent.status == status).limit(1)
        return s.scalar(q) is not None


# ---------------------------------------------------------------- grants (spec §9)


def grants(job_id: str, *, limit: int = 1000, offset: int = 0) -> list[JobPermission]:
    q = (
        select(JobPermission)
        .where(JobPermission.job_id == job_id)
        .order_by(JobPermission.created, JobPermission.username)
        .limit(limit)
        .offset(offset)
    )
    with db.session() as s:
        return list(s.scalars(q))


def set_grant(job: Job, user: str, permission: str, *, by: str) -> None:
    """A grant replaces the user's previous value (spec §9.1); NONE removes it. One history event each."""
    with db.transaction() as s:
        row = s.get(JobPermission, (job.id, user))
        if permission == "NONE":
            if row is not None:
                s.delete(row)
            _silence(s, job, [user])
            record_event(s, job, "PERMISSION_REVOKE", f"All permissions revoked for {user}", created_by=by)
            notify(s, job, "PERMISSION_REVOKE")
            return
        if row is None:
            s.add(JobPermission(job_id=job.id, username=user, permission=permission, created=now(), created_by=by))
        else:
            row.permission = permission
        if not access.PERMISSIONS[permission].read:  # a grant without READ: their webhooks carried the job JSON
            _silence(s, job, [user])
        record_event(s, job, "PERMISSION_GRANT", f"{permission} permission granted to {user}", created_by=by)
        notify(s, job, "PERMISSION_GRANT")


def _silence(s: Session, job: Job, users: list[str]) -> None:
    """Deactivate the notifications ``users`` (not the job's owner) hold on ``job``: they may no longer read it.
    (The deliverer checks again before each delivery: ``airjobs.notifications.outbox``.)"""
    users = [u for u in users if u != job.owner]
    if users:
        s.execute(
            update(Notification)
            .where(Notification.associated_uuid == job.id, Notification.owner.in_(users))
            .values(active=False, status_reason="disabled: its owner may no longer read the job", last_updated=now())
        )


def revoke_all(job: Job, *, by: str) -> None:
    with db.transaction() as s:
        rows = list(s.scalars(select(JobPermission).where(JobPermission.job_id == job.id)))
        _silence(s, job, [r.username for r in rows])
        for row in rows:
            s.delete(row)
        record_event(s, job, "PERMISSION_REVOKE", "All permissions revoked", created_by=by)
        notify(s, job, "PERMISSION_REVOKE")
