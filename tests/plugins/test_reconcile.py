"""The reconciler's reading of Airflow's audit log (airjobs_airflow.reconcile.describe): which entry explains
how a job's run ended. The reconciler itself runs against the real service in test_airflow_surface_e2e.py (an
administrator's acts) and test_reconcile_e2e.py (lost runs resumed, the triggerer down, a job without progress)."""

from __future__ import annotations

import pytest

from airjobs_airflow.reconcile import describe

J = "1-aa-0001-007"


@pytest.mark.parametrize(
    "event,extra,task,state,words",
    [
        ("patch_dag_run", {"state": "failed", "method": "PATCH"}, None, "failed", "marked failed"),
        ("patch_dag_run", {"state": "success"}, None, "success", "marked success"),
        ("patch_dag_run", {"state": "success"}, None, "failed", None),  # does not explain a failed run
        ("patch_dag_run", {"note": "hi"}, None, "failed", None),
        ("delete_dag_run", {}, None, None, "deleted"),
        ("delete_dag", {}, None, None, "deleted with the whole DAG"),
        (
            "bulk_dag_runs",
            {
                "actions": [
                    {"action": "update", "entities": [{"dag_run_id": J, "state": "queued"}]},
                    {"action": "delete", "entities": [J]},
                ]
            },
            None,
            None,
            "deleted",
        ),
        ("bulk_dag_runs", {"actions": [{"action": "delete", "entities": ["other"]}]}, None, None, None),
        (
            "bulk_dag_runs",
            {"actions": [{"action": "update", "entities": [{"dag_run_id": J, "state": "failed"}]}]},
            None,
            "failed",
            "marked failed",
        ),
        (
            "patch_task_instance",
            {"new_state": "failed"},
            "monitor",
            "failed",
            "ended failed after task monitor was marked failed",
        ),
        ("patch_task_instance", {"new_state": "failed"}, "monitor", None, None),
        ("clear_dag_run", {}, None, "failed", None),
    ],
)
def test_describe(event, extra, task, state, words):
    assert describe(event, extra, task, J, state) == words
