"""The trigger the monitor defers to: it waits in the triggerer, polling the job's host."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

MAX_POLL_FAILURES = 10
#: never fire sooner than this after the trigger starts: the worker's report of the deferral must reach
#: the scheduler before the resumed task does (Airflow 3.3 fails a resumed task whose stale
#: "deferred-and-exited" success event arrives after it was queued again)
MIN_WAIT_SECONDS = 3.0


class JobStatusTrigger(BaseTrigger):
    def __init__(self, job_id: str, poll_interval: float = 1.0, max_interval: float = 15.0,
                 min_wait: float = MIN_WAIT_SECONDS):
        super().__init__()
        self.job_id = job_id
        self.poll_interval = float(poll_interval)
        self.max_interval = float(max_interval)
        self.min_wait = float(min_wait)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airjobs_airflow.triggers.JobStatusTrigger",
            {"job_id": self.job_id, "poll_interval": self.poll_interval, "max_interval": self.max_interval,
             "min_wait": self.min_wait},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airjobs import steps

        interval, failures = self.poll_interval, 0
        started = asyncio.get_running_loop().time()

        async def fire(payload: dict[str, Any]) -> TriggerEvent:
            remaining = self.min_wait - (asyncio.get_running_loop().time() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
            return TriggerEvent(payload)

        while True:
            try:
                result = await asyncio.to_thread(steps.poll, self.job_id)
                failures = 0
            except Exception as e:  # a host or database hiccup: retry, but not forever
                failures += 1
                log.warning("polling job %s failed (%d/%d): %s", self.job_id, failures, MAX_POLL_FAILURES, e)
                if failures >= MAX_POLL_FAILURES:
                    yield await fire({"done": True, "exit_code": None, "detail": f"monitoring failed: {e}"})
                    return
            else:
                if result.done:
                    yield await fire(result.as_dict())
                    return
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self.max_interval)
