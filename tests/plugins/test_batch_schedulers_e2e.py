"""PBS, SGE, LSF and HTCondor through the whole service: submit, the shared poller, exit codes, kill. Their
command-line tools are the fakes of tests/fakes on the real loopback SSH host (replaying the documented output
and really running the jobs), put on PATH by each system's startupScript. Skipped without the test hosts."""

from __future__ import annotations

import time

import pytest

from airjobs import registry
from conftest import install_probe_app, ssh_connection

pytestmark = pytest.mark.e2e

SCHEDULERS = {"PBS": "pbs", "SGE": "sge", "LSF": "lsf", "CONDOR": "condor"}


@pytest.fixture(scope="module")
def fake_systems(service):
    infra = ssh_connection(service, "airjobs-test-ssh")
    host, port = infra["AIRJOBS_SSH_HOST"], int(infra["AIRJOBS_SSH_PORT"])
    home = f"/home/{infra['AIRJOBS_SSH_USER']}"
    apps = {}
    for scheduler, fake in SCHEDULERS.items():
        system_id = f"fake-{fake}.infra"
        registry.put_system(
            {
                "id": system_id,
                "name": f"fake {scheduler}",
                "type": "EXECUTION",
                "executionType": "HPC",
                "scheduler": scheduler,
                "public": True,
                "workDir": f"/{fake}-work",
                "startupScript": f"~/fakes/{fake}/env.sh",
                "login": {"protocol": "SSH", "host": host, "port": port, "connectionId": "airjobs-test-ssh"},
                "storage": {
                    "protocol": "SFTP",
                    "host": host,
                    "port": port,
                    "connectionId": "airjobs-test-ssh",
                    "rootDir": home,
                    "homeDir": "/",
                },
                "queues": [
                    {
                        "name": "normal",
                        "default": True,
                        "maxJobs": 100,
                        "maxUserJobs": 100,
                        "maxNodes": 1,
                        "maxProcessorsPerNode": 1,
                        "maxMemoryPerNode": "1GB",
                        "maxRequestedTime": "01:00:00",
                    }
                ],
            },
            "admin",
        )
        apps[scheduler] = install_probe_app(f"{fake}-probe", system_id, "normal")
    return apps | {"HOME": home}


def _submit(service, app: str, **fields) -> str:
    with service.client() as c:
        r = c.post("/jobs/v2", json={"name": "fake probe", "appId": app, "archive": False, **fields})
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def test_jobs_run_and_fail_with_their_exit_code_on_each_fake_scheduler(service, fake_systems):
    jobs = {}
    for scheduler in SCHEDULERS:
        jobs[scheduler, 0] = _submit(service, fake_systems[scheduler], parameters={"seconds": 2})
        jobs[scheduler, 3] = _submit(service, fake_systems[scheduler], parameters={"exitCode": 3})
    for (scheduler, code), job_id in jobs.items():
        job = service.wait_terminal(job_id, timeout=180)
        assert job["exitCode"] == code, (scheduler, job)
        assert job["status"] == ("FINISHED" if code == 0 else "FAILED"), (scheduler, job.get("message"))
        assert job["localId"], scheduler
        if code == 0:
            with service.client() as c:
                statuses = [e["status"] for e in c.get(f"/jobs/v2/{job_id}/history").json()["result"]]
            assert statuses.index("QUEUED") < statuses.index("RUNNING") < statuses.index("CLEANING_UP"), scheduler
            wrapper_out = f"{fake_systems['HOME']}{job['outputPath']}/where.txt"
            assert open(wrapper_out).read().startswith("on "), scheduler


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_kill_reaches_each_fake_scheduler(service, fake_systems, scheduler):
    job_id = _submit(service, fake_systems[scheduler], parameters={"seconds": 120})
    deadline = time.monotonic() + 90
    with service.client() as c:
        while (job := c.get(f"/jobs/v2/{job_id}").json()["result"])["status"] != "RUNNING":
            assert job["status"] not in ("FAILED", "FINISHED"), job
            assert time.monotonic() < deadline, job["status"]
            time.sleep(0.3)
        assert c.post(f"/jobs/v2/{job_id}/cancel").status_code == 200
    job = service.wait_terminal(job_id, timeout=30)
    assert job["status"] == "STOPPED"
    last = service.client().get(f"/jobs/v2/{job_id}/history").json()["result"][-1]["description"]
    assert f"job {job['localId']} killed" in last, last
