"""The lifecycle's monitor: checks a FORK job briefly in the worker, then defers to the triggerer."""

from __future__ import annotations

import functools
import time
from typing import Any

from airflow.sdk import BaseSensorOperator

from airjobs_airflow.triggers import JobStatusTrigger

INLINE_POLL_SECONDS = 0.05


class JobMonitorSensor(BaseSensorOperator):
    """The DAG's monitor task (``airjobs.steps.monitor``): waits for a submitted job to end, then records how it
    ended (``monitor.complete``).

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
        from airjobs.steps import monitor

        return self._step(context, lambda: monitor.poll(self.job_id)).done

    def _step(self, context: Any, fn: Any, worked: bool = False) -> Any:
        """``steps.run_part`` of the monitor: what the job did fails the task without a retry; ``worked``: the
        step's success ends the job's recovery (``airjobs.recovery``)."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from airjobs import recovery, steps

        ti = context.get("ti") if context else None
        try:
            result = steps.run_part("monitor", self.job_id, fn, attempt=getattr(ti, "try_number", None) or 1)
        except steps.JobAlreadyFinal as e:
            raise AirflowSkipException(str(e)) from None
        except steps.JobFailed as e:
            raise AirflowFailException(str(e)) from None
        if worked:
            recovery.recovered(self.job_id)
        return result

    def execute(self, context: Any) -> None:
        from airjobs import config
        from airjobs.steps import monitor

        system_id, inline_ok = self._step(context, lambda: monitor.plan(self.job_id), worked=True)
        inline = config.monitor_inline_seconds() if self.inline_seconds is None else self.inline_seconds
        deadline = time.monotonic() + (inline if inline_ok else 0)
        while inline_ok:  # a check costs a file read and a row read: 20 a second is cheap and catches short jobs
            try:
                result = monitor.poll(self.job_id)
            except Exception as e:  # the host away (SSH): the trigger waits for it, with its own patience
                from airjobs import recovery

                if recovery.is_jobs_fault(e):
                    self._step(context, functools.partial(_raise, e))  # fails the job, as the step does
                break
            if result.done:
                return self._complete(context, result.as_event())
            if time.monotonic() + INLINE_POLL_SECONDS > deadline:
                break
            time.sleep(INLINE_POLL_SECONDS)
        self.defer(trigger=JobStatusTrigger(self.job_id, system_id), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> None:
        self._complete(context, event or {"done": True, "exit_code": None, "detail": "the trigger sent no event"})

    def _complete(self, context: Any, event: dict[str, Any]) -> None:
        from airjobs.steps import monitor

        self._step(context, lambda: monitor.complete(self.job_id, event), worked=True)


def _raise(e: BaseException) -> None:
    raise e
