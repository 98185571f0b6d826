"""search indexes (airjobs.search): by creation time for everyone (admins' listings), the lower-cased strings
searched most (app, execution system, name, owner), the dates, the seconds fields as airjobs.search computes them
(maxRunTime, runtime, walltime), and, where PostgreSQL has pg_trgm, trigram indexes for like/rlike anywhere in
the name and the inputs' and parameters' JSON text

Revision ID: 0009
Revises: 0008
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

PLAIN = {
    "ix_airjobs_job_created_id": ["created", "id"],
    "ix_airjobs_job_end_time": ["end_time"],
    "ix_airjobs_job_start_time": ["start_time"],
    "ix_airjobs_job_submit_time": ["submit_time"],
    "ix_airjobs_job_last_updated": ["last_updated"],
}
LOWER = ("app_id", "execution_system", "name", "owner")
#: exactly the expressions airjobs.search builds, so the planner uses them (and keeps statistics on them)
SECONDS = {
    "ix_airjobs_job_max_run_seconds": (
        "(CASE WHEN (max_run_time ~ '^[0-9]{1,6}:[0-9]{1,2}:[0-9]{1,2}$') THEN "
        "CAST(split_part(max_run_time, ':', 1) AS INTEGER) * 3600 + "
        "CAST(split_part(max_run_time, ':', 2) AS INTEGER) * 60 + "
        "CAST(split_part(max_run_time, ':', 3) AS INTEGER) END)"
    ),
    "ix_airjobs_job_runtime": "(EXTRACT(epoch FROM end_time - start_time))",
    "ix_airjobs_job_walltime": "(EXTRACT(epoch FROM end_time - created))",
}
TRIGRAM = {
    "ix_airjobs_job_name_trgm": "lower(name)",
    "ix_airjobs_job_inputs_trgm": "lower(CAST(inputs AS TEXT))",
    "ix_airjobs_job_parameters_trgm": "lower(CAST(parameters AS TEXT))",
}


def _trigrams() -> bool:
    """pg_trgm, when the server has it and this user may create it (it is a trusted extension)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    if not bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first():
        log.warning("pg_trgm is not available: like/rlike search anywhere in a value scans the jobs")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("cannot create pg_trgm (%s): like/rlike search anywhere in a value scans the jobs", exc)
        return False
    return True


def upgrade() -> None:
    for name, columns in PLAIN.items():
        op.create_index(name, "airjobs_job", columns)
    for column in LOWER:
        op.create_index(f"ix_airjobs_job_lower_{column}", "airjobs_job", [sa.text(f"lower({column})")])
    for name, expression in SECONDS.items():
        op.execute(f"CREATE INDEX {name} ON airjobs_job ({expression})")
    if _trigrams():
        for name, expression in TRIGRAM.items():
            op.execute(f"CREATE INDEX {name} ON airjobs_job USING gin (({expression}) gin_trgm_ops)")


def downgrade() -> None:
    for name in (*TRIGRAM, *SECONDS):
        op.execute(f"DROP INDEX IF EXISTS {name}")
    for column in LOWER:
        op.drop_index(f"ix_airjobs_job_lower_{column}", table_name="airjobs_job")
    for name in PLAIN:
        op.drop_index(name, table_name="airjobs_job")
