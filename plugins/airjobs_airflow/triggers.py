"""The trigger the monitor defers to: it waits in the triggerer, polling the job's host."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

MAX_POLL_FAILURES = 10


class JobStatusTrigger(BaseTrigger):
    def __init__(self, job_id: str, poll_interval: float = 1.0, max_interval: float = 15.0):
        super().__init__()
        self.job_id = job_id
        self.poll_interval = float(poll_interval)
        self.max_interval = float(max_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airjobs_airflow.triggers.JobStatusTrigger",
            {"job_id": self.job_id, "poll_interval": self.poll_interval, "max_interval": self.max_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airjobs import steps

        interval, failures = self.poll_interval, 0
        while True:
            try:
                result = await asyncio.to_thread(steps.poll, self.job_id)
                failures = 0
            except Exception as e:  # a host or database hiccup: retry, but not forever
                failures += 1
                log.warning("polling job %s failed (%d/%d): %s", self.job_id, failures, MAX_POLL_FAILURES, e)
                if failures >= MAX_POLL_FAILURES:
                    yield TriggerEvent({"done": True, "exit_code": None, "detail": f"monitoring failed: {e}"})
                    return
            else:
                if result.done:
                    yield TriggerEvent(result.as_dict())
                    return
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.max_interval)
