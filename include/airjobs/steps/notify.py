"""The DAG's ``notify`` task: the job's last status, FINISHED (or FAILED: its app failed but its outputs were
archived, ``archiveOnAppError``), with the history line that says how archiving went."""

from __future__ import annotations

from airjobs.lifecycle import fail, transition
from airjobs.statuses import JobStatus
from airjobs.steps.context import active_job

S = JobStatus


def notify(job_id: str) -> None:
    """The job ends FINISHED (or FAILED, when its app failed and its outputs were archived all the same)."""
    job = active_job(job_id)
    status = JobStatus(job.status)
    if job.exit_code not in (None, 0):
        fail(job_id, f"Job failed: the app exited with code {job.exit_code}.")
        return
    if status is S.ARCHIVING_FAILED:
        transition(job_id, S.FINISHED, "Job completed, but failed to archive output.")
    elif status is S.CLEANING_UP and not job.archive:
        transition(job_id, S.FINISHED, "Job completed. Skipping archiving at user request.")
    else:
        transition(job_id, S.FINISHED, "Job complete")
