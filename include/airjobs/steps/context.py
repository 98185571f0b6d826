"""What every step works on: the job (still active), its systems, and its paths on the execution host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airjobs import store, transports
from airjobs.errors import StepError
from airjobs.jobpaths import JobPaths, default_work_path
from airjobs.models import Job
from airjobs.remote import require_system
from airjobs.statuses import is_terminal
from airjobs.steps.run import JobAlreadyFinal

__all__ = ["JobContext", "JobPaths", "active_job", "default_work_path", "system"]


def system(system_id: str) -> dict[str, Any]:
    """The registered system ``system_id``; ``StepError`` when there is none."""
    return require_system(system_id)


def active_job(job_id: str) -> Job:
    """The job, which must exist (``StepError``) and not have ended (``JobAlreadyFinal``)."""
    job = store.get_job(job_id)
    if job is None:
        raise StepError(f"No job found with job id {job_id}.")
    if is_terminal(job.status):
        raise JobAlreadyFinal(f"Job {job_id} is already {job.status}.")
    return job


@dataclass(frozen=True)
class JobContext:
    """A job, its execution system and its paths there."""

    job: Job
    system: dict[str, Any]  # the execution system
    paths: JobPaths

    @classmethod
    def of(cls, job: Job) -> JobContext:
        execution = system(job.execution_system)
        return cls(job, execution, JobPaths.of(job, execution))

    @property
    def transport(self) -> transports.Transport:
        """The execution host."""
        return transports.execution(self.system)
