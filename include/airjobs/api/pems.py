"""``/jobs/v2/{jobId}/pems`` (spec §9): who may see a job and act on it."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import Path, Request, Response

from airjobs import access, store
from airjobs import representation as rep
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import SEGMENT, AgaveRouter, BackendDep, JobsWriter, Paging, ReadableJob, WritableJob, read
from airjobs.api.envelope import base_url, envelope
from airjobs.errors import BadRequest, NotFound
from airjobs.models import Job

router = AgaveRouter(tags=["permissions"])

Username = Annotated[str, Path(json_schema_extra=SEGMENT, description="A user name")]
GRANTED = {201: {"description": "Granted"}, 200: {"description": "Revoked (NONE), or the owner's (unchanged)"}}


def _pem(request: Request, job: Job, username: str) -> dict[str, Any]:
    perm = store.permission_of(job, username, False)
    return rep.permission_json(job, username, perm, base_url(request))


@router.get(
    "/jobs/v2/{jobId}/pems",
    **docs.operation(
        "listJobPermissions",
        "Who may see or act on the job: the owner first (ALL), then the grants",
        ok={200: m.PermissionListResponse},
        errors=(404,),
        page=True,
    ),
)
async def list_pems(request: Request, job: ReadableJob, page: Paging) -> Response:
    limit, offset = page
    # the owner is the listing's first entry (spec §9.2), then the grants
    rows = await read(lambda: store.grants(job.id, limit=max(limit - (offset == 0), 0), offset=max(offset - 1, 0)))
    base = base_url(request)
    owner = [rep.permission_json(job, job.owner, access.ALL, base)] if offset == 0 else []
    return envelope(
        request,
        owner
        + [
            rep.permission_json(job, r.username, access.PERMISSIONS[r.permission], base)
            for r in rows
            if r.username != job.owner
        ][:limit],
    )


@router.get(
    "/jobs/v2/{jobId}/pems/{username}",
    **docs.operation(
        "getJobPermission", "One user's permission on the job", ok={200: m.PermissionResponse}, errors=(404,)
    ),
)
async def get_pem(request: Request, job: ReadableJob, username: Username) -> Response:
    return envelope(request, await read(_pem, request, job, username))


async def _grant(request: Request, backend: BackendDep, user_name: str, job: Job, username: str | None) -> Response:
    body = await bodies.read_body(request, bodies.PERMISSION) if await request.body() else {}
    target = username if username is not None else str(body.get("username") or "").strip()
    if not target:
        raise BadRequest("Missing username field.")
    if "permission" not in body:
        raise BadRequest("Missing permission field.")
    value = access.parse_permission(body.get("permission"))

    def work() -> Response:
        name = backend.user_exists(target)
        if name is None:
            raise NotFound(f"No user found matching {target}")
        if name == job.owner:  # the owner keeps ALL; changing it is silently ignored (spec §9.2)
            return envelope(request, _pem(request, job, name))
        store.set_grant(job, name, value, by=user_name)
        return envelope(request, _pem(request, job, name), status_code=200 if value == "NONE" else 201)

    return await to_thread.run_sync(work)


@router.post(
    "/jobs/v2/{jobId}/pems",
    **docs.operation(
        "grantJobPermission",
        "Grant a user a permission on the job (replacing theirs)",
        ok={201: m.PermissionResponse, 200: m.PermissionResponse},
        errors=(404,),
        extra=GRANTED,
        request_body=docs.body(m.PermissionGrant, form=m.PermissionGrant, upload=True),
    ),
)
async def add_pem(request: Request, user: JobsWriter, job: WritableJob, backend: BackendDep) -> Response:
    return await _grant(request, backend, user.name, job, None)


def _update_doc(operation_id: str) -> dict[str, Any]:
    return docs.operation(
        operation_id,
        "Set one user's permission on the job (NONE or empty revokes)",
        ok={201: m.PermissionResponse, 200: m.PermissionResponse},
        errors=(404,),
        extra=GRANTED,
        request_body=docs.body(m.PermissionUpdate, form=m.PermissionUpdate, upload=True),
    )


@router.post("/jobs/v2/{jobId}/pems/{username}", **_update_doc("updateJobPermission"))
async def update_pem(
    request: Request, user: JobsWriter, job: WritableJob, backend: BackendDep, username: Username
) -> Response:
    return await _grant(request, backend, user.name, job, username)


@router.put("/jobs/v2/{jobId}/pems/{username}", **_update_doc("replaceJobPermission"))
async def replace_pem(
    request: Request, user: JobsWriter, job: WritableJob, backend: BackendDep, username: Username
) -> Response:
    return await _grant(request, backend, user.name, job, username)


@router.delete(
    "/jobs/v2/{jobId}/pems/{username}",
    **docs.operation(
        "deleteJobPermission", "Revoke one user's permissions on the job", ok={200: m.EmptyResponse}, errors=(404,)
    ),
)
async def delete_pem(
    request: Request, user: JobsWriter, job: WritableJob, backend: BackendDep, username: Username
) -> Response:
    def work() -> None:
        name = backend.user_exists(username) or username  # grants are kept under the user's own spelling
        if name != job.owner:
            store.set_grant(job, name, "NONE", by=user.name)

    await to_thread.run_sync(work)
    return envelope(request, None, message=f"Permissions of {username} on job {job.id} revoked.")


@router.delete(
    "/jobs/v2/{jobId}/pems",
    **docs.operation(
        "deleteJobPermissions",
        "Revoke every grant on the job (the owner keeps ALL)",
        ok={200: m.EmptyResponse},
        errors=(404,),
    ),
)
async def delete_pems(request: Request, user: JobsWriter, job: WritableJob) -> Response:
    await to_thread.run_sync(lambda: store.revoke_all(job, by=user.name))
    return envelope(request, None, message=f"All permissions on job {job.id} revoked.")
