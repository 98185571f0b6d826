"""job permissions: per-job grants to other users (spec §9, /jobs/v2/{id}/pems); whether the owner was an admin

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airjobs_job_permission",
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("airjobs_job.id", ondelete="CASCADE"), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("permission", sa.String(length=16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "username"),
    )
    op.create_index("ix_airjobs_job_permission_username", "airjobs_job_permission", ["username"])
    op.add_column("airjobs_job", sa.Column("owner_admin", sa.Boolean(), nullable=False, server_default="false"))


def downgrade() -> None:
    op.drop_column("airjobs_job", "owner_admin")
    op.drop_index("ix_airjobs_job_permission_username", table_name="airjobs_job_permission")
    op.drop_table("airjobs_job_permission")
