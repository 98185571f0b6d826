"""Runtime settings of the core, read from the environment (the runner and the Makefile set them).

AIRJOBS_VAR       directory for everything the service writes (default: <checkout>/var)
AIRJOBS_DB_URL    SQLAlchemy URL of the project's own tables (default: database ``airjobs`` of the
                  embedded PostgreSQL whose socket lives in $AIRJOBS_VAR/pg)
AIRJOBS_MONITOR_INLINE_SECONDS  how long the monitor task polls before it defers (default 1.5)
AIRJOBS_RUN_AS    the unprivileged account that jobs on LOCAL execution systems (the demo FORK system) run as
                  when the service runs as root (default ``airjobs-run``; ``make run``/``setup`` create it);
                  a service that is not root runs them as its own user
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


DEFAULT_RUN_AS = "airjobs-run"


def run_as() -> str | None:
    """The account LOCAL jobs run as: ``AIRJOBS_RUN_AS`` when the service's euid is 0, else None (the service's
    own user; dropping to another account needs root)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("AIRJOBS_RUN_AS") or DEFAULT_RUN_AS


def public_base() -> str:
    """The service's own base URL as its users reach it, for links in what it sends out (webhook bodies,
    e-mails): ``AIRJOBS_PUBLIC_URL``, else this host's ``localhost`` at ``AIRJOBS_PORT`` with the scheme in use."""
    public = os.environ.get("AIRJOBS_PUBLIC_URL", "").rstrip("/")
    if public:
        return public
    tls = bool(os.environ.get("AIRJOBS_TLS") or os.environ.get("AIRJOBS_TLS_CERT"))
    scheme, port = ("https", 443) if tls else ("http", 80)
    actual = int(os.environ.get("AIRJOBS_PORT", "8080"))
    return f"{scheme}://localhost" + ("" if actual == port else f":{actual}")
