"""The Agave v2 job statuses (spec §5.1) and the legal transitions between them (spec §5.2, D1).

This module is data plus predicates; ``airjobs.lifecycle.transition`` is the only code that applies them.
"""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """The 18 Agave statuses in code order; ``description`` is what history says when a job reaches one."""

    PENDING = "PENDING"
    PROCESSING_INPUTS = "PROCESSING_INPUTS"
    STAGING_INPUTS = "STAGING_INPUTS"
    STAGED = "STAGED"
    STAGING_JOB = "STAGING_JOB"
    SUBMITTING = "SUBMITTING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    CLEANING_UP = "CLEANING_UP"
    ARCHIVING = "ARCHIVING"
    ARCHIVING_FINISHED = "ARCHIVING_FINISHED"
    ARCHIVING_FAILED = "ARCHIVING_FAILED"
    FINISHED = "FINISHED"
    KILLED = "KILLED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    HEARTBEAT = "HEARTBEAT"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.value]

    def __str__(self) -> str:  # so f-strings and JSON show the bare name
        return self.value


_DESCRIPTIONS = {
    "PENDING": "Job accepted and queued for submission.",
    "PROCESSING_INPUTS": "Identifying input files for staging",
    "STAGING_INPUTS": "Transferring job input data to execution system",
    "STAGED": "Job inputs staged to execution system",
    "STAGING_JOB": "Staging runtime assets to execution system",
    "SUBMITTING": "Preparing job for execution and staging assets to execution system",
    "QUEUED": "Job successfully placed into queue",
    "RUNNING": "Job started running",
    "PAUSED": "Job execution paused by user",
    "CLEANING_UP": "Job completed execution",
    "ARCHIVING": "Transferring job output to archive system",
    "ARCHIVING_FINISHED": "Job archiving complete",
    "ARCHIVING_FAILED": "Job archiving failed",
    "FINISHED": "Job complete",
    "KILLED": "Job execution killed at user request",
    "STOPPED": "Job execution intentionally stopped",
    "FAILED": "Job failed",
    "HEARTBEAT": "Job heartbeat received",
}


S = JobStatus

# ---------------------------------------------------------------- status groups (the only place they are defined)

#: the job ended: nothing happens to it any more
TERMINAL = frozenset({S.FINISHED, S.KILLED, S.STOPPED, S.FAILED})
#: every status but the terminal ones and HEARTBEAT: a job the service still works on (``values(ACTIVE)`` in queries)
ACTIVE = frozenset(s for s in JobStatus if s not in TERMINAL and s is not S.HEARTBEAT)
#: the job is with its scheduler
EXECUTING = frozenset({S.QUEUED, S.RUNNING, S.PAUSED})
#: statuses that count against queue and system quotas (spec §11.2)
QUOTA_ACTIVE = frozenset({S.CLEANING_UP, S.ARCHIVING, S.RUNNING, S.PAUSED, S.QUEUED})
#: a remote job may exist on the host: a kill (by a user, or by the service ending the job) runs the scheduler's
#: kill command first
REMOTE = frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING, S.PAUSED, S.CLEANING_UP, S.HEARTBEAT})
#: the job reached its host: a submit task run again after one of them must not submit it again
AFTER_SUBMIT = frozenset(
    {S.QUEUED, S.RUNNING, S.PAUSED, S.CLEANING_UP, S.ARCHIVING, S.ARCHIVING_FINISHED, S.ARCHIVING_FAILED, S.HEARTBEAT}
)
#: the inputs were staged: a stage task run again after one of them must not stage again
AFTER_STAGING = AFTER_SUBMIT | {S.STAGED, S.SUBMITTING, S.STAGING_JOB}
#: the monitor completed the job: a monitor try run again after it (its process was lost) leaves them alone
AFTER_MONITOR = frozenset({S.CLEANING_UP, S.ARCHIVING, S.ARCHIVING_FINISHED, S.ARCHIVING_FAILED})

_ALL = frozenset(JobStatus)

#: spec §5.2, ``JobStatusType.getNextValidStates()``
LEGAL: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset({S.PENDING, S.PROCESSING_INPUTS, S.STOPPED, S.PAUSED, S.FAILED}),
    S.PROCESSING_INPUTS: frozenset({S.PROCESSING_INPUTS, S.STAGING_INPUTS, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGING_INPUTS: frozenset({S.STAGING_INPUTS, S.STAGED, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGED: frozenset({S.STAGED, S.SUBMITTING, S.STOPPED, S.PAUSED, S.FAILED}),
    S.STAGING_JOB: frozenset({S.STAGING_JOB, S.SUBMITTING, S.STOPPED, S.PAUSED, S.FAILED}),
    S.SUBMITTING: frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}),
    S.QUEUED: frozenset({S.QUEUED, S.RUNNING, S.CLEANING_UP, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}),
    S.RUNNING: frozenset({S.RUNNING, S.QUEUED, S.CLEANING_UP, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED, S.HEARTBEAT}),
    S.CLEANING_UP: frozenset({S.CLEANING_UP, S.ARCHIVING, S.FINISHED, S.KILLED, S.STOPPED, S.PAUSED, S.FAILED}),
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
    """Has a job in ``status`` ended?"""
    return JobStatus(status) in TERMINAL


def values(group: frozenset[JobStatus]) -> tuple[str, ...]:
    """The group's statuses as the strings the database holds, in code order (for ``Job.status.in_(...)``)."""
    return tuple(s.value for s in JobStatus if s in group)


def can_move(current: JobStatus | str, new: JobStatus | str) -> bool:
    """True when ``current -> new`` is in the legal table or is one of the internal worker moves."""
    cur, nxt = JobStatus(current), JobStatus(new)
    return nxt in LEGAL[cur] or (cur, nxt) in INTERNAL
