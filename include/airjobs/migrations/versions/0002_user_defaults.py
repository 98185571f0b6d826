"""per-user default systems

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airjobs_user_default",
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("system_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["system_id"], ["airjobs_system.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner", "type"),
    )


def downgrade() -> None:
    op.drop_table("airjobs_user_default")
