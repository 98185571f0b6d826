"""The lifecycle steps: one module per task of the lifecycle DAG (``dags/airjobs_lifecycle.py``), in its order:

============  ==========================================================================================
``stage``     ``stage.stage``: the inputs into the job's work directory (PENDING -> STAGED)
``submit``    ``submit.submit``: the wrapper and assets there, handed to the scheduler once (-> QUEUED/RUNNING)
``monitor``   ``monitor.plan``, ``monitor.poll``, ``monitor.complete``: watched inline or by the triggerer
              (``airjobs.checks``) until it ends (-> CLEANING_UP, or FAILED with the app's exit code)
``archive``   ``archive.archive``: the outputs into the archive folder (-> ARCHIVING_FINISHED/FAILED)
``notify``    ``notify.notify``: the last status (-> FINISHED)
============  ==========================================================================================

Each moves the job through its statuses with ``lifecycle.transition``; ``context`` is what they share (the
job, its systems, its ``JobPaths``). The DAG runs each through ``run_step`` (``run_part`` for a part of one):
what the job did ends the job FAILED with the real error in ``message`` and history (``JobFailed``), a failure
of the service is retried (``airjobs.recovery``), and a job that ended meanwhile raises ``JobAlreadyFinal``.
"""

from __future__ import annotations

from airjobs.steps.run import JobAlreadyFinal, JobFailed, run_part, run_step

__all__ = ["JobAlreadyFinal", "JobFailed", "run_part", "run_step"]
