"""Reading and writing jobs and their history in the project's tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from airjobs import db
from airjobs.errors import Forbidden, NotFound
from airjobs.lifecycle import record_event
from airjobs.models import Job, JobEvent
from airjobs.statuses import JobStatus


def create_job(job: Job, *, created_by: str) -> tuple[Job, bool]:
    """Insert a PENDING job and its first history event in one transaction.

    With an idempotency key that this owner used before, nothing is written and the first job is
    returned; the boolean says whether the job is new.
    """
    if job.idempotency_key:
        existing = find_by_idempotency_key(job.owner, job.idempotency_key)
        if existing is not None:
            return existing, False
    try:
        with db.transaction() as s:
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
