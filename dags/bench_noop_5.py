"""Five chained no-op tasks: the baseline the lifecycle DAG is benchmarked against (bench/lifecycle.py)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id="bench_noop_5",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1024,
    max_active_tasks=1024,
    is_paused_upon_creation=False,
    tags=["airjobs", "bench"],
) as dag:

    @task
    def noop():
        return None

    a, b, c, d, e = (noop.override(task_id=f"t{i}")() for i in range(1, 6))
    a >> b >> c >> d >> e
