"""The lifecycle steps on the real FORK path (no Airflow): success, app exit code, a step that raises."""

from __future__ import annotations

import time

import pytest

from airjobs import registry, steps, store, submission
from airjobs.errors import StepError


def _run_all(job_id):
    for name in ("stage", "submit"):
        steps.run_step(name, job_id)
    deadline = time.monotonic() + 30
    while not (result := steps.poll(job_id)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    steps.run_step("monitor", job_id, lambda: steps.complete(job_id, result.as_dict()))
    steps.run_step("archive", job_id)
    steps.run_step("notify", job_id)


def _submit(owner="dave", **params):
    body = {"name": "steps test", "appId": "wc-1.0", "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
            "parameters": params}
    job, _ = store.create_job(submission.build_job(body, owner), created_by=owner)
    return job.id


def test_fork_job_runs_to_finished_and_archives(pg):
    job_id = _submit(topN=3)
    _run_all(job_id)
    job = store.get_job(job_id)
    assert job.status == "FINISHED" and job.exit_code == 0 and job.local_id.isdigit()
    events = store.history(job_id, limit=100, offset=0)
    statuses = [e.status for e in events]
    archiving = statuses.index("ARCHIVING")
    progress = [e.progress for e in events if e.status == "ARCHIVING" and e.progress]
    assert progress and progress[-1]["filesDone"] == progress[-1]["totalFiles"] >= 3  # one event per entry
    assert statuses[archiving:archiving + 1 + len(progress)] == ["ARCHIVING"] * (1 + len(progress))
    assert [s for i, s in enumerate(statuses) if s != "ARCHIVING" or i == archiving] == [
        "PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGING_INPUTS", "STAGED", "SUBMITTING",
        "QUEUED", "RUNNING", "CLEANING_UP", "ARCHIVING", "ARCHIVING_FINISHED", "FINISHED"]
    assert progress[-1]["totalBytesTransferred"] > 0
    storage = registry.get_system("demo-storage")
    counts = (f"{storage['storage']['rootDir']}/{job.archive_path}/counts.txt")
    lines = open(counts).read().splitlines()
    assert len(lines) == 3 and lines[0].split() == ["10", "is"]


def test_app_exit_code_ends_failed_with_exit_code(pg):
    job_id = _submit(exitCode=3)
    with pytest.raises(StepError, match="exited with code 3"):
        _run_all(job_id)
    job = store.get_job(job_id)
    assert job.status == "FAILED" and job.exit_code == 3 and "code 3" in job.message


def test_a_step_that_raises_ends_the_job_failed_with_its_error(pg):
    app = dict(registry.get_app("wc-1.0"))
    app.update(name="wc-broken", templatePath="missing.sh")
    registry.put_app(app, "admin")
    body = {"name": "broken", "appId": "wc-broken-1.0",
            "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"}}
    job, _ = store.create_job(submission.build_job(body, "dave"), created_by="dave")
    steps.run_step("stage", job.id)
    with pytest.raises(StepError, match="missing.sh"):
        steps.run_step("submit", job.id)
    job = store.get_job(job.id)
    assert job.status == "FAILED" and "Wrapper template missing.sh" in job.message
    assert store.history(job.id, limit=100, offset=0)[-1].description == job.message


def test_missing_input_fails_staging_with_host_and_path(pg):
    body = {"name": "nofile", "appId": "wc-1.0", "inputs": {"inputFile": "agave://demo-storage/samples/none.txt"}}
    job, _ = store.create_job(submission.build_job(body, "dave"), created_by="dave")
    with pytest.raises(StepError):
        steps.run_step("stage", job.id)
    job = store.get_job(job.id)
    assert job.status == "FAILED" and "samples/none.txt" in job.message and "demo-storage" in job.message


def test_path_escape_is_refused_at_submission_and_again_at_staging(pg):
    from airjobs.errors import BadRequest

    escape = "agave://demo-storage/../../etc/passwd"
    with pytest.raises(BadRequest, match="may not contain"):
        submission.build_job({"name": "escape", "appId": "wc-1.0", "inputs": {"inputFile": escape}}, "dave")
    # defence in depth: a row that somehow carries such a path still cannot leave the storage root
    job = submission.build_job({"name": "escape", "appId": "wc-1.0", "inputs": {"inputFile": "x.txt"}}, "dave")
    job.inputs = {"inputFile": [escape]}
    job, _ = store.create_job(job, created_by="dave")
    with pytest.raises(Exception, match="may not leave its root"):
        steps.run_step("stage", job.id)
    assert store.get_job(job.id).status == "FAILED"
