"""A job and its lifecycle run (airjobs.runs): which run may touch which job, and how a job ends when Airflow
ended its run under it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from airjobs import runs, store, submission
from airjobs.lifecycle import transition
from airjobs.statuses import JobStatus
from airjobs.timeutil import now

S = JobStatus


def _job(owner: str = "runs-user"):
    body = {"name": "r", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}}
    job, _ = store.create_job(submission.build_job(body, owner), created_by=owner)
    return job


def test_only_a_jobs_own_run_may_touch_it(pg):
    job = _job()
    assert runs.job_of_run(job.id, {"job_id": job.id}) == job.id
    for run_id, conf, words in [
        ("manual__2024-01-01", {}, "names no job"),
        ("manual__2024-01-01", None, "names no job"),
        ("manual__2024-01-01", {"job_id": 7}, "names no job"),
        ("manual__2024-01-01", {"job_id": job.id}, f"is not the lifecycle run of job {job.id}"),
        ("other-0001-007", {"job_id": job.id}, f"is not the lifecycle run of job {job.id}"),
        ("no-such-0001-007", {"job_id": "no-such-0001-007"}, "there is no job no-such-0001-007"),
    ]:
        with pytest.raises(runs.NotALifecycleRun, match=words):
            runs.job_of_run(run_id, conf)


def test_verdicts(pg):
    job = _job()
    transition(job.id, S.STAGED, "staged")
    job = store.get_job(job.id)
    for state in ("queued", "running"):
        assert runs.verdict(job, runs.RunView(state), launch_grace=300) is None
    v = runs.verdict(job, runs.RunView("failed", "admin", "marked failed"), launch_grace=300)
    assert v.statuses == (S.FAILED,) and v.created_by == "admin"
    assert v.description == "Lifecycle run marked failed in Airflow by admin while the job was STAGED"
    v = runs.verdict(job, runs.RunView("success"), launch_grace=300)
    assert v.statuses[0] is S.KILLED and v.created_by == "airjobs" and "no audit log entry" in v.description
    v = runs.verdict(job, runs.RunView(None, "admin", "deleted"), launch_grace=300)
    assert v.statuses[0] is S.KILLED and v.description.startswith("Lifecycle run deleted in Airflow by admin")
    # a run nobody deleted may not exist yet: the job gets the launch grace
    assert runs.verdict(job, runs.RunView(None), launch_grace=300) is None
    v = runs.verdict(job, runs.RunView(None), launch_grace=300, at=now() + timedelta(seconds=301))
    assert v.created_by == "airjobs" and "no longer exists" in v.description
    transition(job.id, S.STOPPED, "stopped")
    assert runs.verdict(store.get_job(job.id), runs.RunView("failed", "admin"), launch_grace=0) is None


def test_end_job_takes_the_first_legal_status_and_leaves_an_ended_job_alone(pg):
    job = _job()
    transition(job.id, S.PROCESSING_INPUTS, "p")
    transition(job.id, S.STAGING_INPUTS, "s")  # no move to KILLED from here: STOPPED
    v = runs.Verdict(runs._KILL, "Lifecycle run marked success in Airflow by admin while the job was STAGING_INPUTS",
                     "admin")
    done = runs.end_job(job.id, v)
    assert done.status == "STOPPED"
    last = store.history(job.id, limit=100, offset=0)[-1]
    assert last.created_by == "admin" and last.description == v.description + "."
    assert runs.end_job(job.id, v) is None  # already ended: nothing written
    assert len(store.history(job.id, limit=100, offset=0)) == 4
    assert job.id not in {j.id for j in runs.active_jobs()}


def test_watch_waits_for_the_run_to_settle():
    class J:
        def __init__(self, id):
            self.id = id

    a, b = J("a"), J("b")
    w = runs.Watch(settle=10)
    assert w.due({"a": "failed", "b": "running"}, 0, [a, b]) == []
    assert w.due({"a": "failed", "b": "running"}, 9, [a, b]) == []
    assert w.due({"a": "failed", "b": "running"}, 10, [a, b]) == [a]
    assert w.due({"a": "queued"}, 11, [a]) == [] and w.since == {}  # cleared: it works again
    assert w.due({}, 12, [a]) == [] and w.due({}, 22, [a]) == [a]  # no run at all


def test_sigterm_raises_terminated_after_the_previous_handler(monkeypatch):
    import os
    import signal

    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    monkeypatch.setattr(runs, "_terminated", False)
    try:
        runs.raise_on_sigterm()
        runs.raise_on_sigterm()  # once only
        with pytest.raises(runs.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert seen == [signal.SIGTERM] and runs.terminated()
        assert not issubclass(runs.Terminated, Exception)  # no step takes it for the job failing
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not raise again
        time.sleep(0.1)
        assert seen == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, old)


def test_fail_and_stop(pg):
    job = _job()
    done = runs.fail_and_stop(job.id, "Task monitor failed: the task process ended")
    assert done.status == "FAILED" and done.message == "Task monitor failed: the task process ended."
    assert store.history(job.id, limit=100, offset=0)[-1].created_by == "airjobs"
    assert runs.fail_and_stop(job.id, "again") is None
