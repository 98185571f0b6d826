"""The trigger the monitor defers to. Triggers of jobs on the same execution system share one poller in the
triggerer, which checks ALL of that system's waiting jobs with one status query per cycle (D8,
``airjobs.checks.check``); the next cycle comes when the job that is due first wants it, so cycles slow
down as the system's jobs age. Between cycles it notices, with one database read a second, jobs that a user
killed or the service ended.

A host that does not answer is ``check``'s business (the jobs wait, ``airjobs.checks``); a check that raises
is retried with a back-off: an error that only says something could not be reached (the database, say) for up
to ``checks.unreachable_limit()``, any other error ``MAX_CHECK_FAILURES`` times in a row, and only then are
the jobs resolved as failed. The poller also gives the host the kill commands it could not be given while
it was unreachable (``checks.retry_kills``), and lives on until they are done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

#: checks in a row that raised an error which is not just trouble reaching something, before giving up
MAX_CHECK_FAILURES = 10
#: how often the poller looks for jobs that ended without it (a kill): one query for all its jobs
TERMINAL_CHECK_SECONDS = 1.0
#: never fire sooner than this after the trigger starts: the worker's report of the deferral must reach
#: the scheduler before the resumed task does (Airflow 3.3 fails a resumed task whose stale
#: "deferred-and-exited" success event arrives after it was queued again)
MIN_WAIT_SECONDS = 3.0


class SystemPoller:
    """The waiting jobs of one execution system in this triggerer process."""

    pollers: ClassVar[dict[str, SystemPoller]] = {}

    def __init__(self, system_id: str):
        self.system_id = system_id
        self.waiting: dict[str, asyncio.Future] = {}
        self.due: dict[str, float] = {}
        self.kills: dict[str, float] = {}  # ended jobs whose kill command still has to reach the host: when next
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.failures = 0
        self.failing_since: float | None = None
        self.cycles = 0
        self.kills_loaded = False

    @classmethod
    def of(cls, system_id: str) -> SystemPoller:
        poller = cls.pollers.get(system_id)
        if poller is None:
            poller = cls.pollers[system_id] = cls(system_id)
        return poller

    def add(self, job_id: str) -> asyncio.Future:
        from airjobs import checks

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.waiting[job_id] = fut
        self.due[job_id] = loop.time() + checks.interval(0)
        if self.task is None or self.task.done():
            self.task = loop.create_task(self.run(), name=f"airjobs-poller-{self.system_id}")
        self.wake.set()
        return fut

    def discard(self, job_id: str, fut: asyncio.Future | None = None) -> None:
        """Forget the job (only ``fut``'s wait, when given: a newer trigger of the same job may have replaced it)."""
        if fut is not None and self.waiting.get(job_id) is not fut:
            return
        self.waiting.pop(job_id, None)
        self.due.pop(job_id, None)

    def _resolve(self, job_id: str, event: dict[str, Any]) -> None:
        fut = self.waiting.pop(job_id, None)
        self.due.pop(job_id, None)
        if fut is not None and not fut.done():
            fut.set_result(event)

    async def run(self) -> None:
        from airjobs import checks

        loop = asyncio.get_running_loop()
        try:
            if not self.kills_loaded:  # kills a previous triggerer could not deliver
                try:
                    for job_id in await asyncio.to_thread(checks.pending_kills, self.system_id):
                        self.kills.setdefault(job_id, loop.time())
                    self.kills_loaded = True
                except Exception as e:  # the next start of the poller tries again
                    log.warning("reading the pending kills of %s failed: %s", self.system_id, e)
            while self.waiting or self.kills:
                now = loop.time()
                first = min([*self.due.values(), *self.kills.values()])
                if first > now:
                    self.wake.clear()
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout=min(first - now, TERMINAL_CHECK_SECONDS))
                    except TimeoutError:
                        pass
                    if self.waiting:
                        await self._ended()
                    continue
                if self.kills and min(self.kills.values()) <= now:
                    await self._retry_kills(now)
                if self.due and min(self.due.values()) <= loop.time():
                    await self._check()
        finally:
            if SystemPoller.pollers.get(self.system_id) is self and not self.waiting:
                SystemPoller.pollers.pop(self.system_id, None)

    async def _ended(self) -> None:
        from airjobs import checks

        try:
            ended = await asyncio.to_thread(checks.terminal_among, list(self.waiting))
        except Exception as e:  # the database: the next check says more
            log.warning("looking for ended jobs of %s failed: %s", self.system_id, e)
            return
        for job_id, (status, exit_code) in ended.items():
            self._resolve(job_id, {"done": True, "exit_code": exit_code, "detail": f"job is {status}"})

    async def _check(self) -> None:
        from airjobs import checks

        loop = asyncio.get_running_loop()
        ids = list(self.waiting)  # one query answers for every job of the system: ask about all
        self.cycles += 1
        try:
            results = await asyncio.to_thread(checks.check, self.system_id, ids)
        except Exception as e:  # the database, or a bug: retry with back-off, but not forever
            self._failed(ids, e)
            return
        self.failures, self.failing_since = 0, None
        after = loop.time()
        for job_id, result in results.items():
            if result.retry_kill:
                self.kills.setdefault(job_id, after + checks.retry_in(0))
            if result.done:
                self._resolve(job_id, result.as_event())
            elif job_id in self.due:
                self.due[job_id] = after + (result.next_in or checks.interval(0))

    def _failed(self, ids: list[str], e: Exception) -> None:
        from airjobs import checks

        now = asyncio.get_running_loop().time()
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        failing = now - self.failing_since
        if checks.transient(e):
            limit = checks.unreachable_limit()
            give_up = failing >= limit
            detail = f"monitoring failed for {checks.duration(failing)}: {checks.describe(e)}"
            log.warning(
                "checking %d job(s) on %s failed (for %.0f s of %.0f s): %s",
                len(ids),
                self.system_id,
                failing,
                limit,
                e,
            )
        else:
            give_up = self.failures >= MAX_CHECK_FAILURES
            detail = f"monitoring failed: {e}"
            log.warning(
                "checking %d job(s) on %s failed (%d/%d): %s",
                len(ids),
                self.system_id,
                self.failures,
                MAX_CHECK_FAILURES,
                e,
            )
        if give_up:
            for job_id in ids:
                self._resolve(job_id, {"done": True, "exit_code": None, "detail": detail})
        delay = checks.retry_in(failing)
        for job_id in ids:
            if job_id in self.due:
                self.due[job_id] = now + delay

    async def _retry_kills(self, now: float) -> None:
        from airjobs import checks

        loop = asyncio.get_running_loop()
        ids = [job_id for job_id, at in self.kills.items() if at <= now]
        try:
            later = await asyncio.to_thread(checks.retry_kills, self.system_id, ids)
        except Exception as e:  # the database: try again later, up to the limit the jobs' marks keep
            log.warning("retrying %d kill(s) on %s failed: %s", len(ids), self.system_id, e)
            if not checks.transient(e):
                later = {}
            else:
                later = dict.fromkeys(ids, checks.schedule()[-1])
        after = loop.time()
        for job_id in ids:
            if job_id in later:
                self.kills[job_id] = after + later[job_id]
            else:
                self.kills.pop(job_id, None)


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
            fut = poller.add(self.job_id)
            event = await fut
        finally:
            poller.discard(self.job_id, fut)
        remaining = self.min_wait - (loop.time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        yield TriggerEvent(event)
