"""Jobs on the real single-node SLURM of .ci/infra-up.sh, reached over the real loopback OpenSSH server:
inputs staged over SFTP, sbatch, one shared squeue/sacct poll per cycle in the triggerer, kill, run-time limit.
Skipped unless AIRJOBS_INFRA_ENV names the infra.env that .ci/infra-up.sh wrote (`make test` as root)."""

from __future__ import annotations

import hashlib
import subprocess
import time

import pytest

from airjobs import registry
from conftest import install_probe_app, ssh_connection

pytestmark = pytest.mark.e2e

SYSTEM, STORAGE, APP = "slurm.infra", "sftp.infra", "slurm-probe-1.0"


def slurm(infra: dict, *args: str) -> str:
    env = {"SLURM_CONF": infra["AIRJOBS_SLURM_CONF"], "PATH": "/usr/bin:/bin"}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def slurm_system(service):
    infra = ssh_connection(service, "airjobs-test-ssh")
    host, port = infra["AIRJOBS_SSH_HOST"], int(infra["AIRJOBS_SSH_PORT"])
    home = f"/home/{infra['AIRJOBS_SSH_USER']}"
    common = {
        "login": {"protocol": "SSH", "host": host, "port": port, "connectionId": "airjobs-test-ssh"},
        "storage": {
            "protocol": "SFTP",
            "host": host,
            "port": port,
            "connectionId": "airjobs-test-ssh",
            "rootDir": home,
            "homeDir": "/",
        },
    }
    registry.put_system(
        {
            "id": STORAGE,
            "name": "SFTP on the test host",
            "type": "STORAGE",
            "public": True,
            "publishedPaths": ["/inputs"],
            "storage": common["storage"],
        },
        "admin",
    )
    partitions = infra["AIRJOBS_SLURM_PARTITIONS"].split(",")
    registry.put_system(
        {
            "id": SYSTEM,
            "name": "single-node SLURM",
            "type": "EXECUTION",
            "executionType": "HPC",
            "scheduler": "SLURM",
            "public": True,
            **common,
            "workDir": "/slurm-work",
            "startupScript": "~/fakes/slurm-count/env.sh",
            "queues": [
                {
                    "name": "debug",
                    "mappedName": partitions[0],
                    "default": True,
                    "maxJobs": 1000,
                    "maxUserJobs": 1000,
                    "maxNodes": 1,
                    "maxProcessorsPerNode": 1,
                    "maxMemoryPerNode": "1GB",
                    "maxRequestedTime": "01:00:00",
                },
                {
                    "name": "nowhere",
                    "mappedName": "no-such-partition",
                    "maxJobs": 10,
                    "maxUserJobs": 10,
                    "maxNodes": 1,
                    "maxProcessorsPerNode": 1,
                    "maxMemoryPerNode": "1GB",
                    "maxRequestedTime": "01:00:00",
                },
            ],
        },
        "admin",
    )
    install_probe_app("slurm-probe", SYSTEM, "debug")
    # an input file on the SFTP storage system
    subprocess.run(["install", "-d", "-o", infra["AIRJOBS_SSH_USER"], f"{home}/inputs", f"{home}/gates"], check=True)
    with open(f"{home}/inputs/poem.txt", "w") as f:
        f.write("the quick brown fox jumps over the lazy dog\n")
    return infra | {"HOME": home}


def _submit(service, user="alice", **fields) -> str:
    body = {"name": fields.pop("name", "slurm probe"), "appId": APP, "archive": False, **fields}
    with service.client(user) as c:
        r = c.post("/jobs/v2", json=body)
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _history(service, job_id, user="alice") -> list[dict]:
    with service.client(user) as c:
        return c.get(f"/jobs/v2/{job_id}/history").json()["result"]


def _wait_status(service, job_id, wanted, timeout=60, user="alice") -> dict:
    deadline = time.monotonic() + timeout
    with service.client(user) as c:
        while time.monotonic() < deadline:
            job = c.get(f"/jobs/v2/{job_id}").json()["result"]
            if job["status"] in wanted:
                return job
            time.sleep(0.3)
    raise AssertionError(f"job {job_id} never reached {wanted}: {job['status']}")


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A real HTTP server on loopback (127.0.0.2, which AIRJOBS_EGRESS_ALLOW lets through) serving one text file."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("web")
    (root / "web.txt").write_text("one two three four five\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()


def test_a_job_with_sftp_and_http_inputs_runs_through_slurm(service, slurm_system, web):
    job_id = _submit(
        service,
        inputs={"textFile": [f"agave://{STORAGE}/inputs/poem.txt", f"{web}/web.txt"]},
        parameters={"seconds": 3},
    )
    job = service.wait_terminal(job_id, timeout=120)
    assert job["status"] == "FINISHED", job.get("message")
    assert job["exitCode"] == 0 and job["localId"].isdigit()
    statuses = [e["status"] for e in _history(service, job_id)]
    assert statuses.index("QUEUED") < statuses.index("RUNNING") < statuses.index("CLEANING_UP")
    work = slurm_system["HOME"] + job["outputPath"]
    assert open(f"{work}/poem.txt.words").read().strip() == "9"
    assert open(f"{work}/web.txt.words").read().strip() == "5"
    from airjobs import store  # what was staged, with sizes and checksums, is on the job

    staged = {s["source"]: s for s in store.get_job(job_id).staged_inputs}
    web_bytes = b"one two three four five\n"
    assert staged[f"{web}/web.txt"]["size"] == len(web_bytes)
    assert staged[f"{web}/web.txt"]["sha256"] == hashlib.sha256(web_bytes).hexdigest()
    assert staged[f"agave://{STORAGE}/inputs/poem.txt"]["size"] == 44
    assert f"SLURM job {job['localId']}" in open(f"{work}/where.txt").read()
    # SLURM itself ran it: its accounting knows the job and its exit code
    assert slurm(slurm_system, "sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode", "-j", job["localId"]).split(
        "|"
    )[1:] == ["COMPLETED", "0:0\n"]


def test_an_app_exiting_3_ends_failed_with_exit_code_3(service, slurm_system):
    job = service.wait_terminal(_submit(service, parameters={"exitCode": 3}), timeout=120)
    assert job["status"] == "FAILED" and job["exitCode"] == 3, job


def test_a_submission_slurm_rejects_fails_with_sbatchs_message(service, slurm_system):
    job = service.wait_terminal(_submit(service, batchQueue="nowhere"), timeout=120)
    assert job["status"] == "FAILED"
    assert "sbatch: error" in job["message"] and "partition" in job["message"].lower(), job["message"]


def test_kill_while_running_stops_the_job_and_cancels_it_in_slurm(service, slurm_system):
    job_id = _submit(service, parameters={"seconds": 120})
    job = _wait_status(service, job_id, {"RUNNING"})
    assert job["localId"] in slurm(slurm_system, "squeue", "-h", "-o", "%i")
    with service.client("bob") as c:  # someone else's job: it does not exist for him
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 404
    with service.client() as c:
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "kill"})
        assert r.status_code == 200, r.text
    job = service.wait_terminal(job_id, timeout=30)
    assert job["status"] == "STOPPED"
    deadline = time.monotonic() + 20
    while job["localId"] in slurm(slurm_system, "squeue", "-h", "-o", "%i"):
        assert time.monotonic() < deadline, "the SLURM job is still in squeue"
        time.sleep(0.5)
    assert "CANCELLED" in slurm(slurm_system, "sacct", "-n", "-P", "-X", "-o", "State", "-j", job["localId"])


def test_max_run_time_exceeded_is_killed_by_the_service(service, slurm_system):
    job_id = _submit(service, parameters={"seconds": 60}, maxRunTime="00:00:05")
    job = service.wait_terminal(job_id, timeout=60)
    assert job["status"] == "KILLED", job
    assert "maximum run time" in _history(service, job_id)[-1]["description"]
    assert job["localId"] not in slurm(slurm_system, "squeue", "-h", "-o", "%i")


def _airflow_count(service, **params) -> int:
    import httpx

    r = httpx.get(
        f"{service.base}/api/v2/dags/airjobs_lifecycle/dagRuns/~/taskInstances",
        params={"limit": 1, **params},
        headers={"Authorization": f"Bearer {service.airflow_token()}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["total_entries"]


def _squeue_calls(home: str, since_ms: int) -> list[list[str]]:
    """The job ids of each squeue call since ``since_ms``, from the counting wrapper on the SSH host."""
    calls = []
    try:
        lines = open(f"{home}/fakes/slurm-count/calls.log").read().splitlines()
    except FileNotFoundError:
        return calls
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) >= since_ms and parts[1].endswith("squeue"):
            ids = parts[parts.index("-j") + 1].split(",") if "-j" in parts else []
            calls.append(ids)
    return calls


def test_200_running_jobs_hold_no_worker_slot_and_share_one_squeue_per_cycle(service, slurm_system):
    n, gate = 200, f"g{time.time_ns()}"
    try:
        _many(service, slurm_system, n, gate)
    finally:  # never leave jobs waiting in SLURM
        open(f"{slurm_system['HOME']}/gates/{gate}", "w").close()


def _many(service, slurm_system, n: int, gate: str) -> None:
    ids = [_submit(service, name=f"many {i}", parameters={"gate": gate}) for i in range(n)]
    deadline = time.monotonic() + 600
    with service.client() as c:
        while True:  # every job RUNNING in SLURM, seen by the poller, its monitor deferred
            statuses = [c.get(f"/jobs/v2/{i}/status").json()["result"]["status"] for i in ids]
            deferred = _airflow_count(service, task_id="monitor", state="deferred")
            if statuses.count("RUNNING") == n and deferred >= n:
                break
            assert not {"FAILED", "STOPPED", "KILLED"} & set(statuses), statuses
            assert time.monotonic() < deadline, (statuses.count("RUNNING"), deferred)
            time.sleep(2)
    # while they run: no task of theirs holds a worker slot
    window_start = int(time.time() * 1000)
    time.sleep(8)
    assert _airflow_count(service, state="running") == 0
    assert _airflow_count(service, task_id="monitor", state="deferred") >= n
    running = slurm(slurm_system, "squeue", "-h", "-t", "RUNNING", "-o", "%i").split()
    assert len(running) >= n
    # one squeue per poll cycle for the system, each covering every one of its waiting jobs
    calls = _squeue_calls(slurm_system["HOME"], window_start)
    assert 1 <= len(calls) <= 8 / 1 + 2, len(calls)
    assert all(len(set(call)) >= n for call in calls), [len(call) for call in calls]
    # release them all: every one ends FINISHED
    open(f"{slurm_system['HOME']}/gates/{gate}", "w").close()
    for job_id in ids:
        job = service.wait_terminal(job_id, timeout=600)
        assert job["status"] == "FINISHED", (job_id, job.get("message"))


def test_outputs_of_a_slurm_job_over_sftp_while_running_and_after(service, slurm_system):
    job_id = _submit(service, inputs={"textFile": f"agave://{STORAGE}/inputs/poem.txt"}, parameters={"seconds": 8})
    _wait_status(service, job_id, {"RUNNING"})
    with service.client() as c:
        deadline = time.monotonic() + 30
        while (r := c.get(f"/jobs/v2/{job_id}/outputs/media/where.txt")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)
        assert c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] == "RUNNING"
        text = r.text
        assert text.startswith("on ") and "SLURM job" in text
        part = c.get(f"/jobs/v2/{job_id}/outputs/media/where.txt", headers={"Range": "bytes=3-5"})
        assert part.status_code == 206 and part.content == text.encode()[3:6]
        tail = c.get(f"/jobs/v2/{job_id}/outputs/media/poem.txt", headers={"Range": "bytes=-4"})
        assert tail.status_code == 206 and tail.content == b"dog\n"
        assert c.get(f"/jobs/v2/{job_id}/outputs/media/poem.txt", headers={"Range": "bytes=44-"}).status_code == 416
        listing = {f["name"]: f for f in c.get(f"/jobs/v2/{job_id}/outputs/listings").json()["result"]}
        assert listing["poem.txt"]["length"] == 44 and listing["poem.txt"]["type"] == "file"
    job = service.wait_terminal(job_id, timeout=120)
    assert job["status"] == "FINISHED"
    with service.client() as c:
        assert c.get(f"/jobs/v2/{job_id}/outputs/media/poem.txt.words").text.strip() == "9"
        assert c.head(f"/jobs/v2/{job_id}/outputs/media/poem.txt").headers["content-length"] == "44"
        assert c.get(f"/jobs/v2/{job_id}/outputs/media/../../../etc/passwd").status_code in (400, 404)


def test_archived_slurm_job_outputs_come_from_the_archive(service, slurm_system):
    job_id = _submit(service, inputs={"textFile": f"agave://{STORAGE}/inputs/poem.txt"}, archive=True)
    job = service.wait_terminal(job_id, timeout=120)
    assert job["status"] == "FINISHED", job.get("message")
    import os

    assert not os.path.exists(slurm_system["HOME"] + job["outputPath"]), "the work dir on the host is removed"
    with service.client() as c:
        listing = {f["name"]: f for f in c.get(f"/jobs/v2/{job_id}/outputs/listings").json()["result"]}
        assert {"poem.txt.words", "where.txt"} <= set(listing) and "slurm-probe.ipcexe" not in listing
        assert listing["where.txt"]["_links"]["system"]["href"].endswith(f"/systems/v2/{job['archiveSystem']}")
        words = c.get(f"/jobs/v2/{job_id}/outputs/media/poem.txt.words", headers={"Range": "bytes=0-0"})
        assert words.status_code == 206 and words.content == b"9"
