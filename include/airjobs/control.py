"""User actions on a job (spec §7, D1, D2): kill (``stop``/``cancel``), hide (``DELETE``) and restore."""

from __future__ import annotations

import logging

from airjobs import db, registry, remote, store
from airjobs.errors import AgaveError, Conflict, IllegalTransition
from airjobs.lifecycle import notify, record_event, transition
from airjobs.models import Job
from airjobs.statuses import REMOTE, JobStatus, is_terminal

log = logging.getLogger(__name__)
S = JobStatus

KILL_ACTIONS = frozenset({"kill", "stop", "cancel"})
HIDE_ACTIONS = frozenset({"hide", "delete"})
RESTORE_ACTIONS = frozenset({"restore", "unhide"})


def kill(job_id: str, user: str, is_admin: bool) -> Job:
    """End the job STOPPED. Before it reached the host, staging and submission notice and stop; once it did,
    the scheduler's kill command runs first (a FORK job's process group is killed). A host that cannot be
    reached leaves the job as it was: 502, try again. A job that already ended is left alone."""
    job = store.writable_job(job_id, user, is_admin)
    status = JobStatus(job.status)
    if is_terminal(status) or status in (S.ARCHIVING_FINISHED, S.ARCHIVING_FAILED):
        return job
    message = "Job cancelled by user."
    system = registry.get_system(job.execution_system) if status in REMOTE else None
    if system is not None and not job.local_id and status is S.SUBMITTING:
        try:  # handed over by a submit that was cut before recording it: that remote job is killed too
            job.local_id = remote.submitted_id(job, system)
        except Exception as e:
            log.warning("could not read the submission record of job %s: %s", job_id, e)
    if job.local_id and status in REMOTE and system is not None:
        try:
            what = remote.kill_remote(job, system)
        except Exception as e:
            log.warning("kill of job %s on %s failed: %s", job_id, job.execution_system, e)
            raise AgaveError(
                f"Unable to kill job {job_id}: {job.execution_system} is not reachable: {e}", 502
            ) from None
        message = f"Job cancelled by user: {what}."
    try:
        return transition(job_id, S.STOPPED, message, created_by=user)
    except IllegalTransition:  # it ended on its own meanwhile
        return store.get_job(job_id) or job


def hide(job_id: str, user: str, is_admin: bool) -> str:
    """Hide the job (spec §7.4: never purged): gone from listings and search, 404 for everything but restore.
    A job still active is killed first (a host that cannot be reached: 502, and the job stays visible).
    History gets DELETED (its notifications fire; later events of a hidden job notify nobody). Returns the
    answer's message."""
    job = store.writable_job(job_id, user, is_admin)
    message = f"Job {job_id} hidden."
    if not is_terminal(job.status):
        kill(job_id, user, is_admin)
        message = f"Job {job_id} was still active: it was stopped, then hidden."
    with db.transaction() as s:
        row = s.get(Job, job_id, with_for_update=True)
        if row is None or not row.visible:
            return message
        record_event(s, row, "DELETED", f"Job was deleted by user {user}.", created_by=user)
        notify(s, row, "DELETED")
        row.visible = False
    return message


def restore(job_id: str, user: str, is_admin: bool) -> Job:
    """Make a hidden job visible again (WRITE needed, as for hiding); RESTORED in its history. A visible job:
    409."""
    job = store.job_for(job_id, user, is_admin, "write", hidden_ok=True)
    with db.transaction() as s:
        row = s.get(Job, job.id, with_for_update=True)
        if row is None:
            raise Conflict(f"Job {job_id} is gone.")
        if row.visible:
            raise Conflict(f"Job {job_id} is already visible.")
        row.visible = True
        record_event(s, row, "RESTORED", f"Job was restored by user {user}.", created_by=user)
        notify(s, row, "RESTORED")
    return store.get_job(job_id) or job
