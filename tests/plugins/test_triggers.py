"""The shared per-system poller in the triggerer (D8): the triggers of many jobs on one system share one
status check per cycle, and a job killed elsewhere ends its trigger without a remote check."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

import pytest

from airjobs import checks, registry, remote, steps, store, submission
from airjobs.lifecycle import transition
from airjobs.statuses import JobStatus
from airjobs.steps import monitor, stage, submit
from airjobs_airflow.triggers import MAX_CHECK_FAILURES, JobStatusTrigger, SystemPoller
from conftest import install_app


def _job(owner: str, seconds: float, gate: Path | None = None) -> str:
    """A FORK job that sleeps ``seconds``, or (with ``gate``) waits until that file exists."""
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done" if gate else f"sleep {seconds}"
    app = "napper-gated" if gate else "napper"
    install_app(app, f"{wait}\necho rested > rested.txt\n")
    job, _ = store.create_job(
        submission.build_job({"name": "nap", "appId": f"{app}-1.0", "archive": False}, owner), created_by=owner
    )
    steps.run_step("stage", job.id, stage.stage)
    steps.run_step("submit", job.id, submit.submit)
    return job.id


async def _event(job_id: str) -> dict:
    async for event in JobStatusTrigger(job_id, "demo-fork", min_wait=0).run():
        return event.payload


def test_jobs_on_one_system_share_one_check_per_cycle(pg, monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "0.3,0.3,0.3,0.3")
    calls: list[list[str]] = []
    real = checks.check

    def counting(system_id, job_ids):
        calls.append(sorted(job_ids))
        return real(system_id, job_ids)

    monkeypatch.setattr(checks, "check", counting)
    gate = Path(tempfile.mkdtemp(prefix="ajt-gate-")) / "open"
    gate.parent.chmod(0o755)  # the jobs may run as the unprivileged run-as account
    ids = [_job("poller-user", 0, gate) for _ in range(4)]

    async def main():
        # the four jobs end together, however long creating them took: each cycle sees all four
        asyncio.get_running_loop().call_later(1.5, gate.touch)
        return await asyncio.wait_for(asyncio.gather(*(_event(i) for i in ids)), 30)

    events = asyncio.run(main())
    assert [e["done"] for e in events] == [True] * 4 and [e["exit_code"] for e in events] == [0] * 4
    # every cycle covered all four jobs: one check per cycle, not one per job
    assert calls and all(c == sorted(ids) for c in calls[:-1]), calls
    assert len(calls) <= 10, len(calls)
    assert not SystemPoller.pollers  # the poller went away with its last job


def test_a_killed_job_ends_its_trigger_between_checks(pg, monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "60,60,60,60")  # no remote check within the test
    job_id = _job("poller-user", 30)
    transition(job_id, JobStatus.STOPPED, "Job cancelled by user.")

    async def main():
        return await asyncio.wait_for(_event(job_id), 10)

    event = asyncio.run(main())
    assert event["done"] is True and "STOPPED" in event["detail"]
    with pytest.raises(steps.JobAlreadyFinal):
        monitor.complete(job_id, event)
    assert "killed" in remote.kill_remote(store.get_job(job_id), registry.get_system("demo-fork"))


def _closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_job(pg, monkeypatch):
    """A RUNNING job on a FORK system whose SSH host refuses connections (its Airflow Connection from the
    environment, as Airflow reads them)."""
    port = _closed_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_AJT_UNREACHABLE",
        json.dumps({"conn_type": "ssh", "host": "127.0.0.1", "port": port, "login": "nobody"}),
    )
    ssh = {"protocol": "SSH", "host": "127.0.0.1", "port": port, "connectionId": "ajt_unreachable"}
    registry.put_system(
        {
            "id": "unreachable.ssh",
            "name": "a host that is down",
            "type": "EXECUTION",
            "executionType": "CLI",
            "scheduler": "FORK",
            "public": True,
            "login": ssh,
            "storage": {**ssh, "protocol": "SFTP", "rootDir": "/home/nobody", "homeDir": "/"},
            "workDir": "/work",
            "queues": [{"name": "normal", "default": True}],
        },
        "admin",
    )
    install_app("far-away", "true\n", execution_system="unreachable.ssh")
    job, _ = store.create_job(
        submission.build_job({"name": "far", "appId": "far-away-1.0", "archive": False}, "poller-user"),
        created_by="poller-user",
    )
    transition(job.id, JobStatus.STAGED, "staged")
    transition(job.id, JobStatus.SUBMITTING, "submitting", work_path="/work/poller-user/far")
    transition(job.id, JobStatus.RUNNING, "running", local_id="4242")
    return job.id


def _contact(job_id: str) -> list[str]:
    from sqlalchemy import select

    from airjobs import db
    from airjobs.models import JobEvent

    with db.session() as s:
        return [
            d
            for d in s.scalars(select(JobEvent.description).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            if "contact" in d.lower()
        ]


def test_an_unreachable_host_fails_its_jobs_only_after_the_configured_time(unreachable_job, monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "0.2,0.2,0.2,0.2")
    monkeypatch.setenv("AIRJOBS_HOST_UNREACHABLE_SECONDS", "5")
    calls = []
    real = checks.check

    def counting(system_id, job_ids):
        calls.append(time.monotonic())
        return real(system_id, job_ids)

    monkeypatch.setattr(checks, "check", counting)

    async def main():
        return await asyncio.wait_for(
            _first_event(JobStatusTrigger(unreachable_job, "unreachable.ssh", min_wait=0)), 30
        )

    started = time.monotonic()
    event = asyncio.run(main())
    took = time.monotonic() - started
    # many more refused checks than the 10 after which monitoring used to give up, and the job kept waiting
    assert len(calls) > 2 * MAX_CHECK_FAILURES and 5 <= took < 9, (len(calls), took)
    job = store.get_job(unreachable_job)
    assert event["done"] is True and job.status == "FAILED"
    assert re.match(
        r"Execution system unreachable.ssh unreachable for [5-8] s: NoValidConnectionsError: .*"
        r"Unable to connect to port",
        job.message,
    ), job.message
    lost = _contact(unreachable_job)
    assert len(lost) == 1 and lost[0].startswith("Lost contact with unreachable.ssh: NoValidConnectionsError"), lost
    assert "still trying (for up to 5 s)" in lost[0]
    with pytest.raises(steps.JobAlreadyFinal):  # the resumed monitor leaves the job as it is
        monitor.complete(unreachable_job, event)


async def _first_event(trigger) -> dict:
    async for event in trigger.run():
        return event.payload
