"""The Agave v2 job statuses (spec §5.1) and the legal transitions between them (spec §5.2, D1).

This module is data plus predicates; ``airjobs.lifecycle.transition`` is the only code that applies them.
"""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """The 18 Agave statuses in code order; the value is the description written to history."""

    def __new__(cls, value: str, description: str):
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.description = description
        return obj

    PENDING = ("PENDING", "Job accepted and queued for submission.")
    PROCESSING_INPUTS = ("PROCESSING_INPUTS", "Identifying input files for staging")
    STAGING_INPUTS = ("STAGING_INPUTS", "Transferring job input data to execution system")
    STAGED = ("STAGED", "Job inputs staged to execution system")
    STAGING_JOB = ("STAGING_JOB", "Staging runtime assets to execution system")
    SUBMITTING = ("SUBMITTING", "Preparing job for execution and staging assets to execution system")
    QUEUED = ("QUEUED", "Job successfully placed into queue")
    RUNNING = ("RUNNING", "Job started running")
    PAUSED = ("PAUSED", "Job execution paused by user")
    CLEANING_UP = ("CLEANING_UP", "Job completed execution")
    ARCHIVING = ("ARCHIVING", "Transferring job output to archive system")
    ARCHIVING_FINISHED = ("ARCHIVING_FINISHED", "Job archiving complete")
    ARCHIVING_FAILED = ("ARCHIVING_FAILED", "Job archiving failed")
    FINISHED = ("FINISHED", "Job complete")
    KILLED = ("KILLED", "Job execution killed at user request")
    STOPPED = ("STOPPED", "Job execution intentionally stopped")
    FAILED = ("FAILED", "Job failed")
    HEARTBEAT = ("HEARTBEAT", "Job heartbeat received")

    def __str__(self) -> str:  # so f-strings and JSON show the bare name
        return self.value


S = JobStatus

TERMINAL = frozenset({S.FINISHED, S.KILLED, S.STOPPED, S.FAILED})
EXECUTING = frozenset({S.QUEUED, S.RUNNING, S.PAUSED})
#: statuses that count against queue and system quotas (spec §11.2)
QUOTA_ACTIVE = frozenset({S.CLEANING_UP, S.ARCHIVING, S.RUNNING, S.PAUSED, S.QUEUED})

_ALL = frozenset(JobStatus)

#: spec §5.2, ``JobStatusType.getNextValidStates()``
LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset({S.PENDING, S.PROCESSING_INPUTS, S.STOPPED, S.PAUSED, S.FAILED}),
    S.PROCESSING_INPUTS: frozenset({S.PROCESSING_INPUTS, S.STAGING_INPUTS, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGING_INPUTS: frozenset({S.STAGING_INPUTS, S.STAGED, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGED: frozenset({S.STAGED, S.SUBMITTING, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGING_JOB: frozenset({S.STAGING_JOB, S.SUBMITTING, S.STOPPED, S.PAUSED, S.FAILED}),
    S.SUBMITTING: frozenset(
        {S.SUBMITTING, S.QUEUED, S.RUNNING, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}
    ),
    S.QUEUED: frozenset(
        {S.QUEUED, S.RUNNING, S.CLEANING_UP, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}
    ),
    S.RUNNING: frozenset(
        {S.RUNNING, S.QUEUED, S.CLEANING_UP, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}
    ),
    S.CLEANING_UP: frozenset(
        {S.CLEANING_UP, S.ARCHIVING, S.FINISHED, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED}
    ),
    S.ARCHIVING: frozenset(
        {S.ARCHIVING, S.ARCHIVING_FAILED, S.ARCHIVING_FINISHED, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED}
    ),
    S.ARCHIVING_FAILED: frozenset({S.ARCHIVING_FAILED, S.FAILED}),
    S.ARCHIVING_FINISHED: frozenset({S.ARCHIVING_FINISHED, S.FAILED, S.FINISHED}),
    S.PAUSED: _ALL,
    S.HEARTBEAT: _ALL,
    S.FINISHED: frozenset(),
    S.KILLED: frozenset(),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
}

#: Moves the legacy workers make that the table above omits (spec §5.2, "must be allowed internally").
INTERNAL: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (S.PENDING, S.STAGING_INPUTS),
        (S.STAGING_INPUTS, S.PENDING),
        (S.PENDING, S.STAGED),  # no inputs: "Skipping staging."
        (S.STAGED, S.KILLED),
        (S.PENDING, S.KILLED),
        (S.KILLED, S.FAILED),
        (S.SUBMITTING, S.STAGED),
        (S.ARCHIVING_FAILED, S.FINISHED),
        (S.ARCHIVING, S.CLEANING_UP),
    }
)


def is_terminal(status: JobStatus | str) -> bool:
    return JobStatus(status) in TERMINAL


def can_move(current: JobStatus | str, new: JobStatus | str) -> bool:
    """True when ``current -> new`` is in the legal table or is one of the internal worker moves."""
    cur, nxt = JobStatus(current), JobStatus(new)
    return nxt in LEGAL[cur] or (cur, nxt) in INTERNAL
