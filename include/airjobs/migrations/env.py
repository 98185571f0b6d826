"""Alembic environment of the project's own tables (version table ``airjobs_alembic_version``)."""

from alembic import context
from sqlalchemy import create_engine

from airjobs.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run() -> None:
    if not url:
        raise RuntimeError("alembic: sqlalchemy.url is not set")
    eng = create_engine(url)
    with eng.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            version_table="airjobs_alembic_version",
        )
        with context.begin_transaction():
            context.run_migrations()
    eng.dispose()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, version_table="airjobs_alembic_version")
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
