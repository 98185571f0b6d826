"""The embedded PostgreSQL: settings applied, stop and restart keep the data."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from airjobs import pgserver


def test_restart_keeps_data_and_settings():
    from conftest import VAR

    pgdata = VAR / "pg-restart"
    pgserver.start(pgdata)
    url = pgserver.url("postgres", pgdata)
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("CREATE TABLE t (x int)"))
        c.execute(text("INSERT INTO t VALUES (42)"))
        assert c.execute(text("SHOW max_connections")).scalar() == pgserver.SETTINGS["max_connections"]
    eng.dispose()
    pgserver.stop(pgdata)
    assert pgserver._pid(pgdata) is None
    pgserver.start(pgdata)
    eng = create_engine(url)
    with eng.connect() as c:
        assert c.execute(text("SELECT x FROM t")).scalar() == 42
    eng.dispose()
    pgserver.stop(pgdata)


def test_start_after_kill_9_restarts_the_server():
    """A postmaster killed with SIGKILL (its backends left behind, its pid a zombie nobody reaps under a
    container's init, its lock files in place) is started again by ``start()``; committed data survives."""
    import os
    import signal
    import time

    from conftest import VAR, process_alive

    pgdata = VAR / "pg-kill"
    pgserver.start(pgdata)
    eng = create_engine(pgserver.url("postgres", pgdata))
    with eng.begin() as c:
        c.execute(text("CREATE TABLE t (x int)"))
        c.execute(text("INSERT INTO t VALUES (7)"))
    idle = eng.connect()  # a backend that is busy with nothing when its postmaster dies
    idle.execute(text("SELECT 1"))
    old = pgserver._pid(pgdata)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(old):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert pgserver._pid(pgdata) is None and not pgserver.ready(pgdata)
    assert (pgdata / "postmaster.pid").exists()  # the dead server's lock file is still there
    new = int(pgserver.start(pgdata))
    assert new != old and process_alive(new) and pgserver.ready(pgdata)
    idle.invalidate()  # its server is gone
    eng.dispose()
    eng = create_engine(pgserver.url("postgres", pgdata))
    with eng.connect() as c:
        assert c.execute(text("SELECT x FROM t")).scalar() == 7
    eng.dispose()
    pgserver.stop(pgdata)
    assert pgserver._pid(pgdata) is None and not (pgdata / "postmaster.pid").exists()
