"""The trigger the monitor defers to. Triggers of jobs on the same execution system share one poller in the
triggerer, which checks ALL of that system's waiting jobs with one status query per cycle (D8,
``airjobs.monitor.check``); the next cycle comes when the job that is due first wants it, so cycles slow
down as the system's jobs age. Between cycles it notices, with one database read a second, jobs that a user
killed or the service ended."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

MAX_CHECK_FAILURES = 10
#: how often the poller looks for jobs that ended without it (a kill): one query for all its jobs
TERMINAL_CHECK_SECONDS = 1.0
#: never fire sooner than this after the trigger starts: the worker's report of the deferral must reach
#: the scheduler before the resumed task does (Airflow 3.3 fails a resumed task whose stale
#: "deferred-and-exited" success event arrives after it was queued again)
MIN_WAIT_SECONDS = 3.0


class SystemPoller:
    """The waiting jobs of one execution system in this triggerer process."""

    pollers: dict[str, "SystemPoller"] = {}

    def __init__(self, system_id: str):
        self.system_id = system_id
        self.waiting: dict[str, asyncio.Future] = {}
        self.due: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.failures = 0
        self.cycles = 0

    @classmethod
    def of(cls, system_id: str) -> "SystemPoller":
        poller = cls.pollers.get(system_id)
        if poller is None:
            poller = cls.pollers[system_id] = cls(system_id)
        return poller

    def add(self, job_id: str) -> asyncio.Future:
        from airjobs import monitor

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting[job_id] = fut
        self.due[job_id] = loop.time() + monitor.interval(0)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self.run(), name=f"airjobs-poller-{self.system_id}")
        self.wake.set()
        return fut

    def discard(self, job_id: str) -> None:
        self.waiting.pop(job_id, None)
        self.due.pop(job_id, None)

    def _resolve(self, job_id: str, event: dict[str, Any]) -> None:
        fut = self.waiting.pop(job_id, None)
        self.due.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.set_result(event)

    async def run(self) -> None:
        from airjobs import monitor

        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                now = loop.time()
                first = min(self.due.values())
                if first > now:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=min(first - now, TERMINAL_CHECK_SECONDS))
                    except asyncio.TimeoutError:
                        pass
                    ended = await asyncio.to_thread(monitor.terminal_among, list(self.waiting))
                    for job_id, (status, exit_code) in ended.items():
                        self._resolve(job_id, {"done": True, "exit_code": exit_code, "detail": f"job is {status}"})
                    continue
                ids = list(self.waiting)  # one query answers for every job of the system: ask about all
                self.cycles += 1
                try:
                    results = await asyncio.to_thread(monitor.check, self.system_id, ids)
                except Exception as e:  # the host or the database: retry with back-off, but not forever
                    self.failures += 1
                    log.warning("checking %d job(s) on %s failed (%d/%d): %s", len(ids), self.system_id,
                                self.failures, MAX_CHECK_FAILURES, e)
                    if self.failures >= MAX_CHECK_FAILURES:
                        for job_id in ids:
                            self._resolve(job_id, {"done": True, "exit_code": None,
                                                   "detail": f"monitoring failed: {e}"})
                    delay = min(monitor.interval(0) * 2 ** self.failures, monitor.schedule()[-1])
                    for job_id in ids:
                        if job_id in self.due:
                            self.due[job_id] = loop.time() + delay
                    continue
                self.failures = 0
                after = loop.time()
                for job_id, result in results.items():
                    if result.done:
                        self._resolve(job_id, result.as_event())
                    elif job_id in self.due:
                        self.due[job_id] = after + (result.next_in or monitor.interval(0))
        finally:
            if SystemPoller.pollers.get(self.system_id) is self and not self.waiting:
                SystemPoller.pollers.pop(self.system_id, None)


class JobStatusTrigger(BaseTrigger):
    def __init__(self, job_id: str, system_id: str, min_wait: float = MIN_WAIT_SECONDS):
        super().__init__()
        self.job_id = job_id
        self.system_id = system_id
        self.min_wait = float(min_wait)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airjobs_airflow.triggers.JobStatusTrigger",
            {"job_id": self.job_id, "system_id": self.system_id, "min_wait": self.min_wait},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        poller = SystemPoller.of(self.system_id)
        try:
            event = await poller.add(self.job_id)
        finally:
            poller.discard(self.job_id)
        remaining = self.min_wait - (loop.time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        yield TriggerEvent(event)
