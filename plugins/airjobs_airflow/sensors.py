"""The lifecycle's monitor: checks a FORK job briefly in the worker, then defers to the triggerer."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import BaseSensorOperator

from airjobs_airflow.triggers import JobStatusTrigger

INLINE_POLL_SECONDS = 0.05


class JobMonitorSensor(BaseSensorOperator):
    """Waits for a submitted job to end, then records how it ended (``steps.complete``).

    Short FORK jobs end within ``inline_seconds`` and never pay a deferral round trip; every other job waits
    in the triggerer, where one poller per execution system checks all of its jobs at once (D8), and holds
    no worker slot.
    """

    template_fields = ("job_id",)

    def __init__(self, *, job_id: str, inline_seconds: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.job_id = job_id
        self.inline_seconds = inline_seconds

    def poke(self, context: Any) -> bool:
        from airjobs import steps

        return steps.run_step("monitor", self.job_id, lambda: steps.poll(self.job_id)).done

    def execute(self, context: Any) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        from airjobs import config, steps

        try:
            system_id, inline_ok = steps.run_step("monitor", self.job_id, lambda: steps.monitor_plan(self.job_id))
        except steps.JobAlreadyFinal as e:
            raise AirflowSkipException(str(e)) from None
        inline = config.monitor_inline_seconds() if self.inline_seconds is None else self.inline_seconds
        deadline = time.monotonic() + (inline if inline_ok else 0)
        while inline_ok:  # a check costs a file read and a row read: 20 a second is cheap and catches short jobs
            result = steps.run_step("monitor", self.job_id, lambda: steps.poll(self.job_id))
            if result.done:
                return self._complete(result.as_dict())
            if time.monotonic() + INLINE_POLL_SECONDS > deadline:
                break
            time.sleep(INLINE_POLL_SECONDS)
        self.defer(trigger=JobStatusTrigger(self.job_id, system_id), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        self._complete(event or {"done": True, "exit_code": None, "detail": "the trigger sent no event"})

    def _complete(self, event: dict[str, Any]) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        from airjobs import steps

        try:
            steps.run_step("monitor", self.job_id, lambda: steps.complete(self.job_id, event))
        except steps.JobAlreadyFinal as e:
            raise AirflowSkipException(str(e)) from None
