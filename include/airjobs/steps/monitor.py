"""The DAG's ``monitor`` task (spec §10.7, D8), run by ``airjobs_airflow.sensors.JobMonitorSensor``: ``plan``
says whether the worker may watch the job briefly itself (``poll``, the inline check of ``airjobs.checks``)
before it defers to the triggerer, where ``airjobs.checks.check`` watches all jobs of a system at once; both
say what they found as a ``Check``, and ``complete`` records how the job ended."""

from __future__ import annotations

import logging
from typing import Any

from airjobs import checks
from airjobs.checks import Check
from airjobs.errors import StepError
from airjobs.lifecycle import fail, transition
from airjobs.remote import scheduler_of
from airjobs.statuses import AFTER_MONITOR, JobStatus
from airjobs.steps.context import active_job, system

__all__ = ["Check", "complete", "plan", "poll"]

log = logging.getLogger(__name__)
S = JobStatus


def plan(job_id: str) -> tuple[str, bool]:
    """(execution system id, whether the worker may watch the job briefly itself): only jobs of a ``DETACHED``
    scheduler (FORK), whose check is a file read, are watched inline; batch jobs go straight to the shared
    poller (D8)."""
    job = active_job(job_id)
    execution = system(job.execution_system)
    # a job completed by an earlier try is "watched" inline: its first check says done, nothing is redone
    return execution["id"], scheduler_of(execution).DETACHED or JobStatus(job.status) in AFTER_MONITOR


def poll(job_id: str) -> Check:
    """One inline check of the job (``checks.poll``): it observes, it changes nothing."""
    return checks.poll(job_id)


def complete(job_id: str, result: dict[str, Any]) -> None:
    """The job's process ended (``result``: a ``Check.as_event()``): CLEANING_UP on exit 0; FAILED with
    ``exitCode`` otherwise (D5)."""
    job = active_job(job_id)
    if JobStatus(job.status) in AFTER_MONITOR:  # an earlier try completed it already
        log.warning("job %s is already %s; not completing it again", job_id, job.status)
        return
    code = result.get("exit_code")
    if code == 0:
        transition(job_id, S.CLEANING_UP, "Job completed execution", exit_code=0)
        return
    reason = (
        f"Job failed: the app exited with code {code}."
        if code is not None
        else f"Job failed: {result.get('detail') or 'the process ended without an exit code'}."
    )
    if job.archive_on_app_error and job.archive:
        transition(job_id, S.CLEANING_UP, reason + " Archiving its outputs (archiveOnAppError).", exit_code=code)
        return
    fail(job_id, reason, exit_code=code)
    raise StepError(reason)
