"""The lifecycle's monitor: checks the job briefly in the worker, then defers to the triggerer."""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import BaseSensorOperator

from airjobs_airflow.triggers import JobStatusTrigger

INLINE_POLL_SECONDS = 0.05


class JobMonitorSensor(BaseSensorOperator):
    """Waits for a submitted job's process to end, then records how it ended (``steps.complete``).

    Short jobs end within ``inline_seconds`` and never pay a deferral round trip; longer ones wait in the
    triggerer and hold no worker slot.
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
        from airjobs import config, steps

        inline = config.monitor_inline_seconds() if self.inline_seconds is None else self.inline_seconds
        deadline = time.monotonic() + inline
        while True:  # a check costs a file stat and a row read: 20 a second is cheap and catches short jobs
            result = steps.run_step("monitor", self.job_id, lambda: steps.poll(self.job_id))
            if result.done:
                return self._complete(result.as_dict())
            if time.monotonic() + INLINE_POLL_SECONDS > deadline:
                break
            time.sleep(INLINE_POLL_SECONDS)
        self.defer(trigger=JobStatusTrigger(self.job_id), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        self._complete(event or {"done": True, "exit_code": None, "detail": "the trigger sent no event"})

    def _complete(self, event: dict[str, Any]) -> None:
        from airflow.sdk.exceptions import AirflowSkipException

        from airjobs import steps

        try:
            steps.run_step("monitor", self.job_id, lambda: steps.complete(self.job_id, event))
        except steps.JobAlreadyFinal as e:
            raise AirflowSkipException(str(e)) from None
