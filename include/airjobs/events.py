"""Live job events for Server-Sent Events (``GET /jobs/v2/{id}/events``, ``GET /jobs/v2/events``).

Push, not polling: every history event written (``lifecycle.record_event``) sends ``NOTIFY airjobs_job_event``
with ``<job id> <event id>`` (delivered at commit). One ``Hub`` per process holds one ``LISTEN`` connection in a
thread and wakes the streams that wait on that job (or on every job); an idle stream costs one asyncio task
waiting on a queue. A woken stream reads the events after the last one it sent from the table (``since``), so a
lost or coalesced notification never leaves a gap and nothing is sent twice; after the listening connection
dropped (a database restart) every stream is woken to catch up the same way.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from airjobs import config, db
from airjobs.lifecycle import EVENTS_CHANNEL as CHANNEL
from airjobs.models import Job, JobEvent

log = logging.getLogger(__name__)

ALL = "*"
#: a stream that heard nothing for this long sends an SSE comment (proxies close silent connections)
KEEPALIVE_SECONDS = 15.0
BATCH = 500


@dataclass(eq=False)
class Subscription:
    key: str  # a job id, or ALL
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1))

    def wake(self, job_id: str) -> None:
        def put() -> None:
            if self.queue.empty():  # one pending wake-up is enough: the stream reads everything new
                self.queue.put_nowait(job_id)

        self.loop.call_soon_threadsafe(put)


class Hub:
    """One LISTEN connection per process, started with the first subscription."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.subs: dict[str, set[Subscription]] = defaultdict(set)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.connected = threading.Event()

    def subscribe(self, key: str) -> Subscription:
        sub = Subscription(key, asyncio.get_running_loop())
        with self.lock:
            self.subs[key].add(sub)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._listen, name="airjobs-events", daemon=True)
                self.thread.start()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self.lock:
            self.subs[sub.key].discard(sub)
            if not self.subs[sub.key]:
                del self.subs[sub.key]

    def count(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.subs.values())

    def _wake(self, job_ids: Iterable[str] | None) -> None:
        with self.lock:
            if job_ids is None:  # after a reconnect: everyone catches up from the table
                targets = [s for subs in self.subs.values() for s in subs]
                woken = [(s, "") for s in targets]
            else:
                woken = []
                for job_id in set(job_ids):
                    woken += [(s, job_id) for s in self.subs.get(job_id, ())]
                    woken += [(s, job_id) for s in self.subs.get(ALL, ())]
        for sub, job_id in woken:
            try:
                sub.wake(job_id)
            except RuntimeError:  # its event loop closed
                self.unsubscribe(sub)

    def _listen(self) -> None:
        import psycopg2

        while True:
            try:
                u = make_url(self.url or config.db_url()).set(drivername="postgresql")
                conn = psycopg2.connect(u.render_as_string(hide_password=False))
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                self.connected.set()
                self._wake(None)  # whatever happened while not listening
                while True:
                    ready, _, _ = select.select([conn], [], [], 30.0)
                    if not ready:
                        with conn.cursor() as cur:  # a dead connection shows here
                            cur.execute("SELECT 1")
                        continue
                    conn.poll()
                    ids = [n.payload.split(" ", 1)[0] for n in conn.notifies]
                    conn.notifies.clear()
                    if ids:
                        self._wake(ids)
            except Exception as e:
                self.connected.clear()
                log.warning("job event listener lost its connection (%s); reconnecting", e)
                time.sleep(1.0)


_hub: Hub | None = None


def hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub()
    return _hub


def since(
    job_id: str | None, after: int, *, readable: Any = None, limit: int = BATCH, upto: int | None = None
) -> list[JobEvent]:
    """The events after id ``after`` (and up to ``upto``), oldest first: of one job, or (``job_id`` None) of the
    jobs ``readable`` selects (a SQL condition on ``Job``; None: all)."""
    q = sql_select(JobEvent).where(JobEvent.id > after)
    if upto is not None:
        q = q.where(JobEvent.id <= upto)
    if job_id is not None:
        q = q.where(JobEvent.job_id == job_id)
    else:
        q = q.join(Job, Job.id == JobEvent.job_id).where(Job.visible.is_(True))
        if readable is not None:
            q = q.where(readable)
    with db.session() as s:
        return list(s.scalars(q.order_by(JobEvent.id).limit(limit)))


def last_id() -> int:
    with db.session() as s:
        return int(s.scalar(sql_select(func.max(JobEvent.id))) or 0)
