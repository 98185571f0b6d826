"""remote execution: staged inputs with sizes and checksums, the scheduler's view of the job

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("airjobs_job", sa.Column("staged_inputs", sa.JSON(), nullable=True))
    op.add_column("airjobs_job", sa.Column("remote_status", sa.String(length=64), nullable=True))
    op.add_column("airjobs_job", sa.Column("status_checks", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("airjobs_job", sa.Column("last_polled", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for name in ("last_polled", "status_checks", "remote_status", "staged_inputs"):
        op.drop_column("airjobs_job", name)
