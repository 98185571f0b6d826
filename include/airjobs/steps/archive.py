"""The DAG's ``archive`` task (spec §10.8): the job's outputs go from its work directory to its archive folder,
with progress events; the work directory goes once they are there. Archiving that fails ends ARCHIVING_FAILED
(the outputs stay in the work directory), unless the outputs' host is away: then the task is retried."""

from __future__ import annotations

import logging
import posixpath
import time
from typing import Any

from sqlalchemy import select

from airjobs import access, db, recovery, registry, transports
from airjobs.lifecycle import transition
from airjobs.models import Job, JobEvent
from airjobs.statuses import JobStatus
from airjobs.steps.context import JobContext, JobPaths, active_job
from airjobs.steps.context import system as get_system

log = logging.getLogger(__name__)
S = JobStatus


def archive(job_id: str) -> None:
    job = active_job(job_id)
    if not job.archive or job.status not in (S.CLEANING_UP.value, S.ARCHIVING.value):
        return
    # ARCHIVING: an earlier try of this task was stopped midway (a cleared run): copy again, over what it left
    transition(
        job_id,
        S.ARCHIVING,
        "Transferring job output to archive system"
        if job.status == S.CLEANING_UP.value
        else "Archiving was interrupted; transferring job output to archive system again",
    )
    try:
        ctx = JobContext.of(job)
        host_dir = ctx.paths.host_dir
        storage = get_system(job.archive_system or "")
        dest_transport = transports.storage(storage)
        # checked at submit, and again now: an app may have been deployed there since
        apps = registry.all_apps()
        owner, admin = job.owner, bool(job.owner_admin)
        dest = access.check_archive_target(storage, job.archive_path or "", owner, admin, apps)
        for made in (False, True):  # a link on the way must not lead into someone else's folder: checked on
            real = _real_path(dest_transport, dest)  # the real path before anything is created, and after
            access.check_host_path(
                storage, real, owner, admin, write=True, what="archivePath", shown=job.archive_path, apps=apps
            )
            access.check_overlap(storage, real, job.archive_path or "", apps)
            if not made:
                dest_transport.makedirs(dest)
        src_transport = ctx.transport
        manifest_path = ctx.paths.manifest
        skip = {JobPaths.ARCHIVE_MANIFEST, JobPaths.EXIT_CODE_FILE}
        if src_transport.exists(manifest_path):
            skip |= {line.strip() for line in src_transport.read_text(manifest_path).splitlines() if line.strip()}
        real_root = src_transport.realpath(host_dir).rstrip("/") + "/"
        entries = [
            e.name
            for e in src_transport.scandir(host_dir)
            if e.name not in skip
            and not (e.is_link and not src_transport.realpath(posixpath.join(host_dir, e.name)).startswith(real_root))
        ]
        progress = _ArchiveProgress(job_id, len(entries))  # the manifest, and links leading out, stay behind
        done = _archived_entries(job_id) if job.status == S.ARCHIVING.value else {}
        for name in entries:
            if name in done and dest_transport.exists(posixpath.join(dest, name)):  # an earlier try copied it
                progress.files += 1
                progress.bytes += done[name]
                continue
            before = progress.bytes
            transports.copy(
                src_transport,
                posixpath.join(host_dir, name),
                dest_transport,
                posixpath.join(dest, name),
                on_chunk=progress,
            )
            progress.file_done(name, progress.bytes - before)
        copied = progress.bytes
    except Exception as e:
        if not recovery.is_jobs_fault(e) and not _reachable(job):  # the outputs' host is away: retried, the
            raise  # outputs are only there (an archive system that fails ends ARCHIVING_FAILED, as in Agave)
        log.exception("archiving job %s failed", job_id)
        where = f"agave://{job.archive_system}/{job.archive_path}"
        transition(job_id, S.ARCHIVING_FAILED, f"Job archiving to {where} failed: {type(e).__name__}: {e}")
        return
    transition(
        job_id,
        S.ARCHIVING_FINISHED,
        f"Job archiving complete: {copied} bytes to agave://{storage['id']}/{job.archive_path}",
    )
    try:  # the outputs now live in the archive (spec §10.8): the work directory goes
        src_transport.remove_tree(host_dir)
    except Exception as e:
        log.warning("could not remove the work directory of job %s (%s): %s", job_id, host_dir, e)


def _reachable(job: Job) -> bool:
    """Can the job's work directory on its execution system be read right now?"""
    try:
        ctx = JobContext.of(job)
        ctx.transport.exists(ctx.paths.host_dir)
        return True
    except Exception:
        return False


def _real_path(transport: transports.Transport, path: str) -> str:
    """Where ``path`` really leads on its host, links resolved, also when its last parts do not exist yet."""
    probe, rest = path, list[str]()
    while probe not in ("", "/") and not transport.exists(probe):
        probe, tail = posixpath.split(probe)
        rest.insert(0, tail)
    return posixpath.join(transport.realpath(probe), *rest)


class _ArchiveProgress:
    """ARCHIVING events with ``progress`` after each top-level entry and every ~2 s of a long copy."""

    EVERY = 2.0

    def __init__(self, job_id: str, total: int):
        self.job_id, self.total, self.files, self.bytes = job_id, total, 0, 0
        self.last = time.monotonic()

    def __call__(self, chunk: bytes, size: int | None) -> None:
        self.bytes += len(chunk)
        if time.monotonic() - self.last >= self.EVERY:
            self._event(f"Archiving in progress: {self.bytes} bytes copied")

    def file_done(self, name: str, size: int) -> None:
        self.files += 1
        self._event(
            f"Copied {name} to the archive ({self.files} of {self.total}, {self.bytes} bytes so far)",
            entry={"name": name, "bytes": size},
        )

    def _event(self, message: str, **extra: Any) -> None:
        self.last = time.monotonic()
        transition(
            self.job_id,
            S.ARCHIVING,
            message,
            progress={
                "totalFiles": self.total,
                "filesDone": self.files,
                "totalBytesTransferred": self.bytes,
                "totalActiveTransfers": self.total - self.files,
                **extra,
            },
        )


def _archived_entries(job_id: str) -> dict[str, int]:
    """name -> bytes of the work directory's entries an interrupted try already copied to the archive (its
    ARCHIVING events say so): a retry copies only the rest."""
    with db.session() as s:
        rows = s.scalars(
            select(JobEvent.progress).where(JobEvent.job_id == job_id, JobEvent.status == S.ARCHIVING.value)
        )
        out: dict[str, int] = {}
        for p in rows:
            entry = p.get("entry") if isinstance(p, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                out[entry["name"]] = int(entry.get("bytes") or 0)
        return out
