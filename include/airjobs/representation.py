"""Agave v2 JSON shapes of jobs, summaries, statuses and history events (spec §3)."""

from __future__ import annotations

import mimetypes
from datetime import UTC
from typing import Any

from airjobs.models import Job, JobEvent
from airjobs.statuses import JobStatus
from airjobs.timeutil import iso


def _href(base: str, path: str) -> dict[str, str]:
    return {"href": f"{base.rstrip('/')}{path}"}


def job_links(job: Job, base: str) -> dict[str, Any]:
    jobs = f"/jobs/v2/{job.id}"
    return {
        "self": _href(base, jobs),
        "app": _href(base, f"/apps/v2/{job.app_id}"),
        "executionSystem": _href(base, f"/systems/v2/{job.execution_system}"),
        "archiveSystem": _href(base, f"/systems/v2/{job.archive_system or job.execution_system}"),
        "archiveData": _href(base, f"{jobs}/outputs/listings"),
        "owner": _href(base, f"/profiles/v2/{job.owner}"),
        "permissions": _href(base, f"{jobs}/pems"),
        "history": _href(base, f"{jobs}/history"),
        "metadata": _href(base, f'/meta/v2/data/?q={{"associationIds":"{job.id}"}}'),
        "notifications": _href(base, f"/notifications/v2/?associatedUuid={job.id}"),
    }


def job_json(job: Job, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "appId": job.app_id,
        "executionSystem": job.execution_system,
        "batchQueue": job.batch_queue,
        "nodeCount": job.node_count,
        "processorsPerNode": job.processors_per_node,
        "memoryPerNode": job.memory_per_node,
        "maxRunTime": job.max_run_time,
        "archive": job.archive,
        "retries": job.retries,
        "localId": job.local_id,
        "created": iso(job.created),
        "lastUpdated": iso(job.last_updated),
        "outputPath": job.work_path,
        "status": job.status,
        "submitTime": iso(job.submit_time),
        "startTime": iso(job.start_time),
        "endTime": iso(job.end_time),
        "inputs": job.inputs or {},
        "parameters": job.parameters or {},
        "_links": job_links(job, base),
    }
    if job.archive:
        out["archivePath"] = job.archive_path
        out["archiveSystem"] = job.archive_system
    if job.status == JobStatus.FAILED.value:
        out["message"] = job.message
    if job.exit_code is not None:
        out["exitCode"] = job.exit_code
    if job.resubmitted_from:
        out["resubmittedFrom"] = job.resubmitted_from
        out["inputChanges"] = input_changes(job)
        out["_links"]["resubmittedFrom"] = _href(base, f"/jobs/v2/{job.resubmitted_from}")
    return out


def input_changes(job: Job) -> list[dict[str, Any]]:
    """A resubmitted job's staged inputs whose sha256 differs from what its original staged
    (``airjobs.resubmit.input_changes`` records ``previousSha256``)."""
    return [
        {"id": r.get("id"), "source": r.get("source"), "previousSha256": r["previousSha256"], "sha256": r.get("sha256")}
        for r in job.staged_inputs or []
        if r.get("previousSha256") and r.get("sha256") and r["previousSha256"] != r.get("sha256")
    ]


def job_summary(job: Job, base: str) -> dict[str, Any]:
    links = job_links(job, base)
    return {
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "executionSystem": job.execution_system,
        "appId": job.app_id,
        "created": iso(job.created),
        "status": job.status,
        "startTime": iso(job.start_time),
        "endTime": iso(job.end_time),
        "_links": {"self": links["self"], "archiveData": links["archiveData"]},
    }


def status_json(job: Job, base: str) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "_links": {"self": _href(base, f"/jobs/v2/{job.id}")}}


def event_json(ev: JobEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": ev.status,
        "created": iso(ev.created),
        "createdBy": ev.created_by,
        "description": ev.description,
    }
    if ev.progress is not None:
        out["progress"] = ev.progress
    return out


def mime_type(name: str, is_dir: bool = False) -> str:
    if is_dir:
        return "text/directory"
    guess, _ = mimetypes.guess_type(name, strict=False)
    if guess:
        return guess
    if name.endswith((".out", ".err", ".log", ".ipcexe")):
        return "text/plain"
    return "application/octet-stream"


def file_json(job: Job, path: str, info: Any, system_id: str, base: str) -> dict[str, Any]:
    """An output file object (spec §3.6); ``path`` is relative to the job's output root, with a leading ``/``."""
    from datetime import datetime
    from urllib.parse import quote

    jobs = f"/jobs/v2/{job.id}"
    return {
        "name": info.name,
        "path": path,
        "lastModified": iso(datetime.fromtimestamp(info.mtime, UTC)),
        "length": 0 if info.is_dir else info.size,
        "permission": "READ",
        "mimeType": mime_type(info.name, info.is_dir),
        "format": "folder" if info.is_dir else "unknown",
        "type": "dir" if info.is_dir else "file",
        "_links": {
            "self": _href(base, f"{jobs}/outputs/media{quote(path)}"),
            "system": _href(base, f"/systems/v2/{system_id}"),
            "parent": _href(base, jobs),
        },
    }


def permission_json(job: Job, username: str, perm: Any, base: str) -> dict[str, Any]:
    """Spec §3.5: only read/write are exposed, even for values that carry EXECUTE."""
    return {
        "username": username,
        "internalUsername": None,
        "permission": {"read": bool(perm.read), "write": bool(perm.write)},
        "_links": {
            "self": _href(base, f"/jobs/v2/{job.id}/pems/{username}"),
            "parent": _href(base, f"/jobs/v2/{job.id}"),
            "profile": _href(base, f"/profiles/v2/{username}"),
        },
    }
