"""How the DAG runs a step: ``run_step`` (a whole step) and ``run_part`` (a part of one: the monitor's plan,
check and completion). Any exception ends the job FAILED with the real error in ``message`` and history when it
is what the job did, else is recorded and re-raised so Airflow retries the task (``airjobs.recovery``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from airjobs import recovery, runs
from airjobs.errors import StepError

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobAlreadyFinal(Exception):
    """The job reached a terminal status (stopped, failed) while the DAG run was still going."""


class JobFailed(StepError):
    """The step ended its job FAILED (what the job did, or the service failing past the retry budget): the
    Airflow task must fail without another try."""


def run_step(task: str, job_id: str, step: Callable[[str], T], attempt: int = 1) -> T:
    """``step(job_id)``, try ``attempt`` of the task ``task``, as ``run_part``; its success ends the job's
    recovery (``recovery.recovered``)."""
    result = run_part(task, job_id, lambda: step(job_id), attempt)
    recovery.recovered(job_id)
    return result


def run_part(task: str, job_id: str, fn: Callable[[], T], attempt: int = 1) -> T:
    """``fn()`` for try ``attempt`` of the task ``task``. What the job did (``recovery.is_jobs_fault``) ends the
    job FAILED with the error and raises ``JobFailed``; a failure of the service is recorded in the job's
    history and re-raised for Airflow to retry the task, until ``recovery.budget()`` runs out (then FAILED,
    ``JobFailed``)."""
    try:
        return fn()
    except JobAlreadyFinal:
        raise
    except Exception as e:
        if recovery.is_jobs_fault(e):
            runs.fail_and_stop(job_id, str(e))  # a job that ends FAILED does not run on on its host
            raise JobFailed(str(e)) from e
        log.warning(
            "step %s of job %s failed because of the service (try %d): %s", task, job_id, attempt, recovery.describe(e)
        )
        try:
            recovery.note_failure(job_id, task, attempt, e)
        except recovery.GaveUp as gave_up:
            runs.fail_and_stop(job_id, str(gave_up))
            raise JobFailed(str(gave_up)) from e
        except Exception as note_error:
            log.warning("could not record the failure of step %s of job %s: %s", task, job_id, note_error)
        raise
