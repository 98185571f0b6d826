"""A job and its lifecycle run (airjobs.runs): which run may touch which job, how a job ends when an administrator
ended its run, how it is resumed when the service lost it, and when a job counts as stuck or unwatched."""

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


def _row(job):
    """The job as ``runs.active_jobs`` gives it to the reconciler."""
    return next(j for j in runs.active_jobs() if j.id == job.id)


def test_an_administrators_act_ends_the_job_truthfully(pg):
    job = _job()
    transition(job.id, S.STAGED, "staged")
    job = store.get_job(job.id)
    for state in ("queued", "running"):
        assert runs.verdict(job, runs.RunView(state), launch_grace=300) is None
    v = runs.verdict(job, runs.RunView("failed", "admin", "marked failed"), launch_grace=300)
    assert v.statuses == (S.FAILED,) and v.created_by == "admin"
    assert v.description == "Lifecycle run marked failed in Airflow by admin while the job was STAGED"
    v = runs.verdict(job, runs.RunView("success", "admin", "marked success"), launch_grace=300)
    assert v.statuses[0] is S.KILLED and v.created_by == "admin"
    v = runs.verdict(job, runs.RunView(None, "admin", "deleted"), launch_grace=300)
    assert v.statuses[0] is S.KILLED and v.description.startswith("Lifecycle run deleted in Airflow by admin")
    # an administrator's act is never resumed, however often the job was resumed before
    assert isinstance(
        runs.verdict(job, runs.RunView(None, "admin", "deleted"), launch_grace=0, resumes=0), runs.Verdict
    )
    assert runs.verdict(job, runs.RunView("paused-in-a-future-airflow"), launch_grace=0) is None
    transition(job.id, S.STOPPED, "stopped")
    assert runs.verdict(store.get_job(job.id), runs.RunView("failed", "admin"), launch_grace=0) is None
    assert runs.verdict(store.get_job(job.id), runs.RunView(None), launch_grace=0) is None


def test_a_run_the_service_lost_is_resumed_a_few_times_then_the_job_fails(pg):
    job = _job()
    for status in (S.PROCESSING_INPUTS, S.STAGING_INPUTS, S.STAGED, S.SUBMITTING):
        transition(job.id, status, "on")
    transition(job.id, S.QUEUED, "queued", local_id="4242")
    transition(job.id, S.RUNNING, "running")
    job = _row(store.get_job(job.id))
    # lost (no audit entry): resumed at once, without the launch grace (a task moved the job: it had a run)
    v = runs.verdict(job, runs.RunView(None), launch_grace=300, resumes=0, max_resumes=3)
    assert isinstance(v, runs.Resume) and v.done == ("stage", "submit")
    assert v.description == (
        "Lifecycle run lost in Airflow without anyone ending it while the job was RUNNING; resumed (1 of 3)"
    )
    v = runs.verdict(job, runs.RunView("failed", failed_tasks=("monitor",)), launch_grace=300, resumes=1, max_resumes=3)
    assert v.description == (
        "Lifecycle run ended failed in Airflow without anyone ending it while the job was "
        "RUNNING (task monitor failed); resumed (2 of 3)"
    )
    v = runs.verdict(job, runs.RunView("success"), launch_grace=300, resumes=2, max_resumes=3)
    assert isinstance(v, runs.Resume) and v.description.endswith("resumed (3 of 3)")
    v = runs.verdict(job, runs.RunView("success"), launch_grace=300, resumes=3, max_resumes=3)
    assert isinstance(v, runs.Verdict) and v.statuses == (S.FAILED,) and v.created_by == "airjobs"
    assert v.description == (
        "Lifecycle run ended success in Airflow without anyone ending it while the job was "
        "RUNNING; not resumed: it was resumed 3 times already"
    )
    v = runs.verdict(job, runs.RunView(None), launch_grace=300, resumes=0, max_resumes=0)
    assert isinstance(v, runs.Verdict) and "resuming is turned off" in v.description
    v = runs.verdict(job, runs.RunView("failed", restarted="no progress for 1900 s in RUNNING"), launch_grace=0)
    assert v.description == ("Lifecycle run ended by airjobs: no progress for 1900 s in RUNNING; resumed (1 of 3)")

    # history keeps the count (a restarted api-server goes on counting); other events do not count
    assert runs.resumes(job.id) == 0
    assert runs.note(
        job.id, "Lifecycle run lost in Airflow without anyone ending it while the job was RUNNING; resumed (1 of 3)."
    )
    transition(job.id, S.RUNNING, "Job is said to be resumed (1 of 3) by nobody", created_by=job.owner)
    assert runs.resumes(job.id) == 1
    last = store.history(job.id, limit=100, offset=0)[-2]
    assert (last.status, last.created_by) == ("RUNNING", "airjobs") and last.description.endswith("(1 of 3).")
    assert store.get_job(job.id).status == "RUNNING"


def test_a_job_without_a_run_gets_the_launch_grace(pg):
    job = _row(_job())
    assert job.status == "PENDING"
    assert runs.verdict(job, runs.RunView(None), launch_grace=60) is None  # created just now
    assert runs.verdict(job, runs.RunView(None), launch_grace=60, at=now() + timedelta(seconds=59)) is None
    v = runs.verdict(job, runs.RunView(None), launch_grace=60, at=now() + timedelta(seconds=61))
    assert isinstance(v, runs.Resume) and v.done == ()
    assert v.description.startswith("Lifecycle run lost in Airflow without anyone ending it while the job was PENDING")
    # a run that exists and ended is no launch: no grace
    assert isinstance(runs.verdict(job, runs.RunView("failed"), launch_grace=60), runs.Resume)


@pytest.mark.parametrize(
    "status,submitted,done",
    [
        ("PENDING", False, ()),
        ("PROCESSING_INPUTS", False, ()),
        ("STAGING_INPUTS", False, ()),
        ("STAGED", False, ("stage",)),
        ("STAGING_JOB", False, ("stage",)),
        ("SUBMITTING", False, ("stage",)),
        ("QUEUED", True, ("stage", "submit")),
        ("RUNNING", True, ("stage", "submit")),
        ("PAUSED", True, ("stage", "submit")),
        ("PAUSED", False, ()),
        ("CLEANING_UP", True, ("stage", "submit", "monitor")),
        ("ARCHIVING", True, ("stage", "submit", "monitor")),
        ("ARCHIVING_FINISHED", True, ("stage", "submit", "monitor", "archive")),
        ("ARCHIVING_FAILED", True, ("stage", "submit", "monitor", "archive")),
    ],
)
def test_a_resumed_run_starts_where_the_job_stopped(status, submitted, done):
    assert runs.done_tasks(status, submitted) == done


class _Seen:
    """A row of ``runs.active_jobs``."""

    def __init__(self, status, *, updated, polled=None, checks=0):
        self.id, self.status, self.created = "j", status, updated - timedelta(hours=1)
        self.last_updated, self.last_polled, self.status_checks = updated, polled, checks


def test_a_job_the_triggerer_does_not_check_is_checked_by_the_reconciler(monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "15,30,60,300")
    t = now()
    young = _Seen("RUNNING", updated=t - timedelta(seconds=100), polled=t - timedelta(seconds=50), checks=2)
    assert runs.unwatched(young, at=t, floor=60) is None  # checked 50 s ago: max(3 x 15, 60) not reached
    assert runs.unwatched(young, at=t + timedelta(seconds=11), floor=60) == pytest.approx(61, abs=0.1)
    assert runs.unwatched(young, at=t + timedelta(seconds=11), floor=120) is None
    old = _Seen("QUEUED", updated=t - timedelta(hours=2), polled=t - timedelta(seconds=800), checks=50)
    assert runs.unwatched(old, at=t, floor=60) is None  # 3 x 300 s between checks is fine for an old job
    assert runs.unwatched(old, at=t + timedelta(seconds=101), floor=60) == pytest.approx(901, abs=0.1)
    # at the step from 60 s to 300 s (the 44th check) the wait is judged by the next interval
    edge = _Seen("RUNNING", updated=t - timedelta(hours=2), polled=t - timedelta(seconds=290), checks=43)
    assert runs.unwatched(edge, at=t, floor=60) is None
    never = _Seen("PAUSED", updated=t - timedelta(seconds=61))  # never checked: since it got its status
    assert runs.unwatched(never, at=t, floor=60) == pytest.approx(61, abs=0.1)
    for status in ("CLEANING_UP", "STAGED", "FINISHED"):
        assert runs.unwatched(_Seen(status, updated=t - timedelta(days=1)), at=t, floor=60) is None
    assert "did not check the job for 61 s" in runs.backup_note(61.2, "exit code file found")


def test_no_job_stays_active_forever():
    t = now()
    env = {}
    assert runs.stall_limit("STAGING_INPUTS", env) == 1800
    assert runs.stall_limit("ARCHIVING", {"AIRJOBS_STALL_SECONDS": "600"}) == 600
    assert (
        runs.stall_limit("ARCHIVING", {"AIRJOBS_STALL_SECONDS": "600", "AIRJOBS_STALL_SECONDS_ARCHIVING": "0"}) is None
    )
    assert runs.stall_limit("PENDING", {"AIRJOBS_STALL_SECONDS_PENDING": "30"}) == 30
    assert runs.stall_limit("PENDING", {"AIRJOBS_STALL_SECONDS": "junk"}) == 1800
    staging = _Seen("STAGING_INPUTS", updated=t - timedelta(seconds=3000))
    # a progress event (written every 2 s while a copy goes on) is progress
    assert runs.stalled(staging, t - timedelta(seconds=5), at=t, watched=False, env=env) is None
    idle, limit = runs.stalled(staging, t - timedelta(seconds=1801), at=t, watched=False, env=env)
    assert idle == pytest.approx(1801, abs=0.1) and limit == 1800
    running = _Seen("RUNNING", updated=t - timedelta(days=3), polled=t - timedelta(seconds=2000))
    assert runs.stalled(running, None, at=t, watched=True, env=env) is None  # the triggerer (or the backup) has it
    assert runs.stalled(running, None, at=t, watched=False, env=env) is not None  # nobody watches it
    polled = _Seen("QUEUED", updated=t - timedelta(days=3), polled=t - timedelta(seconds=60))
    assert runs.stalled(polled, None, at=t, watched=False, env=env) is None  # checked a minute ago: queued there
    assert runs.stalled(_Seen("FINISHED", updated=t - timedelta(days=3)), None, at=t, watched=False, env=env) is None
    assert runs.stall_note("ARCHIVING", 1801.4, 1800).startswith("No progress for 1801 s in ARCHIVING")
    v = runs.stall_verdict("ARCHIVING", 1801.4, 1800)
    assert v.statuses == (S.FAILED,) and "also after its lifecycle run was restarted" in v.description


def test_a_stall_is_resumed_once_per_status(pg):
    job = _job()
    assert not runs.stalled_before(job.id, "PENDING")
    assert runs.note(job.id, runs.stall_note("PENDING", 1801, 1800) + ".")
    assert runs.stalled_before(job.id, "PENDING") and not runs.stalled_before(job.id, "PROCESSING_INPUTS")
    transition(job.id, S.PROCESSING_INPUTS, "p")
    assert not runs.stalled_before(job.id, "PROCESSING_INPUTS")
    events = runs.last_events([job.id, "no-such-job"])
    assert list(events) == [job.id] and events[job.id] == store.history(job.id, limit=10, offset=0)[-1].created
    transition(job.id, S.FAILED, "failed")
    assert not runs.note(job.id, "too late")  # an ended job gets no more events


def test_end_job_takes_the_first_legal_status_and_leaves_an_ended_job_alone(pg):
    job = _job()
    transition(job.id, S.PROCESSING_INPUTS, "p")
    transition(job.id, S.STAGING_INPUTS, "s")  # no move to KILLED from here: STOPPED
    v = runs.Verdict(
        runs._KILL, "Lifecycle run marked success in Airflow by admin while the job was STAGING_INPUTS", "admin"
    )
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
