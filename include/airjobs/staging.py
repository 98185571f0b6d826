"""Input staging (spec §4.2 Table 2, §10.1): the first step of every job.

``stage(job_id)`` copies every input value into the job's work directory on the execution system:

* relative or absolute paths on the owner's default storage, ``agave://system/path`` (``//`` = absolute),
  ``http(s)://`` URLs (redirects followed) and ``sftp://[user@]host[:port]/path``, which is read through a
  registered SFTP system with that host, port (and ``storage.auth.username``, when the URL names a user)
  that the owner may use: never with credentials from the URL;
* each copy is streamed while its size and sha256 are computed; ``staged_inputs`` on the job records them
  (a directory: its total size and ``sha256: null``);
* STAGING_INPUTS events carry a ``progress`` dict: at each file's end and every 2 s or 64 MiB meanwhile;
* up to 3 attempts, ``AIRJOBS_STAGING_BACKOFF_SECONDS`` (default 5) then twice that between them; a failed
  attempt goes back to PENDING naming the error. Errors retrying cannot fix (missing input, permission,
  unknown system, bad URL, HTTP 4xx) end the job FAILED at once; after 3 attempts that failed for another reason
  (a host away, a connection reset, HTTP 5xx) ``Unavailable`` is raised: the service retries the stage task,
  up to its time budget (``airjobs.recovery``), then the job ends FAILED with that error;
* a job stopped meanwhile (terminal status, checked at most every 0.5 s during a copy, between files and
  before each attempt) makes staging remove the partial file and raise ``steps.JobAlreadyFinal``.

History of a job staged at the third attempt::

    PENDING            Job accepted and queued for submission.
    PROCESSING_INPUTS  Attempt 1 to stage job inputs
    STAGING_INPUTS     Staging 1 input(s) to agave://<exec system><work path>
    PENDING            Attempt 1 to stage job inputs failed: <error>. Retrying in 5 s.
    PROCESSING_INPUTS  Attempt 2 to stage job inputs
    STAGING_INPUTS     Staging 1 input(s) to ...
    PENDING            Attempt 2 to stage job inputs failed: <error>. Retrying in 10 s.
    PROCESSING_INPUTS  Attempt 3 to stage job inputs
    STAGING_INPUTS     Staging 1 input(s) to ...
    STAGING_INPUTS     Copy in progress: <uri> (...)          (+progress; only for long copies)
    STAGING_INPUTS     Copy of <uri> to agave://... completed (<n> bytes)   (+progress)
    STAGED             Job inputs staged to execution system
"""

from __future__ import annotations

import functools
import os
import posixpath
import shlex
import socket
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import select

from airjobs import db, registry, store, transports
from airjobs.egress import EgressRefused
from airjobs.errors import AgaveError, IllegalTransition, StepError
from airjobs.lifecycle import fail, transition
from airjobs.models import Job
from airjobs.statuses import TERMINAL, JobStatus
from airjobs.steps import AFTER_STAGING, JobAlreadyFinal, _host_path, _job, _system, resolve_input, work_path
from airjobs.transports.http import ConnectFailed, HTTPSource, HTTPStatusError

S = JobStatus
log = logging.getLogger(__name__)
ATTEMPTS = 3
CHECK_EVERY = 0.5  # seconds between cancellation checks during a copy
PROGRESS_EVERY = 2.0  # seconds between progress events during a copy ...
PROGRESS_BYTES = 64 << 20  # ... or this many bytes, whichever comes first


def backoff_seconds() -> float:
    return float(os.environ.get("AIRJOBS_STAGING_BACKOFF_SECONDS", "5"))


class InputError(StepError):
    """A staging error with its message for the job; ``permanent`` when retrying cannot fix it."""

    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


class Unavailable(OSError):
    """Staging failed for a reason retrying may fix (a host unreachable, a connection reset, an HTTP 5xx) after
    every attempt: not the job's fault, the stage task is retried (``airjobs.recovery``) until its time budget."""


@dataclass
class Source:
    input_id: str
    uri: str
    name: str  # file name in the work directory
    reader: Any  # a Transport, or the HTTPSource
    path: str  # host path on the source system, or the URL
    where: str  # host:port (and system) for messages
    system_path: str = ""  # the path on the system (for messages)
    follow: Any = None  # called with each symbolic link met inside a staged folder (transports.copy)


# ---------------------------------------------------------------- the job's status


def _status(job_id: str) -> str | None:
    with db.session() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


def check_cancelled(job_id: str) -> None:
    """Raise JobAlreadyFinal when the job reached a terminal status (a user stopped it): one small query."""
    status = _status(job_id)
    if status is None or JobStatus(status) in TERMINAL:
        raise JobAlreadyFinal(f"Job {job_id} is {status or 'gone'}: staging stopped.")


def _move(job_id: str, status: JobStatus, message: str, **fields: Any) -> None:
    try:
        transition(job_id, status, message, **fields)
    except IllegalTransition:
        check_cancelled(job_id)
        raise


# ---------------------------------------------------------------- errors


def _reason(e: BaseException) -> str:
    errors = getattr(e, "errors", None)  # paramiko's NoValidConnectionsError: {(host, port): OSError}
    if isinstance(errors, dict) and errors:
        return "; ".join(sorted({getattr(x, "strerror", None) or str(x) for x in errors.values()}))
    return str(e) or type(e).__name__


def _is_connect_error(e: BaseException) -> bool:
    """Could not reach the host at all (as opposed to a failure in the middle of a transfer)."""
    return isinstance(e, (ConnectFailed, ConnectionRefusedError, TimeoutError, socket.gaierror)) or isinstance(
        getattr(e, "errors", None), dict)


def _permanent(e: BaseException) -> bool:
    if isinstance(e, InputError):
        return e.permanent
    if isinstance(e, HTTPStatusError):
        return 400 <= e.status < 500 and e.status not in (408, 425, 429)
    return isinstance(e, (StepError, AgaveError, FileNotFoundError, PermissionError, NotADirectoryError,
                          IsADirectoryError))


def _endpoint(system: dict[str, Any], section: str = "storage") -> str:
    """``host:port (system id)`` for messages."""
    part = system.get(section) or {}
    if str(part.get("protocol") or "").upper() == "LOCAL":
        return f"localhost (system {system['id']})"
    return f"{part.get('host') or '?'}:{part.get('port') or 22} (system {system['id']})"


def _explain(e: Exception, where: str, doing: str, input_id: str = "") -> InputError:
    """``e`` as an InputError whose message says where (host:port, system), what failed and why."""
    if isinstance(e, InputError):
        return e
    if isinstance(e, (HTTPStatusError, EgressRefused)):  # the refusal is permanent: an AgaveError
        return InputError(f"Input {input_id}: {e}", _permanent(e))
    if _is_connect_error(e):
        return InputError(f"Unable to connect to {where} to {doing}: {_reason(e)}", False)
    return InputError(f"Unable to {doing} on {where}: {_reason(e)}", _permanent(e))


# ---------------------------------------------------------------- resolving inputs (no host is contacted)


def _sftp_system(uri: str, owner: str, is_admin: bool = False,
                 apps: Any = registry.all_apps) -> tuple[dict[str, Any], str]:
    """The registered SFTP system an ``sftp://`` URL names (same host, port and, when the URL names a user,
    ``storage.auth.username``) whose path rule lets ``owner`` read the path: the owner's own systems first,
    then the others they may use. Credentials in the URL are never used. ``apps``: as ``access.check_path``."""
    from airjobs import access

    parts = urlsplit(uri)
    try:
        host, port, user = (parts.hostname or "").lower(), parts.port or 22, parts.username
    except ValueError:
        raise InputError(f"Invalid input URL {uri}: bad port.", True) from None
    if not host:
        raise InputError(f"Invalid input URL {uri}: no host.", True)
    candidates = sorted(registry.list_systems(None if is_admin else owner),
                        key=lambda s: (s.get("owner") != owner, s["id"]))
    refusal: Exception | None = None
    for system in candidates:
        st = system.get("storage") or {}
        if not (str(st.get("protocol") or "").upper() == "SFTP" and str(st.get("host") or "").lower() == host
                and int(st.get("port") or 22) == port and access.may_use_system(system, owner, is_admin)
                and (user is None or (st.get("auth") or {}).get("username") == user)):
            continue
        root = posixpath.normpath(st.get("rootDir") or "/")
        path = posixpath.normpath("/" + unquote(parts.path).lstrip("/"))
        rel = posixpath.relpath(path, root)
        if rel == ".." or rel.startswith("../"):
            refusal = InputError(f"Permission denied: {path} is outside the root {root} of system {system['id']}.",
                                 True)
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
    raise InputError(f"No SFTP storage system that {owner} may use is registered for {who}, so {uri} "
                     "cannot be read (credentials in URLs are never used).", True)


def _name(input_id: str, uri: str) -> str:
    name = posixpath.basename(urlsplit(uri).path.rstrip("/")) if "://" in uri else posixpath.basename(
        uri.rstrip("/"))
    if name in ("", ".", "..") or "\x00" in name:
        raise InputError(f"Input {input_id}: {uri} names no file to stage (empty or '..' name).", True)
    return name


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
    from airjobs import access, egress, store

    try:
        scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
        if scheme in ("http", "https"):
            output = egress.is_service_output_url(uri)
            if output is None:
                return Located("http", path=uri)
            job_id, path = output
            job = store.get_job(job_id)
            if job is None or not job.visible or not store.permission_of(job, owner, is_admin).read:
                raise InputError(f"Input {input_id}: no job found with id {job_id} whose outputs {owner} may read.",
                                 True)
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


def resolve(input_id: str, uri: str, owner: str, http: HTTPSource, is_admin: bool = False) -> Source:
    """An input value -> where to read it from. Raises a permanent InputError for anything unusable."""
    from airjobs import access, outputs

    name = _name(input_id, uri)
    apps = functools.cache(registry.all_apps)  # read once, and only if a rule needs them
    where = locate(input_id, uri, owner, is_admin, apps)
    try:
        if where.kind == "http":
            parts = urlsplit(uri)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            return Source(input_id, uri, name, http, uri, f"{parts.hostname}:{port}")
        if where.kind == "output":  # read inside the service, under the job rule: never over HTTP
            loc = outputs.locate(where.job)
            host, rel = outputs.resolve(loc, where.path)
            return Source(input_id, uri, name, loc.transport, host, f"job {where.job.id}", rel)
        system, path = where.system, where.path
        reader = transports.storage(system)
        full = _host_path(system, path)
        try:  # a link inside one's home must not lead into someone else's folder
            real = reader.realpath(full)
        except Exception:  # missing: the copy says so with the path the user gave
            real = full
        access.check_host_path(system, real, owner, is_admin, write=False, what=f"input {input_id}", shown=path,
                               apps=apps)

        def may_follow(link: str) -> bool:  # a link inside a staged folder: the same rule for where it leads
            access.check_host_path(system, reader.realpath(link), owner, is_admin, write=False,
                                   what=f"input {input_id} (a link in it)", shown=link, apps=apps)
            return True

        return Source(input_id, uri, name, reader, full, _endpoint(system), path, follow=may_follow)
    except InputError:
        raise
    except (StepError, AgaveError, ValueError) as e:
        raise InputError(f"Input {input_id}: {getattr(e, 'message', None) or e}", True) from None


# ---------------------------------------------------------------- copying


class _Watch:
    """Called after each chunk of one input: checks for cancellation (at most every CHECK_EVERY s) and
    writes a progress event every PROGRESS_EVERY s or PROGRESS_BYTES bytes."""

    def __init__(self, job_id: str, src: Source, files_done: int, files: int, whole: bool):
        self.job_id, self.src, self.files_done, self.files = job_id, src, files_done, files
        self.whole = whole  # False for a directory: the sizes of its files say nothing about the total
        self.checked = self.reported = time.monotonic()
        self.reported_bytes = 0

    def progress(self, meter: transports.Meter) -> dict[str, Any]:
        return {"source": self.src.uri, "totalBytesTransferred": meter.bytes,
                "totalBytes": meter.size if self.whole else None, "averageRate": round(meter.rate),
                "filesDone": self.files_done, "totalFiles": self.files,
                "totalActiveTransfers": self.files - self.files_done}

    def __call__(self, meter: transports.Meter) -> None:
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY or meter.bytes - self.reported_bytes >= PROGRESS_BYTES:
            self.checked = self.reported = now  # the event's transition is a check too
            self.reported_bytes = meter.bytes
            of = f" of {meter.size}" if self.whole and meter.size is not None else ""
            _move(self.job_id, S.STAGING_INPUTS, f"Copy in progress: {self.src.uri} ({meter.bytes}{of} bytes)",
                  progress=self.progress(meter))
        elif now - self.checked >= CHECK_EVERY:
            self.checked = now
            check_cancelled(self.job_id)


def _remove(dest: transports.Transport, path: str) -> None:
    try:
        dest.run(f"rm -rf -- {shlex.quote(path)}", timeout=60)
    except Exception:  # best effort: the destination may be what failed
        pass


def _copy(job_id: str, src: Source, dest: transports.Transport, target: str, where: str, n: int,
          total: int, so_far: list[dict[str, Any]], path: str) -> dict[str, Any]:
    label = f"input {src.input_id} {src.uri}"
    is_dir = False
    if not isinstance(src.reader, HTTPSource):  # http URLs are only known by fetching them
        try:
            if not src.reader.exists(src.path):
                raise InputError(f"Input {src.input_id}: {src.uri} does not exist: no {src.system_path} on "
                                 f"{src.where}.", True)
            is_dir = src.reader.is_dir(src.path)
        except Exception as e:
            raise _explain(e, src.where, f"read {label}", src.input_id) from e
    watch = _Watch(job_id, src, n, total, whole=not is_dir)
    meter = transports.Meter(watch)
    try:
        size = transports.copy(src.reader, src.path, dest, target, on_chunk=meter, follow=src.follow)
    except BaseException as e:
        _remove(dest, target)  # no partial file stays behind
        if isinstance(e, JobAlreadyFinal) or not isinstance(e, Exception):  # a stop, or Airflow's SIGTERM
            raise
        doing = f"read {label}" if _is_connect_error(e) else f"copy {label} to {where}"
        raise _explain(e, src.where, doing, src.input_id) from e
    record = {"id": src.input_id, "source": src.uri, "path": path, "size": size,
              "sha256": None if is_dir else meter.sha256}
    _move(job_id, S.STAGING_INPUTS, f"Copy of {src.uri} to {where} completed ({size} bytes)",
          progress={**watch.progress(meter), "totalBytesTransferred": size, "totalBytes": size,
                    "filesDone": n + 1, "totalActiveTransfers": total - n - 1},
          staged_inputs=[*so_far, record])  # a try cut after this copy does not copy it again (``_attempt``)
    return record


def _attempt(job_id: str, job: Job, system: dict[str, Any], wpath: str, http: HTTPSource) -> list[dict[str, Any]]:
    sources = [resolve(iid, uri, job.owner, http, bool(job.owner_admin))
               for iid, values in (job.inputs or {}).items() for uri in values]
    names: dict[str, str] = {}
    for src in sources:
        if names.setdefault(src.name, src.uri) != src.uri:
            raise InputError(f"Inputs {names[src.name]} and {src.uri} would both be staged as {src.name}.", True)
    dest = transports.execution(system)
    host_dir = _host_path(system, wpath)
    _move(job_id, S.STAGING_INPUTS, f"Staging {len(sources)} input(s) to agave://{system['id']}{wpath}")
    try:
        dest.makedirs(host_dir)
    except Exception as e:
        raise _explain(e, _endpoint(system, "login"), f"create the work directory {wpath}") from e
    now_job = store.get_job(job_id)
    earlier = {(r.get("id"), r.get("source"), r.get("path")): r for r in (now_job.staged_inputs if now_job else None)
               or [] if isinstance(r, dict)}  # copied by an attempt or a try that was cut short after them
    staged: list[dict[str, Any]] = []
    for n, src in enumerate(sources):
        check_cancelled(job_id)
        path = posixpath.join(wpath, src.name)
        target = posixpath.join(host_dir, src.name)
        done = earlier.get((src.input_id, src.uri, path))
        if done is not None and dest.exists(target):
            staged.append(done)
            continue
        staged.append(_copy(job_id, src, dest, target, f"agave://{system['id']}{path}", n, len(sources), staged,
                            path))
    return staged


# ---------------------------------------------------------------- the step


def _sleep(job_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, CHECK_EVERY))
        check_cancelled(job_id)


def stage(job_id: str) -> None:
    """Stage the job's inputs into its work directory; the job ends STAGED, or FAILED (StepError raised)."""
    job = _job(job_id)
    if JobStatus(job.status) in AFTER_STAGING:  # the task ran again after staging was done
        log.warning("job %s is already %s; not staging it again", job_id, job.status)
        return
    if job.status == S.STAGING_INPUTS.value:  # an earlier run of the task died midway: start over
        _move(job_id, S.PENDING, "Staging was interrupted; staging the job inputs again")
    system = _system(job.execution_system)
    wpath = work_path(job, system)
    if not job.inputs:
        transports.execution(system).makedirs(_host_path(system, wpath))
        _move(job_id, S.STAGED, "Skipping staging. No input data associated with this job.", work_path=wpath,
              staged_inputs=[])
        return
    with HTTPSource() as http:
        for attempt in range(1, ATTEMPTS + 1):
            check_cancelled(job_id)
            _move(job_id, S.PROCESSING_INPUTS, f"Attempt {attempt} to stage job inputs", work_path=wpath)
            try:
                staged = _attempt(job_id, job, system, wpath, http)
            except JobAlreadyFinal:
                raise
            except Exception as e:
                check_cancelled(job_id)  # an error caused by the stop is no failure
                err = e if isinstance(e, StepError) else InputError(f"Unable to stage job inputs: {_reason(e)}",
                                                                    _permanent(e))
                permanent = _permanent(err)
                # a retry goes back to PENDING, which only STAGING_INPUTS may do: errors while resolving are final
                if permanent:
                    done = fail(job_id, str(err))
                    if done is None or done.status != S.FAILED.value:  # stopped meanwhile
                        raise JobAlreadyFinal(f"Job {job_id} ended while staging failed: {err}") from e
                    raise StepError(str(err)) from e
                if attempt == ATTEMPTS or _status(job_id) != S.STAGING_INPUTS.value:
                    tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                    reason = f"Unable to stage inputs after {tries}: {err}"
                    if _status(job_id) == S.STAGING_INPUTS.value:
                        _move(job_id, S.PENDING, f"{reason}. The stage task will be retried.")
                    raise Unavailable(reason) from e  # a host or source that is away: retried (``airjobs.recovery``)
                delay = backoff_seconds() * 2 ** (attempt - 1)
                _move(job_id, S.PENDING, f"Attempt {attempt} to stage job inputs failed: {err}. "
                                         f"Retrying in {delay:g} s.")
                _sleep(job_id, delay)
                continue
            _move(job_id, S.STAGED, "Job inputs staged to execution system", staged_inputs=staged)
            return
