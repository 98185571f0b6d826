"""``/apps/v2`` (spec §11.1): register, list, show, update and delete apps."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import Path, Request, Response

from airjobs import registry, validation
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import SEGMENT, AgaveRouter, AppsCreator, AppsDeleter, AppsReader, AppsWriter, read
from airjobs.api.envelope import base_url, envelope
from airjobs.errors import BadRequest

router = AgaveRouter(tags=["apps"])

AppId = Annotated[str, Path(alias="appId", json_schema_extra=SEGMENT, description="name-version, e.g. wc-1.0")]
DESCRIPTION = docs.body(m.AppDescription, form=m.DescriptionForm, upload=True)
APP_LINKS = {"GetApp": {"operationId": "getApp", "parameters": {"appId": "$response.body#/result/id"}}}
REGISTERED = {
    201: {"description": "Registered", "headers": docs.LOCATION, "links": APP_LINKS},
    200: {
        "description": "Updated (the caller's app of that name and version)",
        "headers": docs.LOCATION,
        "links": APP_LINKS,
    },
}


def summary(app: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "id": app["id"],
        "name": app.get("name"),
        "version": app.get("version"),
        "executionSystem": app.get("executionSystem"),
        "label": app.get("label"),
        "shortDescription": app.get("shortDescription"),
        "isPublic": bool(app.get("isPublic")),
        "_links": {"self": {"href": f"{base}/apps/v2/{app['id']}"}},
    }


@router.get(
    "/apps/v2",
    **docs.operation(
        "listApps",
        "The apps the caller may run (their own and the public ones; an admin sees all)",
        ok={200: m.AppListResponse},
    ),
)
async def list_apps(request: Request, user: AppsReader) -> Response:
    apps = await read(registry.list_apps, None if user.is_admin else user.name)
    base = base_url(request)
    return envelope(request, [summary(a, base) for a in apps])


@router.get("/apps/v2/{appId}", **docs.operation("getApp", "One app", ok={200: m.AppResponse}, errors=(404,)))
async def get_app(request: Request, user: AppsReader, app_id: AppId) -> Response:
    return envelope(request, await read(registry.visible_app, app_id, user.name, user.is_admin))


@router.post(
    "/apps/v2",
    **docs.operation(
        "registerApp",
        "Register an app (or update the caller's own of that name and version)",
        ok={201: m.AppResponse, 200: m.AppResponse},
        extra=REGISTERED,
        request_body=DESCRIPTION,
    ),
)
async def register_app(request: Request, user: AppsCreator) -> Response:
    body = await bodies.read_body(request, bodies.APP)

    def work() -> tuple[dict[str, Any], bool]:
        given = f"{body.get('name')}-{body.get('version')}"
        registry.check_owner(registry.get_app(given), "app", given, user.name, user.is_admin)
        doc = validation.validate_app(
            body,
            owner=user.name,
            get_system=registry.get_system,
            default_storage=registry.default_storage,
            is_admin=user.is_admin,
            apps=registry.all_apps,
        )
        return registry.register_app(doc, user.name, user.is_admin)

    doc, created = await to_thread.run_sync(work)
    headers = {"Location": f"{base_url(request)}/apps/v2/{doc['id']}"}
    return envelope(request, doc, status_code=201 if created else 200, headers=headers)


def _update_doc(operation_id: str) -> dict[str, Any]:
    return docs.operation(
        operation_id,
        "Replace an app's description (its owner or an admin)",
        ok={200: m.AppResponse},
        errors=(404,),
        request_body=DESCRIPTION,
    )


async def _update(request: Request, user: AppsWriter, app_id: str) -> Response:
    body = await bodies.read_body(request, bodies.APP)

    def work() -> dict[str, Any]:
        existing = registry.visible_app(app_id, user.name, user.is_admin)
        # before validating: its answers would tell a stranger about the owner's systems
        registry.check_owner(existing, "app", app_id, user.name, user.is_admin)
        doc = validation.validate_app(
            body,
            owner=existing["owner"],
            get_system=registry.get_system,
            default_storage=registry.default_storage,
            is_admin=user.is_admin,
            apps=registry.all_apps,
            owner_is_admin=user.is_admin and existing["owner"] == user.name,
        )
        if doc["id"] != app_id:
            raise BadRequest(f"Invalid name/version: this is app {app_id}, the description says {doc['id']}.")
        return registry.register_app(doc, user.name, user.is_admin)[0]

    return envelope(request, await to_thread.run_sync(work))


@router.put("/apps/v2/{appId}", **_update_doc("updateApp"))
async def update_app(request: Request, user: AppsWriter, app_id: AppId) -> Response:
    return await _update(request, user, app_id)


@router.post("/apps/v2/{appId}", **_update_doc("updateAppByPost"))
async def update_app_by_post(request: Request, user: AppsWriter, app_id: AppId) -> Response:
    return await _update(request, user, app_id)


@router.delete(
    "/apps/v2/{appId}",
    **docs.operation(
        "deleteApp",
        "Delete an app (its owner or an admin; not while jobs of it are active)",
        ok={200: m.EmptyResponse},
        errors=(404, 409),
    ),
)
async def delete_app(request: Request, user: AppsDeleter, app_id: AppId) -> Response:
    await to_thread.run_sync(registry.delete_app, app_id, user.name, user.is_admin)
    return envelope(request, None, message=f"App {app_id} deleted.")
