"""The DAG's ``stage`` task (spec §4.2 Table 2, §10.1): the first step of every job.

``stage(job_id)`` copies every input value into the job's work directory on the execution system:

* relative or absolute paths on the owner's default storage, ``agave://system/path`` (``//`` = absolute),
  ``http(s)://`` URLs (redirects followed) and ``sftp://[user@]host[:port]/path`` (where each points, and
  whether the owner may read it: ``airjobs.inputs``);
* each copy is streamed while its size and sha256 are computed; ``staged_inputs`` on the job records them
  (a directory: its total size and ``sha256: null``);
* STAGING_INPUTS events carry a ``progress`` dict: at each file's end and every 2 s or 64 MiB meanwhile;
* up to 3 attempts, ``AIRJOBS_STAGING_BACKOFF_SECONDS`` (default 5) then twice that between them; a failed
  attempt goes back to PENDING naming the error. Errors retrying cannot fix (missing input, permission,
  unknown system, bad URL, HTTP 4xx) end the job FAILED at once; after 3 attempts that failed for another reason
  (a host away, a connection reset, HTTP 5xx) ``Unavailable`` is raised: the service retries the stage task,
  up to its time budget (``airjobs.recovery``), then the job ends FAILED with that error;
* a job stopped meanwhile (terminal status, checked at most every 0.5 s during a copy, between files and
  before each attempt) makes staging remove the partial file and raise ``JobAlreadyFinal``.

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

import contextlib
import functools
import logging
import os
import posixpath
import shlex
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from airjobs import access, db, outputs, registry, resubmit, store, transports
from airjobs.egress import EgressRefused
from airjobs.errors import AgaveError, IllegalTransition, StepError
from airjobs.inputs import InputError, locate
from airjobs.lifecycle import fail, transition
from airjobs.models import Job
from airjobs.paths import host_path
from airjobs.statuses import AFTER_STAGING, JobStatus, is_terminal
from airjobs.steps.context import JobPaths, active_job, default_work_path
from airjobs.steps.context import system as get_system
from airjobs.steps.run import JobAlreadyFinal
from airjobs.transports.http import ConnectFailed, HTTPSource, HTTPStatusError

S = JobStatus
log = logging.getLogger(__name__)
ATTEMPTS = 3
CHECK_EVERY = 0.5  # seconds between cancellation checks during a copy
PROGRESS_EVERY = 2.0  # seconds between progress events during a copy ...
PROGRESS_BYTES = 64 << 20  # ... or this many bytes, whichever comes first
_CLIENT_ERRORS = range(400, 500)  # HTTP 4xx: the source refuses, retrying cannot help (but 408, 425, 429)


def backoff_seconds() -> float:
    return float(os.environ.get("AIRJOBS_STAGING_BACKOFF_SECONDS", "5"))


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
    if status is None or is_terminal(status):
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
        getattr(e, "errors", None), dict
    )


def _permanent(e: BaseException) -> bool:
    if isinstance(e, InputError):
        return e.permanent
    if isinstance(e, HTTPStatusError):
        return e.status in _CLIENT_ERRORS and e.status not in (408, 425, 429)
    return isinstance(
        e, (StepError, AgaveError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)
    )


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


# ---------------------------------------------------------------- where to read each input from


def _name(input_id: str, uri: str) -> str:
    name = posixpath.basename(urlsplit(uri).path.rstrip("/")) if "://" in uri else posixpath.basename(uri.rstrip("/"))
    if name in ("", ".", "..") or "\x00" in name:
        raise InputError(f"Input {input_id}: {uri} names no file to stage (empty or '..' name).", True)
    return name


def resolve(input_id: str, uri: str, owner: str, http: HTTPSource, is_admin: bool = False) -> Source:
    """An input value -> where to read it from. Raises a permanent InputError for anything unusable."""
    name = _name(input_id, uri)
    apps = functools.cache(registry.all_apps)  # read once, and only if a rule needs them
    where = locate(input_id, uri, owner, is_admin, apps)
    try:
        if where.kind == "http":
            parts = urlsplit(uri)
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            return Source(input_id, uri, name, http, uri, f"{parts.hostname}:{port}")
        if where.job is not None:  # another job's output: read inside the service, under the job rule, never over HTTP
            loc = outputs.locate(where.job)
            host, rel = outputs.resolve(loc, where.path)
            return Source(input_id, uri, name, loc.transport, host, f"job {where.job.id}", rel)
        system, path = where.system, where.path
        if system is None:  # not a "path": ``locate`` knows no other kind
            raise InputError(f"Input {input_id}: {uri} names nothing that can be staged.", True)
        reader = transports.storage(system)
        full = host_path(system, path)
        try:  # a link inside one's home must not lead into someone else's folder
            real = reader.realpath(full)
        except Exception:
            real = full
        access.check_host_path(
            system, real, owner, is_admin, write=False, what=f"input {input_id}", shown=path, apps=apps
        )

        def may_follow(link: str) -> bool:  # a link inside a staged folder: the same rule for where it leads
            access.check_host_path(
                system,
                reader.realpath(link),
                owner,
                is_admin,
                write=False,
                what=f"input {input_id} (a link in it)",
                shown=link,
                apps=apps,
            )
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
        return {
            "source": self.src.uri,
            "totalBytesTransferred": meter.bytes,
            "totalBytes": meter.size if self.whole else None,
            "averageRate": round(meter.rate),
            "filesDone": self.files_done,
            "totalFiles": self.files,
            "totalActiveTransfers": self.files - self.files_done,
        }

    def __call__(self, meter: transports.Meter) -> None:
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY or meter.bytes - self.reported_bytes >= PROGRESS_BYTES:
            self.checked = self.reported = now  # the event's transition is a check too
            self.reported_bytes = meter.bytes
            of = f" of {meter.size}" if self.whole and meter.size is not None else ""
            _move(
                self.job_id,
                S.STAGING_INPUTS,
                f"Copy in progress: {self.src.uri} ({meter.bytes}{of} bytes)",
                progress=self.progress(meter),
            )
        elif now - self.checked >= CHECK_EVERY:
            self.checked = now
            check_cancelled(self.job_id)


def _remove(dest: transports.Transport, path: str) -> None:
    with contextlib.suppress(Exception):  # best effort: the destination may be what failed
        dest.run(f"rm -rf -- {shlex.quote(path)}", timeout=60)


def _copy(
    job_id: str,
    src: Source,
    dest: transports.Transport,
    target: str,
    where: str,
    n: int,
    total: int,
    so_far: list[dict[str, Any]],
    path: str,
) -> dict[str, Any]:
    label = f"input {src.input_id} {src.uri}"
    is_dir = False
    if not isinstance(src.reader, HTTPSource):  # http URLs are only known by fetching them
        try:
            if not src.reader.exists(src.path):
                raise InputError(
                    f"Input {src.input_id}: {src.uri} does not exist: no {src.system_path} on {src.where}.", True
                )
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
    record = {
        "id": src.input_id,
        "source": src.uri,
        "path": path,
        "size": size,
        "sha256": None if is_dir else meter.sha256,
    }
    _move(
        job_id,
        S.STAGING_INPUTS,
        f"Copy of {src.uri} to {where} completed ({size} bytes)",
        progress={
            **watch.progress(meter),
            "totalBytesTransferred": size,
            "totalBytes": size,
            "filesDone": n + 1,
            "totalActiveTransfers": total - n - 1,
        },
        staged_inputs=[*so_far, record],
    )  # a try cut after this copy does not copy it again (``_attempt``)
    return record


def _attempt(job_id: str, job: Job, system: dict[str, Any], paths: JobPaths, http: HTTPSource) -> list[dict[str, Any]]:
    sources = [
        resolve(iid, uri, job.owner, http, bool(job.owner_admin))
        for iid, values in (job.inputs or {}).items()
        for uri in values
    ]
    names: dict[str, str] = {}
    for src in sources:
        if names.setdefault(src.name, src.uri) != src.uri:
            raise InputError(f"Inputs {names[src.name]} and {src.uri} would both be staged as {src.name}.", True)
    dest = transports.execution(system)
    wpath, host_dir = paths.work_path, paths.host_dir
    _move(job_id, S.STAGING_INPUTS, f"Staging {len(sources)} input(s) to agave://{system['id']}{wpath}")
    try:
        dest.makedirs(host_dir)
    except Exception as e:
        raise _explain(e, _endpoint(system, "login"), f"create the work directory {wpath}") from e
    now_job = store.get_job(job_id)
    earlier = {
        (r.get("id"), r.get("source"), r.get("path")): r
        for r in (now_job.staged_inputs if now_job else None) or []
        if isinstance(r, dict)
    }  # copied by an attempt or a try that was cut short after them
    staged: list[dict[str, Any]] = []
    for n, src in enumerate(sources):
        check_cancelled(job_id)
        path = posixpath.join(wpath, src.name)
        target = posixpath.join(host_dir, src.name)
        done = earlier.get((src.input_id, src.uri, path))
        if done is not None and dest.exists(target):
            staged.append(done)
            continue
        staged.append(_copy(job_id, src, dest, target, f"agave://{system['id']}{path}", n, len(sources), staged, path))
    return staged


# ---------------------------------------------------------------- the step


def _sleep(job_id: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, CHECK_EVERY))
        check_cancelled(job_id)


def stage(job_id: str) -> None:
    """Stage the job's inputs into its work directory; the job ends STAGED, or FAILED (StepError raised)."""
    job = active_job(job_id)
    if JobStatus(job.status) in AFTER_STAGING:  # the task ran again after staging was done
        log.warning("job %s is already %s; not staging it again", job_id, job.status)
        return
    if job.status == S.STAGING_INPUTS.value:  # an earlier run of the task died midway: start over
        _move(job_id, S.PENDING, "Staging was interrupted; staging the job inputs again")
    system = get_system(job.execution_system)
    paths = JobPaths.of(job, system, default_work_path(job, system))  # where it goes, recorded on the job
    wpath = paths.work_path
    if not job.inputs:
        transports.execution(system).makedirs(paths.host_dir)
        _move(
            job_id,
            S.STAGED,
            "Skipping staging. No input data associated with this job.",
            work_path=wpath,
            staged_inputs=[],
        )
        return
    with HTTPSource() as http:
        for attempt in range(1, ATTEMPTS + 1):
            check_cancelled(job_id)
            _move(job_id, S.PROCESSING_INPUTS, f"Attempt {attempt} to stage job inputs", work_path=wpath)
            try:
                staged = _attempt(job_id, job, system, paths, http)
            except JobAlreadyFinal:
                raise
            except Exception as e:
                check_cancelled(job_id)  # an error caused by the stop is no failure
                err = (
                    e
                    if isinstance(e, StepError)
                    else InputError(f"Unable to stage job inputs: {_reason(e)}", _permanent(e))
                )
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
                _move(
                    job_id, S.PENDING, f"Attempt {attempt} to stage job inputs failed: {err}. Retrying in {delay:g} s."
                )
                _sleep(job_id, delay)
                continue
            staged, changed = resubmit.input_changes(job, staged)  # a resubmitted job: did its inputs change?
            _move(job_id, S.STAGED, "Job inputs staged to execution system", staged_inputs=staged)
            resubmit.record_changes(job_id, changed)
            return
