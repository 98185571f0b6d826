"""The reconciler: every active job is checked against its lifecycle run, so that no job is lost, stuck or left
active because a component of the service failed, or because an administrator ended its run in Airflow.

Every ``AIRJOBS_RECONCILE_SECONDS`` (2 s) a thread in the api-server compares the active jobs (the project's
tables) with their lifecycle runs (Airflow's ``dag_run`` and ``task_instance`` tables, through Airflow's ORM,
which the api-server may use). The decisions are ``airjobs.runs``'s (its docstring has the table of how long a
job may sit in each status without progress, and what happens then):

* **A run that ended or vanished** (failed, success or gone for ``AIRJOBS_RECONCILE_SETTLE_SECONDS``, 10 s, so
  its tasks have been stopped). Who did it comes from Airflow's audit log (table ``log``,
  ``/api/v2/eventLogs``: the events ``patch_dag_run``, ``bulk_dag_runs``, ``delete_dag_run``, ``delete_dag``,
  ``patch_task_instance``, ``patch_task_group_instances`` that the public API, and so the UI, writes before it
  acts). An administrator's act ends the job truthfully, stopped on its host first: FAILED (run marked
  failed) or KILLED (marked success or deleted; STOPPED or FAILED where the status table has no move to
  KILLED), the admin as the history event's ``created_by``: "Lifecycle run marked failed in Airflow by admin
  while the job was RUNNING; FORK job 4242 killed." With no audit entry the service lost the run (a row
  deleted in the database, a crashed component, the api-server dead between accepting the job and triggering
  its run: a PENDING job gets ``AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS``, 60 s, first) and the job is
  **resumed**: the ended run is deleted through the ORM and a new one triggered with the same run id and
  conf, the tasks the job has passed already marked success in it (``runs.done_tasks``), so it goes on where
  the job stopped: "Lifecycle run lost in Airflow without anyone ending it while the job was RUNNING; resumed
  (1 of 3)." After ``AIRJOBS_RECONCILE_MAX_RESUMES`` (3) resumes the job ends FAILED with the reason. The Jobs
  API's own trigger and a resume cannot both create the run: a job is only looked at after the grace, run ids
  are unique, and "already exists" means someone else created it.
* **Backup monitoring.** A QUEUED/RUNNING/PAUSED job whose monitor task is deferred but whose trigger did not
  check it for max(3 x the poll interval, ``AIRJOBS_RECONCILE_POLL_SECONDS``) (the triggerer is down or hung)
  is checked by the reconciler itself, at most once per ``AIRJOBS_RECONCILE_POLL_SECONDS`` (60 s) per system
  (``airjobs.checks.check``: one status query for all of them). For a job that is done, the event the
  trigger would have fired (``{"done": True, "exit_code": ..., "detail": ...}``) is handed to the deferred task
  instance as the triggerer does (``Trigger.submit_event``: ``next_kwargs`` gets the event, the state becomes
  SCHEDULED), so the monitor resumes in a worker and completes the job. The old trigger, when its triggerer
  wakes, finds no deferred task instance: its event is dropped and the triggerer deletes it.
* **No progress.** A job whose run works but which made no progress (no history event, no status check) for
  its status's limit has its run ended (marked failed, as an administrator would, but with no audit entry)
  and is resumed as above; no progress again in the same status: FAILED with the reason.

Why a reconciler and not Airflow listeners (measured in Airflow 3.3.2, ``api_fastapi/core_api/services/
public/dag_run.py``, ``api/common/mark_tasks.py``, ``sdk/execution_time/supervisor.py``):

* Marking a run failed or success sets its running task instances FAILED/SUCCESS in the database and nothing
  else. The task's supervisor learns it from its next heartbeat (409), sends SIGTERM (the task runner only
  calls ``on_kill``) and SIGKILL 5 s later: the DAG's ``on_failure_callback`` never runs, so the job stayed
  STAGING_INPUTS. A deferred monitor's trigger is simply dropped. (The signal reaches the task's whole process
  group: a monitor check's ``ps`` died with it and read as "the job's process ended", FAILED by airjobs with
  the process left running. The DAG's tasks now raise ``airjobs.runs.Terminated`` on SIGTERM, which fails no
  job, and leave the job to this reconciler.)
* ``on_dag_run_failed``/``on_dag_run_success`` fire in the api-server for ``PATCH .../dagRuns/{id}`` (and the
  bulk PATCH), but inside the request, before its transaction commits, and while the task may still run
  for seconds. Deleting a run (``DELETE``, bulk delete, deleting the DAG), ``airflow tasks``/``dags`` CLI
  commands in other processes, direct database changes and crashed components fire no listener at all.
* A periodic comparison of the two tables covers every path, sees committed state only, waits until the
  tasks are gone, and catches up after an api-server restart. Each cycle reads the active jobs (one query)
  and their runs' and monitors' states (one query per 500 jobs); every 10 s their newest history events; for
  a job whose run looks ended, the audit log.

Only one reconciler acts at a time (a PostgreSQL advisory lock on the project's database), so several
api-server workers are safe. ``AIRJOBS_RECONCILE=0`` turns it off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airjobs_airflow import LIFECYCLE_DAG_ID

log = logging.getLogger(__name__)

#: audit log events of the public API (the endpoint function names) that can end or remove a run
ENDING_EVENTS = (
    "patch_dag_run",
    "bulk_dag_runs",
    "delete_dag_run",
    "delete_dag",
    "patch_task_instance",
    "patch_task_group_instances",
)
LOCK_KEY = "airjobs-reconciler"
#: a run none of whose tasks runs (they wait for a slot, or for their retry) gets this many times the stall limit
IDLE_FACTOR = 4
_CHUNK = 500
#: the lifecycle task that waits in the triggerer
MONITOR_TASK = "monitor"
#: seconds between two looks for jobs that make no progress (their limits are minutes)
STALL_EVERY = 10.0


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _extra(row) -> dict[str, Any]:
    try:
        value = json.loads(row.extra or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _names(entity: Any, job_id: str) -> bool:
    return entity == job_id or (isinstance(entity, dict) and entity.get("dag_run_id") == job_id)


def describe(event: str, extra: dict[str, Any], task_id: str | None, job_id: str, state: str | None) -> str | None:
    """What an audit log entry did to the run of ``job_id``, in words, if it explains the run's ``state``
    (None: the run is gone); None when it does not."""
    if state is None:
        if event == "delete_dag_run":
            return "deleted"
        if event == "delete_dag":
            return "deleted with the whole DAG"
        if event == "bulk_dag_runs":
            for action in extra.get("actions") or []:
                if (
                    isinstance(action, dict)
                    and action.get("action") == "delete"
                    and any(_names(e, job_id) for e in action.get("entities") or [])
                ):
                    return "deleted"
        return None
    if event == "patch_dag_run" and extra.get("state") == state:
        return f"marked {state}"
    if event == "bulk_dag_runs":
        for action in extra.get("actions") or []:
            if (
                isinstance(action, dict)
                and action.get("action") == "update"
                and any(
                    _names(e, job_id) and e.get("state") == state
                    for e in action.get("entities") or []
                    if isinstance(e, dict)
                )
            ):
                return f"marked {state}"
    if event in ("patch_task_instance", "patch_task_group_instances") and extra.get("new_state"):
        what = f"task {task_id}" if task_id else "a task group"
        return f"ended {state} after {what} was marked {extra['new_state']}"
    return None


def _audit(job, state: str | None, since: datetime | None = None) -> tuple[str | None, str | None]:
    """(who, what) from the newest audit log entry that explains the run's state, written since the run was
    queued (``since``; since the job was created when the run is gone)."""
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    q = (
        select(Log.event, Log.extra, Log.owner, Log.task_id, Log.run_id)
        .where(
            Log.dag_id == LIFECYCLE_DAG_ID,
            Log.event.in_(ENDING_EVENTS),
            Log.dttm >= (since or job.created) - timedelta(seconds=5),
            or_(Log.run_id == job.id, Log.run_id.is_(None)),
        )
        .order_by(Log.dttm.desc(), Log.id.desc())
        .limit(50)
    )
    with create_session() as session:
        rows = session.execute(q).all()
    for row in rows:
        if row.run_id is None and row.event not in ("delete_dag", "bulk_dag_runs"):
            continue
        what = describe(row.event, _extra(row), row.task_id, job.id, state)
        if what:
            return row.owner or None, what
    return None, None


@dataclass(frozen=True)
class Run:
    """A job's lifecycle run as the reconciler reads it."""

    state: str
    queued_at: datetime | None
    #: the state of its monitor task instance ("deferred": waiting in the triggerer)
    monitor: str | None
    #: a task instance of the run is running or deferred (False: its next task waits for a slot or a retry)
    busy: bool = True


def _str(state: Any) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


def _runs(job_ids: list[str]) -> dict[str, Run]:
    """job id -> its run (absent: no run) with its monitor task's state: one query per 500 jobs."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import and_, exists, select
    from sqlalchemy.orm import aliased

    other = aliased(TI)
    busy = exists().where(
        other.dag_id == DagRun.dag_id, other.run_id == DagRun.run_id, other.state.in_(("running", "deferred"))
    )
    out: dict[str, Run] = {}
    with create_session() as session:
        for i in range(0, len(job_ids), _CHUNK):
            q = (
                select(DagRun.run_id, DagRun.state, DagRun.queued_at, TI.state, busy)
                .select_from(DagRun)
                .outerjoin(
                    TI,
                    and_(
                        TI.dag_id == DagRun.dag_id,
                        TI.run_id == DagRun.run_id,
                        TI.task_id == MONITOR_TASK,
                        TI.map_index == -1,
                    ),
                )
                .where(DagRun.dag_id == LIFECYCLE_DAG_ID, DagRun.run_id.in_(job_ids[i : i + _CHUNK]))
            )
            for run_id, state, queued_at, monitor, working in session.execute(q):
                out[run_id] = Run(_str(state), queued_at, _str(monitor), bool(working))
    return out


def _failed_tasks(job_id: str) -> tuple[str, ...]:
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return tuple(
            session.scalars(
                select(TI.task_id).where(TI.dag_id == LIFECYCLE_DAG_ID, TI.run_id == job_id, TI.state == "failed")
            )
        )


class _Busy(Exception):
    """The job's run works again (someone cleared or resumed it): nothing to resume."""


def relaunch(job: Any, done: tuple[str, ...], note: str) -> bool:
    """A new lifecycle run of ``job`` (run id = job id, conf ``{"job_id": id}``) with the tasks ``done`` marked
    success, after deleting its run if that has ended; False when a run exists that works on the job (the Jobs
    API's own trigger, or a clear, came first)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagRunAlreadyExists
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    from airjobs.runs import WORKING

    try:
        with create_session() as session:  # committed before the trigger, which looks for duplicates on its own
            old = session.scalar(
                select(DagRun).where(DagRun.dag_id == LIFECYCLE_DAG_ID, DagRun.run_id == job.id).with_for_update()
            )
            if old is not None:
                if _str(old.state) in WORKING:
                    raise _Busy(job.id)
                session.delete(old)  # its task instances (and their notes, XComs, ...) go with it
        with create_session() as session:  # the run and its done tasks appear together
            run = trigger_dag(
                LIFECYCLE_DAG_ID,
                run_id=job.id,
                conf={"job_id": job.id},
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=job.owner,
                note=f"Resumed by airjobs: {note}"[:1000],
                session=session,
            )
            if run is None:
                return False
            if done:
                for ti in session.scalars(
                    select(TI).where(TI.dag_id == LIFECYCLE_DAG_ID, TI.run_id == job.id, TI.task_id.in_(done))
                ):
                    ti.set_state(TaskInstanceState.SUCCESS, session=session)
    except (_Busy, DagRunAlreadyExists, IntegrityError) as e:
        log.info("job %s not resumed: its run exists (%s)", job.id, type(e).__name__)
        return False
    return True


def fire(job_id: str, payload: dict[str, Any]) -> bool:
    """Hand ``payload`` to the job's deferred monitor as its trigger would have (``Trigger.submit_event``: the
    task instance gets the event in ``next_kwargs`` and becomes SCHEDULED, and a worker runs
    ``execute_complete``); False when the monitor is not deferred (any more)."""
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.trigger import Trigger
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TI)
            .where(
                TI.dag_id == LIFECYCLE_DAG_ID,
                TI.run_id == job_id,
                TI.task_id == MONITOR_TASK,
                TI.map_index == -1,
                TI.state == TaskInstanceState.DEFERRED,
            )
            .with_for_update(of=TI, skip_locked=True)
        )  # a triggerer's own event waits for ours
        if ti is None or ti.trigger_id is None:
            return False
        Trigger.submit_event(trigger_id=ti.trigger_id, event=TriggerEvent(payload), session=session)
        return ti.state == TaskInstanceState.SCHEDULED


def end_run(job_id: str) -> bool:
    """Mark the job's run failed, as an administrator's PATCH would (Airflow stops its running tasks), but with
    no audit log entry: the job is then resumed. False when the DAG is unknown."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        if session.get_bind().dialect.name == "postgresql":  # rows a stuck component holds must not hang us
            session.execute(text("SET LOCAL lock_timeout = '10s'"))
        dag = DBDagBag().get_latest_version_of_dag(LIFECYCLE_DAG_ID, session=session)
        if dag is None:
            return False
        set_dag_run_state_to_failed(dag=dag, run_id=job_id, commit=True, session=session)
    return True


class Reconciler:
    def __init__(self, interval: float, settle: float, launch_grace: float, poll: float = 60.0, max_resumes: int = 3):
        from airjobs.runs import Watch

        self.interval, self.launch_grace, self.poll, self.max_resumes = interval, launch_grace, poll, max_resumes
        self.watch = Watch(settle)
        self.checked: dict[str, float] = {}  # system id -> when the reconciler last checked jobs there itself
        self.restarted: dict[str, str] = {}  # job id -> why the reconciler ended its run (no progress)
        self._stalls_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls) -> Reconciler:
        from airjobs.runs import max_resumes

        return cls(
            _env_float("AIRJOBS_RECONCILE_SECONDS", 2.0),
            _env_float("AIRJOBS_RECONCILE_SETTLE_SECONDS", 10.0),
            _env_float("AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS", 60.0),
            _env_float("AIRJOBS_RECONCILE_POLL_SECONDS", 60.0),
            max_resumes(),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="airjobs-reconciler", daemon=True)
        self._thread.start()
        log.info(
            "airjobs reconciler started (every %.1f s, settle %.0f s, launch grace %.0f s, backup checks "
            "every %.0f s, %d resumes per job)",
            self.interval,
            self.watch.settle,
            self.launch_grace,
            self.poll,
            self.max_resumes,
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # the database went away, a bug: log it and try again next time
                log.exception("airjobs reconciler sweep failed")

    def sweep_once(self) -> list[str]:
        """One comparison under the advisory lock; returns the ids of the jobs it ended, resumed or completed."""
        from sqlalchemy import text

        from airjobs import db

        eng = db.engine()
        if eng.dialect.name != "postgresql":
            return self.sweep()
        with eng.connect() as c, c.begin():
            if not c.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"), {"k": LOCK_KEY}).scalar():
                return []
            return self.sweep()

    def sweep(self) -> list[str]:
        from airjobs import runs
        from airjobs.timeutil import now

        jobs = runs.active_jobs()
        seen = _runs([j.id for j in jobs]) if jobs else {}
        at, clock = now(), time.monotonic()
        acted = []
        for job in self.watch.due({k: r.state for k, r in seen.items()}, clock, jobs):
            try:
                if self._decide(job, seen.get(job.id), at):
                    acted.append(job.id)
            except Exception:  # one job's trouble (a host that hangs up) must not hold up the others
                log.exception("reconciling job %s failed", job.id)
            self.watch.since.pop(job.id, None)
        acted += self._backup(jobs, seen, at, clock)
        if clock - self._stalls_at >= STALL_EVERY:
            self._stalls_at = clock
            acted += self._stalls(jobs, seen, at)
        return acted

    def _decide(self, job: Any, run: Run | None, at: datetime) -> bool:
        """A job whose run ended or vanished: end it (an administrator did it) or resume it."""
        from airjobs import runs

        state = run.state if run else None
        actor, action = _audit(job, state, run.queued_at if run else None)
        restarted = self.restarted.pop(job.id, None)
        failed = _failed_tasks(job.id) if state == "failed" and not actor else ()
        view = runs.RunView(state, actor, action, failed_tasks=failed, restarted=None if actor else restarted)
        v = runs.verdict(
            job,
            view,
            launch_grace=self.launch_grace,
            at=at,
            max_resumes=self.max_resumes,
            resumes=0 if actor else runs.resumes(job.id),
        )
        if v is None:
            return False
        if isinstance(v, runs.Resume):
            if not relaunch(job, v.done, v.description):
                return False
            runs.note(job.id, v.description + ".")
            log.warning("job %s resumed: %s", job.id, v.description)
            return True
        done = runs.end_job(job.id, v)
        if done is None:
            return False
        log.warning("job %s ended %s: %s", job.id, done.status, done.message)
        return True

    def _backup(self, jobs: list[Any], seen: dict[str, Run], at: datetime, clock: float) -> list[str]:
        """Check, per system, the executing jobs whose deferred monitor nobody checked for too long; complete
        those that are done."""
        from airjobs import checks, runs

        due: dict[str, list[tuple[Any, float]]] = {}
        for job in jobs:
            run = seen.get(job.id)
            if run is None or run.state not in runs.WORKING or run.monitor != "deferred":
                continue
            if (job.remote_status or "").startswith(("UNREACHABLE:", "KILL_PENDING:")):
                continue  # its host is away: the triggerer's poller judges it (AIRJOBS_HOST_UNREACHABLE_SECONDS)
            idle = runs.unwatched(job, at=at, floor=self.poll)
            if idle is not None:
                due.setdefault(job.execution_system, []).append((job, idle))
        acted = []
        for system_id, group in due.items():
            if clock - self.checked.get(system_id, float("-inf")) < self.poll:
                continue
            self.checked[system_id] = clock
            log.warning(
                "the triggerer did not check %d job(s) on %s for %.0f s or more; checking them here",
                len(group),
                system_id,
                min(idle for _, idle in group),
            )
            try:
                results = checks.check(system_id, [job.id for job, _ in group])
            except Exception as e:  # the host: the next backup check, or the triggerer once it is back
                log.warning("backup check of %d job(s) on %s failed: %s", len(group), system_id, e)
                continue
            for job, idle in group:
                result = results.get(job.id)
                try:
                    if result is not None and result.done and fire(job.id, result.as_event()):
                        runs.note(job.id, runs.backup_note(idle, result.detail) + ".")
                        log.warning(
                            "job %s is done (%s): its monitor resumed without the triggerer", job.id, result.detail
                        )
                        acted.append(job.id)
                except Exception:
                    log.exception("completing job %s for the triggerer failed", job.id)
        return acted

    def _stalls(self, jobs: list[Any], seen: dict[str, Run], at: datetime) -> list[str]:
        """Jobs whose run works but which made no progress for their status's limit: the run is ended (and the
        job resumed once it settled) or, when that happened in this status already, the job FAILED."""
        from airjobs import runs

        working = [j for j in jobs if (r := seen.get(j.id)) is not None and r.state in runs.WORKING]
        last = runs.last_events([j.id for j in working]) if working else {}
        acted = []
        for job in working:
            hit = runs.stalled(job, last.get(job.id), at=at, watched=seen[job.id].monitor == "deferred")
            if hit is None:
                continue
            idle, limit = hit
            if not seen[job.id].busy and idle <= IDLE_FACTOR * limit:  # waiting for a free slot (a burst) or
                continue  # a retry: not stuck yet (a scheduler that queues nothing at all is, later)
            try:
                if runs.stalled_before(job.id, job.status):
                    done = runs.end_job(job.id, runs.stall_verdict(job.status, idle, limit))
                    if done is not None:
                        log.warning("job %s ended %s: %s", job.id, done.status, done.message)
                        end_run(job.id)  # nothing in Airflow goes on working on it
                        acted.append(job.id)
                elif runs.note(job.id, runs.stall_note(job.status, idle, limit) + ".") and end_run(job.id):
                    self.restarted[job.id] = f"no progress for {idle:.0f} s in {job.status}"
                    log.warning(
                        "job %s: no progress for %.0f s in %s; its run is ended, to be resumed",
                        job.id,
                        idle,
                        job.status,
                    )
                    acted.append(job.id)
            except Exception:
                log.exception("ending the stuck run of job %s failed", job.id)
        return acted


@asynccontextmanager
async def lifespan(app):
    """Runs with the api-server (Airflow enters the lifespan of every FastAPI app a plugin mounts)."""
    reconciler = None
    if os.environ.get("AIRJOBS_RECONCILE", "1") not in ("0", "false", "no", "off"):
        reconciler = Reconciler.from_env()
        reconciler.start()
    try:
        yield
    finally:
        if reconciler is not None:
            reconciler.stop()


def app():
    """The (route-less) FastAPI app the plugin mounts, only for its lifespan."""
    from fastapi import FastAPI

    return FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
