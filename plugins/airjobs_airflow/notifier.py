"""Notification delivery inside Airflow: the ``airjobs_notifier`` DAG's one task defers to ``OutboxTrigger``, which
runs in the triggerer and sends what the outbox holds (``airjobs.notifications.outbox``).

Why a trigger: it is woken by PostgreSQL ``NOTIFY`` at the commit of a status change, so a webhook leaves
within milliseconds of its event (a task per event would cost the ~2 s of a task start, a scheduled DAG its
interval); it is one asyncio task in a process that already runs, holding one idle database connection; and
Airflow keeps it alive: a killed triggerer's triggers are picked up again by the next one, from the rows
they left (every delivery's state and retry schedule is in the database, never in memory). The trigger ends
after ``run_for`` seconds and the ``@continuous`` DAG starts the next run, so its logs stay readable.

E-mail goes through the providers' ``SmtpHook`` with the ``smtp_default`` Connection (set it the Airflow way,
e.g. ``AIRFLOW_CONN_SMTP_DEFAULT='smtp://user:pass@host:587?from_email=jobs@example.org'``); without one the
messages are kept as ``.eml`` files under ``$AIRJOBS_VAR/mail``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

from airflow.models.baseoperator import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

SMTP_CONN_ID = "smtp_default"
RUN_FOR = 3600.0


def _smtp_configured() -> bool:
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        BaseHook.get_connection(SMTP_CONN_ID)
    except Exception:
        return False
    return True


def smtp_sender(message: EmailMessage) -> None:
    """Send through ``smtp_default`` (TLS, login and retries as the hook does them), else keep an .eml file."""
    from airjobs.notifications import outbox

    if not _smtp_configured():
        outbox.eml_sender(message)
        return
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=SMTP_CONN_ID) as hook:
        if hook.from_email:
            del message["From"]
            message["From"] = hook.from_email
        client: Any = hook._smtp_client  # the hook's logged-in smtplib client; it sends only its own MIME shape
        client.send_message(message)


class OutboxTrigger(BaseTrigger):
    """Deliver due notifications until ``run_for`` seconds have passed, then end (the DAG starts another)."""

    def __init__(self, run_for: float = RUN_FOR):
        super().__init__()
        self.run_for = float(run_for)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("airjobs_airflow.notifier.OutboxTrigger", {"run_for": self.run_for})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airjobs.notifications import outbox

        end = time.monotonic() + self.run_for
        listener: outbox.Listener | None = None
        attempts = 0
        while time.monotonic() < end:
            try:
                if listener is None:
                    listener = await asyncio.to_thread(outbox.Listener)
                sent = await asyncio.to_thread(outbox.deliver_due, smtp_sender)
                attempts += sent
                if sent:
                    continue
                wait = await asyncio.to_thread(outbox.seconds_to_next)
                if wait > 0:
                    await asyncio.to_thread(listener.wait, min(wait, max(0.0, end - time.monotonic())))
            except Exception as e:  # the database restarting: the rows wait; so does the trigger
                log.warning("notification delivery paused: %s: %s", type(e).__name__, e)
                if listener is not None:
                    listener.close()
                    listener = None
                await asyncio.sleep(2.0)
        if listener is not None:
            listener.close()
        yield TriggerEvent({"attempts": attempts})


class NotifierOperator(BaseOperator):
    """Defers at once to ``OutboxTrigger``: the delivery loop runs in the triggerer, not in a worker slot."""

    def __init__(self, run_for: float = RUN_FOR, **kwargs: Any):
        super().__init__(**kwargs)
        self.run_for = run_for

    def execute(self, context: Any) -> None:
        self.defer(trigger=OutboxTrigger(self.run_for), method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        log.info("notification deliveries this run: %s", (event or {}).get("attempts"))
        return event or {}
