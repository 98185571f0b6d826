"""The shared per-system poller in the triggerer (D8): the triggers of many jobs on one system share one
status check per cycle, and a job killed elsewhere ends its trigger without a remote check."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from airjobs import monitor, registry, steps, store, submission
from airjobs.lifecycle import transition
from airjobs.statuses import JobStatus
from airjobs_airflow.triggers import JobStatusTrigger, SystemPoller
from conftest import install_app


def _job(owner: str, seconds: float, gate: Path | None = None) -> str:
    """A FORK job that sleeps ``seconds``, or (with ``gate``) waits until that file exists."""
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done" if gate else f"sleep {seconds}"
    app = "napper-gated" if gate else "napper"
    install_app(app, f"{wait}\necho rested > rested.txt\n")
    job, _ = store.create_job(submission.build_job({"name": "nap", "appId": f"{app}-1.0", "archive": False}, owner),
                              created_by=owner)
    steps.run_step("stage", job.id)
    steps.run_step("submit", job.id)
    return job.id


async def _event(job_id: str) -> dict:
    async for event in JobStatusTrigger(job_id, "demo-fork", min_wait=0).run():
        return event.payload


def test_jobs_on_one_system_share_one_check_per_cycle(pg, monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "0.3,0.3,0.3,0.3")
    calls: list[list[str]] = []
    real = monitor.check

    def counting(system_id, job_ids):
        calls.append(sorted(job_ids))
        return real(system_id, job_ids)

    monkeypatch.setattr(monitor, "check", counting)
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
        steps.complete(job_id, event)
    assert "killed" in monitor.kill_remote(store.get_job(job_id), registry.get_system("demo-fork"))
