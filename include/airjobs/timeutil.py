"""Job ids in the Agave shape and ISO-8601 times with offset (D14)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone

JOB_SUFFIX = "0001-007"


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat(timespec="milliseconds")


def new_job_id() -> str:
    """``<16 digits>-<10 hex>-0001-007`` like ``0001414144065563-5056a550b8-0001-007``."""
    return f"{time.time_ns() // 1000:016d}-{secrets.token_hex(5)}-{JOB_SUFFIX}"
