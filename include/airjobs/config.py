"""Runtime settings of the core, read from the environment (the runner and the Makefile set them).

AIRJOBS_VAR       directory for everything the service writes (default: <checkout>/var)
AIRJOBS_DB_URL    SQLAlchemy URL of the project's own tables (default: database ``airjobs`` of the
                  embedded PostgreSQL whose socket lives in $AIRJOBS_VAR/pg)
AIRJOBS_MONITOR_INLINE_SECONDS  how long the monitor task polls before it defers (default 1.5)
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def var_dir() -> Path:
    return Path(os.environ.get("AIRJOBS_VAR") or CHECKOUT / "var").resolve()


def pg_dir() -> Path:
    return var_dir() / "pg"


def db_url() -> str:
    url = os.environ.get("AIRJOBS_DB_URL")
    if url:
        return url
    return f"postgresql+psycopg2://postgres@/airjobs?host={pg_dir()}"


def monitor_inline_seconds() -> float:
    return float(os.environ.get("AIRJOBS_MONITOR_INLINE_SECONDS", "1.5"))
