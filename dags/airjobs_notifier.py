"""Notification delivery (``airjobs_airflow.notifier``): one run at a time, started again as soon as one ends
(``@continuous``); its one task defers to the trigger that sends the outbox's webhooks and e-mails."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airjobs_airflow.notifier import NotifierOperator

with DAG(
    "airjobs_notifier",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["airjobs"],
    doc_md=__doc__,
) as dag:
    NotifierOperator(task_id="deliver", retries=2, retry_delay=timedelta(seconds=5))
