"""Imported by every Airflow process at start (``airflow.settings.import_local_settings``).

airjobs uses it only to preload its core modules: LocalExecutor workers are forked from the scheduler, and
each task process is forked from a worker, so a module imported here is already in memory when a
lifecycle task starts (about 0.1 s less per task, measured in bench/lifecycle.py). Nothing here changes
Airflow's behaviour; ``__all__`` is empty so no name leaks into ``airflow.settings``.
"""

__all__: list[str] = []

try:
    # the DAG's steps: sqlalchemy ORM, models, store, lifecycle, rendering, schedulers, checks
    import airjobs.steps.archive
    import airjobs.steps.monitor
    import airjobs.steps.notify
    import airjobs.steps.stage
    import airjobs.steps.submit  # noqa: F401
except Exception:  # never stop Airflow from starting because of a warm-up import
    pass
