"""``/jobs/v2``: submit (D3), list, one job, its status and history, and the actions (D2): kill, hide and
restore, resubmit."""

from __future__ import annotations

import logging
from typing import Any

from anyio import to_thread
from fastapi import Request, Response

from airjobs import control, registry, resubmit, store, submission
from airjobs import representation as rep
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api import search as finder  # the search terms (issue 14) and the legacy form
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
    return _accept(backend, job, user, key)


def _accept(backend: Backend, job: Job, user: User, key: str | None = None) -> tuple[Job, bool]:
    """Store a validated, authorized job and start its lifecycle run."""
    if key:
        if len(key) > MAX_KEY:
            raise BadRequest("Idempotency-Key may be at most 255 characters.")
        job.idempotency_key = key
    job, created = store.create_job(
        job,
        created_by=user.name,
        system=registry.get_system(job.execution_system),
        description=resubmit.description(job),
    )
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
        "List or search (field.op=value terms, Appendix A) the jobs the caller owns or holds a grant on, newest "
        "first; with filter, full jobs",
        ok={200: m.JobListResponse},
        page=True,
        query=finder.JOB_ORDER,
    ),
)
async def list_jobs(request: Request, user: JobsReader, page: Paging) -> Response:
    return await finder.listing(request, user, page, finder.job_search(request))


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
        "getJobHistory",
        "A job's events, oldest first; field.op=value terms on status, created, createdBy, description",
        ok={200: m.HistoryResponse},
        errors=(404,),
        page=True,
        query=finder.HISTORY_ORDER,
    ),
)
async def job_history(request: Request, job: ReadableJob, page: Paging) -> Response:
    found = finder.history_search(request)
    events = await read(lambda: store.history(job.id, limit=page.limit, offset=page.offset, search=found))
    return envelope(request, [rep.event_json(e) for e in events])


KILLED = {200: {"description": "Done, or nothing to do (the job had ended)"}}


@router.post(
    "/jobs/v2/{jobId}",
    **docs.operation(
        "manageJob",
        "Act on a job: kill, stop or cancel (synonyms; it ends STOPPED), hide (or delete), restore (or unhide), "
        "resubmit",
        ok={200: m.EmptyResponse, 201: m.JobResponse},
        errors=(404, 409, 502),
        request_body=docs.body(m.JobAction, form=m.JobAction, upload=True),
        extra={**KILLED, 201: {**SUBMITTED, "description": "resubmit: the new job"}},
    ),
)
async def job_action(request: Request, user: JobsWriter, backend: BackendDep, job_id: JobId) -> Response:
    body = await bodies.read_body(request, bodies.ACTION) if await request.body() else {}
    action = str(body.get("action") or "").strip().lower()
    if not action:
        raise BadRequest("No action specified")
    if action in control.KILL_ACTIONS:
        await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
        return envelope(request, None)
    if action in control.HIDE_ACTIONS:
        return await _hide(request, user, job_id)
    if action in control.RESTORE_ACTIONS:
        return await _restore(request, user, job_id)
    if action == "resubmit":
        return await _resubmit(request, user, backend, job_id, body)
    raise BadRequest(
        f"Invalid action {action}: the actions are stop, kill, cancel, hide, delete, restore, unhide and resubmit."
    )


@router.post(
    "/jobs/v2/{jobId}/cancel",
    **docs.operation(
        "cancelJob", "Kill a job (it ends STOPPED)", ok={200: m.EmptyResponse}, errors=(404, 502), extra=KILLED
    ),
)
async def cancel_job(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
    return envelope(request, None)


async def _hide(request: Request, user: User, job_id: str) -> Response:
    message = await to_thread.run_sync(control.hide, job_id, user.name, user.is_admin)
    return envelope(request, None, message=message)


async def _restore(request: Request, user: User, job_id: str) -> Response:
    job = await to_thread.run_sync(control.restore, job_id, user.name, user.is_admin)
    return envelope(request, rep.job_json(job, base_url(request)), message=f"Job {job_id} restored.")


async def _resubmit(request: Request, user: User, backend: Backend, job_id: str, body: dict[str, Any]) -> Response:
    opts = resubmit.options(body)

    def work() -> Job:
        job = resubmit.build(job_id, user.name, user.is_admin, opts)
        return _accept(backend, job, user)[0]

    job = await to_thread.run_sync(work)
    base = base_url(request)
    headers = {"Location": f"{base}/jobs/v2/{job.id}"}
    return envelope(request, rep.job_json(job, base), status_code=201, headers=headers)


HIDDEN = {200: {"description": "Hidden (the message says whether the job had to be stopped first)"}}


@router.delete(
    "/jobs/v2/{jobId}",
    **docs.operation(
        "deleteJob",
        "Hide a job (never purged; restore brings it back)",
        ok={200: m.EmptyResponse},
        errors=(404, 502),
        extra=HIDDEN,
    ),
)
async def delete_job(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    return await _hide(request, user, job_id)


@router.post(
    "/jobs/v2/{jobId}/hide",
    **docs.operation(
        "hideJob", "Hide a job (as DELETE does)", ok={200: m.EmptyResponse}, errors=(404, 502), extra=HIDDEN
    ),
)
async def hide_job(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    return await _hide(request, user, job_id)


@router.post(
    "/jobs/v2/{jobId}/unhide",
    **docs.operation("unhideJob", "Restore a hidden job", ok={200: m.JobResponse}, errors=(404, 409)),
)
async def unhide_job(request: Request, user: JobsWriter, job_id: JobId) -> Response:
    return await _restore(request, user, job_id)


@router.post(
    "/jobs/v2/{jobId}/resubmit",
    **docs.operation(
        "resubmitJob",
        "A new job from this one's request, checked against its app as registered now",
        ok={201: m.JobResponse},
        errors=(404,),
        request_body=docs.body(m.ResubmitOptions, form=m.ResubmitOptions, upload=True, required=False),
        extra={201: {**SUBMITTED, "description": "The new job (PENDING)"}},
    ),
)
async def resubmit_job(request: Request, user: JobsWriter, backend: BackendDep, job_id: JobId) -> Response:
    body = await bodies.read_body(request, bodies.ACTION) if await request.body() else {}
    return await _resubmit(request, user, backend, job_id, body)
