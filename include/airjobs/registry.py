"""Registered systems and apps (documents in the project's tables; full CRUD and rules come with issue 4)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from airjobs import db
from airjobs.models import App, System
from airjobs.timeutil import now


def _visible(model, user: str | None):
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


def default_storage(owner: str) -> dict[str, Any] | None:
    """The owner's default storage system: their own marked default, else a public global default."""
    with db.session() as s:
        rows = s.scalars(
            select(System).where(System.type == "STORAGE", System.global_default.is_(True))
            .where(or_(System.owner == owner, System.is_public.is_(True)))
        ).all()
    rows.sort(key=lambda r: (r.owner != owner, r.id))
    return dict(rows[0].document) if rows else None


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
        row.global_default = bool(doc.get("globalDefault") or doc.get("default"))
        row.document = doc
        row.last_updated = t


def put_app(doc: dict[str, Any], owner: str) -> None:
    t = now()
    app_id = f"{doc['name']}-{doc['version']}"
    doc = {**doc, "id": app_id, "owner": owner}
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
