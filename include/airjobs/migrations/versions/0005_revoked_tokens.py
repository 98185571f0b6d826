"""revoked refresh tokens (POST /revoke): the jti of each, until it would have expired

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "airjobs_revoked_refresh_token",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_index("ix_airjobs_revoked_refresh_token_expires", "airjobs_revoked_refresh_token", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_airjobs_revoked_refresh_token_expires", table_name="airjobs_revoked_refresh_token")
    op.drop_table("airjobs_revoked_refresh_token")
