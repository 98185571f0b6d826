"""A job's outputs (spec §8, D4): where they live, listings, and byte ranges of a file.

Outputs are read from the archive once the job archived (ARCHIVING_FINISHED, §8.1), else from the work
directory on the execution system, also while the job runs. Every path from a request is normalised and
confined to that root: ``..`` in any form is a 400, and a path whose real location (symlinks resolved on the
host) is outside the root is answered as missing, never read.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from airjobs import registry, store, transports
from airjobs.errors import AgaveError, BadRequest, NotFound
from airjobs.models import Job
from airjobs.paths import clean_relative, host_path
from airjobs.statuses import JobStatus
from airjobs.transports import FileInfo, Transport

S = JobStatus
CHUNK = 1 << 20


class RangeNotSatisfiable(AgaveError):
    status_code = 416

    def __init__(self, size: int):
        super().__init__(f"Requested range not satisfiable: the file has {size} bytes.")
        self.size = size


@dataclass(frozen=True)
class Location:
    system: dict[str, Any]
    transport: Transport
    root: str  # host path of the job's output root
    archived: bool


def archived(job: Job) -> bool:
    if not job.archive:
        return False
    if job.status == S.ARCHIVING_FINISHED.value:
        return True
    return job.status == S.FINISHED.value and store.has_event(job.id, S.ARCHIVING_FINISHED.value)


def locate(job: Job) -> Location:
    """The archive after ARCHIVING_FINISHED, else the work directory on the execution system."""
    if archived(job):
        system = registry.get_system(job.archive_system or "")
        path = job.archive_path
        transport = transports.storage(system) if system else None
    else:
        system = registry.get_system(job.execution_system)
        path = job.work_path
        transport = transports.execution(system) if system else None
    if system is None or transport is None or not path:
        raise NotFound("Unable to locate job data. The job has no output folder yet.")
    root = host_path(system, path)
    try:
        if not transport.stat(root).is_dir:
            raise FileNotFoundError(root)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound("Unable to locate job data. Work folder no longer exists.") from None
    return Location(system, transport, root, archived(job))


def _inside(loc: Location, real_root: str, path: str) -> bool:
    real = loc.transport.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def resolve(loc: Location, path: str) -> tuple[str, str]:
    """(host path, output path with a leading ``/``) of a request path; 400 for ``..``, 404 outside or missing."""
    if "%2e" in path.lower() and ".." in path.lower().replace("%2e", "."):
        raise BadRequest(f"Invalid path {path!r}: it may not leave the job's output folder.")
    rel = clean_relative(path)
    host = posixpath.join(loc.root, rel) if rel else loc.root
    real_root = loc.transport.realpath(loc.root)
    try:
        if not _inside(loc, real_root, host):
            raise FileNotFoundError(host)
        loc.transport.stat(host)
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # NotADirectory: a path below a file
        raise NotFound(f"File/folder does not exist: /{rel}") from None
    return host, "/" + rel


def listing(loc: Location, host: str, rel: str) -> list[tuple[str, FileInfo]]:
    """(output path, info) of a folder's entries, or of the file itself; symlinks that leave the root are left out."""
    info = loc.transport.stat(host)
    if not info.is_dir:
        return [(rel, info)]
    real_root = loc.transport.realpath(loc.root)
    out = []
    for entry in loc.transport.scandir(host):
        path = posixpath.join(host, entry.name)
        if entry.is_link:
            if not _inside(loc, real_root, path):
                continue
            try:
                entry = FileInfo(entry.name, *_follow(loc, path))
            except FileNotFoundError:  # a dangling link
                continue
        out.append((posixpath.join(rel, entry.name), entry))
    return out


def _follow(loc: Location, path: str) -> tuple[int, float, bool]:
    info = loc.transport.stat(path)
    return info.size, info.mtime, info.is_dir


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?", re.I | re.S)
_HUGE = 1 << 64  # larger than any file: stands in for numbers too long for int() (over 4300 digits)


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 30 else _HUGE


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first byte range of a ``Range`` header as (start, end inclusive); None = the whole file (no header,
    or one that is not a byte range: ignored, as RFC 9110 says). Unsatisfiable -> ``RangeNotSatisfiable``."""
    if not header:
        return None
    m = _RANGE.fullmatch(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = _number(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(size - n, 0), size - 1
    start = _number(first)
    end = _number(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(size)
    return start, min(end, size - 1)


def read_range(loc: Location, host: str, start: int, end: int) -> Iterator[bytes]:
    """Stream bytes ``start..end`` (inclusive) in chunks; memory stays flat whatever the size."""
    with loc.transport.open_read(host) as f:
        if start:
            f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
