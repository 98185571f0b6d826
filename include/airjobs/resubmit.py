"""Resubmission (spec §7.2, D10): a new job, owned by the caller, from an earlier job's request, checked against
its app as registered now.

* The new request: the original's own job fields (name, app, queue and resources as the user asked for them,
  archive settings without ``archivePath``/``archiveSystem``, whose defaults are worked out again), and the
  values its inputs and parameters had.
* Conflicts with the app now: an input or parameter the app no longer has, a hidden one whose fixed value changed
  (or that was added). Each is a 400 naming it unless ``ignoreInputConflicts`` / ``ignoreParameterConflicts`` is
  true; then the removed ones are dropped and the hidden ones take their new values. A newly required input or
  parameter is always a 400 (the submission rules say which). The options default to true, as Agave's did; the
  Agave CLI's strict flags (``jobs-resubmit -I -P``) send false.
* ``preserveNotifications`` copies the caller's own notifications of the original (url, event, persistent,
  policy) to the new job; other users' stay theirs (their receivers and credentials).
* The new job records where it came from (``resubmittedFrom``, its first history event); once its inputs are
  staged, each input's sha256 is compared with what the original staged, and a change is recorded in its
  history and in its JSON (``inputChanges``): reproducibility made visible.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from airjobs import db, registry, store, submission
from airjobs.errors import BadRequest
from airjobs.lifecycle import SYSTEM_ACTOR, record_event
from airjobs.models import Job, Notification

OPTIONS = ("ignoreInputConflicts", "ignoreParameterConflicts", "preserveNotifications")
DEFAULTS = {"ignoreInputConflicts": True, "ignoreParameterConflicts": True, "preserveNotifications": False}
#: the original's own job fields that a resubmission sends again (archivePath, archiveSystem: worked out again)
CARRIED = (
    "name",
    "appId",
    "batchQueue",
    "nodeCount",
    "processorsPerNode",
    "memoryPerNode",
    "maxRunTime",
    "archive",
    "archiveOnAppError",
)


def options(body: dict[str, Any]) -> dict[str, bool]:
    out = dict(DEFAULTS)
    for name in OPTIONS:
        if name in body and body[name] not in (None, ""):
            value = body[name]
            if isinstance(value, bool):
                out[name] = value
            elif str(value).strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                out[name] = str(value).strip().lower() in ("true", "1", "yes", "on")
            else:
                raise BadRequest(f"Invalid {name} value {str(value)[:40]!r}: expected true or false.")
    return out


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in submission.split_values(value)]


def _conflicts(kind: str, declared: list[dict[str, Any]], original: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The values to send again, and the conflicts with the app's ``declared`` inputs or parameters now."""
    items = {d["id"]: d for d in declared}
    send: dict[str, Any] = {}
    found: list[str] = []
    for key, value in (original or {}).items():
        item = items.get(key)
        if item is None:
            found.append(f"{kind} {key} is no longer part of the app")
            continue
        fixed = item.get("value") or {}
        if fixed.get("visible", True):
            send[key] = value
        elif _as_list(fixed.get("default")) != _as_list(value):
            found.append(f"hidden {kind} {key} is now {_as_list(fixed.get('default'))} (was {_as_list(value)})")
    for key, item in items.items():
        fixed = item.get("value") or {}
        if not fixed.get("visible", True) and key not in (original or {}) and _as_list(fixed.get("default")):
            found.append(f"hidden {kind} {key} was added with {_as_list(fixed.get('default'))}")
    return send, found


def request_of(original: Job, opts: dict[str, bool], caller: str) -> dict[str, Any]:
    """The new job request; BadRequest for a conflict the options do not let through."""
    app = registry.get_app(original.app_id)
    if app is None:
        raise BadRequest(f"Unable to resubmit job {original.id}: its app {original.app_id} is no longer registered.")
    body: dict[str, Any] = {}
    for name in CARRIED:
        value = submission.pick(original.request or {}, name)
        if value is not None:
            body[name] = value
    body.setdefault("name", original.name)
    body["appId"] = original.app_id
    inputs, input_conflicts = _conflicts("input", app.get("inputs") or [], original.inputs or {})
    parameters, param_conflicts = _conflicts("parameter", app.get("parameters") or [], original.parameters or {})
    for found, option in ((input_conflicts, "ignoreInputConflicts"), (param_conflicts, "ignoreParameterConflicts")):
        if found and not opts[option]:
            raise BadRequest(
                f"Unable to resubmit job {original.id}: it conflicts with app {original.app_id} as registered now: "
                f"{'; '.join(found)}. Set {option} to true to resubmit it anyway."
            )
    body["inputs"], body["parameters"] = inputs, parameters
    if opts["preserveNotifications"]:
        with db.session() as s:  # the caller's own: another user's receivers (and their credentials) stay theirs
            rows = s.scalars(
                select(Notification)
                .where(Notification.associated_uuid == original.id, Notification.owner == caller)
                .order_by(Notification.created, Notification.id)
            ).all()
        body["notifications"] = [
            {"url": n.url, "event": n.event, "persistent": n.persistent, "policy": n.policy} for n in rows
        ]
    return body


def build(original_id: str, caller: str, is_admin: bool, opts: dict[str, bool]) -> Job:
    """The unsaved new job (READ and WRITE on the original needed, spec §7.2), validated and authorized for
    the caller as any submission is."""
    store.readable_job(original_id, caller, is_admin)
    original = store.writable_job(original_id, caller, is_admin)
    job = submission.build_job(request_of(original, opts, caller), caller, is_admin)
    submission.authorize(job)
    job.resubmitted_from = original.id
    return job


def description(job: Job) -> str | None:
    """The first history event of a resubmitted job."""
    return f"Job resubmitted from job {job.resubmitted_from}." if job.resubmitted_from else None


def input_changes(job: Job, staged: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``staged`` with each input's ``previousSha256`` (what the original staged for the same input and source),
    and a line for each one whose content changed."""
    if not job.resubmitted_from:
        return staged, []
    original = store.get_job(job.resubmitted_from)
    before = {
        (r.get("id"), r.get("source")): r.get("sha256") for r in (original.staged_inputs if original else []) or []
    }
    out, lines = [], []
    for r in staged:
        previous = before.get((r.get("id"), r.get("source")))
        out.append({**r, "previousSha256": previous})
        if previous and r.get("sha256") and previous != r["sha256"]:
            lines.append(
                f"Input {r.get('id')} ({r.get('source')}) changed since job {job.resubmitted_from}: "
                f"sha256 {previous} then, {r['sha256']} now."
            )
    return out, lines


def record_changes(job_id: str, lines: list[str]) -> None:
    """One history event per changed input, in the job's current status."""
    if not lines:
        return
    with db.transaction() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            return
        for line in lines:
            record_event(s, job, job.status, line, created_by=SYSTEM_ACTOR)
