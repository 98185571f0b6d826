"""Thin Airflow adapters of airjobs: auth and DAG triggering for the REST facade, the monitor sensor and
its trigger. The domain logic lives in ``include/airjobs``."""

LIFECYCLE_DAG_ID = "airjobs_lifecycle"
