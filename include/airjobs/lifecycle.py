"""The job state machine: ``transition`` is the only code that changes a job's status.

One call = one database transaction that locks the job row, refuses a move the table (spec §5.2) does
not allow, writes the new status, the timestamps that go with it and one history event. Listeners
are told after the commit. The outbox rows of the job's notifications for the new status are written in
the same transaction (``notify``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from airjobs import db
from airjobs.errors import IllegalTransition, NotFound
from airjobs.models import Job, JobEvent
from airjobs.statuses import TERMINAL, JobStatus, can_move
from airjobs.timeutil import now

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "airjobs"
#: ``airjobs.events.CHANNEL`` (the SSE hub listens there)
EVENTS_CHANNEL = "airjobs_job_event"

Listener = Callable[[Job, JobStatus, str], None]
_listeners: list[Listener] = []


def add_listener(fn: Listener) -> None:
    """Call ``fn(job, status, description)`` after every committed transition."""
    _listeners.append(fn)


def record_event(
    s: Session, job: Job, status: str, description: str, *, created_by: str | None, progress: Any = None
) -> JobEvent:
    ev = JobEvent(
        job_id=job.id,
        status=str(status),
        description=description,
        created=now(),
        created_by=created_by or SYSTEM_ACTOR,
        progress=progress,
    )
    s.add(ev)
    if s.get_bind().dialect.name == "postgresql":  # the live event streams (airjobs.events), told at commit
        s.flush()
        s.execute(text("SELECT pg_notify(:c, :p)"), {"c": EVENTS_CHANNEL, "p": f"{job.id} {ev.id}"})
    return ev


def notify(s: Session, job: Job, event: str) -> int:
    """The outbox rows of ``event`` for the job's matching notifications, in the caller's transaction
    (``airjobs.notifications.subscriptions.enqueue``): a status change and its notifications commit together."""
    from airjobs import config, representation
    from airjobs.notifications import subscriptions

    s.flush()
    if not job.visible:  # a hidden job's events notify nobody (spec §7.4)
        return 0
    return subscriptions.enqueue(s, job, event, lambda: representation.job_json(job, config.public_base()))


def transition(
    job_id: str,
    status: JobStatus | str,
    message: str | None = None,
    *,
    created_by: str | None = None,
    progress: Any = None,
    **fields: Any,
) -> Job:
    """Move the job to ``status``; ``fields`` are other job columns set in the same transaction.

    Raises ``IllegalTransition`` when the move is not allowed and ``NotFound`` for an unknown job.
    """
    new = JobStatus(status)
    description = message or new.description
    with db.transaction() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise NotFound(f"No job found with job id {job_id}.")
        current = JobStatus(job.status)
        if not can_move(current, new):
            raise IllegalTransition(f"Job {job_id} cannot update status from {current} to {new}")
        t = now()
        if new is not JobStatus.HEARTBEAT:
            job.status = new.value
            job.message = description
        job.last_updated = t
        if new is JobStatus.QUEUED:
            job.submit_time = t
        if new is JobStatus.RUNNING and job.start_time is None:
            job.start_time = t
        if new in TERMINAL and job.end_time is None:
            job.end_time = t
        for key, value in fields.items():
            if not hasattr(Job, key):
                raise AttributeError(f"Job has no column {key}")
            setattr(job, key, value)
        record_event(s, job, new.value, description, created_by=created_by, progress=progress)
        notify(s, job, new.value)
    for fn in list(_listeners):
        try:
            fn(job, new, description)
        except Exception:  # a listener never undoes a committed transition
            log.exception("transition listener %r failed for job %s", fn, job_id)
    return job


def fail(job_id: str, reason: str, *, created_by: str | None = None, **fields: Any) -> Job | None:
    """End a job FAILED with ``reason`` unless it is already in a terminal status; returns the job."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        if JobStatus(job.status) in TERMINAL:
            return job
    try:
        return transition(job_id, JobStatus.FAILED, reason, created_by=created_by, **fields)
    except IllegalTransition:
        # raced with another terminal move: the job is already final
        return None
