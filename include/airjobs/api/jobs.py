"""``/jobs/v2``: submit (D3), list, one job, its status and history, and the kill actions (D2)."""

from __future__ import annotations

import logging
from typing import Any

from anyio import to_thread
from fastapi import Request, Response

from airjobs import control, registry, store, submission
from airjobs import representation as rep
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import (
    AgaveRouter,
    Backend,
    BackendDep,
    JobId,
    JobsReader,
    JobsWriter,
    Paging,
    ReadableJob,
    User,
    read,
)
from airjobs.api.envelope import base_url, envelope
from airjobs.errors import BadRequest
from airjobs.models import Job

log = logging.getLogger(__name__)
router = AgaveRouter(tags=["jobs"])

SUBMITTED = {"headers": docs.LOCATION, "links": docs.job_links()}
MAX_KEY = 255
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": MAX_KEY},
    "description": "D3: the same key from the same user answers the first job (200), never a second.",
}


@router.post(
    "/jobs/v2",
    **docs.operation(
        "submitJob",
        "Submit a job",
        ok={201: m.JobResponse, 200: m.JobResponse},
        query=[IDEMPOTENCY_KEY],
        request_body=docs.body(m.JobRequest, form=m.JobForm, upload=True),
        extra={
            201: {**SUBMITTED, "description": "The job, accepted (PENDING)"},
            200: {**SUBMITTED, "description": "The job an earlier request with this Idempotency-Key submitted"},
        },
    ),
)
async def submit_job(request: Request, user: JobsWriter, backend: BackendDep) -> Response:
    body = await bodies.read_body(request, bodies.JOB)
    key = request.headers.get("idempotency-key")
    job, created = await to_thread.run_sync(_submit, backend, body, user, key)
    base = base_url(request)
    headers = {"Location": f"{base}/jobs/v2/{job.id}"}
    return envelope(request, rep.job_json(job, base), status_code=201 if created else 200, headers=headers)


def _submit(backend: Backend, body: dict[str, Any], user: User, key: str | None) -> tuple[Job, bool]:
    job = submission.build_job(body, user.name, user.is_admin)
    submission.authorize(job)
    if key:
        if len(key) > MAX_KEY:
            raise BadRequest("Idempotency-Key may be at most 255 characters.")
        job.idempotency_key = key
    job, created = store.create_job(job, created_by=user.name, system=registry.get_system(job.execution_system))
    if not created:
        return job, False
    try:
        backend.launch(job)
    except Exception:
        # kept, PENDING, and the reconciler starts its run after its launch grace (``airjobs_airflow.reconcile``)
        log.exception("could not start the lifecycle run of job %s now; the reconciler will", job.id)
    return store.get_job(job.id) or job, True


@router.get(
    "/jobs/v2",
    **docs.operation(
        "listJobs",
        "List the jobs the caller owns or holds a grant on, newest first; with filter, full jobs",
        ok={200: m.JobListResponse},
        page=True,
    ),
)
async def list_jobs(request: Request, user: JobsReader, page: Paging) -> Response:
    full = bool(request.query_params.get("filter"))
    jobs = await read(lambda: store.list_jobs(user.name, user.is_admin, limit=page.limit, offset=page.offset))
    base = base_url(request)
    return envelope(request, [rep.job_json(j, base) if full else rep.job_summary(j, base) for j in jobs])


@router.get("/jobs/v2/{jobId}", **docs.operation("getJob", "One job", ok={200: m.JobResponse}, errors=(404,)))
async def get_job(request: Request, job: ReadableJob) -> Response:
    return envelope(request, rep.job_json(job, base_url(request)))


@router.get(
    "/jobs/v2/{jobId}/status",
    **docs.operation("getJobStatus", "A job's status", ok={200: m.JobStatusResponse}, errors=(404,)),
)
async def job_status(request: Request, job: ReadableJob) -> Response:
    return envelope(request, rep.status_json(job, base_url(request)))


@router.get(
    "/jobs/v2/{jobId}/history",
    **docs.operation(
        "getJobHistory", "A job's events, oldest first", ok={200: m.HistoryResponse}, errors=(404,), page=True
    ),
)
async def job_history(request: Request, job: ReadableJob, page: Paging) -> Response:
    events = await read(lambda: store.history(job.id, limit=page.limit, offset=page.offset))
    return envelope(request, [rep.event_json(e) for e in events])


KILLED = {200: {"description": "Done, or nothing to do (the job had ended)"}}


@router.post(
    "/jobs/v2/{jobId}",
    **docs.operation(
        "manageJob",
        "Act on a job: kill, stop or cancel (synonyms; it ends STOPPED)",
        ok={200: m.EmptyResponse},
        errors=(404, 502),
        request_body=docs.body(m.JobAction, form=m.JobAction, upload=True),
        extra=KILLED,
    ),
)
async def job_action(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    body = await bodies.read_body(request, bodies.ACTION) if await request.body() else {}
    action = str(body.get("action") or "").strip().lower()
    if not action:
        raise BadRequest("No action specified")
    if action not in control.KILL_ACTIONS:
        raise BadRequest(f"Invalid action {action}: this release supports stop, kill and cancel.")
    await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
    return envelope(request, None)


@router.post(
    "/jobs/v2/{jobId}/cancel",
    **docs.operation(
        "cancelJob", "Kill a job (it ends STOPPED)", ok={200: m.EmptyResponse}, errors=(404, 502), extra=KILLED
    ),
)
async def cancel_job(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
    return envelope(request, None)
