"""A job and its lifecycle run: which job a run may touch, and what becomes of a job whose run ended or vanished.

Every job has exactly one lifecycle run, triggered by the Jobs API with ``run_id`` = the job id and ``conf`` =
``{"job_id": <id>}``. Run ids are unique per DAG, so "one run per job" holds as long as a run only ever works
on the job its run id names. ``job_of_run`` is the check every task of ``dags/airjobs_lifecycle.py`` makes
first: a run triggered by hand (no conf, or a conf naming another job than its run id) touches no job.

Airflow never tells a job what happened to its run. The reconciler of ``airjobs_airflow.reconcile`` looks every
few seconds and asks this module what to do (nothing here imports Airflow):

* ``verdict``: an administrator ended the run (an audit log entry says who): the job ends truthfully, FAILED
  or KILLED (``end_job`` stops it on its host first, as a kill does). Nobody did (a component crashed, the
  api-server died between accepting the job and triggering its run, the row went from the database): the job
  is resumed, a new run that starts where the job stopped (``done_tasks``), at most ``max_resumes()`` times,
  then FAILED with the reason. ``Watch`` keeps the timing (a run must look ended for a while first).
* ``unwatched``: a job whose monitor waits in the triggerer but was not checked for too long (the triggerer is
  down or hung) is checked by the reconciler itself.
* ``stalled``: no job stays active forever. The longest a job may sit in each active status without progress
  (a history event, a status check), and what happens then:

  ======================================  =======================  =============================================
  status                                  longest without          then
                                          progress
  ======================================  =======================  =============================================
  PENDING, PROCESSING_INPUTS,             1800 s                   its run is ended and the job resumed, once
  STAGING_INPUTS, STAGED, STAGING_JOB,                             per status; no progress again: FAILED with
  SUBMITTING, CLEANING_UP, ARCHIVING,                              the reason (staging and archiving write a
  ARCHIVING_FINISHED, ARCHIVING_FAILED                             progress event every 2 s while they copy)
  QUEUED, RUNNING, PAUSED, monitor        no limit: the host's     the reconciler checks it itself when the
  waiting in the triggerer                scheduler keeps it;      trigger did not for max(3 x the poll
                                          ``maxRunTime`` kills     interval, 60 s); an unreachable host is
                                          RUNNING on time          ``airjobs.checks``'s (unreachable limit)
  QUEUED, RUNNING, PAUSED, nothing        1800 s                   as the first row
  watching it (monitor not deferred)
  any, run lost or ended without anyone   10 s (60 s for a         resumed, at most 3 times per job, then
  ending it                               PENDING job without      FAILED with the reason
                                          a run)
  any, run ended by an administrator      10 s                     FAILED (marked failed) or KILLED (marked
                                                                   success, deleted), as the audit log says
  ======================================  =======================  =============================================

  ``AIRJOBS_STALL_SECONDS`` sets the 1800 s, ``AIRJOBS_STALL_SECONDS_<STATUS>`` one status (0: no limit);
  ``AIRJOBS_RECONCILE_MAX_RESUMES`` (3), ``AIRJOBS_RECONCILE_SETTLE_SECONDS`` (10),
  ``AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS`` (60), ``AIRJOBS_RECONCILE_POLL_SECONDS`` (60, also the floor of
  the backup check's wait) the others.

A task Airflow stops on the way (SIGTERM) raises ``Terminated`` (``raise_on_sigterm``), which no step takes for
the job failing: the job is left to the reconciler, or to the task's next try when the run was cleared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from airjobs import checks, db, registry, remote, store
from airjobs.errors import IllegalTransition
from airjobs.lifecycle import SYSTEM_ACTOR, record_event, transition
from airjobs.models import Job, JobEvent
from airjobs.statuses import ACTIVE, EXECUTING, REMOTE, TERMINAL, JobStatus, can_move, is_terminal, values
from airjobs.timeutil import now

log = logging.getLogger(__name__)
S = JobStatus

#: Airflow run states in which the run still works on its job
WORKING = frozenset({"queued", "running"})
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

    def handler(signum: int, frame: Any) -> None:
        global _terminated, _pending
        first, _terminated = not _terminated, True
        if callable(previous):
            previous(signum, frame)
        if first and _shielded:
            _pending = True
        elif first:
            raise Terminated("the task was stopped by Airflow (its lifecycle run was changed there)")

    handler.airjobs = True  # type: ignore[attr-defined]  # marks the handler as ours
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
            "per job; this run touches no job."
        )
    if job_id != run_id:
        raise NotALifecycleRun(
            f"Run {run_id} is not the lifecycle run of job {job_id} (that run's id is the job id): this run "
            "touches no job."
        )
    with db.session() as s:
        found = s.scalar(select(Job.id).where(Job.id == job_id))
    if found is None:
        raise NotALifecycleRun(f"Run {run_id}: there is no job {job_id}; this run touches no job.")
    return job_id


# ---------------------------------------------------------------- a job whose run ended or vanished


def _env_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    try:
        return float((os.environ if env is None else env).get(name, default))
    except ValueError:
        return default


def max_resumes(env: Mapping[str, str] | None = None) -> int:
    """How often one job is resumed before it ends FAILED (``AIRJOBS_RECONCILE_MAX_RESUMES``, 3)."""
    return max(0, int(_env_float("AIRJOBS_RECONCILE_MAX_RESUMES", 3, env)))


@dataclass(frozen=True)
class RunView:
    """What Airflow shows of a job's lifecycle run."""

    #: the run's state ("queued", "running", "success", "failed"), None when the run does not exist
    state: str | None
    #: who last did something to the run that explains ``state`` (Airflow's audit log), if anyone
    actor: str | None = None
    #: what they did, in words: "marked failed", "deleted", "marked task monitor success", ...
    action: str | None = None
    #: the tasks that failed in it (words for history only)
    failed_tasks: tuple[str, ...] = ()
    #: the reconciler ended the run itself because the job made no progress: why, in words
    restarted: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The job ends: in the first of ``statuses`` its status may move to."""

    statuses: tuple[JobStatus, ...]
    description: str
    created_by: str


@dataclass(frozen=True)
class Resume:
    """The job goes on in a new lifecycle run (same run id and conf) whose ``done`` tasks are marked success
    (the job passed them), after the ended run, if any, is deleted."""

    description: str
    done: tuple[str, ...]


#: every resume's history event ends so (``resumes`` counts them: a restarted api-server keeps the count)
_RESUMED = "; resumed ({n} of {of})"
_RESUMED_LIKE = "%; resumed (% of %)%"
#: a stall's history event starts so (``stalled_before``)
_STALL = "No progress for "

#: the lifecycle DAG's tasks, in order
TASKS = ("stage", "submit", "monitor", "archive", "notify")
_DONE_AFTER = {
    S.STAGED: 1,
    S.STAGING_JOB: 1,
    S.SUBMITTING: 1,
    S.QUEUED: 2,
    S.RUNNING: 2,
    S.PAUSED: 2,
    S.HEARTBEAT: 2,
    S.CLEANING_UP: 3,
    S.ARCHIVING: 3,
    S.ARCHIVING_FINISHED: 4,
    S.ARCHIVING_FAILED: 4,
}


def done_tasks(status: JobStatus | str, submitted: bool = True) -> tuple[str, ...]:
    """The lifecycle tasks a job in ``status`` has passed: a new run must not run them again (the monitor of a
    job in CLEANING_UP would complete it a second time, and once archiving removed the work directory take it
    for lost). A PAUSED job without a remote id (``submitted`` False) was paused before it was submitted."""
    status = JobStatus(status)
    if status in (S.PAUSED, S.HEARTBEAT) and not submitted:
        return ()
    return TASKS[: _DONE_AFTER.get(status, 0)]


def verdict(
    job: Any, run: RunView, *, launch_grace: float, at: datetime | None = None, resumes: int = 0, max_resumes: int = 3
) -> Verdict | Resume | None:
    """What becomes of ``job`` (``status``, ``created``, ``local_id``) now that its run is ``run``; None while the
    run works on it, or may yet be created (a PENDING job without a run gets ``launch_grace`` seconds after it
    was created: the Jobs API triggers the run right after it accepted the job).

    An administrator's act (``run.actor``) is the truthful end: marked failed -> FAILED; marked success or
    deleted while the job was active -> KILLED (STOPPED or FAILED where the status table has no move to
    KILLED). A run that ended or vanished with nobody to blame is the service's loss: ``Resume`` while the job
    was resumed fewer than ``max_resumes`` times (``resumes``), else FAILED with the reason."""
    status = JobStatus(job.status)
    if status in TERMINAL or run.state in WORKING:
        return None
    by = f" by {run.actor}" if run.actor else ""
    while_ = f" while the job was {status.value}"
    if run.state not in (None, "failed", "success"):
        return None  # a state of a future Airflow: leave the job alone
    if run.actor:
        if run.state is None:
            return Verdict(_KILL, f"Lifecycle run {run.action or 'deleted'} in Airflow{by}{while_}", run.actor)
        words = run.action or f"ended {run.state}"
        return Verdict(
            (S.FAILED,) if run.state == "failed" else _KILL, f"Lifecycle run {words} in Airflow{by}{while_}", run.actor
        )
    if run.state is None and status is S.PENDING:
        age = ((at or now()) - job.created).total_seconds()
        if age < launch_grace:
            return None
    if run.restarted:
        what = f"Lifecycle run ended by airjobs: {run.restarted}"
    else:
        how = "lost" if run.state is None else f"ended {run.state}"
        tasks = f" (task {', '.join(run.failed_tasks)} failed)" if run.failed_tasks else ""
        what = f"Lifecycle run {how} in Airflow without anyone ending it{while_}{tasks}"
    if resumes < max_resumes:
        done = done_tasks(status, bool(getattr(job, "local_id", None)))
        return Resume(what + _RESUMED.format(n=resumes + 1, of=max_resumes), done)
    why = (
        f"it was resumed {resumes} times already"
        if max_resumes
        else "resuming is turned off (AIRJOBS_RECONCILE_MAX_RESUMES=0)"
    )
    return Verdict((S.FAILED,), f"{what}; not resumed: {why}", SYSTEM_ACTOR)


def _stop_remote(job: Job) -> str | None:
    """Best effort: the scheduler's kill command for a job that may be on its host; what happened, in words."""
    if JobStatus(job.status) not in REMOTE:
        return None
    system = registry.get_system(job.execution_system)
    if system is None:
        return None
    recorded = bool(job.local_id)
    if not recorded:  # a submit cut before recording its hand-over may have left a remote job
        try:
            job.local_id = remote.submitted_id(job, system)
        except Exception as e:
            log.warning("could not read the submission record of job %s: %s", job.id, e)
        if not job.local_id:
            return None
    try:
        # a pid is only killed while it is that job's (the system reuses the pids of processes that ended)
        if recorded and remote.scheduler_of(system).DETACHED and checks.poll(job.id).done:
            return "its process had already ended"
        return remote.kill_remote(job, system)
    except Exception as e:  # the job still ends: Airflow no longer runs anything for it
        log.warning("could not stop job %s on %s: %s", job.id, job.execution_system, e)
        return f"stopping it on {job.execution_system} failed: {type(e).__name__}: {e}"


def end_job(job_id: str, v: Verdict) -> Job | None:
    """Stop the job on its host (best effort), then move it to the first of ``v.statuses`` its status allows;
    None when it had ended meanwhile."""
    job = store.get_job(job_id)
    if job is None or is_terminal(job.status):
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


def note(job_id: str, description: str) -> bool:
    """A history event in the job's current status, by airjobs, without a status change (no notification is
    sent: nothing happened to the job itself); False when the job has ended or is gone."""
    with db.transaction() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or is_terminal(job.status):
            return False
        job.last_updated, job.message = now(), description
        record_event(s, job, job.status, description, created_by=SYSTEM_ACTOR)
    return True


def resumes(job_id: str) -> int:
    """How often the job was resumed (its history says)."""
    with db.session() as s:
        return (
            s.scalar(
                select(func.count(JobEvent.id)).where(
                    JobEvent.job_id == job_id,
                    JobEvent.created_by == SYSTEM_ACTOR,
                    JobEvent.description.like(_RESUMED_LIKE),
                )
            )
            or 0
        )


def active_jobs() -> list[Any]:
    """Every job in an active status, as rows of the columns the reconciler decides on (``end_job`` reads the
    whole job again)."""
    cols = (
        Job.id,
        Job.status,
        Job.created,
        Job.owner,
        Job.execution_system,
        Job.local_id,
        Job.last_updated,
        Job.last_polled,
        Job.status_checks,
        Job.remote_status,
    )
    with db.session() as s:
        return list(s.execute(select(*cols).where(Job.status.in_(values(ACTIVE)))))


class Watch:
    """Since when each active job's run has looked wrong (ended or missing). A job is only looked at
    ``settle`` seconds after that, so the run's task processes have been stopped by Airflow (the task
    supervisor notices within its heartbeat and kills the task, SIGKILL 5 s after SIGTERM) and no task is
    still working on the job when it ends or goes on in a new run."""

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


# ---------------------------------------------------------------- a job nobody watches, a job that is stuck


def _later(*times: datetime | None) -> datetime:
    """The latest of ``times`` (a job's ``created`` is always among them)."""
    return max(t for t in times if t is not None)


def unwatched(job: Any, *, at: datetime, floor: float) -> float | None:
    """Seconds since the last status check of an executing job (``last_polled``, or since it got its status),
    when that is longer than max(3 x its poll interval, ``floor``): whoever should check it (the triggerer)
    does not. None otherwise. The interval is the one before its next check (``checks.check`` waits so long
    after it recorded a check), so the step from 60 s to 300 s at the 44th check is no false alarm."""
    if JobStatus(job.status) not in EXECUTING:
        return None
    since = _later(job.last_polled, job.last_updated, job.created)
    idle = (at - since).total_seconds()
    return idle if idle > max(3 * checks.interval((job.status_checks or 0) + 1), floor) else None


def backup_note(idle: float, detail: str) -> str:
    """The history event of a job the reconciler completed for the triggerer."""
    return (
        f"The triggerer did not check the job for {idle:.0f} s (down or hung); the reconciler checked it "
        f"instead and found it done ({detail or 'ended'})"
    )


STALL_SECONDS = 1800.0


def stall_limit(status: JobStatus | str, env: Mapping[str, str] | None = None) -> float | None:
    """The longest a job may sit in ``status`` without progress (``AIRJOBS_STALL_SECONDS_<STATUS>``, else
    ``AIRJOBS_STALL_SECONDS``, else 1800 s); None: no limit (set to 0)."""
    status = JobStatus(status)
    default = _env_float("AIRJOBS_STALL_SECONDS", STALL_SECONDS, env)
    limit = _env_float(f"AIRJOBS_STALL_SECONDS_{status.value}", default, env)
    return limit if limit > 0 else None


def stalled(
    job: Any, last_event: datetime | None, *, at: datetime, watched: bool, env: Mapping[str, str] | None = None
) -> tuple[float, float] | None:
    """(seconds without progress, the limit) of a job that sat in its status longer than ``stall_limit``
    without a history event or a status check; None otherwise. An executing job whose monitor waits in the
    triggerer (``watched``) has no limit here: the triggerer (or the reconciler for it) checks it, the host's
    scheduler may keep it as long as it likes, and an unreachable host is ``airjobs.checks``' to judge."""
    status = JobStatus(job.status)
    if status in TERMINAL or (status in EXECUTING and watched):
        return None
    limit = stall_limit(status, env)
    if limit is None:
        return None
    idle = (at - _later(last_event, job.last_polled, job.last_updated, job.created)).total_seconds()
    return (idle, limit) if idle > limit else None


def stall_note(status: JobStatus | str, idle: float, limit: float) -> str:
    return (
        f"{_STALL}{idle:.0f} s in {JobStatus(status).value} (the limit is {limit:.0f} s, "
        f"AIRJOBS_STALL_SECONDS); its lifecycle run is ended and the job resumed"
    )


def stall_verdict(status: JobStatus | str, idle: float, limit: float) -> Verdict:
    """A job that made no progress again after its run was restarted for the same status: FAILED."""
    return Verdict(
        (S.FAILED,),
        f"{_STALL}{idle:.0f} s in {JobStatus(status).value}, also after its lifecycle "
        f"run was restarted (the limit is {limit:.0f} s, AIRJOBS_STALL_SECONDS)",
        SYSTEM_ACTOR,
    )


def stalled_before(job_id: str, status: JobStatus | str) -> bool:
    """Was the job's run restarted already because it made no progress in ``status``?"""
    with db.session() as s:
        return (
            s.scalar(
                select(JobEvent.id)
                .where(
                    JobEvent.job_id == job_id,
                    JobEvent.status == JobStatus(status).value,
                    JobEvent.created_by == SYSTEM_ACTOR,
                    JobEvent.description.like(_STALL + "%"),
                )
                .limit(1)
            )
            is not None
        )


def last_events(job_ids: list[str]) -> dict[str, datetime]:
    """job id -> when its newest history event was written (progress: status changes, progress events of
    staging and archiving, retries)."""
    out: dict[str, datetime] = {}
    with db.session() as s:
        for i in range(0, len(job_ids), 500):
            q = (
                select(JobEvent.job_id, func.max(JobEvent.created))
                .where(JobEvent.job_id.in_(job_ids[i : i + 500]))
                .group_by(JobEvent.job_id)
            )
            out.update({job_id: created for job_id, created in s.execute(q)})
    return out
