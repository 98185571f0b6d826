"""``/notifications/v2`` (the part of Agave's Notifications service that jobs use): a job's notifications, their
delivery attempts, and the caller's webhook signing secret. A notification obeys its job's permissions
(``airjobs.notifications.records``)."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import Path, Query, Request, Response
from starlette.convertors import StringConvertor, register_url_convertor

from airjobs import notification_store as records
from airjobs import store
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import SEGMENT, AgaveRouter, JobsReader, JobsWriter, Paging, read
from airjobs.api.envelope import base_url, envelope
from airjobs.errors import BadRequest
from airjobs.notifications import secrets

router = AgaveRouter(tags=["notifications"])


class NotificationIdConvertor(StringConvertor):
    """A notification id: one path segment, never ``secret`` (``/notifications/v2/secret`` is the signing secret's
    own path, so no method of a notification's routes answers there and its ``Allow`` names GET and POST only)."""

    regex = r"(?!secret(?:/|$))[^/]+"


register_url_convertor("notification_id", NotificationIdConvertor())

NotificationId = Annotated[
    str,
    Path(alias="notificationId", json_schema_extra=SEGMENT, description="e.g. 0001414144065563-5056a550b8-0001-011"),
]
NOTIFICATION = bodies.description("notification")
BODY = docs.body(m.NotificationDescription, form=m.NotificationDescription, upload=True)


def _one(request: Request, pair: tuple[Any, records.Stats], viewer: str) -> dict[str, Any]:
    return records.notification_json(pair[0], pair[1], base_url(request), viewer)


@router.get(
    "/notifications/v2",
    **docs.operation(
        "listNotifications",
        "The notifications of the jobs the caller may read (associatedUuid: of one job)",
        ok={200: m.NotificationListResponse},
        page=True,
        query=[docs.query("associatedUuid", {"type": "string"}, "Only the notifications of this job")],
    ),
)
async def list_notifications(
    request: Request,
    user: JobsReader,
    page: Paging,
    associated: Annotated[str | None, Query(alias="associatedUuid", include_in_schema=False)] = None,
) -> Response:
    limit, offset = page
    rows = await read(lambda: records.listing(user.name, user.is_admin, associated or None, limit=limit, offset=offset))
    return envelope(request, [_one(request, r, user.name) for r in rows])


@router.get(
    "/notifications/v2/secret",
    **docs.operation(
        "getWebhookSecret",
        "The caller's webhook signing secret (Standard Webhooks, whsec_...): made on first use",
        ok={200: m.WebhookSecretResponse},
    ),
)
async def get_secret(request: Request, user: JobsReader) -> Response:
    return envelope(request, await to_thread.run_sync(secrets.secret_json, user.name))


@router.post(
    "/notifications/v2/secret",
    **docs.operation(
        "rotateWebhookSecret",
        "A new signing secret; the previous one still signs alongside it for 24 hours",
        ok={200: m.WebhookSecretResponse},
    ),
)
async def rotate_secret(request: Request, user: JobsWriter) -> Response:
    return envelope(request, await to_thread.run_sync(secrets.rotate, user.name), message="Secret rotated.")


@router.post(
    "/notifications/v2",
    **docs.operation(
        "addNotification",
        "Add a notification to a job the caller may change",
        ok={201: m.NotificationResponse},
        errors=(404,),
        request_body=BODY,
    ),
)
async def add_notification(request: Request, user: JobsWriter) -> Response:
    doc = await bodies.read_body(request, NOTIFICATION)
    job_id = doc.get("associatedUuid")
    if not isinstance(job_id, str) or not job_id.strip():
        raise BadRequest("Missing associatedUuid: the id of the job to notify about.")

    def work() -> dict[str, Any]:
        store.readable_job(job_id.strip(), user.name, user.is_admin)  # its webhooks carry the job's JSON
        job = store.writable_job(job_id.strip(), user.name, user.is_admin)
        n = records.add(job, doc, user.name)
        return records.notification_json(n, records.Stats(), base_url(request), user.name)

    return envelope(request, await to_thread.run_sync(work), status_code=201)


@router.get(
    "/notifications/v2/{notificationId:notification_id}",
    **docs.operation("getNotification", "One notification", ok={200: m.NotificationResponse}, errors=(404,)),
)
async def get_notification(request: Request, user: JobsReader, nid: NotificationId) -> Response:
    return envelope(request, _one(request, await read(records.get, nid, user.name, user.is_admin), user.name))


async def _update(request: Request, user: Any, nid: str) -> Response:
    doc = await bodies.read_body(request, NOTIFICATION)

    def work() -> dict[str, Any]:
        records.get(nid, user.name, user.is_admin, "write")
        records.update(nid, doc)
        return _one(request, records.get(nid, user.name, user.is_admin), user.name)

    return envelope(request, await to_thread.run_sync(work))


def _update_doc(operation_id: str) -> dict[str, Any]:
    return docs.operation(
        operation_id,
        "Change a notification's url, event, persistent or policy (it is active again)",
        ok={200: m.NotificationResponse},
        errors=(404,),
        request_body=BODY,
    )


@router.post("/notifications/v2/{notificationId:notification_id}", **_update_doc("updateNotification"))
async def update_notification(request: Request, user: JobsWriter, nid: NotificationId) -> Response:
    return await _update(request, user, nid)


@router.put("/notifications/v2/{notificationId:notification_id}", **_update_doc("replaceNotification"))
async def replace_notification(request: Request, user: JobsWriter, nid: NotificationId) -> Response:
    return await _update(request, user, nid)


@router.delete(
    "/notifications/v2/{notificationId:notification_id}",
    **docs.operation("deleteNotification", "Delete a notification", ok={200: m.EmptyResponse}, errors=(404,)),
)
async def delete_notification(request: Request, user: JobsWriter, nid: NotificationId) -> Response:
    def work() -> None:
        records.get(nid, user.name, user.is_admin, "write")
        records.delete(nid)

    await to_thread.run_sync(work)
    return envelope(request, None, message=f"Notification {nid} deleted.")


@router.get(
    "/notifications/v2/{notificationId:notification_id}/attempts",
    **docs.operation(
        "listNotificationAttempts",
        "Every delivery attempt: time, URL (macros resolved), response code, error, latency",
        ok={200: m.NotificationAttemptListResponse},
        errors=(404,),
        page=True,
    ),
)
async def list_attempts(request: Request, user: JobsReader, nid: NotificationId, page: Paging) -> Response:
    limit, offset = page

    def work() -> list[dict[str, Any]]:
        n, _ = records.get(nid, user.name, user.is_admin)
        rows = records.attempts(nid, limit=limit, offset=offset)
        return [records.attempt_json(a, n.owner, user.name) for a in rows]

    return envelope(request, await read(work))
