"""Server-Sent Events: ``GET /jobs/v2/{jobId}/events`` (one job's history events as they happen) and
``GET /jobs/v2/events`` (every job the caller may read). Each event is ``id: <event id>`` and ``data: <the
history event JSON, with status and jobId>``; ``Last-Event-ID`` (what EventSource sends when it reconnects, or
the ``lastEventId`` query parameter) resumes after that event without a gap or a repeat. A job's stream starts
with its whole history and ends after its terminal status; reconnecting after that answers 204 (EventSource
then stops). The streams are pushed from the database (``airjobs.events``), never polled per client."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from airjobs import events, store
from airjobs import representation as rep
from airjobs.api import docs
from airjobs.api.deps import AgaveRouter, JobsReader, ReadableJob, User, read
from airjobs.errors import BadRequest, NotFound, TooManyRequests
from airjobs.models import JobEvent
from airjobs.statuses import TERMINAL, JobStatus

router = AgaveRouter(tags=["events"])

STREAM = {
    200: {
        "description": "An event stream (text/event-stream): `id:` the event's id, `data:` the history event JSON",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}
NO_MORE = {204: {"description": "The job has ended and nothing happened after Last-Event-ID (EventSource stops)"}}
LAST_ID = docs.query(
    "lastEventId",
    {"type": "integer", "minimum": 0},
    "Resume after this event id (as the Last-Event-ID header does)",
)
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def _after(header: str | None, query: str | None) -> int | None:
    raw = header if header not in (None, "") else query
    if raw in (None, ""):
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadRequest(f"Invalid Last-Event-ID {str(raw)[:40]!r}: expected an event id.") from None
    if not 0 <= value < 2**63:
        raise BadRequest(f"Invalid Last-Event-ID {str(raw)[:40]!r}: expected an event id.")
    return value


def _frame(ev: JobEvent) -> str:
    data = {**rep.event_json(ev), "jobId": ev.job_id, "id": ev.id}
    return f"id: {ev.id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(request: Request, user: User, job_id: str | None, after: int, readable: Any) -> AsyncIterator[str]:
    hub = events.hub()
    sub = hub.subscribe(job_id or events.ALL)
    _open[user.name] += 1  # counted while the stream runs (a soft limit: _admit checks before it starts)
    try:
        yield "retry: 2000\n\n"
        while True:
            if job_id is not None:  # still the caller's to read (a revoked grant, a hidden job end the stream)
                try:
                    await read(store.readable_job, job_id, user.name, user.is_admin)
                except NotFound:
                    return
                batch = await read(lambda a=after: events.since(job_id, a))
            else:  # up to the newest event now, whoever's: what the caller may not read moves the mark too
                top = await read(events.last_id)
                batch = await read(lambda a=after, t=top: events.since(None, a, readable=readable, upto=t))
                if len(batch) < events.BATCH:
                    after = max(after, top)
            for ev in batch:
                yield _frame(ev)
                after = max(after, ev.id)
                if job_id is not None and ev.status in TERMINAL_NAMES:
                    # a little longer for what is written with the end (its notify step's events)
                    for late in await read(lambda a=after: events.since(job_id, a)):
                        yield _frame(late)
                    return
            if len(batch) == events.BATCH:
                continue
            try:
                await asyncio.wait_for(sub.queue.get(), events.KEEPALIVE_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keepalive\n\n"
    finally:
        hub.unsubscribe(sub)
        _open[user.name] -= 1


#: open streams per user in this process: more is a 429 (each holds a connection and wakes on every event)
MAX_STREAMS_PER_USER = 256
_open: Counter[str] = Counter()
TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


def _admit(user: User) -> None:
    if _open[user.name] >= MAX_STREAMS_PER_USER:
        raise TooManyRequests(f"{user.name} has {MAX_STREAMS_PER_USER} event streams open; close some first.")


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _operation(operation_id: str, summary: str, errors: tuple[int, ...]) -> dict[str, Any]:
    return docs.operation(
        operation_id, summary, ok={**STREAM, **NO_MORE}, errors=errors, envelope=False, query=[LAST_ID]
    ) | {"response_class": EventStream}


@router.get("/jobs/v2/events", **_operation("streamJobEvents", "Every event of every job the caller may read", (429,)))
async def all_events(
    request: Request,
    user: JobsReader,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
    last: Annotated[str | None, Query(alias="lastEventId", include_in_schema=False)] = None,
) -> Response:
    after = _after(last_event_id, last)
    if after is None:
        after = await read(events.last_id)
    readable = None if user.is_admin else store.readable_by(user.name)
    _admit(user)
    return EventStream(_stream(request, user, None, after, readable), headers=HEADERS)


@router.get(
    "/jobs/v2/{jobId}/events",
    **_operation("streamJobEventsOf", "A job's events: its history so far, then each one as it happens", (404, 429)),
)
async def job_events(
    request: Request,
    user: JobsReader,
    job: ReadableJob,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
    last: Annotated[str | None, Query(alias="lastEventId", include_in_schema=False)] = None,
) -> Response:
    after = _after(last_event_id, last) or 0
    if JobStatus(job.status) in TERMINAL and not await read(lambda: events.since(job.id, after, limit=1)):
        return Response(status_code=204)
    _admit(user)
    return EventStream(_stream(request, user, job.id, after, None), headers=HEADERS)
