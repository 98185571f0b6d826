"""Reconciliation (issue 11, item 3) against the whole service: a job whose lifecycle run the service lost is
resumed, and a job whose process ended while the triggerer was down is completed by the reconciler.

* A RUNNING job whose DAG run row is deleted straight in Airflow's database (no audit log entry: nobody ended
  it through Airflow) gets a new run that goes on from where the job stopped: FINISHED, its wrapper run once,
  one submission, history showing the resume. A run ended failed in the database is resumed the same way, and
  after ``AIRJOBS_RECONCILE_MAX_RESUMES`` resumes the job ends FAILED with the reason.
* A job accepted without a run (the api-server died between inserting it and triggering its run) gets its
  run after the launch grace, once.
* A job that makes no progress (its run queued in a paused DAG) has its run ended and is resumed once; no
  progress again: FAILED with the reason.
* The triggerer frozen (SIGSTOP) while a job's process ends: the reconciler's backup check completes the job;
  thawed, the old trigger breaks nothing and later jobs still finish.
"""

from __future__ import annotations

import os

# Before the service starts. In `make test` all modules share one service, so these hold for the whole suite:
# only what touches no other test's jobs. Backup checks after 15 s without a check (the tests' poll schedule
# checks every 1-3 s); a short limit only for STAGING_JOB, a status no step moves a job to (the stall test
# puts its job there by hand). Resumes and the launch grace keep their defaults.
os.environ.setdefault("AIRJOBS_RECONCILE_POLL_SECONDS", "15")
os.environ.setdefault("AIRJOBS_STALL_SECONDS_STAGING_JOB", "20")
MAX = int(os.environ.get("AIRJOBS_RECONCILE_MAX_RESUMES", "3"))
GRACE = float(os.environ.get("AIRJOBS_RECONCILE_LAUNCH_GRACE_SECONDS", "60"))
STALL = float(os.environ["AIRJOBS_STALL_SECONDS_STAGING_JOB"])

import shlex  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from conftest import VAR, install_app, process_alive  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.faults]  # restarts or freezes parts of the service: runs last

DAG = "airjobs_lifecycle"
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")
RESUMED = "without anyone ending it"


@pytest.fixture(scope="module")
def gates():
    """A directory the jobs' account can read and write: ``<name>`` opens a gate, ``<name>.starts`` counts
    how often a wrapper started."""
    d = Path(tempfile.mkdtemp(prefix="ajrec-", dir="/tmp"))
    d.chmod(0o777)
    return d


@pytest.fixture(scope="module")
def gated(service, gates):
    """An app whose wrapper notes each start, then waits for the gate named by its job name."""
    q = shlex.quote(str(gates))
    install_app(
        "recgate",
        f'name=${{AGAVE_JOB_NAME}}\necho started >> {q}/"$name".starts\n'
        f'while [ ! -e {q}/"$name" ]; do sleep 0.2; done\necho done > out.txt\n',
    )
    return "recgate-1.0"


@pytest.fixture(scope="module")
def airflow_db(service):
    from sqlalchemy import create_engine

    from airjobs import pgserver

    eng = create_engine(pgserver.url("airflow", VAR / "pg"))
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def admin(service):
    with httpx.Client(
        base_url=f"{service.base}/api/v2", timeout=60, headers={"Authorization": f"Bearer {service.airflow_token()}"}
    ) as c:
        yield c


def _submit(service, app: str, name: str) -> str:
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json={"name": name, "appId": app, "archive": False})
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _wait(what, check, timeout: float, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(every)
    return value


def _wait_status(service, job_id: str, wanted: tuple[str, ...], timeout: float = 90) -> dict:
    return _wait(f"job {job_id} in {wanted}", lambda: (j := service.job(job_id))["status"] in wanted and j, timeout)


def _monitor_state(admin, run_id: str) -> str | None:
    r = admin.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/monitor")
    return r.json().get("state") if r.status_code == 200 else None


def _deferred_running(service, admin, app: str, name: str) -> tuple[str, int]:
    job_id = _submit(service, app, name)
    job = _wait_status(service, job_id, ("RUNNING", *TERMINAL), 60)
    assert job["status"] == "RUNNING", job
    _wait(f"monitor of {job_id} deferred", lambda: _monitor_state(admin, job_id) == "deferred", 60)
    return job_id, int(job["localId"])


def _resumes(service, job_id: str) -> list[dict]:
    return [e for e in service.history(job_id) if RESUMED in (e["description"] or "")]


def _once(service, job_id: str) -> None:
    """Nothing done twice: staged, submitted, completed and finished once each (the reconciler's own notes are
    events in the job's current status)."""
    statuses = [
        e["status"]
        for e in service.history(job_id)
        if e["createdBy"] != "airjobs" or not (RESUMED in e["description"] or "the reconciler" in e["description"])
    ]
    for once in ("PENDING", "STAGED", "SUBMITTING", "QUEUED", "CLEANING_UP", "FINISHED"):
        assert statuses.count(once) == 1, statuses


def _kill(service, job_id: str) -> None:
    with service.client("admin") as c:
        c.post(f"/jobs/v2/{job_id}", json={"action": "kill"})


def _sql(airflow_db, statement: str, **params) -> int:
    from sqlalchemy import text

    with airflow_db.begin() as c:
        return c.execute(text(statement), params).rowcount


def test_a_run_deleted_in_the_database_is_resumed(service, admin, gated, gates, airflow_db):
    job_id, pid = _deferred_running(service, admin, gated, "lostrun")
    try:
        assert _sql(airflow_db, "DELETE FROM dag_run WHERE dag_id = :d AND run_id = :r", d=DAG, r=job_id) == 1
        assert admin.get(f"/dags/{DAG}/dagRuns/{job_id}").status_code == 404
        resumed = _wait("the resume", lambda: _resumes(service, job_id), 60)
        assert len(resumed) == 1, resumed
        assert (
            f"Lifecycle run lost in Airflow {RESUMED} while the job was RUNNING; resumed (1 of {MAX})"
            in resumed[0]["description"]
        ), resumed
        assert resumed[0]["createdBy"] == "airjobs" and resumed[0]["status"] == "RUNNING"
        # the new run goes on from the monitor: stage and submit are done already
        _wait("the new run's monitor", lambda: _monitor_state(admin, job_id) in ("running", "deferred"), 60)
        assert process_alive(pid)
        (gates / "lostrun").touch()
        job = _wait_status(service, job_id, TERMINAL, 90)
        assert job["status"] == "FINISHED" and job["localId"] == str(pid), job
        assert (gates / "lostrun.starts").read_text() == "started\n"  # the wrapper ran once
        _once(service, job_id)
        assert len(_resumes(service, job_id)) == 1
        run = _wait(
            "the new run to end",
            lambda: (r := admin.get(f"/dags/{DAG}/dagRuns/{job_id}").json())["state"] in ("success", "failed") and r,
            60,
        )
        assert run["state"] == "success", run
    finally:
        _kill(service, job_id)


def test_a_run_ended_failed_in_the_database_is_resumed_then_the_job_fails(service, admin, gated, gates, airflow_db):
    job_id, pid = _deferred_running(service, admin, gated, "failedrun")
    try:
        for n in range(1, MAX + 2):
            if n % 2:  # ended failed behind the service's back, as a crashed component could leave it
                assert (
                    _sql(
                        airflow_db,
                        "UPDATE task_instance SET state = 'failed' WHERE dag_id = :d AND run_id = :r "
                        "AND state IN ('running', 'deferred', 'queued', 'scheduled')",
                        d=DAG,
                        r=job_id,
                    )
                    >= 1
                )
                assert (
                    _sql(
                        airflow_db,
                        "UPDATE dag_run SET state = 'failed' WHERE dag_id = :d AND run_id = :r",
                        d=DAG,
                        r=job_id,
                    )
                    == 1
                )
            else:
                assert _sql(airflow_db, "DELETE FROM dag_run WHERE dag_id = :d AND run_id = :r", d=DAG, r=job_id) == 1
            if n > MAX:
                break
            _wait(f"resume {n}", lambda n=n: len(_resumes(service, job_id)) == n, 60)
            assert f"resumed ({n} of {MAX})" in _resumes(service, job_id)[-1]["description"]
            _wait("the new run's monitor", lambda: _monitor_state(admin, job_id) == "deferred", 60)
        first = _resumes(service, job_id)[0]["description"]
        assert f"Lifecycle run ended failed in Airflow {RESUMED} while the job was RUNNING" in first, first
        job = _wait_status(service, job_id, TERMINAL, 60)
        assert job["status"] == "FAILED", job
        assert f"it was resumed {MAX} times already" in job["message"], job
        assert (gates / "failedrun.starts").read_text() == "started\n"
        _wait("the job's process to be stopped", lambda: not process_alive(pid), 15)
    finally:
        _kill(service, job_id)


def test_a_job_accepted_without_a_run_gets_one_once(service, admin, gated, gates):
    from airjobs import store, submission

    body = {"name": "norun", "appId": gated, "archive": False}
    job, _ = store.create_job(submission.build_job(body, "alice"), created_by="alice")
    assert admin.get(f"/dags/{DAG}/dagRuns/{job.id}").status_code == 404
    try:
        time.sleep(min(GRACE / 2, 20))  # within the launch grace: the API's own trigger may still come
        assert service.job(job.id)["status"] == "PENDING" and not _resumes(service, job.id)
        _wait("the run", lambda: admin.get(f"/dags/{DAG}/dagRuns/{job.id}").status_code == 200, GRACE + 40)
        _wait_status(service, job.id, ("RUNNING",), 60)
        (gates / "norun").touch()
        assert _wait_status(service, job.id, TERMINAL, 90)["status"] == "FINISHED"
        resumed = _resumes(service, job.id)
        assert len(resumed) == 1 and f"resumed (1 of {MAX})" in resumed[0]["description"], resumed
        assert "Lifecycle run lost in Airflow" in resumed[0]["description"]
        _once(service, job.id)
        assert (gates / "norun.starts").read_text() == "started\n"
    finally:
        _kill(service, job.id)


def test_a_job_that_makes_no_progress_is_resumed_once_then_fails(service, admin, gated):
    from sqlalchemy import update

    from airjobs import db
    from airjobs.lifecycle import transition
    from airjobs.models import Job
    from airjobs_airflow.reconcile import IDLE_FACTOR

    assert admin.patch(f"/dags/{DAG}", json={"is_paused": True}).json()["is_paused"] is True
    try:
        job_id = _submit(service, gated, "stuck")  # its run stays queued: nothing runs it
        transition(job_id, "STAGED", "Skipping staging.")
        with db.transaction() as s:  # no step (and no legal move) leads to STAGING_JOB: no other job sits there
            s.execute(update(Job).where(Job.id == job_id).values(status="STAGING_JOB"))
        stall = _wait(
            "the stall",
            lambda: [e for e in service.history(job_id) if e["description"].startswith("No progress for ")],
            IDLE_FACTOR * STALL + 40,
        )  # nothing of its run runs (queued): 4x the limit
        assert f"s in STAGING_JOB (the limit is {STALL:.0f} s" in stall[0]["description"], stall
        resumed = _wait(
            "the resume", lambda: [e for e in service.history(job_id) if "resumed (1 of" in e["description"]], 40
        )
        assert "Lifecycle run ended by airjobs: no progress for" in resumed[0]["description"], resumed
        run = admin.get(f"/dags/{DAG}/dagRuns/{job_id}").json()
        assert run["state"] == "queued", run  # the new run, its stage task done already
        assert _tis_states(admin, job_id)["stage"] == "success"
        job = _wait_status(service, job_id, TERMINAL, IDLE_FACTOR * STALL + 40)
        assert job["status"] == "FAILED" and "also after its lifecycle run was restarted" in job["message"], job
        assert [e["status"] for e in service.history(job_id)] == [
            "PENDING",
            "STAGED",
            "STAGING_JOB",
            "STAGING_JOB",
            "FAILED",
        ]
        _wait("the run to end", lambda: admin.get(f"/dags/{DAG}/dagRuns/{job_id}").json()["state"] == "failed", 20)
    finally:
        admin.patch(f"/dags/{DAG}", json={"is_paused": False})


def _tis_states(admin, run_id: str) -> dict[str, str | None]:
    r = admin.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")
    return {t["task_id"]: t["state"] for t in r.json()["task_instances"]}


def _triggerer_group() -> int:
    return int((VAR / "run" / "triggerer.pid").read_text())


def test_a_job_that_ends_while_the_triggerer_is_frozen_is_completed(service, admin, gated, gates):
    job_id, pid = _deferred_running(service, admin, gated, "frozen")
    group = _triggerer_group()
    os.killpg(group, signal.SIGSTOP)
    try:
        (gates / "frozen").touch()
        _wait("the job's process to end", lambda: not process_alive(pid), 15)
        job = _wait_status(service, job_id, TERMINAL, 90)
        assert job["status"] == "FINISHED", job
        notes = [e for e in service.history(job_id) if "the reconciler" in (e["description"] or "")]
        assert len(notes) == 1 and "triggerer" in notes[0]["description"], service.history(job_id)
        _once(service, job_id)
        assert not _resumes(service, job_id)
    finally:
        os.killpg(group, signal.SIGCONT)
    before = service.history(job_id)
    # thawed: the old trigger fires into nothing, and deferred jobs are watched by the triggerer again
    later, _ = _deferred_running(service, admin, gated, "thawed")
    (gates / "thawed").touch()
    assert _wait_status(service, later, TERMINAL, 60)["status"] == "FINISHED"
    assert not [e for e in service.history(later) if "the reconciler" in (e["description"] or "")]
    assert service.history(job_id) == before
    run = admin.get(f"/dags/{DAG}/dagRuns/{job_id}").json()
    assert run["state"] == "success", run
    assert _triggerer_group() == group  # the same triggerer, frozen and thawed, not a restarted one
