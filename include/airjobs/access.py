"""The access rule (spec §9, issue 10): may *user* do *action* on *thing*. Every endpoint, lifecycle step and
registry call asks here, so there is one answer whichever road a request takes.

Things and who may do what with them:

* **job**: its owner and admins may do everything; anyone else what a grant (``/pems``) gives: READ (see the
  job, its status, history, outputs and grants) and/or WRITE (act on it: kill, change grants). A job one may
  not read answers 404 as if it did not exist; one one may read but not change answers 403.
* **app**: its owner and admins; everyone when it is public (only admins publish). Private apps are their
  owner's alone: there is no per-app users list (a description's ``users`` field is not stored), because
  running an app means using its execution system's credentials, which belong to the app's owner.
* **system**: its owner and admins; everyone when public (only admins publish). Using a system means its
  credentials are used for you; so a job may name (as execution, input or archive system) only systems its
  owner may use.
* **storage path** on a system: the owner of the system and admins read and write anywhere in it (except an
  app's deployment folder, which no job writes, see ``check_archive_target``). Anyone else who may use the
  system reads and writes only below their own home, ``<homeDir>/<username>/`` (Agave's per-user home on a
  shared storage system), and reads (never writes) below the folders the system's owner publishes in the
  system description's ``publishedPaths`` (the demo's ``/samples``). Other users' work directories and
  archives are therefore never reachable by path: a job's outputs are reached through that job's endpoints,
  or as an input by the job's URL, both under the job rule.
* **Connection** (credentials): an admin may name any; a user only those the service made from that user's
  own inline ``auth`` (``extra.airjobs_owner``) or ones an admin assigned to them (``extra.airjobs_users``,
  a list or comma-separated string of user names).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from airjobs.errors import BadRequest, Forbidden, NotFound
from airjobs.paths import host_path


@dataclass(frozen=True)
class Perm:
    read: bool = False
    write: bool = False
    execute: bool = False


#: spec §9.1: the 8 values a grant may take (NONE revokes); READ_WRITE is a synonym of ALL without EXECUTE
PERMISSIONS: dict[str, Perm] = {
    "NONE": Perm(),
    "READ": Perm(read=True),
    "WRITE": Perm(write=True),
    "EXECUTE": Perm(execute=True),
    "READ_WRITE": Perm(read=True, write=True),
    "READ_EXECUTE": Perm(read=True, execute=True),
    "WRITE_EXECUTE": Perm(write=True, execute=True),
    "ALL": Perm(read=True, write=True, execute=True),
}
ALL = PERMISSIONS["ALL"]
NONE = PERMISSIONS["NONE"]


def parse_permission(value: Any) -> str:
    """A grant's value, upper-cased; empty or null is NONE; anything else is a 400 listing the valid ones."""
    text = "NONE" if value in (None, "") else str(value).strip().upper()
    if text not in PERMISSIONS:
        raise BadRequest(
            "Invalid permission value. Valid values are: ALL, READ, WRITE, READ_WRITE, EXECUTE, "
            "READ_EXECUTE, WRITE_EXECUTE, NONE"
        )
    return text


# ---------------------------------------------------------------- jobs


def job_permission(job: Any, user: str, is_admin: bool, granted: str | None) -> Perm:
    """What ``user`` may do with ``job``; ``granted`` is their grant's value (None without one)."""
    if is_admin or job.owner == user:
        return ALL
    return PERMISSIONS.get(granted or "NONE", NONE)


def check_job(job: Any, job_id: str, perm: Perm, action: str, hidden_ok: bool = False) -> None:
    """``action`` "read" needs READ, "write" needs WRITE. A job one holds neither on answers 404 as if it did
    not exist (so ids of others' jobs reveal nothing); one one may read but not change answers 403 to a
    write; a WRITE-only grant acts on the job without seeing it (spec §9.1)."""
    if job is None or not (perm.read or perm.write):
        raise NotFound(f"No job found with job id {job_id}.")
    if not job.visible and not hidden_ok:  # a hidden job is there only for restore
        raise NotFound(f"Job with uuid {job_id} is not visible.")
    if action == "write" and not perm.write:
        raise Forbidden("User does not have permission to modify this job")
    if action == "read" and not perm.read:
        raise NotFound(f"No job found with job id {job_id}.")


# ---------------------------------------------------------------- apps, systems, connections


def may_use_app(app: dict[str, Any] | None, user: str, is_admin: bool) -> bool:
    return app is not None and (is_admin or bool(app.get("isPublic")) or app.get("owner") == user)


def may_use_system(system: dict[str, Any] | None, user: str, is_admin: bool) -> bool:
    return system is not None and (is_admin or bool(system.get("public")) or system.get("owner") == user)


def owns_system(system: dict[str, Any], user: str, is_admin: bool) -> bool:
    return is_admin or system.get("owner") == user


def connection_users(extra: dict[str, Any]) -> set[str]:
    """The users a Connection is for: the one whose inline ``auth`` made it, and those an admin assigned."""
    users = {str(extra["airjobs_owner"])} if extra.get("airjobs_owner") else set()
    assigned = extra.get("airjobs_users") or []
    if isinstance(assigned, str):
        assigned = assigned.split(",")
    return users | {str(u).strip() for u in assigned if str(u).strip()}


def may_use_connection(extra: dict[str, Any] | None, user: str, is_admin: bool) -> bool:
    """``extra`` is the Connection's extra (None when there is no such Connection)."""
    if extra is None:
        return False
    return is_admin or user in connection_users(extra)


# ---------------------------------------------------------------- storage paths


def _under(path: str, folder: str) -> bool:
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def home(system: dict[str, Any], user: str) -> str:
    """``<homeDir>/<user>`` on the system, as a host path."""
    return host_path(system, user)


def published(system: dict[str, Any]) -> list[str]:
    """Host paths of the folders the system's owner lets every user read."""
    out = []
    for p in system.get("publishedPaths") or []:
        try:
            out.append(host_path(system, str(p)))
        except BadRequest:
            continue
    return out


AppsArg = Iterable[dict[str, Any]] | Callable[[], Iterable[dict[str, Any]]]


def _apps(apps: AppsArg) -> list[dict[str, Any]]:
    """The registered apps, fetched only when a rule needs them (``apps`` may be a function that reads them)."""
    return list(apps() if callable(apps) else apps)


def work_area(system: dict[str, Any]) -> str | None:
    """Host path of an execution system's work area (``<scratchDir|workDir>``, every user's job directories
    below ``<area>/<owner>/``), None when the system has none of its own."""
    base = system.get("scratchDir") or system.get("workDir")
    if not base or not str(base).strip("/"):
        return None
    try:
        return host_path(system, "/" + str(base).strip("/"))
    except BadRequest:
        return None


def check_path(
    system: dict[str, Any], path: str, user: str, is_admin: bool, *, write: bool, what: str = "path", apps: AppsArg = ()
) -> str:
    """The host path of ``path`` on ``system`` when ``user`` may read (or write) it; Forbidden otherwise.
    ``apps`` are the registered apps, or a function that reads them (only called for a user who does not own
    the system)."""
    full = host_path(system, path)
    check_host_path(system, full, user, is_admin, write=write, what=what, shown=path, apps=apps)
    return full


def check_host_path(
    system: dict[str, Any],
    full: str,
    user: str,
    is_admin: bool,
    *,
    write: bool,
    what: str = "path",
    shown: str | None = None,
    apps: AppsArg = (),
) -> None:
    """A user who does not own the system reaches their home and (to read) the published folders, but never
    another user's job directories in the work area nor the deployment folders of others' apps, even where
    those lie inside the home (a user named ``work``, ``apps`` or ``samples`` on the demo systems), and never
    writes into or over a published folder."""
    if not may_use_system(system, user, is_admin):
        raise Forbidden(f"Permission denied: {user} may not use system {system['id']}.")
    if owns_system(system, user, is_admin):
        return
    shared = published(system)
    work = work_area(system)
    ok = _under(full, home(system, user)) or (not write and any(_under(full, f) for f in shared))
    if ok and work and _under(full, work) and not _under(full, posixpath.join(work, user)):
        ok = False  # other users' job directories
    if ok and write and any(_under(full, f) or _under(f, full) for f in shared):
        ok = False
    if ok:
        others = [a for a in _apps(apps) if a.get("owner") != user]
        if any(
            _under(full, folder) or (write and _under(folder, full))
            for _, folder in deployment_folders(system["id"], others, system)
        ):
            ok = False
    if not ok:
        verb = "write" if write else "read"
        raise Forbidden(
            f"Permission denied: {user} may not {verb} {what} {shown or full} on system {system['id']}: "
            f"other users' folders are private; use your home folder {user}/ on {system['id']}"
            + ("" if write else " or a published folder")
            + "."
        )


def deployment_folders(system_id: str, apps: Iterable[dict[str, Any]], system: dict[str, Any]) -> list[tuple[str, str]]:
    """(app id, host path) of every app deployed on ``system``."""
    out = []
    for app in apps:
        if app.get("deploymentSystem") == system_id and app.get("deploymentPath"):
            try:
                out.append((app["id"], host_path(system, app["deploymentPath"])))
            except BadRequest:
                continue
    return out


def check_archive_target(system: dict[str, Any], path: str, user: str, is_admin: bool, apps: AppsArg) -> str:
    """An archive folder the job's owner may write, overlapping no app's deployment folder (whatever lands
    there would change what that app runs)."""
    apps = _apps(apps)
    full = check_path(system, path, user, is_admin, write=True, what="archivePath", apps=apps)
    check_overlap(system, full, path, apps)
    return full


def check_overlap(system: dict[str, Any], full: str, path: str, apps: AppsArg) -> None:
    for app_id, folder in deployment_folders(system["id"], _apps(apps), system):
        if _under(full, folder) or _under(folder, full):
            raise Forbidden(
                f"Invalid archivePath {path}: it overlaps the deployment folder of app {app_id} on "
                f"{system['id']}; jobs never write into an app's assets."
            )
