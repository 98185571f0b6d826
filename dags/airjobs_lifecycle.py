"""The job lifecycle: one run per job (run_id = job id), each task one core step of ``airjobs.steps``."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from airjobs import steps
from airjobs.lifecycle import fail
from airjobs_airflow import LIFECYCLE_DAG_ID
from airjobs_airflow.sensors import JobMonitorSensor

JOB_ID = "{{ dag_run.conf['job_id'] }}"


def _job_id(context) -> str:
    return context["dag_run"].conf["job_id"]


def _run(name: str, context) -> None:
    try:
        steps.run_step(name, _job_id(context))
    except steps.JobAlreadyFinal as e:
        raise AirflowSkipException(str(e)) from None


def _on_failure(context) -> None:
    """Last line of defence (a killed or timed-out task): the job must not stay active."""
    exc = context.get("exception")
    ti = context.get("task_instance") or context.get("ti")
    fail(_job_id(context), f"Task {getattr(ti, 'task_id', '?')} failed: {exc or 'the task process ended'}")


with DAG(
    dag_id=LIFECYCLE_DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1024,
    max_active_tasks=1024,
    is_paused_upon_creation=False,
    tags=["airjobs"],
    default_args={"retries": 0, "on_failure_callback": _on_failure},
    doc_md=__doc__,
) as dag:

    @task(task_id="stage")
    def stage(**context):
        _run("stage", context)

    @task(task_id="submit")
    def submit(**context):
        _run("submit", context)

    monitor = JobMonitorSensor(task_id="monitor", job_id=JOB_ID)

    @task(task_id="archive")
    def archive(**context):
        _run("archive", context)

    @task(task_id="notify")
    def notify(**context):
        _run("notify", context)

    stage() >> submit() >> monitor >> archive() >> notify()
