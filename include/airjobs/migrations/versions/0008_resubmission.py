"""resubmission: the job a resubmitted job was made from (airjobs.resubmit)

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("airjobs_job", sa.Column("resubmitted_from", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("airjobs_job", "resubmitted_from")
