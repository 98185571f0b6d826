"""Kill (D1, D2) through the REST facade on the local FORK system: the job's process group dies, the job ends
STOPPED, its DAG run ends without a task left running; bad requests get Agave errors."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from conftest import process_alive

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sleeper(service):
    from conftest import install_app

    install_app("sleeper", "sleep 120 &\nwait\n")
    return "sleeper-1.0"


def _run(service, app, user="alice") -> str:
    with service.client(user) as c:
        r = c.post("/jobs/v2", json={"name": "sleepy", "appId": app, "archive": False})
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
        deadline = time.monotonic() + 60
        while c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    return job_id


def _run_state(service, job_id) -> str:
    r = httpx.get(
        f"{service.base}/api/v2/dags/airjobs_lifecycle/dagRuns/{job_id}",
        headers={"Authorization": f"Bearer {service.airflow_token()}"},
        timeout=30,
    )
    return r.json()["state"]


@pytest.mark.parametrize("how", ["action", "cancel"])
def test_kill_a_running_fork_job(service, sleeper, how):
    job_id = _run(service, sleeper)
    with service.client() as c:
        pid = int(c.get(f"/jobs/v2/{job_id}").json()["result"]["localId"])
        assert process_alive(pid)
        if how == "action":
            r = c.post(f"/jobs/v2/{job_id}", data={"action": "stop"})  # the CLI's form body
        else:
            r = c.post(f"/jobs/v2/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        job = c.get(f"/jobs/v2/{job_id}").json()["result"]
        assert job["status"] == "STOPPED"
        last = c.get(f"/jobs/v2/{job_id}/history").json()["result"][-1]
        assert last["status"] == "STOPPED" and last["createdBy"] == "alice"
        assert "cancelled by user" in last["description"]
    deadline = time.monotonic() + 10
    while process_alive(pid):  # the wrapper and its children (the whole process group) are gone
        assert time.monotonic() < deadline, "the job's process survived the kill"
        time.sleep(0.1)
    deadline = time.monotonic() + 60
    while (state := _run_state(service, job_id)) not in ("success", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state == "success"  # the monitor and the rest were skipped, nothing failed or kept running


def test_kill_refusals(service, sleeper):
    job_id = _run(service, sleeper)
    try:
        with service.client("bob") as c:
            assert (
                c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 404
            )  # not his: it does not exist for him
        with service.client() as c:
            r = c.post(f"/jobs/v2/{job_id}", json={"action": "explode"})
            assert r.status_code == 400 and "Invalid action" in r.json()["message"]
            r = c.post(f"/jobs/v2/{job_id}", json={})
            assert r.status_code == 400 and r.json()["message"] == "No action specified"
            assert c.post("/jobs/v2/0000-nope-0001-007/cancel").status_code == 404
            assert c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] == "RUNNING"
    finally:
        with service.client() as c:
            assert c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 200
    with service.client() as c:  # killing a job that already ended changes nothing
        r = c.post(f"/jobs/v2/{job_id}/cancel")
        assert r.status_code == 200
        history = c.get(f"/jobs/v2/{job_id}/history").json()["result"]
        assert [e["status"] for e in history].count("STOPPED") == 1


@pytest.fixture(scope="module")
def slow_web():
    """An HTTP server that trickles a 100 MB file (64 KiB every 0.1 s) and notes when a client hangs up."""
    import http.server
    import threading

    hung_up = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(100 * 1024 * 1024))
            self.end_headers()
            try:
                for _ in range(1600):
                    self.wfile.write(b"x" * 65536)
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                hung_up.set()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Trickle)  # allowed: AIRJOBS_EGRESS_ALLOW
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}/big.bin", hung_up
    server.shutdown()


def test_kill_during_staging_stops_the_transfer(service, slow_web):
    from airjobs import registry

    url, hung_up = slow_web
    with service.client() as c:
        r = c.post("/jobs/v2", json={"name": "slow input", "appId": "wc-1.0", "inputs": {"inputFile": url}})
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
        deadline = time.monotonic() + 60
        while (job := c.get(f"/jobs/v2/{job_id}").json()["result"])["status"] != "STAGING_INPUTS":
            assert time.monotonic() < deadline, job["status"]
            time.sleep(0.1)
        time.sleep(1)  # some bytes on their way
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "cancel"}).status_code == 200
        assert c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] == "STOPPED"
    assert hung_up.wait(10), "the transfer kept running after the kill"
    deadline = time.monotonic() + 60
    while (state := _run_state(service, job_id)) not in ("success", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    root = registry.get_system("demo-fork")["storage"]["rootDir"]
    assert not os.path.exists(f"{root}{job['outputPath']}/big.bin"), "a partial input was left behind"
    with service.client() as c:
        history = [e["status"] for e in c.get(f"/jobs/v2/{job_id}/history").json()["result"]]
    assert history[-1] == "STOPPED" and "STAGED" not in history and "SUBMITTING" not in history
