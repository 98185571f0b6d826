"""Registered systems and apps (documents in the project's tables). Who may see and use what is
``airjobs.access``; listings here follow the same rule (owner, admin, public)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from airjobs import access, db
from airjobs.errors import BadRequest, Conflict, Forbidden, NotFound
from airjobs.models import App, Job, System, UserDefault
from airjobs.statuses import ACTIVE, values
from airjobs.timeutil import now


def _visible(model: type[App] | type[System], user: str | None) -> Select[Any]:
    q = select(model)
    if user is not None:
        q = q.where(or_(model.owner == user, model.is_public.is_(True)))
    return q


def get_system(system_id: str) -> dict[str, Any] | None:
    with db.session() as s:
        row = s.get(System, system_id)
        return dict(row.document) if row else None


def get_app(app_id: str) -> dict[str, Any] | None:
    with db.session() as s:
        row = s.get(App, app_id)
        return dict(row.document) if row else None


def list_systems(user: str | None) -> list[dict[str, Any]]:
    with db.session() as s:
        return [dict(r.document) for r in s.scalars(_visible(System, user).order_by(System.id))]


def list_apps(user: str | None) -> list[dict[str, Any]]:
    with db.session() as s:
        return [dict(r.document) for r in s.scalars(_visible(App, user).order_by(App.id))]


def all_apps() -> list[dict[str, Any]]:
    """Every registered app (the access rule asks for their deployment folders)."""
    return list_apps(None)


def default_storage(owner: str) -> dict[str, Any] | None:
    """The owner's default storage system: their own choice (setDefault), else a public global default."""
    with db.session() as s:
        mine = s.get(UserDefault, (owner, "STORAGE"))
        if mine is not None:
            row = s.get(System, mine.system_id)
            if row is not None:
                return dict(row.document)
        rows = s.scalars(
            select(System)
            .where(System.type == "STORAGE", System.global_default.is_(True))
            .where(or_(System.owner == owner, System.is_public.is_(True)))
        ).all()
    rows = sorted(rows, key=lambda r: (r.owner != owner, r.id))
    return dict(rows[0].document) if rows else None


def set_default(system_id: str, user: str, is_admin: bool, on: bool) -> dict[str, Any]:
    """Make (or stop making) a visible system the user's own default of its type."""
    doc = visible_system(system_id, user, is_admin)
    with db.transaction() as s:
        current = s.get(UserDefault, (user, doc["type"]))
        if on:
            if current is None:
                s.add(UserDefault(owner=user, type=doc["type"], system_id=system_id))
            else:
                current.system_id = system_id
        elif current is not None and current.system_id == system_id:
            s.delete(current)
    return doc


def visible_system(system_id: str, user: str, is_admin: bool) -> dict[str, Any]:
    doc = get_system(system_id)
    if doc is None or not access.may_use_system(doc, user, is_admin):
        raise NotFound(f"No system found matching {system_id}")
    return doc


def visible_app(app_id: str, user: str, is_admin: bool) -> dict[str, Any]:
    doc = get_app(app_id)
    if doc is None or not access.may_use_app(doc, user, is_admin):
        raise NotFound(f"No software found matching {app_id}")
    return doc


def _active_jobs(s: Session, *conditions: Any) -> list[str]:
    q = select(Job.id).where(Job.status.in_(values(ACTIVE)), or_(*conditions)).order_by(Job.created).limit(20)
    return list(s.scalars(q))


def _refuse_if_active(kind: str, ident: str, jobs: list[str]) -> None:
    if jobs:
        more = " (and more)" if len(jobs) == 20 else ""
        raise Conflict(
            f"{kind} {ident} has active jobs: {', '.join(jobs)}{more}. Stop them or wait until they "
            "end, then delete it."
        )


def check_owner(existing: dict[str, Any] | None, kind: str, ident: str, user: str, is_admin: bool) -> None:
    if existing is not None and not is_admin and existing.get("owner") != user:
        raise Forbidden(f"The {kind} id {ident} is already in use by another user.")


def register_system(doc: dict[str, Any], user: str, is_admin: bool) -> tuple[dict[str, Any], bool]:
    """Create, or update when the caller owns it; returns (document, created)."""
    existing = get_system(doc["id"])
    check_owner(existing, "system", doc["id"], user, is_admin)
    owner = existing["owner"] if existing else user
    if existing and existing["type"] != doc["type"]:
        raise BadRequest(f"Invalid type: system {doc['id']} is a {existing['type']} system.")
    put_system(doc, owner)
    return _stored(get_system(doc["id"]), "system", doc["id"]), existing is None


def register_app(doc: dict[str, Any], user: str, is_admin: bool) -> tuple[dict[str, Any], bool]:
    existing = get_app(doc["id"])
    check_owner(existing, "app", doc["id"], user, is_admin)
    put_app(doc, existing["owner"] if existing else user)
    return _stored(get_app(doc["id"]), "app", doc["id"]), existing is None


def _stored(doc: dict[str, Any] | None, kind: str, ident: str) -> dict[str, Any]:
    """The document just written (gone only if deleted at that very moment)."""
    if doc is None:
        raise NotFound(f"No {kind} found matching {ident}")
    return doc


def check_new_id(system_id: str, owner: str, existing: dict[str, Any] | None) -> None:
    """A deleted system's id may be registered again, but not by another user while jobs of other users still
    name it: their outputs and archives would then be read from the newcomer's host."""
    if existing is not None:
        return
    with db.session() as s:
        other = s.scalar(
            select(Job.id)
            .where(or_(Job.execution_system == system_id, Job.archive_system == system_id), Job.owner != owner)
            .limit(1)
        )
    if other is not None:
        raise Forbidden(f"The system id {system_id} is already in use by another user.")


def delete_system(system_id: str, user: str, is_admin: bool) -> dict[str, Any]:
    doc = visible_system(system_id, user, is_admin)
    if not is_admin and doc.get("owner") != user:
        raise Forbidden(f"Permission denied: you do not own system {system_id}.")
    with db.transaction() as s:
        _refuse_if_active(
            "System", system_id, _active_jobs(s, Job.execution_system == system_id, Job.archive_system == system_id)
        )
        users = s.scalars(select(App.id).where(App.execution_system == system_id)).all()
        deployed = [r.id for r in s.scalars(select(App)) if (r.document or {}).get("deploymentSystem") == system_id]
        if users or deployed:
            raise Conflict(f"System {system_id} is used by app {(users or deployed)[0]}: delete or move the app first.")
        s.delete(s.get(System, system_id))
    return doc


def delete_app(app_id: str, user: str, is_admin: bool) -> None:
    doc = visible_app(app_id, user, is_admin)
    if not is_admin and doc.get("owner") != user:
        raise Forbidden(f"Permission denied: you do not own app {app_id}.")
    with db.transaction() as s:
        _refuse_if_active("App", app_id, _active_jobs(s, Job.app_id == app_id))
        s.delete(s.get(App, app_id))


def record_asset_checksums(app_id: str, sums: dict[str, str]) -> None:
    """Keep the asset checksums of an app published before they were recorded (the first job's view)."""
    with db.transaction() as s:
        row = s.get(App, app_id, with_for_update=True)
        if row is not None and "assetChecksums" not in (row.document or {}):
            row.document = {**row.document, "assetChecksums": sums}


def put_system(doc: dict[str, Any], owner: str) -> None:
    t = now()
    doc = {**doc, "owner": owner}
    with db.transaction() as s:
        row = s.get(System, doc["id"])
        if row is None:
            row = System(id=doc["id"], created=t)
            s.add(row)
        row.type = doc["type"]
        row.owner = owner
        row.is_public = bool(doc.get("public"))
        row.global_default = bool(doc.get("globalDefault"))
        row.document = doc
        row.last_updated = t


def put_app(doc: dict[str, Any], owner: str) -> None:
    """Store an app; a public one with the checksums of its assets as they are now (``airjobs.assets``)."""
    t = now()
    app_id = f"{doc['name']}-{doc['version']}"
    doc = {**doc, "id": app_id, "owner": owner}
    doc.pop("assetChecksums", None)
    if doc.get("isPublic"):
        from airjobs import assets

        deploy = get_system(doc.get("deploymentSystem") or doc["executionSystem"])
        if deploy is None:
            raise BadRequest(f"Invalid deploymentSystem: no system found matching {doc.get('deploymentSystem')}.")
        try:
            doc["assetChecksums"] = assets.fingerprint(doc, deploy)
        except Exception as e:
            raise BadRequest(
                f"Unable to read the assets of app {app_id} on {deploy['id']} to publish it: {e}"
            ) from None
    with db.transaction() as s:
        row = s.get(App, app_id)
        if row is None:
            row = App(id=app_id, created=t)
            s.add(row)
        row.owner = owner
        row.is_public = bool(doc.get("isPublic"))
        row.execution_system = doc["executionSystem"]
        row.document = doc
        row.last_updated = t
