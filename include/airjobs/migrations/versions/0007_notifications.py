"""notifications: subscriptions, the outbox, attempts and the owners' webhook secrets (airjobs.notifications)

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "airjobs_notification",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=False, index=True),
        sa.Column(
            "associated_uuid", sa.String(64), sa.ForeignKey("airjobs_job.id", ondelete="CASCADE"), nullable=False,
            index=True,
        ),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("created", TZ, nullable=False),
        sa.Column("last_updated", TZ, nullable=False),
    )
    op.create_table(
        "airjobs_notification_delivery",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column(
            "notification_id", sa.String(64), sa.ForeignKey("airjobs_notification.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("job_id", sa.String(64), nullable=False, index=True),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("msg_id", sa.String(64), nullable=False, unique=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt", TZ, nullable=False),
        sa.Column("leased_until", TZ, nullable=True),
        sa.Column("created", TZ, nullable=False),
        sa.Column("finished", TZ, nullable=True),
    )
    op.create_index("ix_airjobs_delivery_due", "airjobs_notification_delivery", ["state", "next_attempt"])
    op.create_index("ix_airjobs_delivery_notification", "airjobs_notification_delivery", ["notification_id", "id"])
    op.create_table(
        "airjobs_notification_attempt",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "notification_id", sa.String(64), sa.ForeignKey("airjobs_notification.id", ondelete="CASCADE"),
            nullable=False, index=True,
        ),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("started", TZ, nullable=False),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "airjobs_webhook_secret",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("secret", sa.String(128), primary_key=True),
        sa.Column("created", TZ, nullable=False),
        sa.Column("expires", TZ, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("airjobs_webhook_secret")
    op.drop_table("airjobs_notification_attempt")
    op.drop_table("airjobs_notification_delivery")
    op.drop_table("airjobs_notification")
