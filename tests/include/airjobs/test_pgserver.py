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
