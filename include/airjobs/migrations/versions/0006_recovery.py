"""recovery: a job's retries after failures of the service (airjobs.recovery)

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("airjobs_job", sa.Column("recovery", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("airjobs_job", "recovery")
