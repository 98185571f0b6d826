"""Where a job's input values point (spec §4.2 Table 2), and whether its owner may read them: no host is
contacted. Submission calls ``locate`` so what a user may not read is refused at submit; staging
(``airjobs.steps.stage``) calls it again before it reads.

* relative or absolute paths on the owner's default storage, ``agave://system/path`` (``//`` = absolute);
* ``http(s)://`` URLs, and among them the URLs of this service's own job outputs (read under the job rule);
* ``sftp://[user@]host[:port]/path``, read through a registered SFTP system with that host, port (and
  ``storage.auth.username``, when the URL names a user) that the owner may use: never with credentials from
  the URL.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from airjobs import access, egress, registry, store
from airjobs.errors import AgaveError, StepError
from airjobs.models import Job
from airjobs.remote import require_system


class InputError(StepError):
    """A staging error with its message for the job; ``permanent`` when retrying cannot fix it."""

    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def resolve_input(uri: str, owner: str) -> tuple[dict[str, Any], str]:
    """An input value -> (storage system, path on it). Relative paths are on the owner's default storage."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "agave":
        system = require_system(parts.netloc)
        # agave://sys/rel is under homeDir, agave://sys//abs under rootDir (spec §4.2)
        path = "/" + parts.path.lstrip("/") if parts.path.startswith("//") else parts.path.lstrip("/")
        return system, path
    if scheme in ("", "file"):
        default = registry.default_storage(owner)
        if default is None:
            raise StepError(f"No default storage system to resolve the input path {uri}.")
        return default, uri
    raise StepError(f"Inputs with the {scheme} scheme cannot be staged by this release yet: {uri}")


def _sftp_system(
    uri: str, owner: str, is_admin: bool = False, apps: Any = registry.all_apps
) -> tuple[dict[str, Any], str]:
    """The registered SFTP system an ``sftp://`` URL names (same host, port and, when the URL names a user,
    ``storage.auth.username``) whose path rule lets ``owner`` read the path: the owner's own systems first,
    then the others they may use. Credentials in the URL are never used. ``apps``: as ``access.check_path``."""
    parts = urlsplit(uri)
    try:
        host, port, user = (parts.hostname or "").lower(), parts.port or 22, parts.username
    except ValueError:
        raise InputError(f"Invalid input URL {uri}: bad port.", True) from None
    if not host:
        raise InputError(f"Invalid input URL {uri}: no host.", True)
    candidates = sorted(
        registry.list_systems(None if is_admin else owner), key=lambda s: (s.get("owner") != owner, s["id"])
    )
    refusal: Exception | None = None
    for system in candidates:
        st = system.get("storage") or {}
        if not (
            str(st.get("protocol") or "").upper() == "SFTP"
            and str(st.get("host") or "").lower() == host
            and int(st.get("port") or 22) == port
            and access.may_use_system(system, owner, is_admin)
            and (user is None or (st.get("auth") or {}).get("username") == user)
        ):
            continue
        root = posixpath.normpath(st.get("rootDir") or "/")
        path = posixpath.normpath("/" + unquote(parts.path).lstrip("/"))
        rel = posixpath.relpath(path, root)
        if rel == ".." or rel.startswith("../"):
            refusal = InputError(
                f"Permission denied: {path} is outside the root {root} of system {system['id']}.", True
            )
            continue
        found = "/" + rel if rel != "." else "/"
        try:
            access.check_path(system, found, owner, is_admin, write=False, apps=apps)
        except AgaveError as e:
            refusal = e
            continue
        return system, found
    if refusal is not None:
        raise refusal
    who = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    raise InputError(
        f"No SFTP storage system that {owner} may use is registered for {who}, so {uri} "
        "cannot be read (credentials in URLs are never used).",
        True,
    )


@dataclass
class Located:
    """Where an input value points, after the access rule said the job's owner may read it."""

    kind: str  # "http" (a URL fetched over HTTP), "output" (another job's output), "path" (a file on a system)
    system: dict[str, Any] | None = None  # for "path"
    path: str = ""  # the path on the system, the URL, or the output's path inside its job
    job: Job | None = None  # for "output"


def locate(input_id: str, uri: str, owner: str, is_admin: bool, apps: Any = registry.all_apps) -> Located:
    """An input value -> where it is, or a permanent InputError (unknown system, a system or path the owner may
    not read, a job output they may not read). No host is contacted: submission calls this too, so what a
    user may not read is refused at submit, and staging calls it again before reading. ``apps``: the
    registered apps or a function that reads them (``access.check_path``)."""
    try:
        scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
        if scheme in ("http", "https"):
            output = egress.is_service_output_url(uri)
            if output is None:
                return Located("http", path=uri)
            job_id, path = output
            job = store.get_job(job_id)
            if job is None or not job.visible or not store.permission_of(job, owner, is_admin).read:
                raise InputError(
                    f"Input {input_id}: no job found with id {job_id} whose outputs {owner} may read.", True
                )
            return Located("output", path=path, job=job)
        if scheme == "sftp":
            system, path = _sftp_system(uri, owner, is_admin, apps)
        else:
            system, path = resolve_input(uri, owner)
        if not access.may_use_system(system, owner, is_admin):
            raise InputError(f"Input {input_id}: no system found matching {system['id']}.", True)
        access.check_path(system, path, owner, is_admin, write=False, what=f"input {input_id}", apps=apps)
        return Located("path", system=system, path=path)
    except InputError:
        raise
    except (StepError, AgaveError, ValueError) as e:
        raise InputError(f"Input {input_id}: {getattr(e, 'message', None) or e}", True) from None
