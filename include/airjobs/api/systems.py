"""``/systems/v2`` (spec §11.2): register, list, show, update (or make default) and delete systems. Inline
credentials become Airflow Connections (``validation.extract_credentials``)."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import Path, Request, Response

from airjobs import access, registry, validation
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import (
    SEGMENT,
    AgaveRouter,
    Backend,
    BackendDep,
    SystemsCreator,
    SystemsDeleter,
    SystemsReader,
    SystemsWriter,
    User,
    read,
)
from airjobs.api.envelope import base_url, envelope
from airjobs.errors import BadRequest

router = AgaveRouter(tags=["systems"])

SystemId = Annotated[str, Path(alias="systemId", json_schema_extra=SEGMENT, description="The system's id")]
SYSTEM_LINKS = {"GetSystem": {"operationId": "getSystem", "parameters": {"systemId": "$response.body#/result/id"}}}
REGISTERED = {
    201: {"description": "Registered", "headers": docs.LOCATION, "links": SYSTEM_LINKS},
    200: {"description": "Updated (the caller's system of that id)", "headers": docs.LOCATION, "links": SYSTEM_LINKS},
}
TYPE = {
    "name": "type",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "examples": ["STORAGE"]},
    "description": "Only systems of this type (STORAGE or EXECUTION, any case)",
}


def summary(system: dict[str, Any], base: str, default_id: str | None) -> dict[str, Any]:
    return {
        "id": system["id"],
        "name": system.get("name"),
        "type": system.get("type"),
        "description": system.get("description"),
        "status": system.get("status", "UP"),
        "public": bool(system.get("public")),
        "default": system["id"] == default_id,
        "_links": {"self": {"href": f"{base}/systems/v2/{system['id']}"}},
    }


@router.get(
    "/systems/v2",
    **docs.operation(
        "listSystems",
        "The systems the caller may use (their own and the public ones; an admin sees all)",
        ok={200: m.SystemListResponse},
        query=[TYPE],
    ),
)
async def list_systems(request: Request, user: SystemsReader) -> Response:
    wanted = request.query_params.get("type", "").upper()

    def work() -> tuple[list[dict[str, Any]], str | None]:
        default = registry.default_storage(user.name)
        return registry.list_systems(None if user.is_admin else user.name), default["id"] if default else None

    systems, default_id = await read(work)
    base = base_url(request)
    return envelope(request, [summary(s, base, default_id) for s in systems if not wanted or s.get("type") == wanted])


@router.get(
    "/systems/v2/{systemId}", **docs.operation("getSystem", "One system", ok={200: m.SystemResponse}, errors=(404,))
)
async def get_system(request: Request, user: SystemsReader, system_id: SystemId) -> Response:
    return envelope(request, await read(registry.visible_system, system_id, user.name, user.is_admin))


@router.post(
    "/systems/v2",
    **docs.operation(
        "registerSystem",
        "Register a system (or update the caller's own of that id)",
        ok={201: m.SystemResponse, 200: m.SystemResponse},
        extra=REGISTERED,
        request_body=docs.body(m.SystemDescription, form=m.DescriptionForm, upload=True),
    ),
)
async def register_system(request: Request, user: SystemsCreator, backend: BackendDep) -> Response:
    body = await bodies.read_body(request, bodies.SYSTEM)

    def work() -> tuple[dict[str, Any], bool]:
        existing = registry.get_system(str(body.get("id") or ""))
        registry.check_owner(existing, "system", str(body.get("id")), user.name, user.is_admin)
        return _save(backend, user, body, existing)

    doc, created = await to_thread.run_sync(work)
    headers = {"Location": f"{base_url(request)}/systems/v2/{doc['id']}"}
    return envelope(request, doc, status_code=201 if created else 200, headers=headers)


UPDATE = {
    "required": True,
    "content": {
        "application/json": {"schema": docs.either(m.SystemDescription, m.SystemAction)},
        "application/x-www-form-urlencoded": {"schema": docs.either(m.SystemAction, m.DescriptionForm)},
        "multipart/form-data": docs.body(m.SystemDescription, upload=True)["content"]["multipart/form-data"],
    },
}


def _update_doc(operation_id: str) -> dict[str, Any]:
    return docs.operation(
        operation_id,
        "Replace a system's description (its owner or an admin), or setDefault / "
        "unsetDefault it as the caller's default",
        ok={200: m.SystemResponse},
        errors=(404,),
        request_body=UPDATE,
    )


async def _update(request: Request, user: User, backend: Backend, system_id: str) -> Response:
    body = await bodies.read_body(request, bodies.SYSTEM)
    action = str(body.get("action") or "").strip()

    def work() -> dict[str, Any]:
        if action:
            if action not in ("setDefault", "unsetDefault"):
                raise BadRequest(f"Invalid action {action}: use setDefault or unsetDefault, or send a description.")
            return registry.set_default(system_id, user.name, user.is_admin, action == "setDefault")
        existing = registry.visible_system(system_id, user.name, user.is_admin)
        # before any Connection is written: only the owner (or an admin) changes a system
        registry.check_owner(existing, "system", system_id, user.name, user.is_admin)
        if str(body.get("id", system_id)) != system_id:
            raise BadRequest(f"Invalid id: this is system {system_id}, the description says {body.get('id')}.")
        return _save(backend, user, {**body, "id": system_id}, existing)[0]

    return envelope(request, await to_thread.run_sync(work))


@router.put("/systems/v2/{systemId}", **_update_doc("updateSystem"))
async def update_system(request: Request, user: SystemsWriter, backend: BackendDep, system_id: SystemId) -> Response:
    return await _update(request, user, backend, system_id)


@router.post("/systems/v2/{systemId}", **_update_doc("updateSystemByPost"))
async def update_system_by_post(
    request: Request, user: SystemsWriter, backend: BackendDep, system_id: SystemId
) -> Response:
    return await _update(request, user, backend, system_id)


def _save(
    backend: Backend, user: User, body: dict[str, Any], existing: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """Validate, then write the Connections made from inline credentials, then the system: a refused
    description writes nothing. The caller checked that ``user`` may change it."""
    owner = existing["owner"] if existing else user.name
    doc, pending = validation.extract_credentials(body, backend.connection_extra, owner=owner)
    made = {p[0] for p in pending}

    def usable(conn_id: str) -> bool:
        return access.may_use_connection(backend.connection_extra(conn_id), user.name, user.is_admin)

    doc = validation.validate_system(
        doc,
        check=lambda c: c in made or usable(c),
        is_admin=user.is_admin,
        guard=not (user.is_admin and owner == user.name),
    )
    registry.check_new_id(doc["id"], owner, existing)
    for conn in pending:
        backend.put_connection(*conn)
    return registry.register_system(doc, user.name, user.is_admin)


@router.delete(
    "/systems/v2/{systemId}",
    **docs.operation(
        "deleteSystem",
        "Delete a system and the Connections the service made for it (not while it is in use)",
        ok={200: m.EmptyResponse},
        errors=(404, 409),
    ),
)
async def delete_system(request: Request, user: SystemsDeleter, backend: BackendDep, system_id: SystemId) -> Response:
    def work() -> None:
        doc = registry.delete_system(system_id, user.name, user.is_admin)
        named = {
            (s.get(sec) or {}).get("connectionId") for s in registry.list_systems(None) for sec in ("login", "storage")
        }
        for section in ("login", "storage"):  # the credentials the service made for it go with it
            conn_id = f"airjobs-{system_id}-{section}"
            extra = backend.connection_extra(conn_id)
            if extra is not None and extra.get("airjobs_owner") == doc["owner"] and conn_id not in named:
                backend.delete_connection(conn_id)

    await to_thread.run_sync(work)
    return envelope(request, None, message=f"System {system_id} deleted.")
