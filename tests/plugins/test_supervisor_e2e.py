"""The supervisor (``python -m airjobs.service run``, the ``service`` fixture) restarts what it started (issue 11,
item 2): the embedded PostgreSQL after ``kill -9`` of its postmaster, and a killed scheduler after it ended
what the dead one left (its LocalExecutor workers, which hold its database session idle in transaction, and
its task processes); a FORK job's own processes are not the scheduler's and live on. Each test leaves the
service healthy for the tests after it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import psycopg2
import pytest

from airjobs import db
from conftest import VAR, install_app, process_alive

pytestmark = [pytest.mark.e2e, pytest.mark.faults]  # restarts or freezes parts of the service: runs last

DEMO = json.loads((Path(__file__).resolve().parents[2] / "include/examples/demo-job.json").read_text())
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")


def _log() -> str:
    return (VAR / "service-test.log").read_text(errors="replace")


def _pidfile(name: str) -> int | None:
    try:
        return int((VAR / "run" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _postmaster() -> int | None:
    try:
        return int((VAR / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(pgid, sid, start time) of a live process, None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else (int(fields[2]), int(fields[3]), int(fields[19]))


def _session(sid: int) -> dict[int, tuple[int, int, int]]:
    found = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) and st[1] == sid:
            found[int(d)] = st
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stuck_transactions(older_than: float) -> list[tuple]:
    """Sessions of Airflow's database that sit idle in a transaction for longer than ``older_than`` s."""
    conn = psycopg2.connect(host=str((VAR / "pg").resolve()), dbname="postgres", user="postgres", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, backend_start, now() - state_change, left(query, 120) FROM pg_stat_activity "
                "WHERE datname = 'airflow' AND state = 'idle in transaction' "
                "AND now() - state_change > make_interval(secs => %s)",
                (older_than,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def _until(what: str, check, timeout: float, every: float = 0.5, explain=None):
    """``check()``'s first true result within ``timeout`` s; else fail, with ``explain()`` when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, psycopg2.Error, OSError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s" + (f"\n{explain()}" if explain else "")
        time.sleep(every)


def _healthy(service) -> bool:
    health = httpx.get(f"{service.base}/api/v2/monitor/health", timeout=10).json()
    return all(
        (health.get(k) or {}).get("status") == "healthy"
        for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")
    )


def _submit(service, body: dict) -> str:
    def post():
        with service.client("alice") as c:
            r = c.post("/jobs/v2", json=body)
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]

    return _until("submitting a job", post, 60)


def _job(service, job_id: str) -> dict | None:
    with service.client("alice") as c:
        r = c.get(f"/jobs/v2/{job_id}")
    return r.json()["result"] if r.status_code == 200 else None


def _ended(service, job_id: str, timeout: float) -> dict:
    return _until(
        f"job {job_id} ending", lambda: (j := _job(service, job_id)) and j["status"] in TERMINAL and j, timeout, every=1
    )


def _diagnose(service, job_id: str) -> str:
    """What a job that did not end is doing: its status and history, and its lifecycle run's task instances."""
    lines = [f"job {job_id}:"]
    try:
        lines[0] += f" {(_job(service, job_id) or {}).get('status')}"
        for e in service.history(job_id):
            lines.append(f"  {e.get('created')} {e.get('status')} {e.get('description')}")
        token = service.airflow_token()
        r = httpx.get(
            f"{service.base}/api/v2/dags/airjobs_lifecycle/dagRuns/{job_id}/taskInstances",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        for ti in r.json().get("task_instances", []):
            lines.append(f"  task {ti.get('task_id')}: {ti.get('state')} try {ti.get('try_number')}")
    except (httpx.HTTPError, ValueError, KeyError) as e:
        lines.append(f"  (no more: {e!r})")
    return "\n".join(lines)


def test_a_killed_database_is_restarted_and_the_service_works_again(service):
    service.token("alice")  # logging in needs the database: get the token while it is up
    old = _postmaster()
    assert old and process_alive(old)
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    seen = []

    def jobs_listed():
        with service.client("alice") as c:
            seen.append(c.get("/jobs/v2").status_code)
        return seen[-1] == 200

    _until("the facade answering /jobs/v2 again", jobs_listed, 60)
    back = time.monotonic() - killed
    new = _postmaster()
    assert new and new != old and process_alive(new)
    assert f"[airjobs] postgres (pid {old}) exited; restarting" in _log()
    assert f"[airjobs] postgres restarted (pid {new})" in _log()
    _until("all components healthy again", lambda: _healthy(service), 90)
    db.engine().dispose()  # this test process's own pool (the tests after this one use it) holds dead connections

    job_id = _submit(service, DEMO)
    job = _ended(service, job_id, 180)
    assert job["status"] == "FINISHED", job
    print(f"facade answered again {back:.1f}s after the kill; answers meanwhile: {seen}")


def test_a_killed_scheduler_is_restarted_after_its_workers_and_task_processes_are_gone(service):
    install_app(
        "supnap",
        "sleep ${seconds}\n",
        parameters=[
            {"id": "seconds", "value": {"type": "number", "default": 6, "required": False, "validator": "^[0-9]{1,3}$"}}
        ],
    )
    long_job = _submit(
        service, {"name": "sup-long", "appId": "supnap-1.0", "archive": False, "parameters": {"seconds": 45}}
    )
    jobs = [
        _submit(service, {"name": f"sup-{i}", "appId": "supnap-1.0", "archive": True, "parameters": {"seconds": 6}})
        for i in range(6)
    ]
    _until("the long job running", lambda: (_job(service, long_job) or {}).get("status") == "RUNNING", 90)
    job_pid = int(_job(service, long_job)["localId"])
    assert process_alive(job_pid)

    old = _pidfile("scheduler")
    assert old and process_alive(old)

    def busy():  # the scheduler's session has workers and at least one task process (a group of its own)
        members = _session(old)
        tasks = [p for p, (pgid, _, _) in members.items() if pgid != old]
        workers = [p for p, (pgid, _, _) in members.items() if pgid == old and p != old]
        return members if tasks and workers else None

    members = _until("a task process of the scheduler's session", busy, 90, every=0.1)
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    described = {p: _cmdline(p) for p in members}
    assert any("LocalExecutor" in c for c in described.values()), described

    new = _until("a new scheduler", lambda: (p := _pidfile("scheduler")) != old and p, 60, every=0.05)
    survivors = {p: described[p] for p, st in members.items() if p != old and _stat(p) == st}
    assert not survivors, f"processes of the dead scheduler's session outlived it: {survivors}"
    assert not _session(old)
    assert process_alive(job_pid), "the FORK job's own process (a session of its own) was killed"
    log = _log()
    assert "[airjobs] scheduler exited with -9; restarting" in log
    assert "[airjobs] scheduler left " in log
    print(f"new scheduler {new} {time.monotonic() - killed:.1f}s after the kill; ended {len(members) - 1} processes")

    time.sleep(5)
    assert not _stuck_transactions(older_than=5), "a session of the dead scheduler is still idle in transaction"

    # the restarted scheduler is not blocked by rows the dead one locked: a new job goes through at once
    fresh = _submit(service, DEMO)
    assert _ended(service, fresh, 120)["status"] == "FINISHED"
    _until("all components healthy again", lambda: _healthy(service), 90)

    # The jobs in flight all end. Their outcome is not this test's. A task whose process died with the scheduler
    # is taken up again by one of Airflow's own timers: its heartbeat timeout (150 s), the reset of a dead
    # scheduler's orphans (120 s + the 60 s check interval), and as the backstop for a task left queued
    # ``[scheduler] task_queued_timeout`` (600 s); each is followed by a retry. So all of them end within
    # 600 s + a retry and the job's remaining run. 420 s per job was too short once on CI's loaded machine, for
    # a reason that run did not show: a job that still does not end is now described (history, task states).
    in_flight = [long_job, *jobs]
    outcomes: dict[str, str] = {}

    def all_ended() -> bool:
        for j in in_flight:
            if j not in outcomes and (job := _job(service, j)) and job["status"] in TERMINAL:
                outcomes[j] = job["status"]
        return len(outcomes) == len(in_flight)

    _until(
        "the jobs in flight ending",
        all_ended,
        900,
        every=2,
        explain=lambda: "\n".join(_diagnose(service, j) for j in in_flight if j not in outcomes),
    )
    print("jobs in flight ended:", outcomes)
