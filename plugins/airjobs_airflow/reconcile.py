"""The reconciler: a job never stays active after an administrator ended its lifecycle run in Airflow.

Every ``AIRJOBS_RECONCILE_SECONDS`` (2 s) a thread in the api-server compares the active jobs (the project's
tables) with their lifecycle runs (Airflow's ``dag_run`` table, through Airflow's ORM, which the api-server
may use). A job whose run is failed, success or gone for ``AIRJOBS_RECONCILE_SETTLE_SECONDS`` (10 s) ends:
the remote job is stopped first (best effort, as a kill does), then FAILED (run marked failed) or KILLED (run
marked success, or deleted, while the job was active; STOPPED or FAILED where the status table has no move to
KILLED). Who did it comes from Airflow's audit log (table ``log``, ``/api/v2/eventLogs``: the events
``patch_dag_run``, ``bulk_dag_runs``, ``delete_dag_run``, ``delete_dag``, ``patch_task_instance``,
``patch_task_group_instances`` that the public API, and so the UI, writes before it acts) and becomes the
history event's ``created_by``: "Lifecycle run marked failed in Airflow by admin while the job was RUNNING;
FORK job 4242 killed." A run missing without an audit entry (the api-server died between creating the job
and its run) ends the job after ``AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS`` (300 s).

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
  commands in other processes and direct database changes fire no listener at all.
* A periodic comparison of the two tables covers every path, sees committed state only, waits until the
  tasks are gone, and catches up after an api-server restart. Each cycle reads the active jobs (one
  query), their runs' states (one query per 500 jobs) and, for a job whose run looks ended, the audit log.

Only one reconciler acts at a time (a PostgreSQL advisory lock on the project's database), so several
api-server workers are safe. ``AIRJOBS_RECONCILE=0`` turns it off. The decisions are in ``airjobs.runs``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from airjobs_airflow import LIFECYCLE_DAG_ID

log = logging.getLogger(__name__)

#: audit log events of the public API (the endpoint function names) that can end or remove a run
ENDING_EVENTS = ("patch_dag_run", "bulk_dag_runs", "delete_dag_run", "delete_dag", "patch_task_instance",
                 "patch_task_group_instances")
LOCK_KEY = "airjobs-reconciler"
_CHUNK = 500


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
                if isinstance(action, dict) and action.get("action") == "delete" and any(
                        _names(e, job_id) for e in action.get("entities") or []):
                    return "deleted"
        return None
    if event == "patch_dag_run" and extra.get("state") == state:
        return f"marked {state}"
    if event == "bulk_dag_runs":
        for action in extra.get("actions") or []:
            if isinstance(action, dict) and action.get("action") == "update" and any(
                    _names(e, job_id) and e.get("state") == state for e in action.get("entities") or []
                    if isinstance(e, dict)):
                return f"marked {state}"
    if event in ("patch_task_instance", "patch_task_group_instances") and extra.get("new_state"):
        what = f"task {task_id}" if task_id else "a task group"
        return f"ended {state} after {what} was marked {extra['new_state']}"
    return None


def _run_states(job_ids: list[str]) -> dict[str, str | None]:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    states: dict[str, str | None] = {}
    with create_session() as session:
        for i in range(0, len(job_ids), _CHUNK):
            q = select(DagRun.run_id, DagRun.state).where(DagRun.dag_id == LIFECYCLE_DAG_ID,
                                                          DagRun.run_id.in_(job_ids[i:i + _CHUNK]))
            for run_id, state in session.execute(q):
                states[run_id] = str(getattr(state, "value", state))
    return states


def _audit(job, state: str | None) -> tuple[str | None, str | None]:
    """(who, what) from the newest audit log entry that explains the run's state."""
    from sqlalchemy import or_, select

    from airflow.models.log import Log
    from airflow.utils.session import create_session

    q = (select(Log.event, Log.extra, Log.owner, Log.task_id, Log.run_id)
         .where(Log.dag_id == LIFECYCLE_DAG_ID, Log.event.in_(ENDING_EVENTS),
                Log.dttm >= job.created - timedelta(seconds=5),
                or_(Log.run_id == job.id, Log.run_id.is_(None)))
         .order_by(Log.dttm.desc(), Log.id.desc()).limit(50))
    with create_session() as session:
        rows = session.execute(q).all()
    for row in rows:
        if row.run_id is None and row.event not in ("delete_dag", "bulk_dag_runs"):
            continue
        what = describe(row.event, _extra(row), row.task_id, job.id, state)
        if what:
            return row.owner or None, what
    return None, None


class Reconciler:
    def __init__(self, interval: float, settle: float, launch_grace: float):
        from airjobs.runs import Watch

        self.interval, self.launch_grace = interval, launch_grace
        self.watch = Watch(settle)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls) -> "Reconciler":
        return cls(_env_float("AIRJOBS_RECONCILE_SECONDS", 2.0), _env_float("AIRJOBS_RECONCILE_SETTLE_SECONDS", 10.0),
                   _env_float("AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS", 300.0))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="airjobs-reconciler", daemon=True)
        self._thread.start()
        log.info("airjobs reconciler started (every %.1f s, settle %.0f s)", self.interval, self.watch.settle)

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
        """One comparison under the advisory lock; returns the ids of the jobs it ended."""
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
        states = _run_states([j.id for j in jobs]) if jobs else {}
        ended = []
        for job in self.watch.due(states, time.monotonic(), jobs):
            state = states.get(job.id)
            actor, action = _audit(job, state)
            v = runs.verdict(job, runs.RunView(state, actor, action), launch_grace=self.launch_grace, at=now())
            if v is None:
                continue
            done = runs.end_job(job.id, v)
            if done is not None:
                log.warning("job %s ended %s: %s", job.id, done.status, done.message)
                ended.append(job.id)
            self.watch.since.pop(job.id, None)
        return ended


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
