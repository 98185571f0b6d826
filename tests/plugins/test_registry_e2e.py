"""/systems/v2 and /apps/v2 through the real service, by a non-admin user, with Airflow Connections."""

from __future__ import annotations

import copy
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

# an Agave execution system description as the Agave docs show it: credentials inline
AGAVE_SYSTEM = {
    "id": "bob.cluster.example.org",
    "name": "Bob's cluster",
    "status": "UP",
    "type": "EXECUTION",
    "description": "My example system used for ssh execution",
    "site": "example.org",
    "executionType": "HPC",
    "scratchDir": "/scratch",
    "workDir": "/work",
    "login": {
        "host": "login.example.org",
        "port": 22,
        "protocol": "SSH",
        "auth": {"username": "bob", "password": "changeit", "type": "PASSWORD"},
    },
    "storage": {
        "host": "login.example.org",
        "port": 22,
        "protocol": "SFTP",
        "rootDir": "/",
        "homeDir": "/home/bob",
        "auth": {"username": "bob", "password": "changeit", "type": "PASSWORD"},
    },
    "maxSystemJobs": 100,
    "maxSystemJobsPerUser": 10,
    "scheduler": "SLURM",
    "environment": "",
    "startupScript": "./bashrc",
    "queues": [
        {
            "name": "normal",
            "maxJobs": 100,
            "maxUserJobs": 10,
            "maxNodes": 128,
            "maxMemoryPerNode": "2GB",
            "maxProcessorsPerNode": 16,
            "maxRequestedTime": "24:00:00",
            "customDirectives": "",
            "default": True,
        }
    ],
}

AGAVE_APP = {
    "name": "bob-wc",
    "version": "1.00",
    "executionSystem": "bob.cluster.example.org",
    "executionType": "HPC",
    "parallelism": "SERIAL",
    "deploymentPath": "bob/apps/wc-1.00",
    "deploymentSystem": "demo-storage",
    "templatePath": "wrapper.sh",
    "testPath": "test/test.sh",
    "defaultQueue": "normal",
    "defaultNodeCount": 1,
    "defaultProcessorsPerNode": 1,
    "defaultMaxRunTime": "01:00:00",
    "label": "Word count",
    "modules": ["load python"],
    "inputs": [
        {
            "id": "query1",
            "value": {"default": "", "required": True, "visible": True},
            "details": {"label": "File to count words in"},
            "semantics": {"minCardinality": 1, "maxCardinality": 1},
        }
    ],
    "parameters": [
        {
            "id": "printLongestLine",
            "value": {"default": False, "type": "bool", "visible": True, "required": False},
            "details": {"label": "Print the longest line", "argument": "-L ", "showArgument": True},
        }
    ],
    "outputs": [],
}


def _airflow_connection(service, conn_id: str) -> int:
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    return httpx.get(f"{service.base}/api/v2/connections/{conn_id}", headers=headers).status_code


def test_non_admin_registers_an_agave_system_and_app(service):
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=AGAVE_SYSTEM)
        assert r.status_code == 201, r.text
        doc = r.json()["result"]
        assert doc["owner"] == "bob" and doc["login"]["connectionId"] == "airjobs-bob.cluster.example.org-login"
        assert "password" not in r.text and "changeit" not in r.text
        assert _airflow_connection(service, doc["login"]["connectionId"]) == 200
        assert _airflow_connection(service, doc["storage"]["connectionId"]) == 200

        r = c.post("/apps/v2", json=AGAVE_APP)
        assert r.status_code == 201, r.text
        assert r.json()["result"]["id"] == "bob-wc-1.00"
        assert "bob-wc-1.00" in [a["id"] for a in c.get("/apps/v2").json()["result"]]
        assert c.get("/apps/v2/bob-wc-1.00").status_code == 200
    with service.client("alice") as c:  # private to bob
        assert c.get("/apps/v2/bob-wc-1.00").status_code == 404
        assert c.get("/systems/v2/bob.cluster.example.org").status_code == 404
        assert (
            c.post(
                "/systems/v2",
                json={**AGAVE_SYSTEM, "login": {**AGAVE_SYSTEM["login"], "auth": None, "connectionId": "x"}},
            ).status_code
            == 403
        )
        r = c.post("/jobs/v2", json={"name": "x", "appId": "bob-wc-1.00", "inputs": {"query1": "a.txt"}})
        assert r.status_code == 400 and "No app found matching bob-wc-1.00" in r.json()["message"]


def test_registering_with_a_missing_connection_is_a_clear_400(service):
    body = copy.deepcopy(AGAVE_SYSTEM)
    body["id"] = "bob.other.example.org"
    body["login"] = {"host": "h.example.org", "protocol": "SSH", "connectionId": "no-such-connection"}
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=body)
    assert r.status_code == 400
    assert "no Airflow Connection named 'no-such-connection'" in r.json()["message"]


def test_an_existing_connection_is_used_by_name(service):
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    conn = {
        "connection_id": f"bob-ssh-{time.time_ns()}",
        "conn_type": "ssh",
        "host": "h.example.org",
        "login": "bob",
        "port": 22,
        "extra": '{"airjobs_users": ["bob"]}',
    }  # an admin assigns it to bob
    assert httpx.post(f"{service.base}/api/v2/connections", json=conn, headers=headers).status_code == 201
    body = copy.deepcopy(AGAVE_SYSTEM)
    body.update(id="bob.third.example.org")
    body["login"] = {"host": "h.example.org", "protocol": "SSH", "connectionId": conn["connection_id"]}
    body["storage"] = {"host": "h.example.org", "protocol": "SFTP", "connectionId": conn["connection_id"]}
    with service.client("alice") as c:  # assigned to bob, not to alice
        r = c.post("/systems/v2", json={**body, "id": "alice.borrowed.example.org"})
        assert r.status_code == 400 and "that you may use" in r.json()["message"], r.text
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=body)
        assert r.status_code == 201, r.text
        r = c.put("/systems/v2/bob.third.example.org", json={**body, "description": "updated"})
        assert r.status_code == 200 and r.json()["result"]["description"] == "updated"
        assert c.delete("/systems/v2/bob.third.example.org").status_code == 200
        assert c.get("/systems/v2/bob.third.example.org").status_code == 404


def test_default_storage_per_user_and_app_rules(service):
    with service.client("bob") as c:
        r = c.put("/systems/v2/demo-storage", json={"action": "setDefault"})
        assert r.status_code == 200, r.text
        systems = {s["id"]: s for s in c.get("/systems/v2", params={"type": "STORAGE"}).json()["result"]}
        assert systems["demo-storage"]["default"] is True and "demo-fork" not in systems
        r = c.post(
            "/apps/v2",
            json={
                **AGAVE_APP,
                "name": "on-fork",
                "executionSystem": "demo-fork",
                "executionType": "CLI",
                "defaultQueue": None,
            },
        )
        assert r.status_code == 403 and "service's own host" in r.json()["message"]
        r = c.post("/apps/v2", json={**AGAVE_APP, "version": "x"})
        assert r.status_code == 400 and "version" in r.json()["message"]
        r = c.post("/apps/v2", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "malformed JSON" in r.json()["message"]
