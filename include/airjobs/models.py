"""The project's own tables (SQLAlchemy 2). Airflow's metadata database is never touched from here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict[str, Any]: JSON, Any: JSON}


class Job(Base):
    __tablename__ = "airjobs_job"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128), index=True)
    app_id: Mapped[str] = mapped_column(String(80))
    execution_system: Mapped[str] = mapped_column(String(64))
    batch_queue: Mapped[str | None] = mapped_column(String(128))
    node_count: Mapped[int] = mapped_column(Integer, default=1)
    processors_per_node: Mapped[int] = mapped_column(Integer, default=1)
    memory_per_node: Mapped[float] = mapped_column(Float, default=0.0)
    max_run_time: Mapped[str | None] = mapped_column(String(16))
    archive: Mapped[bool] = mapped_column(Boolean, default=True)
    archive_system: Mapped[str | None] = mapped_column(String(64))
    archive_path: Mapped[str | None] = mapped_column(Text)
    archive_on_app_error: Mapped[bool] = mapped_column(Boolean, default=False)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    local_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(32), index=True)
    message: Mapped[str | None] = mapped_column(Text)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    work_path: Mapped[str | None] = mapped_column(Text)
    submit_time: Mapped[datetime | None]
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    created: Mapped[datetime]
    last_updated: Mapped[datetime]
    inputs: Mapped[Any] = mapped_column(JSON, default=dict)
    parameters: Mapped[Any] = mapped_column(JSON, default=dict)
    notifications: Mapped[Any] = mapped_column(JSON, default=list)
    request: Mapped[Any] = mapped_column(JSON, default=dict)
    visible: Mapped[bool] = mapped_column(Boolean, default=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    #: what was staged: [{"id", "source", "path", "size", "sha256"}] (spec §10.1)
    staged_inputs: Mapped[Any | None] = mapped_column(JSON)
    #: the scheduler's own name for the job's state at the last status check (e.g. SLURM ``PENDING``)
    remote_status: Mapped[str | None] = mapped_column(String(64))
    #: status checks so far and when the last one ran: the poll interval grows with them (spec §10.7)
    status_checks: Mapped[int] = mapped_column(Integer, default=0)
    last_polled: Mapped[datetime | None]
    #: the owner was an admin at submission (admins may read and write any path: ``airjobs.access``)
    owner_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    #: while a step is being retried after a failure of the service (``airjobs.recovery``): since when, how
    #: many retries, the last error; None when the job's steps are going fine
    recovery: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    #: the job this one was resubmitted from (``POST /jobs/v2/{id}/resubmit``)
    resubmitted_from: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_airjobs_job_owner_created", "owner", "created"),
        Index("ux_airjobs_job_idempotency", "owner", "idempotency_key", unique=True),
        # search (migration 0009, airjobs.search): admins' listings and date terms, case-insensitive string terms
        Index("ix_airjobs_job_created_id", "created", "id"),
        Index("ix_airjobs_job_end_time", "end_time"),
        Index("ix_airjobs_job_start_time", "start_time"),
        Index("ix_airjobs_job_submit_time", "submit_time"),
        Index("ix_airjobs_job_last_updated", "last_updated"),
        Index("ix_airjobs_job_lower_app_id", func.lower(text("app_id"))),
        Index("ix_airjobs_job_lower_execution_system", func.lower(text("execution_system"))),
        Index("ix_airjobs_job_lower_name", func.lower(text("name"))),
        Index("ix_airjobs_job_lower_owner", func.lower(text("owner"))),
        # and, in the migration only, the seconds fields' expressions and pg_trgm's trigram indexes (when the
        # server has the extension) on name, inputs and parameters
    )


class JobEvent(Base):
    __tablename__ = "airjobs_job_event"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("airjobs_job.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(128))
    progress: Mapped[Any | None] = mapped_column(JSON)


class System(Base):
    __tablename__ = "airjobs_system"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(128))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    global_default: Mapped[bool] = mapped_column(Boolean, default=False)
    document: Mapped[Any] = mapped_column(JSON)
    created: Mapped[datetime]
    last_updated: Mapped[datetime]


class App(Base):
    __tablename__ = "airjobs_app"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    execution_system: Mapped[str] = mapped_column(String(64))
    document: Mapped[Any] = mapped_column(JSON)
    created: Mapped[datetime]
    last_updated: Mapped[datetime]


class UserDefault(Base):
    """A user's own default system of a type (``PUT /systems/v2/{id}`` with ``action=setDefault``)."""

    __tablename__ = "airjobs_user_default"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    system_id: Mapped[str] = mapped_column(ForeignKey("airjobs_system.id", ondelete="CASCADE"))


class JobPermission(Base):
    """A grant on one job to one user (spec §9, ``/jobs/v2/{id}/pems``); the owner's ALL is implicit."""

    __tablename__ = "airjobs_job_permission"

    job_id: Mapped[str] = mapped_column(ForeignKey("airjobs_job.id", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    permission: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))


class RevokedRefreshToken(Base):
    """A refresh token revoked through ``POST /revoke`` (its ``jti``), kept until it would have expired."""

    __tablename__ = "airjobs_revoked_refresh_token"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[datetime] = mapped_column(index=True)


class Notification(Base):
    """A subscription to a job's events (spec §6.1, ``/notifications/v2``): a webhook URL or an e-mail address.
    ``active`` turns false after a non-persistent notification fired once, or when its receiver answered 410."""

    __tablename__ = "airjobs_notification"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    associated_uuid: Mapped[str] = mapped_column(ForeignKey("airjobs_job.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(128))
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    policy: Mapped[Any] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: why it stopped firing, when it did (410 Gone, fired once, ...)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime]
    last_updated: Mapped[datetime]


class NotificationDelivery(Base):
    """The outbox: one row per (notification, event), written in the transaction of the status change
    (``airjobs.lifecycle.transition``); the deliverer sends it, at least once, in order per notification."""

    __tablename__ = "airjobs_notification_delivery"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(ForeignKey("airjobs_notification.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(128))
    #: the webhook-id of Standard Webhooks: the same on every retry of this delivery
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: the job JSON at the time of the event (spec §6.2)
    payload: Mapped[Any] = mapped_column(JSON)
    #: PENDING (to send, or to retry at ``next_attempt``), DELIVERED, FAILED (retries used up, 410, refused)
    state: Mapped[str] = mapped_column(String(16), default="PENDING")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime]
    #: a deliverer holds it until then (one that died mid-attempt lets it go when the lease ends)
    leased_until: Mapped[datetime | None]
    created: Mapped[datetime]
    finished: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_airjobs_delivery_due", "state", "next_attempt"),
        Index("ix_airjobs_delivery_notification", "notification_id", "id"),
    )


class NotificationAttempt(Base):
    """One try of a delivery (``/notifications/v2/{id}/attempts``)."""

    __tablename__ = "airjobs_notification_attempt"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # X-Agave-Delivery
    notification_id: Mapped[str] = mapped_column(ForeignKey("airjobs_notification.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    started: Mapped[datetime]
    response_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int] = mapped_column(Integer)
    success: Mapped[bool] = mapped_column(Boolean)


class WebhookSecret(Base):
    """An owner's webhook signing secret (``whsec_...``); after a rotation the old one signs alongside the new
    one until ``expires``."""

    __tablename__ = "airjobs_webhook_secret"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128), primary_key=True)
    created: Mapped[datetime]
    expires: Mapped[datetime | None]
