"""What the job did, and what the service suffered: a step that failed because of the service is retried.

A lifecycle step ends its job FAILED at once only for what the job did (``is_jobs_fault``): a ``StepError``
(the app exited non-zero, the scheduler refused the script, an input is missing, a system is gone), an
``AgaveError`` of the access rules (a permission refused), a file missing or forbidden on a host, a rejected SSH
key or a Connection that does not exist. Anything else is a failure of the service or of
the way to the host (the execution API unreachable, the database connection dropped, an SSH connection
reset, a task process killed, a worker lost, a bug): the step is retried.

The retries are Airflow's own task retries (``dags/airjobs_lifecycle.py``: many tries, exponential back-off
from ``RETRY_DELAY`` to ``MAX_RETRY_DELAY``), because only Airflow can retry a task whose process died (a
SIGKILL, a worker or scheduler lost) and it keeps every try's log in the UI; this module bounds them in time.
Each retry is an event in the job's history (its status unchanged): ``note_failure`` when the step raised,
``note_retry`` when a try starts after one that ended without saying why (its process was killed). The job's
``recovery`` column remembers since when the step has been failing; a step that works clears it
(``recovered``). Once a step has been failing for ``budget()`` seconds (``AIRJOBS_RETRY_SECONDS``, default 1 h)
the job ends FAILED with the last error. Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from airjobs import db
from airjobs.errors import AgaveError, IllegalTransition, StepError
from airjobs.lifecycle import record_event
from airjobs.models import Job
from airjobs.statuses import TERMINAL, JobStatus
from airjobs.timeutil import iso, now

log = logging.getLogger(__name__)

#: Airflow's back-off between tries of a lifecycle task (seconds): doubled each try up to MAX_RETRY_DELAY
RETRY_DELAY = 5.0
MAX_RETRY_DELAY = 60.0
#: tries Airflow makes at most; the time budget ends the retries long before (1 h at 60 s apart is ~70 tries)
MAX_TRIES = 500
#: a step that went this long without failing (it worked for a while: a long copy, a job waiting in the
#: triggerer) starts its budget anew at its next failure
QUIET_SECONDS = 2 * MAX_RETRY_DELAY + 60


def budget() -> float:
    """Seconds a step may keep failing because of the service before its job ends FAILED."""
    try:
        value = float(os.environ.get("AIRJOBS_RETRY_SECONDS", "3600"))
    except ValueError:
        return 3600.0
    return value if value > 0 else 3600.0


class GaveUp(Exception):
    """A step failed because of the service for longer than ``budget()``: its job was ended FAILED."""


def is_jobs_fault(exc: BaseException) -> bool:
    """Did the job (its app, its inputs, its owner's rights, its systems) cause ``exc``, so that retrying cannot
    help? Everything else is a failure of the service, retried."""
    from airjobs.checks import _REFUSALS

    if isinstance(exc, (StepError, PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return True  # (staging and archiving name the host and path of a missing or forbidden file themselves)
    if {c.__name__ for c in type(exc).__mro__} & _REFUSALS:  # a rejected key, a Connection that does not exist
        return True
    return isinstance(exc, AgaveError) and not isinstance(exc, IllegalTransition)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _since(recovery: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(recovery["since"]) if isinstance(recovery, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _note(job_id: str, task: str, attempt: int, description: str, error: str | None) -> dict[str, Any] | None:
    """Record one retry event (status unchanged) and update ``recovery``; None when the job has ended."""
    with db.transaction() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or JobStatus(job.status) in TERMINAL:
            return None
        t = now()
        old = job.recovery if isinstance(job.recovery, dict) else {}
        last = _since({"since": old.get("at")}) if old else None
        fresh = old.get("task") != task or last is None or (t - last).total_seconds() > QUIET_SECONDS
        since = (None if fresh else _since(old)) or t  # another step failing, or after a quiet spell: anew
        rec = {
            "since": iso(since),
            "at": iso(t),
            "count": int(old.get("count") or 0) + 1,
            "task": task,
            "try": attempt,
            "error": error or old.get("error"),
        }
        deadline = since + timedelta(seconds=budget())
        if t >= deadline:
            rec["exhausted"] = True
        else:
            description = f"{description}; retrying until {iso(deadline)}"
        job.recovery = rec
        record_event(s, job, job.status, description, created_by=None)
    return rec


def note_failure(job_id: str, task: str, attempt: int, exc: BaseException) -> None:
    """The try ``attempt`` of ``task`` raised ``exc``, a failure of the service: record it, or raise ``GaveUp``
    when the step has been failing for longer than the budget (the caller then ends the job FAILED)."""
    error = describe(exc)
    rec = _note(job_id, task, attempt, f"Task {task} (try {attempt}) failed because of the service ({error})", error)
    if rec and rec.get("exhausted"):
        raise GaveUp(_gave_up(task, rec))


def note_retry(job_id: str, task: str, attempt: int) -> None:
    """A try of ``task`` starts after an earlier one: record it unless the earlier try recorded its own failure
    (its process was killed, or lost with its worker, or Airflow could not run it); ``GaveUp`` past the budget."""
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None or JobStatus(job.status) in TERMINAL:
            return
        rec = job.recovery if isinstance(job.recovery, dict) else {}
    if rec.get("task") == task and rec.get("try") == attempt:  # this try again (resumed after a deferral)
        return
    if rec.get("task") == task and rec.get("try") == attempt - 1:  # the try before said why it failed
        if rec.get("exhausted"):
            raise GaveUp(_gave_up(task, rec))
        return
    rec = (
        _note(
            job_id,
            task,
            attempt,
            f"Task {task} starts try {attempt}: the try before ended without finishing "
            "(its process was stopped or lost, or the service could not run it)",
            None,
        )
        or {}
    )
    if rec.get("exhausted"):
        raise GaveUp(_gave_up(task, rec))


def _gave_up(task: str, rec: dict[str, Any]) -> str:
    minutes = budget() / 60
    last = f": {rec['error']}" if rec.get("error") else ""
    return f"Task {task} kept failing because of the service for {minutes:g} min ({rec.get('count')} retries){last}"


def recovered(job_id: str) -> None:
    """A step worked: the job is no longer in recovery (one UPDATE that changes nothing when it was not)."""
    with db.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.recovery.is_not(None)).values(recovery=None))
