"""The lifecycle steps on the real FORK path (no Airflow): success, app exit code, a step that raises."""

from __future__ import annotations

import time

import pytest

from airjobs import registry, steps, store, submission
from airjobs.errors import StepError
from airjobs.steps import archive, monitor, notify, stage, submit


def _run_all(job_id):
    for name, step in (("stage", stage.stage), ("submit", submit.submit)):
        steps.run_step(name, job_id, step)
    deadline = time.monotonic() + 30
    while not (result := monitor.poll(job_id)).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    steps.run_part("monitor", job_id, lambda: monitor.complete(job_id, result.as_event()))
    steps.run_step("archive", job_id, archive.archive)
    steps.run_step("notify", job_id, notify.notify)


def _submit(owner="dave", **params):
    body = {
        "name": "steps test",
        "appId": "wc-1.0",
        "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
        "parameters": params,
    }
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
    assert statuses[archiving : archiving + 1 + len(progress)] == ["ARCHIVING"] * (1 + len(progress))
    assert [s for i, s in enumerate(statuses) if s != "ARCHIVING" or i == archiving] == [
        "PENDING",
        "PROCESSING_INPUTS",
        "STAGING_INPUTS",
        "STAGING_INPUTS",
        "STAGED",
        "SUBMITTING",
        "QUEUED",
        "RUNNING",
        "CLEANING_UP",
        "ARCHIVING",
        "ARCHIVING_FINISHED",
        "FINISHED",
    ]
    assert progress[-1]["totalBytesTransferred"] > 0
    storage = registry.get_system("demo-storage")
    counts = f"{storage['storage']['rootDir']}/{job.archive_path}/counts.txt"
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
    body = {
        "name": "broken",
        "appId": "wc-broken-1.0",
        "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
    }
    job, _ = store.create_job(submission.build_job(body, "dave"), created_by="dave")
    steps.run_step("stage", job.id, stage.stage)
    with pytest.raises(StepError, match=r"missing\.sh"):
        steps.run_step("submit", job.id, submit.submit)
    job = store.get_job(job.id)
    assert job.status == "FAILED" and "Wrapper template missing.sh" in job.message
    assert store.history(job.id, limit=100, offset=0)[-1].description == job.message


def test_missing_input_fails_staging_with_host_and_path(pg):
    body = {"name": "nofile", "appId": "wc-1.0", "inputs": {"inputFile": "agave://demo-storage/samples/none.txt"}}
    job, _ = store.create_job(submission.build_job(body, "dave"), created_by="dave")
    with pytest.raises(StepError):
        steps.run_step("stage", job.id, stage.stage)
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
        steps.run_step("stage", job.id, stage.stage)
    assert store.get_job(job.id).status == "FAILED"


# ---------------------------------------------------------------- failures of the service (issue 11)


def _descriptions(job_id):
    return [e.description for e in store.history(job_id, limit=500, offset=0)]


def test_a_failure_of_the_service_is_retried_not_blamed_on_the_job(pg):
    from airjobs import recovery

    job_id = _submit()
    with pytest.raises(ConnectionResetError):  # raised again, for Airflow to retry the task
        steps.run_part("stage", job_id, lambda: (_ for _ in ()).throw(ConnectionResetError("reset by peer")))
    job = store.get_job(job_id)
    assert job.status == "PENDING" and job.recovery["count"] == 1 and job.recovery["task"] == "stage"
    assert any(
        "Task stage (try 1) failed because of the service (ConnectionResetError: reset by peer)" in d
        for d in _descriptions(job_id)
    )
    recovery.note_retry(job_id, "stage", 2)  # try 2 after a try that said why: no second event
    assert sum("stage" in d for d in _descriptions(job_id)) == 1
    recovery.note_retry(job_id, "stage", 4)  # try 4 after a try 3 that died without a word: recorded
    assert any("Task stage starts try 4: the try before ended without finishing" in d for d in _descriptions(job_id))
    steps.run_step("stage", job_id, stage.stage, attempt=5)  # works: no longer in recovery, and the job goes on
    job = store.get_job(job_id)
    assert job.recovery is None and job.status == "STAGED"


def test_a_service_failure_past_the_budget_ends_the_job_failed_with_the_real_error(pg, monkeypatch):
    monkeypatch.setenv("AIRJOBS_RETRY_SECONDS", "1")
    job_id = _submit()
    boom = lambda: (_ for _ in ()).throw(OSError("execution API unreachable"))  # noqa: E731
    with pytest.raises(OSError):
        steps.run_part("stage", job_id, boom, attempt=1)
    time.sleep(1.1)
    with pytest.raises(steps.JobFailed, match=r"kept failing because of the service .*execution API unreachable"):
        steps.run_part("stage", job_id, boom, attempt=2)
    job = store.get_job(job_id)
    assert job.status == "FAILED" and "execution API unreachable" in job.message


def test_what_the_job_did_fails_at_once_without_retry(pg):
    job_id = _submit()
    with pytest.raises(steps.JobFailed):
        steps.run_part("stage", job_id, lambda: (_ for _ in ()).throw(StepError("input missing")))
    job = store.get_job(job_id)
    assert job.status == "FAILED" and job.message.startswith("input missing") and job.recovery is None


def test_a_retried_submission_reaches_the_host_once(pg):
    import uuid

    from airjobs import remote, transports
    from airjobs.paths import host_path

    system = registry.get_system("demo-fork")
    work = host_path(system, f"/once-{uuid.uuid4().hex[:8]}")
    transports.execution(system).makedirs(work)
    counter = f"{work}/count"
    cmd = f"echo submitted >> {counter}; echo 4242; echo warn >&2; exit 3"
    first = submit.parse_once(*remote.run(system, submit.once(str(work), cmd)))
    second = submit.parse_once(*remote.run(system, submit.once(str(work), cmd)))  # the retry: read back only
    assert first == second == (3, "4242\n", "warn")
    assert transports.execution(system).read_text(counter) == "submitted\n"


def test_an_interrupted_staging_copies_only_what_was_not_copied(pg):
    from sqlalchemy import update

    from airjobs import db
    from airjobs.models import Job

    job_id = _submit()
    steps.run_step("stage", job_id, stage.stage)
    job = store.get_job(job_id)
    assert len(job.staged_inputs) == 1
    with db.transaction() as s:  # as if the task had been killed right after its copy: a new try runs
        s.execute(update(Job).where(Job.id == job_id).values(status="STAGING_INPUTS"))
    steps.run_step("stage", job_id, stage.stage, attempt=2)
    assert store.get_job(job_id).status == "STAGED"
    assert (
        sum(d.startswith("Copy of agave://demo-storage/samples/zen-of-python.txt") for d in _descriptions(job_id)) == 1
    )


def test_a_monitor_resumed_from_the_triggerer_is_no_retry_and_a_quiet_spell_restarts_the_budget(pg, monkeypatch):
    from sqlalchemy import update

    from airjobs import db, recovery
    from airjobs.models import Job

    job_id = _submit()
    recovery.note_retry(job_id, "monitor", 2)  # try 2 after a try 1 that died silently: one event
    recovery.note_retry(job_id, "monitor", 2)  # the same try resumed after its deferral: none
    assert sum("starts try 2" in d for d in _descriptions(job_id)) == 1
    monkeypatch.setenv("AIRJOBS_RETRY_SECONDS", "60")
    old = "2020-01-01T00:00:00+00:00"  # failing since long ago, but quiet for years: no GaveUp
    with db.transaction() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(recovery={"since": old, "at": old, "count": 3, "task": "monitor", "try": 2, "error": "x"})
        )
    recovery.note_failure(job_id, "monitor", 3, OSError("ssh reset"))
    assert store.get_job(job_id).recovery["since"] != old and store.get_job(job_id).status == "PENDING"


def test_a_submit_retried_after_an_unrecorded_hand_over_reads_it_back_and_rewrites_nothing(pg):
    import os

    from sqlalchemy import update

    from airjobs import db
    from airjobs.models import Job
    from airjobs.paths import host_path

    job_id = _submit()
    steps.run_step("stage", job_id, stage.stage)
    steps.run_step("submit", job_id, submit.submit)
    job = store.get_job(job_id)
    work = host_path(registry.get_system("demo-fork"), job.work_path)
    pid, wrapper = job.local_id, os.path.join(work, "steps-test.ipcexe")
    before = os.stat(wrapper).st_mtime_ns
    with db.transaction() as s:  # as if the try had been killed between the hand-over and its record
        s.execute(update(Job).where(Job.id == job_id).values(status="SUBMITTING", local_id=None))
    steps.run_step("submit", job_id, submit.submit, attempt=2)
    job = store.get_job(job_id)
    assert job.local_id == pid and job.status == "RUNNING"
    assert os.stat(wrapper).st_mtime_ns == before
    assert any(d.startswith("Reading back the submission") for d in _descriptions(job_id))


def test_a_job_killed_after_an_unrecorded_hand_over_is_killed_on_its_host(pg):
    import os

    from sqlalchemy import update

    from airjobs import control, db
    from airjobs.models import Job

    app = dict(registry.get_app("wc-1.0"))
    app.update(name="wc-sleepy")
    root = registry.get_system("demo-storage")["storage"]["rootDir"]
    src = os.path.join(root, app["deploymentPath"].strip("/"))
    dst = os.path.join(root, "apps/wc-sleepy-1.0")
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        text = open(os.path.join(src, name)).read()
        open(os.path.join(dst, name), "w").write(("sleep 300\n" + text) if name == app["templatePath"] else text)
    app["deploymentPath"] = "/apps/wc-sleepy-1.0"
    registry.put_app(app, "admin")
    body = {
        "name": "sleepy",
        "appId": "wc-sleepy-1.0",
        "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
    }
    job, _ = store.create_job(submission.build_job(body, "dave"), created_by="dave")
    steps.run_step("stage", job.id, stage.stage)
    steps.run_step("submit", job.id, submit.submit)
    pid = int(store.get_job(job.id).local_id)
    assert os.path.exists(f"/proc/{pid}")
    with db.transaction() as s:  # the try was cut between the hand-over and its record
        s.execute(update(Job).where(Job.id == job.id).values(status="SUBMITTING", local_id=None))
    done = control.kill(job.id, "dave", False)
    assert done.status == "STOPPED" and str(pid) in done.message
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "the job's process survived its kill"
        time.sleep(0.1)
