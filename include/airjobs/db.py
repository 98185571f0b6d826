"""Engine, sessions and migrations of the project's own database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from airjobs import config

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def engine(url: str | None = None) -> Engine:
    url = url or config.db_url()
    eng = _engines.get(url)
    if eng is None:
        with _lock:
            eng = _engines.get(url)
            if eng is None:
                kwargs = {}
                if make_url(url).get_backend_name() == "postgresql":
                    # pre-ping: a pooled connection that died with a restarted server is replaced at checkout
                    # (one round trip, ~0.1 ms on the local socket), not met as an error by the next request
                    kwargs = dict(pool_size=20, max_overflow=20, pool_recycle=1800, pool_pre_ping=True)
                eng = _engines[url] = create_engine(url, **kwargs)
    return eng


_sessionmakers: dict[str, sessionmaker[Session]] = {}


def session(url: str | None = None) -> Session:
    url = url or config.db_url()
    maker = _sessionmakers.get(url)
    if maker is None:
        maker = _sessionmakers[url] = sessionmaker(engine(url), expire_on_commit=False)
    return maker()


@contextmanager
def transaction(url: str | None = None) -> Iterator[Session]:
    """One database transaction: commits on success, rolls back on any exception."""
    with session(url) as s, s.begin():
        yield s


def alive(url: str | None = None) -> bool:
    """Does the database answer right now (a fresh round trip)?"""
    try:
        with engine(url).connect() as c:
            c.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


def retrying(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a read or write unit of work; once more if the database connection had gone away."""
    from sqlalchemy.exc import DBAPIError

    try:
        return fn(*args, **kwargs)
    except DBAPIError as e:
        if not e.connection_invalidated:
            raise
        return fn(*args, **kwargs)


def create_database(url: str | None = None) -> None:
    """Create the database named in the URL if the server does not have it yet (PostgreSQL only)."""
    u = make_url(url or config.db_url())
    if u.get_backend_name() != "postgresql" or not u.database:
        return
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            exists = c.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}).first()
            if not exists:
                c.execute(text(f'CREATE DATABASE "{u.database}"'))
    finally:
        admin.dispose()


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", (url or config.db_url()).replace("%", "%%"))
    return cfg


def migrate(url: str | None = None) -> None:
    """Bring the project's tables to the newest Alembic revision (idempotent)."""
    from alembic import command

    create_database(url)
    command.upgrade(alembic_config(url), "head")
