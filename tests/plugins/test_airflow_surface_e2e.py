"""Airflow's own surface (issue 10): a job user (role ``Agave User``) reaches jobs only through the facade, and
whatever an administrator does to a lifecycle run in Airflow leaves its job truthful.

* As alice, every ``/api/v2`` and ``/ui`` endpoint that shows or changes the lifecycle DAG, its runs, task
  instances, logs, XComs, the audit log, connections, variables or pools is refused, with the facade's token
  and with one from Airflow's own ``/auth/token``; nothing changed behind the refusals.
* As admin: a run marked failed ends its job FAILED, marked success or deleted ends it KILLED, the remote
  process is gone and history says who did it (the reconciler, ``airjobs_airflow.reconcile``); clearing a
  run leaves a finished job as it was and a running job consistent (nothing staged or submitted twice); a
  run triggered by hand touches no job unless it is that job's run (run id = job id), and there is only one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import USERS, install_app, process_alive

pytestmark = pytest.mark.e2e

DAG = "airjobs_lifecycle"
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")
CHECKOUT = Path(__file__).resolve().parents[2]


def _airflow_login(service, user: str, password: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{service.base}/auth/token", json={"username": user, "password": password or USERS[user][0]}, timeout=30
    )


@pytest.fixture(scope="module")
def admin(service):
    with httpx.Client(
        base_url=f"{service.base}/api/v2", timeout=60, headers={"Authorization": f"Bearer {service.airflow_token()}"}
    ) as c:
        yield c


@pytest.fixture(scope="module")
def apps(service):
    install_app("sfsleep", "sleep 300 &\nwait\n")
    install_app("sfnap", "sleep 12\necho rested > rested.txt\n")
    install_app("sfquick", "echo quick > quick.txt\n")
    return {"sleep": "sfsleep-1.0", "nap": "sfnap-1.0", "quick": "sfquick-1.0"}


def _submit(service, app: str, user: str = "alice") -> str:
    with service.client(user) as c:
        r = c.post("/jobs/v2", json={"name": "surface", "appId": app, "archive": False})
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _wait_status(service, job_id: str, wanted: tuple[str, ...], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (job := service.job(job_id))["status"] not in wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {job['status']}, not {wanted}, after {timeout}s"
        time.sleep(0.3)
    return job


def _running(service, app: str, user: str = "alice") -> tuple[str, int]:
    """A job RUNNING on demo-fork and the pid of its process (group)."""
    job_id = _submit(service, app, user)
    job = _wait_status(service, job_id, ("RUNNING", *TERMINAL), 60)
    assert job["status"] == "RUNNING", job
    pid = int(job["localId"])
    assert process_alive(pid)
    return job_id, pid


def _run(admin, run_id: str) -> dict:
    r = admin.get(f"/dags/{DAG}/dagRuns/{run_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _wait_run(admin, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (run := _run(admin, run_id))["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {run['state']} after {timeout}s"
        time.sleep(0.5)
    return run


def _tis(admin, run_id: str) -> dict[str, dict]:
    r = admin.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")
    assert r.status_code == 200, r.text
    return {t["task_id"]: t for t in r.json()["task_instances"]}


def _wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        assert time.monotonic() < deadline, f"the job's process {pid} is still running"
        time.sleep(0.2)


def _kill(service, job_id: str) -> None:
    with service.client("admin") as c:
        c.post(f"/jobs/v2/{job_id}", json={"action": "kill"})


# ---------------------------------------------------------------- a job user


def _probes(bob_job: str, file_token: str) -> list[tuple[str, str, dict | None]]:
    run = f"/api/v2/dags/{DAG}/dagRuns/{bob_job}"
    ti = f"{run}/taskInstances/stage"
    get = [
        "/api/v2/dags",
        f"/api/v2/dags/{DAG}",
        f"/api/v2/dags/{DAG}/details",
        f"/api/v2/dags/{DAG}/tasks",
        f"/api/v2/dags/{DAG}/tasks/stage",
        f"/api/v2/dags/{DAG}/dagRuns",
        "/api/v2/dags/~/dagRuns",
        run,
        f"{run}/upstreamAssetEvents",
        f"{run}/taskInstances",
        "/api/v2/dags/~/dagRuns/~/taskInstances",
        f"/api/v2/dags/{DAG}/dagRuns/~/taskInstances",
        ti,
        f"{ti}/tries",
        f"{ti}/tries/1",
        f"{ti}/dependencies",
        f"{ti}/logs/1",
        f"{ti}/xcomEntries",
        f"{ti}/xcomEntries/return_value",
        "/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries",
        "/api/v2/dags/~/dagRuns/~/hitlDetails",
        "/api/v2/eventLogs",
        f"/api/v2/eventLogs?dag_id={DAG}",
        "/api/v2/connections",
        "/api/v2/connections/airjobs-demo-storage-storage",
        "/api/v2/variables",
        "/api/v2/pools",
        "/api/v2/pools/default_pool",
        f"/api/v2/dagSources/{DAG}",
        "/api/v2/dagStats",
        "/api/v2/dagWarnings",
        "/api/v2/importErrors",
        f"/api/v2/dags/{DAG}/dagVersions",
        f"/api/v2/backfills?dag_id={DAG}",
        "/api/v2/dagTags",
        "/api/v2/assets",
        "/api/v2/assets/events",
        "/api/v2/config",
        "/api/v2/jobs",
        "/api/v2/plugins",
        "/api/v2/providers",
        # the UI's own endpoints
        "/ui/dags",
        f"/ui/dags?dag_ids={DAG}",
        f"/ui/dags/{DAG}/latest_run",
        f"/ui/grid/structure/{DAG}",
        f"/ui/grid/runs/{DAG}",
        f"/ui/grid/ti_summaries/{DAG}?run_ids={bob_job}",
        f"/ui/gantt/{DAG}/{bob_job}",
        f"/ui/calendar/{DAG}",
        "/ui/dashboard/historical_metrics_data?start_date=2020-01-01T00:00:00Z",
        "/ui/dashboard/dag_stats",
        f"/ui/dags/{DAG}/dagRuns/{bob_job}/stats",
        "/ui/dependencies",
        f"/ui/structure/structure_data?dag_id={DAG}",
        f"/ui/backfills?dag_id={DAG}",
        "/ui/connections/hook_meta",
        f"/ui/dags/{DAG}/dagRuns/{bob_job}/deadlines",
        f"/ui/dags/{DAG}/deadlineAlerts",
        f"/ui/next_run_assets/{DAG}",
        f"/ui/pending_partitioned_dag_run/{DAG}",
        # FAB's users and roles
        "/auth/fab/v1/users",
        "/auth/fab/v1/users/bob",
        "/auth/fab/v1/roles",
        "/auth/fab/v1/permissions",
    ]
    change = [
        ("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": True}),
        ("PATCH", f"/api/v2/dags?dag_id_pattern={DAG}", {"is_paused": True}),
        ("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"job_id": bob_job}}),
        ("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None}),
        ("PATCH", run, {"state": "failed"}),
        ("PATCH", run, {"note": "alice was here"}),
        (
            "PATCH",
            f"/api/v2/dags/{DAG}/dagRuns",
            {"actions": [{"action": "update", "entities": [{"dag_run_id": bob_job, "state": "failed"}]}]},
        ),
        ("POST", f"{run}/clear", {"dry_run": False}),
        ("POST", f"/api/v2/dags/{DAG}/clearDagRuns", {"dry_run": False, "dag_runs": [{"dag_run_id": bob_job}]}),
        ("POST", "/api/v2/dags/~/dagRuns/list", {}),
        ("POST", "/api/v2/dags/~/dagRuns/~/taskInstances/list", {}),
        ("PATCH", ti, {"new_state": "failed"}),
        (
            "PATCH",
            f"{run}/taskInstances",
            {"actions": [{"action": "update", "entities": [{"task_id": "stage", "new_state": "failed"}]}]},
        ),
        ("POST", f"/api/v2/dags/{DAG}/clearTaskInstances", {"dry_run": False, "dag_run_id": bob_job}),
        ("POST", f"{ti}/xcomEntries", {"key": "alice", "value": "x"}),
        ("DELETE", ti, None),
        ("DELETE", run, None),
        ("PUT", f"/api/v2/parseDagFile/{file_token}", None),
        (
            "POST",
            "/api/v2/backfills",
            {"dag_id": DAG, "from_date": "2024-01-01T00:00:00Z", "to_date": "2024-01-02T00:00:00Z"},
        ),
        ("POST", "/api/v2/connections", {"connection_id": "alice-conn", "conn_type": "ssh", "host": "localhost"}),
        (
            "PATCH",
            "/api/v2/connections/airjobs-demo-storage-storage",
            {"connection_id": "airjobs-demo-storage-storage", "conn_type": "ssh", "host": "evil"},
        ),
        ("POST", "/api/v2/variables", {"key": "alice-var", "value": "x"}),
        ("POST", "/api/v2/pools", {"name": "alice-pool", "slots": 1}),
        ("PATCH", "/api/v2/pools/default_pool", {"name": "default_pool", "slots": 1}),
        ("PATCH", "/auth/fab/v1/users/alice", {"username": "alice", "roles": [{"name": "Admin"}]}),
        ("POST", "/auth/fab/v1/roles", {"name": "alice-role", "actions": []}),
        ("DELETE", f"/api/v2/dags/{DAG}", None),
    ]
    return [("GET", p, None) for p in get] + change


def test_a_job_user_sees_and_changes_nothing_of_airflow(service, admin, apps):
    bob_job = _submit(service, apps["quick"], "bob")
    assert _wait_status(service, bob_job, TERMINAL)["status"] == "FINISHED"
    _wait_run(admin, bob_job)
    file_token = admin.get(f"/dags/{DAG}").json().get("file_token") or "x"
    runs_before = admin.get(f"/dags/{DAG}/dagRuns", params={"limit": 1}).json()["total_entries"]

    login = _airflow_login(service, "alice")  # a job user may get an Airflow token: it grants nothing more
    assert login.status_code in (200, 201), login.text
    tokens = {"facade": service.token("alice"), "airflow": login.json()["access_token"]}
    leaks, answers = [], {}
    for kind, token in tokens.items():
        with httpx.Client(base_url=service.base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            for method, path, body in _probes(bob_job, file_token):
                r = c.request(method, path, json=body) if body is not None else c.request(method, path)
                answers.setdefault(r.status_code, []).append(f"{method} {path}")
                if r.status_code not in (401, 403, 404) or bob_job in r.text:
                    leaks.append(f"{kind} {method} {path} -> {r.status_code} {r.text[:200]}")
            menus = c.get("/ui/auth/menus")  # the UI's menu: nothing of Airflow's own
            if menus.status_code == 200 and set(menus.json().get("authorized_menu_items") or []) - {"Docs"}:
                leaks.append(f"{kind} GET /ui/auth/menus -> {menus.text[:300]}")
            assert c.get("/jobs/v2").status_code == 200  # the facade still works with either token
            assert c.get(f"/jobs/v2/{bob_job}").status_code in (403, 404)
    print("answers:", json.dumps({k: len(v) for k, v in answers.items()}), json.dumps(answers.get(404, [])))
    assert not leaks, "\n".join(leaks)

    # nothing changed behind the refusals
    dag = admin.get(f"/dags/{DAG}").json()
    assert dag["is_paused"] is False
    assert admin.get(f"/dags/{DAG}/dagRuns", params={"limit": 1}).json()["total_entries"] == runs_before
    run = _run(admin, bob_job)
    assert run["state"] == "success" and not run.get("note")
    assert {t["state"] for t in _tis(admin, bob_job).values()} == {"success"}
    assert admin.get("/connections/alice-conn").status_code == 404
    assert admin.get("/variables/alice-var").status_code == 404
    assert admin.get("/pools/alice-pool").status_code == 404
    assert admin.get("/pools/default_pool").json()["slots"] != 1
    assert service.job(bob_job)["status"] == "FINISHED"


def test_make_user_adds_a_job_user_and_changes_a_password(service):
    env = {**os.environ, "AIRJOBS_VAR": os.environ["AIRJOBS_VAR"], "AIRJOBS_PORT": os.environ["AIRJOBS_PORT"]}
    make = ["make", "-s", "-o", str(CHECKOUT / ".venv" / ".installed")]  # the venv as it is: no pip install here
    for password in ("dave-pw-1", "dave:pw-2"):
        r = subprocess.run(
            [*make, "user", "NAME=dave", f"PASSWORD={password}"],
            cwd=CHECKOUT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    assert "updated the password of user dave (roles: Agave User)" in r.stdout, r.stdout
    assert _airflow_login(service, "dave", "dave-pw-1").status_code == 401
    login = _airflow_login(service, "dave", "dave:pw-2")
    assert login.status_code in (200, 201), login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    with httpx.Client(base_url=service.base, headers=headers, timeout=60) as c:
        assert c.get("/jobs/v2").status_code == 200  # a job user: the facade, and nothing of Airflow
        assert c.get(f"/api/v2/dags/{DAG}").status_code == 403
        assert c.get("/api/v2/dags/~/dagRuns").status_code == 403
    r = subprocess.run([*make, "user", "NAME=dave"], cwd=CHECKOUT, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make user" in r.stderr


# ---------------------------------------------------------------- an administrator


def _last_event(service, job_id: str) -> dict:
    return service.history(job_id)[-1]


def _wait_ti(admin, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (state := _tis(admin, run_id)[task_id]["state"]) not in states:
        assert time.monotonic() < deadline, _tis(admin, run_id)[task_id]
        time.sleep(0.05)
    return state


def test_a_run_marked_failed_fails_its_job(service, admin, apps):
    job_id, pid = _running(service, apps["sleep"])
    try:
        _wait_ti(admin, job_id, "monitor", ("deferred",))  # the job is watched from the triggerer
        r = admin.patch(f"/dags/{DAG}/dagRuns/{job_id}", json={"state": "failed"})
        assert r.status_code == 200 and r.json()["state"] == "failed", r.text
        job = _wait_status(service, job_id, TERMINAL, 60)
        assert job["status"] == "FAILED", job
        last = _last_event(service, job_id)
        assert last["status"] == "FAILED" and last["createdBy"] == "admin", last
        assert "Lifecycle run marked failed in Airflow by admin while the job was RUNNING" in last["description"]
        _wait_gone(pid)
    finally:
        _kill(service, job_id)


def test_a_run_marked_success_kills_its_job(service, admin, apps):
    job_id, pid = _running(service, apps["sleep"])
    try:
        # while the monitor still checks the job in its worker (the first 1.5 s): Airflow stops the task with
        # SIGTERM, which also killed the `ps` of its check; that once read as "the process ended" (FAILED by
        # airjobs, the process left running)
        monitor = _wait_ti(admin, job_id, "monitor", ("running", "deferred"))
        r = admin.patch(f"/dags/{DAG}/dagRuns/{job_id}", json={"state": "success"})
        print("monitor was", monitor, "when the run was marked success")
        assert r.status_code == 200 and r.json()["state"] == "success", r.text
        job = _wait_status(service, job_id, TERMINAL, 60)
        assert job["status"] == "KILLED", job
        last = _last_event(service, job_id)
        assert last["createdBy"] == "admin", last
        assert "Lifecycle run marked success in Airflow by admin while the job was RUNNING" in last["description"]
        assert "killed" in last["description"]
        _wait_gone(pid)
    finally:
        _kill(service, job_id)


def test_deleting_the_run_of_a_running_job_is_refused_or_kills_it(service, admin, apps):
    job_id, pid = _running(service, apps["sleep"])
    try:
        r = admin.delete(f"/dags/{DAG}/dagRuns/{job_id}")  # Airflow refuses to delete a running run
        assert r.status_code == 409, r.text
        time.sleep(3)
        assert service.job(job_id)["status"] == "RUNNING" and process_alive(pid)
        # but one bulk request may queue it and delete it
        r = admin.patch(
            f"/dags/{DAG}/dagRuns",
            json={
                "actions": [
                    {"action": "update", "entities": [{"dag_run_id": job_id, "state": "queued"}]},
                    {"action": "delete", "entities": [job_id]},
                ]
            },
        )
        assert r.status_code == 200 and r.json()["delete"]["success"] == [f"{DAG}.{job_id}"], r.text
        assert admin.get(f"/dags/{DAG}/dagRuns/{job_id}").status_code == 404
        job = _wait_status(service, job_id, TERMINAL, 60)
        assert job["status"] == "KILLED", job
        last = _last_event(service, job_id)
        assert last["createdBy"] == "admin", last
        assert "Lifecycle run deleted in Airflow by admin while the job was RUNNING" in last["description"]
        _wait_gone(pid)
    finally:
        _kill(service, job_id)


def test_clearing_a_finished_run_leaves_its_job_as_it_was(service, admin, apps):
    job_id = _submit(service, apps["quick"])
    assert _wait_status(service, job_id, TERMINAL)["status"] == "FINISHED"
    _wait_run(admin, job_id)
    before = service.job(job_id), service.history(job_id)
    r = admin.post(f"/dags/{DAG}/dagRuns/{job_id}/clear", json={"dry_run": False})
    assert r.status_code == 200, r.text
    assert _run(admin, job_id)["state"] in ("queued", "running")
    run = _wait_run(admin, job_id)
    assert run["state"] == "success", run
    assert _tis(admin, job_id)["stage"]["try_number"] == 2  # the tasks did run again, and skipped
    time.sleep(3)  # what the reconciler might do
    assert (service.job(job_id), service.history(job_id)) == before


def test_clearing_a_running_run_keeps_its_job_consistent(service, admin, apps):
    job_id, pid = _running(service, apps["nap"])
    # as soon as the monitor runs (in its worker, then deferred): a task Airflow has queued but not started
    # yet meets an Airflow 3.3 race on clear (the old try's executor event fails the new one)
    monitor = _wait_ti(admin, job_id, "monitor", ("running", "deferred"))
    r = admin.post(f"/dags/{DAG}/dagRuns/{job_id}/clear", json={"dry_run": False})
    assert r.status_code == 200, r.text
    print("monitor was", monitor, "when the run was cleared")
    job = _wait_status(service, job_id, TERMINAL, 90)
    assert job["status"] == "FINISHED" and job["localId"] == str(pid), job
    statuses = [e["status"] for e in service.history(job_id)]
    for once in ("PENDING", "STAGED", "SUBMITTING", "QUEUED", "CLEANING_UP", "FINISHED"):
        assert statuses.count(once) == 1, statuses  # nothing staged, submitted or finished twice
    assert _wait_run(admin, job_id)["state"] == "success"
    assert _tis(admin, job_id)["submit"]["try_number"] == 2


def _trigger(admin, body: dict) -> str:
    r = admin.post(f"/dags/{DAG}/dagRuns", json={"logical_date": None, **body})
    assert r.status_code == 200, r.text
    return r.json()["dag_run_id"]


def _refused(admin, run_id: str, words: str) -> None:
    run = _wait_run(admin, run_id)
    tis = _tis(admin, run_id)
    assert run["state"] == "failed" and tis["stage"]["state"] == "failed", (run, tis)
    assert all(tis[t]["state"] == "upstream_failed" for t in ("submit", "monitor", "archive", "notify")), tis
    log = admin.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/stage/logs/1")
    assert words in log.text, log.text[-2000:]


def test_a_run_triggered_by_hand_touches_no_job(service, admin, apps):
    from airjobs import store, submission

    finished = _submit(service, apps["quick"])
    assert _wait_status(service, finished, TERMINAL)["status"] == "FINISHED"
    running, pid = _running(service, apps["sleep"])
    pending, _ = store.create_job(
        submission.build_job({"name": "never launched", "appId": apps["quick"], "archive": False}, "alice"),
        created_by="alice",
    )
    try:
        before = {j: (service.job(j), service.history(j)) for j in (finished, running, pending.id)}
        _refused(admin, _trigger(admin, {}), "names no job")
        for job_id in (finished, running, pending.id):
            _refused(admin, _trigger(admin, {"conf": {"job_id": job_id}}), f"is not the lifecycle run of job {job_id}")
        _refused(
            admin,
            _trigger(admin, {"dag_run_id": "not-a-job", "conf": {"job_id": "not-a-job"}}),
            "there is no job not-a-job",
        )
        assert {j: (service.job(j), service.history(j)) for j in before} == before
        assert process_alive(pid)

        # a run with the job's own id is that job's one run: it runs the job; a second one cannot exist
        run_id = _trigger(admin, {"dag_run_id": pending.id, "conf": {"job_id": pending.id}})
        assert run_id == pending.id
        r = admin.post(
            f"/dags/{DAG}/dagRuns",
            json={"logical_date": None, "dag_run_id": pending.id, "conf": {"job_id": pending.id}},
        )
        assert r.status_code == 409, r.text
        assert _wait_status(service, pending.id, TERMINAL)["status"] == "FINISHED"
        assert [e["status"] for e in service.history(pending.id)].count("SUBMITTING") == 1
    finally:
        _kill(service, running)
        _kill(service, pending.id)


def test_the_audit_log_names_the_admin(service, admin, apps):
    """What the reconciler reads: Airflow writes who patched or deleted a run before it acts."""
    job_id = _submit(service, apps["quick"])
    assert _wait_status(service, job_id, TERMINAL)["status"] == "FINISHED"
    run = _wait_run(admin, job_id)
    assert admin.patch(f"/dags/{DAG}/dagRuns/{job_id}", json={"note": "seen"}).status_code == 200
    r = admin.get("/eventLogs", params={"dag_id": DAG, "run_id": job_id, "event": "patch_dag_run"})
    assert r.status_code == 200, r.text
    entries = r.json()["event_logs"]
    assert entries and entries[-1]["owner"] == "admin" and json.loads(entries[-1]["extra"])["note"] == "seen"
    assert run["state"] == "success" and service.job(job_id)["status"] == "FINISHED"
