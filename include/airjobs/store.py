"""Reading and writing jobs and their history in the project's tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from airjobs import db
from airjobs.errors import Forbidden, NotFound
from airjobs.lifecycle import record_event
from airjobs.models import Job, JobEvent
from airjobs.statuses import TERMINAL, JobStatus


ACTIVE = tuple(s.value for s in JobStatus if s not in TERMINAL and s is not JobStatus.HEARTBEAT)


def check_quotas(s, job: Job, system: dict) -> None:
    """Spec §4.3/§11.2 limits, counted over the system's active (non-terminal) jobs. Runs inside the
    inserting transaction under a per-system advisory lock, so concurrent submissions cannot overshoot."""
    from sqlalchemy import text

    from airjobs.errors import BadRequest

    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "airjobs-quota:" + job.execution_system})
    queue = next((q for q in system.get("queues") or [] if q.get("name") == job.batch_queue), {})
    checks = [
        (system.get("maxSystemJobs", -1), {}, f"system {system['id']} allows at most {{n}} active jobs"),
        (system.get("maxSystemJobsPerUser", -1), {"owner": True},
         f"system {system['id']} allows at most {{n}} active jobs per user"),
        (queue.get("maxJobs", -1), {"queue": True}, f"queue {job.batch_queue} allows at most {{n}} active jobs"),
        (queue.get("maxUserJobs", -1), {"owner": True, "queue": True},
         f"queue {job.batch_queue} allows at most {{n}} active jobs per user"),
    ]
    for limit, scope, text_ in checks:
        if limit in (None, -1, "-1"):
            continue
        q = select(func.count()).select_from(Job).where(Job.execution_system == job.execution_system,
                                                        Job.status.in_(ACTIVE))
        if scope.get("owner"):
            q = q.where(Job.owner == job.owner)
        if scope.get("queue"):
            q = q.where(Job.batch_queue == job.batch_queue)
        if int(s.scalar(q) or 0) >= int(limit):
            raise BadRequest(f"Quota exceeded: {text_.format(n=limit)}. Try again when some have finished.")


def create_job(job: Job, *, created_by: str, system: dict | None = None) -> tuple[Job, bool]:
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
            record_event(s, job, JobStatus.PENDING.value, JobStatus.PENDING.description, created_by=created_by)
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


def readable_job(job_id: str, user: str, is_admin: bool) -> Job:
    """The job if ``user`` may read it; 404 for unknown or hidden jobs, 403 for someone else's."""
    job = get_job(job_id)
    if job is None:
        raise NotFound(f"No job found with job id {job_id}.")
    if not job.visible:
        raise NotFound(f"Job with uuid {job_id} is not visible.")
    if not is_admin and job.owner != user:
        raise Forbidden("User does not have permission to view this job")
    return job


def list_jobs(user: str, is_admin: bool, *, limit: int, offset: int) -> list[Job]:
    q = select(Job).where(Job.visible.is_(True))
    if not is_admin:
        q = q.where(Job.owner == user)
    q = q.order_by(Job.created.desc(), Job.id.desc()).limit(limit).offset(offset)
    with db.session() as s:
        return list(s.scalars(q))


def history(job_id: str, *, limit: int, offset: int) -> list[JobEvent]:
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(limit).offset(offset)
    with db.session() as s:
        return list(s.scalars(q))


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
