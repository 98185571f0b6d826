"""The owners' webhook signing secrets (``whsec_...``, Standard Webhooks): made on first use; after a rotation the
previous one signs alongside the new one for ``ROTATION_OVERLAP``, so receivers can switch without a gap."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, text

from airjobs import db
from airjobs.models import WebhookSecret
from airjobs.notifications import webhook
from airjobs.timeutil import iso, now

ROTATION_OVERLAP = timedelta(hours=24)


def _secrets(s: Any, owner: str) -> list[WebhookSecret]:
    """The owner's live secrets, the current one first; the first call makes it (one at a time per owner)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:o))"), {"o": f"airjobs-whsec-{owner}"})
    t = now()
    rows = s.scalars(
        select(WebhookSecret)
        .where(WebhookSecret.owner == owner, or_(WebhookSecret.expires.is_(None), WebhookSecret.expires > t))
        .order_by(WebhookSecret.expires.is_not(None), WebhookSecret.created.desc())
    ).all()
    if not rows or rows[0].expires is not None:  # none yet, or only a previous one: make the current one
        s.add(WebhookSecret(owner=owner, secret=webhook.new_secret(), created=t, expires=None))
        s.flush()
        return _secrets(s, owner)
    return list(rows)


def signing_secrets(owner: str) -> list[str]:
    """The owner's secrets that sign a delivery now: the current one first, then one within its overlap."""
    with db.transaction() as s:
        return [r.secret for r in _secrets(s, owner)]


def secret_json(owner: str) -> dict[str, Any]:
    with db.transaction() as s:
        rows = _secrets(s, owner)
        prev = rows[1] if len(rows) > 1 else None
        return {
            "current": rows[0].secret,
            "previous": prev.secret if prev else None,
            "previousExpires": iso(prev.expires) if prev and prev.expires else None,
        }


def rotate(owner: str) -> dict[str, Any]:
    """A new current secret; the one it replaces signs alongside it for ``ROTATION_OVERLAP``; older ones end."""
    t = now()
    with db.transaction() as s:
        for r in _secrets(s, owner):
            if r.expires is None:
                r.expires = t + ROTATION_OVERLAP
            else:
                r.expires = t
        s.add(WebhookSecret(owner=owner, secret=webhook.new_secret(), created=t, expires=None))
    return secret_json(owner)
