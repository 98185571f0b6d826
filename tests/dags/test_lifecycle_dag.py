"""The lifecycle DAG's shape, and the monitor trigger's serialisation round trip."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
from pathlib import Path

from airjobs_airflow.sensors import JobMonitorSensor
from airjobs_airflow.triggers import JobStatusTrigger

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "airjobs_lifecycle.py"


def _load():
    spec = importlib.util.spec_from_file_location("airjobs_lifecycle_dag", DAG_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.dag


def test_five_tasks_in_a_chain():
    dag = _load()
    assert dag.dag_id == "airjobs_lifecycle" and dag.schedule is None
    order = ["stage", "submit", "monitor", "archive", "notify"]
    assert sorted(dag.task_ids) == sorted(order)
    for up, down in itertools.pairwise(order):
        assert dag.get_task(up).downstream_task_ids == {down}
    assert isinstance(dag.get_task("monitor"), JobMonitorSensor)
    from airjobs import recovery  # retried because of the service: many tries, bounded in time by recovery

    assert all(t.retries == recovery.MAX_TRIES and t.retry_exponential_backoff for t in dag.tasks)
    assert dag.max_active_runs >= 1000


def test_trigger_serialises_and_reports_a_finished_job(pg):
    from airjobs import store, submission
    from airjobs.lifecycle import fail

    trigger = JobStatusTrigger("x-0001-007", "demo-fork", min_wait=0.5)
    path, kwargs = trigger.serialize()
    assert path == "airjobs_airflow.triggers.JobStatusTrigger"
    module, _, name = path.rpartition(".")
    clone = getattr(importlib.import_module(module), name)(**kwargs)
    assert clone.serialize() == (path, kwargs)

    body = {"name": "t", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}}
    job, _ = store.create_job(submission.build_job(body, "erin"), created_by="erin")
    fail(job.id, "ended elsewhere")

    async def first_event():
        async for event in JobStatusTrigger(job.id, "demo-fork", min_wait=0).run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), 10))
    assert event.payload["done"] is True
