"""A job and its lifecycle run: which job a run may touch, and how a job ends when Airflow ended its run.

Every job has exactly one lifecycle run, triggered by the Jobs API with ``run_id`` = the job id and ``conf`` =
``{"job_id": <id>}``. Run ids are unique per DAG, so "one run per job" holds as long as a run only ever works
on the job its run id names. ``job_of_run`` is the check every task of ``dags/airjobs_lifecycle.py`` makes
first: a run triggered by hand (no conf, or a conf naming another job than its run id) touches no job.

An administrator may still end a job's run in Airflow (mark it failed or success, delete it, mark its tasks).
Airflow then stops the run's tasks but never tells the job. ``verdict`` says how such a job ends, ``end_job``
ends it (the remote job is stopped first, as a kill does), and ``Watch`` keeps the timing: the reconciler of
``airjobs_airflow.reconcile`` feeds it what it sees in Airflow every few seconds. A task Airflow stops on the
way (SIGTERM) raises ``Terminated`` (``raise_on_sigterm``), which no step takes for the job failing: the job is
left to the reconciler, or to the task's next try when the run was cleared. Nothing here imports Airflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select

from airjobs import db, monitor, registry, schedulers, store
from airjobs.errors import IllegalTransition
from airjobs.lifecycle import SYSTEM_ACTOR, transition
from airjobs.models import Job
from airjobs.statuses import TERMINAL, JobStatus, can_move
from airjobs.timeutil import now

log = logging.getLogger(__name__)
S = JobStatus

#: Airflow run states in which the run still works on its job
WORKING = frozenset({"queued", "running"})
#: statuses in which a remote job may exist (as ``airjobs.control.kill`` has them)
_REMOTE = frozenset({S.SUBMITTING, S.QUEUED, S.RUNNING, S.PAUSED, S.CLEANING_UP, S.HEARTBEAT})
#: a job whose run was ended without it being done: KILLED where the table allows it (a kill by the
#: service), else STOPPED, else FAILED (always allowed from an active status)
_KILL = (S.KILLED, S.STOPPED, S.FAILED)


class NotALifecycleRun(Exception):
    """The run is not the lifecycle run of an existing job: it must not touch any job."""


class Terminated(BaseException):
    """Raised in a lifecycle task that Airflow stops (SIGTERM: its run was marked failed or success, deleted or
    cleared, or its task marked). A BaseException, so no step takes it for the job failing (``steps.run_step``
    fails the job on ``Exception``): the job is left as it is, to the task's next try or to the reconciler."""


_terminated = False
_shielded = 0  # > 0 while a step must not be cut (``shielded``)
_pending = False  # SIGTERM came while shielded: raise when the shield ends


class shielded:
    """A section Airflow's SIGTERM must not cut in the middle: between handing a job to its scheduler and
    recording the remote id, a stop would leave a job running that nobody knows of (a cleared run would
    submit it again). The signal is remembered and ``Terminated`` raised when the section ends."""

    def __enter__(self) -> None:
        global _shielded
        _shielded += 1

    def __exit__(self, *exc: Any) -> None:
        global _shielded, _pending
        _shielded -= 1
        if not _shielded and _pending and exc[0] is None:
            _pending = False
            raise Terminated("the task was stopped by Airflow (its lifecycle run was changed there)")


def raise_on_sigterm() -> None:
    """Make SIGTERM raise ``Terminated`` in this process (after the handler that was there, which Airflow's task
    runner uses to call the operator's ``on_kill``). Without it the task runs on for 5 s until SIGKILL, and a
    check whose ``ps`` the signal killed reads as "the job's process is gone"."""
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "airjobs", False):
        return

    def handler(signum, frame):
        global _terminated, _pending
        first, _terminated = not _terminated, True
        if callable(previous):
            previous(signum, frame)
        if first and _shielded:
            _pending = True
        elif first:
            raise Terminated("the task was stopped by Airflow (its lifecycle run was changed there)")

    handler.airjobs = True
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the signal as it is
        pass


def terminated() -> bool:
    """Did Airflow stop this task (SIGTERM)? Its failure is then no failure of the job."""
    return _terminated


def job_of_run(run_id: str | None, conf: Any) -> str:
    """The id of the job the run ``run_id`` works on; raises ``NotALifecycleRun`` unless ``conf`` names a job,
    the job exists and the run id is that job's id."""
    job_id = conf.get("job_id") if isinstance(conf, dict) else None
    if not job_id or not isinstance(job_id, str):
        raise NotALifecycleRun(
            f"Run {run_id} names no job (conf has no job_id): lifecycle runs are started by the Jobs API, one "
            "per job; this run touches no job.")
    if job_id != run_id:
        raise NotALifecycleRun(
            f"Run {run_id} is not the lifecycle run of job {job_id} (that run's id is the job id): this run "
            "touches no job.")
    with db.session() as s:
        found = s.scalar(select(Job.id).where(Job.id == job_id))
    if found is None:
        raise NotALifecycleRun(f"Run {run_id}: there is no job {job_id}; this run touches no job.")
    return job_id


# ---------------------------------------------------------------- a job whose run Airflow ended


@dataclass(frozen=True)
class RunView:
    """What Airflow shows of a job's lifecycle run."""

    #: the run's state ("queued", "running", "success", "failed"), None when the run does not exist
    state: str | None
    #: who last did something to the run that explains ``state`` (Airflow's audit log), if anyone
    actor: str | None = None
    #: what they did, in words: "marked failed", "deleted", "marked task monitor success", ...
    action: str | None = None


@dataclass(frozen=True)
class Verdict:
    statuses: tuple[JobStatus, ...]  # the first one the job's status may move to
    description: str
    created_by: str


def verdict(job: Any, run: RunView, *, launch_grace: float, at: datetime | None = None) -> Verdict | None:
    """How ``job`` ends now that its run is ``run``; None while the run still works on it (or may yet be
    created: a run missing without anyone having deleted it gets ``launch_grace`` seconds after the job was
    created). A run marked failed ends the job FAILED; a run that succeeded, or vanished, while its job was
    still active ends it KILLED (the service killed it), or STOPPED/FAILED where the status table has no move
    to KILLED."""
    status = JobStatus(job.status)
    if status in TERMINAL or run.state in WORKING:
        return None
    by = f" by {run.actor}" if run.actor else ""
    while_ = f" while the job was {status.value}"
    if run.state is None:
        if not run.actor:
            age = ((at or now()) - job.created).total_seconds()
            if age < launch_grace:
                return None
            return Verdict(_KILL, f"Lifecycle run no longer exists in Airflow{while_}", SYSTEM_ACTOR)
        return Verdict(_KILL, f"Lifecycle run {run.action or 'deleted'} in Airflow{by}{while_}", run.actor)
    if run.state == "failed":
        what = run.action or "ended failed (no audit log entry says by whom)"
        return Verdict((S.FAILED,), f"Lifecycle run {what} in Airflow{by}{while_}", run.actor or SYSTEM_ACTOR)
    if run.state == "success":
        what = run.action or "ended success (no audit log entry says by whom)"
        return Verdict(_KILL, f"Lifecycle run {what} in Airflow{by}{while_}", run.actor or SYSTEM_ACTOR)
    return None  # a state of a future Airflow: leave the job alone


def _stop_remote(job: Job) -> str | None:
    """Best effort: the scheduler's kill command for a job that may be on its host; what happened, in words."""
    if not job.local_id or JobStatus(job.status) not in _REMOTE:
        return None
    system = registry.get_system(job.execution_system)
    if system is None:
        return None
    try:
        if schedulers.is_fork(monitor.scheduler_of(system)):
            from airjobs import steps  # a FORK pid is only killed while it is that job's (pids are reused)

            if steps.poll(job.id).done:
                return "its process had already ended"
        return monitor.kill_remote(job, system)
    except Exception as e:  # the job still ends: Airflow no longer runs anything for it
        log.warning("could not stop job %s on %s: %s", job.id, job.execution_system, e)
        return f"stopping it on {job.execution_system} failed: {type(e).__name__}: {e}"


def end_job(job_id: str, v: Verdict) -> Job | None:
    """Stop the job on its host (best effort), then move it to the first of ``v.statuses`` its status allows;
    None when it had ended meanwhile."""
    job = store.get_job(job_id)
    if job is None or JobStatus(job.status) in TERMINAL:
        return None
    what = _stop_remote(job)
    description = f"{v.description}; {what}." if what else f"{v.description}."
    for _ in range(3):  # the job may move on between the read and the transition
        current = JobStatus(job.status)
        if current in TERMINAL:
            return None
        target = next((s for s in v.statuses if can_move(current, s)), S.FAILED)
        try:
            return transition(job_id, target, description, created_by=v.created_by)
        except IllegalTransition:
            job = store.get_job(job_id)
            if job is None:
                return None
    return None


def fail_and_stop(job_id: str, reason: str, *, created_by: str | None = None) -> Job | None:
    """``lifecycle.fail`` that first stops the job on its host (best effort): a job that ends FAILED because its
    task failed in Airflow must not run on. None when the job had already ended."""
    return end_job(job_id, Verdict((S.FAILED,), reason, created_by or SYSTEM_ACTOR))


def active_jobs() -> list[Any]:
    """Every job in an active status, as rows of ``id``, ``status`` and ``created`` (the reconciler's list;
    ``end_job`` reads the whole job again)."""
    with db.session() as s:
        return list(s.execute(select(Job.id, Job.status, Job.created).where(Job.status.in_(store.ACTIVE))))


class Watch:
    """Since when each active job's run has looked wrong (ended or missing). A job is only looked at
    ``settle`` seconds after that, so the run's task processes have been stopped by Airflow (the task
    supervisor notices within its heartbeat and kills the task, SIGKILL 5 s after SIGTERM) and no task is
    still working on the job when it ends."""

    def __init__(self, settle: float):
        self.settle = settle
        self.since: dict[str, float] = {}

    def due(self, states: dict[str, str | None], clock: float, jobs: Iterable[Any]) -> list[Any]:
        """``states``: job id -> its run's state (None: no run). Returns the jobs to decide about now."""
        out, seen = [], set()
        for job in jobs:
            if states.get(job.id) in WORKING:
                continue
            seen.add(job.id)
            first = self.since.setdefault(job.id, clock)
            if clock - first >= self.settle:
                out.append(job)
        for job_id in list(self.since):
            if job_id not in seen:
                del self.since[job_id]
        return out
