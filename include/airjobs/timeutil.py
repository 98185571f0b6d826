"""Job ids in the Agave shape and ISO-8601 times with offset (D14)."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime

JOB_SUFFIX = "0001-007"


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.isoformat(timespec="milliseconds")


_HMS = re.compile(r"(?:(\d+)-)?(\d+):([0-5]?\d):([0-5]?\d)")  # [D-]HH:MM:SS, hours may exceed 24


def hms_to_seconds(value: str) -> int:
    """``HH:MM:SS`` (or SLURM's ``D-HH:MM:SS``) -> seconds."""
    m = _HMS.fullmatch(value.strip())
    if not m:
        raise ValueError(f"invalid run time {value!r}, expected HH:MM:SS")
    days, h, mi, s = (int(g or 0) for g in m.groups())
    return ((days * 24 + h) * 60 + mi) * 60 + s


def new_job_id() -> str:
    """``<16 digits>-<10 hex>-0001-007`` like ``0001414144065563-5056a550b8-0001-007``."""
    return f"{time.time_ns() // 1000:016d}-{secrets.token_hex(5)}-{JOB_SUFFIX}"
