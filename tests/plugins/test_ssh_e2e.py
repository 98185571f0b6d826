"""A non-admin user's own SSH system (the real OpenSSH server of .ci/infra-up.sh) and app, registered through
the REST API, run a job end to end: inputs staged over SFTP, FORK over SSH, outputs archived back.
Skipped unless AIRJOBS_INFRA_ENV names the infra.env that .ci/infra-up.sh wrote (`make test` as root)."""

from __future__ import annotations

import pwd
import shutil
import time
from pathlib import Path

import httpx
import pytest

from airjobs import registry

pytestmark = pytest.mark.e2e


def _infra() -> dict[str, str]:
    from conftest import read_infra

    return read_infra()


@pytest.fixture(scope="module")
def ssh_system(service):
    infra = _infra()
    conn_id = f"bob-infra-{time.time_ns()}"
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    conn = {
        "connection_id": conn_id,
        "conn_type": "ssh",
        "host": infra["AIRJOBS_SSH_HOST"],
        "port": int(infra["AIRJOBS_SSH_PORT"]),
        "login": infra["AIRJOBS_SSH_USER"],
        "extra": '{{"key_file": "{}", "no_host_key_check": true, "airjobs_users": ["bob"]}}'.format(
            infra["AIRJOBS_SSH_KEY"]
        ),
    }
    r = httpx.post(f"{service.base}/api/v2/connections", json=conn, headers=headers)
    assert r.status_code == 201, r.text
    home = f"/home/{infra['AIRJOBS_SSH_USER']}"
    system = {
        "id": "bob.infra.ssh",
        "name": "Bob's loopback host",
        "type": "EXECUTION",
        "executionType": "CLI",
        "scheduler": "FORK",
        "login": {
            "protocol": "SSH",
            "host": infra["AIRJOBS_SSH_HOST"],
            "port": int(infra["AIRJOBS_SSH_PORT"]),
            "connectionId": conn_id,
        },
        "storage": {
            "protocol": "SFTP",
            "host": infra["AIRJOBS_SSH_HOST"],
            "port": int(infra["AIRJOBS_SSH_PORT"]),
            "connectionId": conn_id,
            "rootDir": home,
            "homeDir": "/",
        },
        "workDir": "/airjobs-work",
        "queues": [{"name": "normal", "default": True}],
    }
    app = {k: v for k, v in registry.get_app("wc-1.0").items() if k not in ("id", "owner", "isPublic")}
    storage = Path(registry.get_system("demo-storage")["storage"]["rootDir"])  # bob's own copy, in his home
    shutil.copytree(storage / "apps/wc-1.0", storage / "bob/apps/wc-1.0", dirs_exist_ok=True)
    app.update(
        name="bob-remote-wc", executionSystem="bob.infra.ssh", defaultQueue="normal", deploymentPath="/bob/apps/wc-1.0"
    )
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=system)
        assert r.status_code == 201, r.text
        r = c.post("/apps/v2", json=app)
        assert r.status_code == 201, r.text
    return home


def test_non_admin_system_and_app_run_a_job_over_ssh(service, ssh_system):
    with service.client("bob") as c:
        r = c.post(
            "/jobs/v2",
            json={
                "name": "remote wc",
                "appId": "bob-remote-wc-1.0",
                "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
                "parameters": {"topN": 3},
            },
        )
        assert r.status_code == 201, r.text
        job = service.wait_terminal(r.json()["result"]["id"], user="bob")
        assert job["status"] == "FINISHED", job.get("message")
        assert job["outputPath"].startswith("/airjobs-work/bob/job-")
        history = [e["status"] for e in c.get(f"/jobs/v2/{job['id']}/history").json()["result"]]
        first = history.index("ARCHIVING")  # then one ARCHIVING event with progress per output
        assert (
            history[first - 1 :]
            == ["CLEANING_UP"] + ["ARCHIVING"] * (len(history) - first - 2) + ["ARCHIVING_FINISHED", "FINISHED"]
            and len(history) - first - 2 >= 3
        )
    storage = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
    counts = (storage / job["archivePath"] / "counts.txt").read_text().splitlines()
    assert len(counts) == 3 and counts[0].split() == ["10", "is"]
    # archived: the outputs live in the archive now, the work directory on the SSH host is gone
    assert not Path(ssh_system + job["outputPath"]).exists()


def test_remote_exit_code_ends_failed(service, ssh_system):
    with service.client("bob") as c:
        r = c.post(
            "/jobs/v2",
            json={
                "name": "remote exit",
                "appId": "bob-remote-wc-1.0",
                "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
                "parameters": {"exitCode": 3},
            },
        )
        assert r.status_code == 201, r.text
    job = service.wait_terminal(r.json()["result"]["id"], user="bob")
    assert job["status"] == "FAILED" and job["exitCode"] == 3
    # not archived (D5): the work directory stays; the job really ran on the SSH host, as that host's user
    pid_file = Path(ssh_system + job["outputPath"]) / "remote-exit.pid"
    assert pwd.getpwuid(pid_file.stat().st_uid).pw_name == _infra()["AIRJOBS_SSH_USER"]
