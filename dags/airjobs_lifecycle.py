"""The job lifecycle: one run per job (run_id = job id), each task one step module of ``airjobs.steps``
(``stage``, ``submit``, ``monitor``, ``archive``, ``notify``), called through ``steps.run_step``.

Every task first asks ``airjobs.runs.job_of_run``: a run triggered by hand (no conf, or a conf naming another
job than the run id) fails at once and touches no job, so no job ever has a second run working on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airjobs import recovery, runs, steps
from airjobs.steps import archive as archive_step
from airjobs.steps import notify as notify_step
from airjobs.steps import stage as stage_step
from airjobs.steps import submit as submit_step
from airjobs_airflow import LIFECYCLE_DAG_ID
from airjobs_airflow.sensors import JobMonitorSensor

JOB_ID = "{{ run_id }}"  # a lifecycle run's id is its job's id (``_guard`` checks the conf agrees)

log = logging.getLogger(__name__)


def _job_id(context) -> str:
    """The job of this run; AirflowFailException (no retry) when the run is not a job's lifecycle run."""
    dag_run = context["dag_run"]
    try:
        return runs.job_of_run(dag_run.run_id, dag_run.conf)
    except runs.NotALifecycleRun as e:
        raise AirflowFailException(str(e)) from None


def _guard(context) -> None:
    """Every task's ``pre_execute`` (the monitor's too, also when it resumes from the triggerer): refuse a run
    that is not a job's, stop at once when Airflow stops the task (``runs.raise_on_sigterm``), and on a retry
    record it in the job's history (``recovery.note_retry``), or end the job once retrying is over."""
    job_id = _job_id(context)
    runs.raise_on_sigterm()
    ti = context["ti"]
    if (ti.try_number or 1) > 1:
        try:
            recovery.note_retry(job_id, ti.task_id, ti.try_number)
        except recovery.GaveUp as e:
            runs.fail_and_stop(job_id, str(e))
            raise AirflowFailException(str(e)) from None


def _run(task_id: str, step: Callable[[str], None], context) -> None:
    try:
        steps.run_step(task_id, _job_id(context), step, attempt=context["ti"].try_number or 1)
    except steps.JobAlreadyFinal as e:
        raise AirflowSkipException(str(e)) from None
    except steps.JobFailed as e:  # what the job did: no retry
        raise AirflowFailException(str(e)) from None


def _on_failure(context) -> None:
    """Last line of defence (a task that failed without its step failing the job, a timed-out task, a task
    Airflow found dead or failed on its own): the job must not stay active, nor run on its host (it is stopped
    there first). Runs in the task's process or, when Airflow failed the task, in the dag-processor. A task
    Airflow stopped (its run was ended or cleared in Airflow) fails no job: its next try goes on with the job,
    or the reconciler ends it (``airjobs_airflow.reconcile``, which also says who ended the run)."""
    exc = context.get("exception")
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    try:
        job_id = runs.job_of_run(getattr(dag_run, "run_id", None), getattr(dag_run, "conf", None))
    except runs.NotALifecycleRun as e:  # a run started by hand: it touched no job, it fails no job
        log.warning("%s", e)
        return
    if runs.terminated() or isinstance(exc, runs.Terminated):
        log.warning("task %s of job %s was stopped by Airflow; the job is left as it is", ti, job_id)
        return
    runs.fail_and_stop(job_id, f"Task {getattr(ti, 'task_id', '?')} failed: {exc or 'the task process ended'}")


with DAG(
    dag_id=LIFECYCLE_DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1024,
    max_active_tasks=1024,
    is_paused_upon_creation=False,
    tags=["airjobs"],
    # a task that fails because of the service is retried (``airjobs.recovery``: its time budget ends the job
    # FAILED long before Airflow runs out of tries); what the job did fails the task without a retry
    default_args={
        "retries": recovery.MAX_TRIES,
        "retry_delay": timedelta(seconds=recovery.RETRY_DELAY),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=recovery.MAX_RETRY_DELAY),
        "on_failure_callback": _on_failure,
        "pre_execute": _guard,
    },
    doc_md=__doc__,
) as dag:

    @task(task_id="stage")
    def stage(**context):
        _run("stage", stage_step.stage, context)

    @task(task_id="submit")
    def submit(**context):
        _run("submit", submit_step.submit, context)

    monitor = JobMonitorSensor(task_id="monitor", job_id=JOB_ID)  # ``airjobs.steps.monitor``

    @task(task_id="archive")
    def archive(**context):
        _run("archive", archive_step.archive, context)

    @task(task_id="notify")
    def notify(**context):
        _run("notify", notify_step.notify, context)

    stage() >> submit() >> monitor >> archive() >> notify()
