"""Isolation and sharing against the real service (issue 10): three users (alice, bob, carol; admin besides),
every attack as a test that fails if the attack works, and the positive paths that must keep working.

What the rule is: ``include/airjobs/access.py``. Each refused submission must leave no job row; each refused
read must serve no byte of the victim's data."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from airjobs import registry, store

pytestmark = pytest.mark.e2e

SECRET = "alice's private words that nobody else may read\n"


def _storage() -> Path:
    return Path(registry.get_system("demo-storage")["storage"]["rootDir"])


def _exec_root() -> Path:
    return Path(registry.get_system("demo-fork")["storage"]["rootDir"])


def _submit(c: httpx.Client, **fields) -> httpx.Response:
    body = {
        "name": "iso",
        "appId": "wc-1.0",
        "inputs": {"inputFile": "agave://demo-storage/samples/zen-of-python.txt"},
        **fields,
    }
    # json.dumps escapes lone surrogates (\ud800) as a client could send them; httpx's json= cannot encode them
    return c.post("/jobs/v2", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def victim(service):
    """alice's finished, archived demo job, her private file, and a job still running (work dir on demo-fork)."""
    (_storage() / "alice").mkdir(parents=True, exist_ok=True)
    (_storage() / "alice/secret.txt").write_text(SECRET)
    with service.client("alice") as c:
        r = _submit(c, inputs={"inputFile": "agave://demo-storage/alice/secret.txt"})  # her own data: fine
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
    job = service.wait_terminal(job_id)
    assert job["status"] == "FINISHED", job["message"]
    archive = _storage() / job["archivePath"]
    assert (archive / "counts.txt").exists()
    return {"job": job, "id": job_id, "archive": job["archivePath"], "counts": (archive / "counts.txt").read_text()}


def _refused(service, user: str, codes=(400, 403), **fields) -> str:
    before = store.count_jobs()
    with service.client(user) as c:
        r = _submit(c, **fields)
    assert r.status_code in codes, (fields, r.status_code, r.text)
    assert r.json()["status"] == "error"
    assert store.count_jobs() == before, "a refused submission wrote a job row"
    return r.json()["message"]


# ---------------------------------------------------------------- reading another user's files


READS = [
    "agave://demo-storage/{archive}/counts.txt",
    "agave://demo-storage//{archive}/counts.txt",
    "{archive}/counts.txt",
    "/{archive}/counts.txt",
    "agave://demo-storage/alice/secret.txt",
    "agave://demo-storage//alice/secret.txt",
    "agave://demo-storage/./alice/secret.txt",
    "agave://demo-storage//./alice//secret.txt",
    "alice/secret.txt",
    "agave://demo-storage/alice/",
    "agave://demo-storage/%61lice/secret.txt",
    "agave://demo-fork/work/alice/",
    "agave://demo-fork//work/alice/",
    "agave://demo-storage/apps/wc-1.0/wc.sh",
    "agave://demo-storage//apps/wc-1.0/wc.sh",
    "agave://demo-storage/bob/../alice/secret.txt",
    "agave://demo-storage/",
    "agave://demo-storage//",
]


@pytest.mark.parametrize("uri", READS)
def test_bob_cannot_stage_alices_files(service, victim, uri):
    _refused(service, "bob", inputs={"inputFile": uri.format(archive=victim["archive"])})


def test_a_link_in_bobs_home_into_alices_folder_is_refused_when_staging(service, victim):
    home = _storage() / "bob"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "to-alice"
    if not link.is_symlink():
        os.symlink(_storage() / "alice", link)
    with service.client("bob") as c:
        r = _submit(c, inputs={"inputFile": "agave://demo-storage/bob/to-alice/secret.txt"})
        assert r.status_code == 201, r.text  # the path is in his home: only the host knows where it leads
        job = service.wait_terminal(r.json()["result"]["id"], user="bob")
    assert job["status"] == "FAILED" and "Permission denied" in job["message"], job
    assert not list(_exec_root().glob("work/bob/*/secret.txt"))


def test_bob_cannot_use_alices_private_systems(service, victim, tmp_path):
    registry.put_system(
        {
            "id": "alice-private-store",
            "name": "alice's",
            "type": "STORAGE",
            "storage": {"protocol": "LOCAL", "rootDir": str(tmp_path), "homeDir": "/"},
        },
        "alice",
    )
    registry.put_system(
        {
            "id": "alice-private-sftp",
            "name": "alice's sftp",
            "type": "STORAGE",
            "storage": {
                "protocol": "SFTP",
                "host": "sftp.alice.example.org",
                "port": 22,
                "connectionId": "airjobs-alice-private-sftp-storage",
                "rootDir": "/",
                "homeDir": "/",
            },
        },
        "alice",
    )
    (tmp_path / "mine.txt").write_text(SECRET)
    for uri in (
        "agave://alice-private-store/mine.txt",
        "agave://alice-private-store//mine.txt",
        "sftp://sftp.alice.example.org/mine.txt",
        "sftp://alice@sftp.alice.example.org:22/mine.txt",
    ):
        _refused(service, "bob", inputs={"inputFile": uri})
    _refused(service, "bob", archiveSystem="alice-private-store", archivePath="bob/out")
    with service.client("alice") as c:  # alice may
        assert _submit(c, inputs={"inputFile": "agave://alice-private-store/mine.txt"}).status_code == 201


def test_bob_cannot_read_alices_job_through_any_endpoint(service, victim):
    job_id = victim["id"]
    with service.client("bob") as c:
        for path in (
            "",
            "/status",
            "/history",
            "/pems",
            "/pems/bob",
            "/outputs/listings",
            "/outputs/listings/counts.txt",
            "/outputs/media/counts.txt",
        ):
            r = c.get(f"/jobs/v2/{job_id}{path}")
            assert r.status_code == 404, (path, r.status_code)
            assert victim["counts"][:20] not in r.text
        assert job_id not in [j["id"] for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]]
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 404
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "ALL"}).status_code == 404
        assert c.delete(f"/jobs/v2/{job_id}/pems").status_code == 404


def test_alices_outputs_by_url_need_a_grant(service, victim):
    url = f"{service.base}/jobs/v2/{victim['id']}/outputs/media/counts.txt"
    _refused(service, "bob", inputs={"inputFile": url})
    _refused(service, "bob", inputs={"inputFile": url.replace("127.0.0.1", "localhost")})


# ---------------------------------------------------------------- writing into another user's folders


@pytest.mark.parametrize(
    "path",
    [
        "{archive}",
        "/{archive}",
        "alice/archive/jobs/x",
        "alice",
        "/alice/new",
        "samples",
        "samples/x",
        "apps/wc-1.0",
        "/apps",
        "bob/../alice/x",
        "/",
    ],
)
def test_bob_cannot_archive_into_others_folders(service, victim, path):
    before = (_storage() / victim["archive"] / "counts.txt").read_text()
    _refused(service, "bob", archivePath=path.format(archive=victim["archive"]))
    assert (_storage() / victim["archive"] / "counts.txt").read_text() == before


@pytest.mark.parametrize("path", ["/apps/wc-1.0", "apps/wc-1.0/sub", "/apps", "apps"])
def test_not_even_an_admin_archives_into_an_apps_deployment_folder(service, path):
    msg = _refused(service, "admin", archivePath=path)
    assert "deployment folder of app" in msg


def test_no_one_but_the_owner_changes_what_a_public_app_runs(service):
    from conftest import install_app

    root = install_app("tamper", "echo original > out.txt\n")
    with service.client("alice") as c:
        ok = c.post("/jobs/v2", json={"name": "t", "appId": "tamper-1.0", "archive": False})
        assert ok.status_code == 201
    assert service.wait_terminal(ok.json()["result"]["id"])["status"] == "FINISHED"
    (root / "apps/tamper-1.0/run.sh").write_text("touch /tmp/airjobs-tampered\n")  # however it got there
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json={"name": "t", "appId": "tamper-1.0", "archive": False}).json()["result"]["id"]
    job = service.wait_terminal(job_id)
    assert (
        job["status"] == "FAILED"
        and "assets of app tamper-1.0 changed" in job["message"]
        and "run.sh" in job["message"]
    )
    assert not Path("/tmp/airjobs-tampered").exists()


@pytest.mark.parametrize("deployment", ["/alice", "alice/apps/x", "/apps/wc-1.0", "samples/../alice"])
def test_bob_cannot_deploy_an_app_from_others_folders(service, deployment):
    app = {
        "name": "bob-steal",
        "version": "1.0",
        "executionSystem": "bob.nowhere.exec",
        "executionType": "CLI",
        "deploymentSystem": "demo-storage",
        "deploymentPath": deployment,
        "templatePath": "wc.sh",
    }
    registry.put_system(
        {
            "id": "bob.nowhere.exec",
            "name": "bob's",
            "type": "EXECUTION",
            "executionType": "CLI",
            "scheduler": "FORK",
            "login": {"protocol": "SSH", "host": "h.example.org", "port": 22, "connectionId": "x"},
            "storage": {
                "protocol": "SFTP",
                "host": "h.example.org",
                "port": 22,
                "connectionId": "x",
                "rootDir": "/",
                "homeDir": "/",
            },
            "queues": [{"name": "normal", "default": True}],
        },
        "bob",
    )
    with service.client("bob") as c:
        r = c.post("/apps/v2", json=app)
    assert r.status_code in (400, 403), r.text
    assert registry.get_app("bob-steal-1.0") is None


# ---------------------------------------------------------------- credentials


def _airflow(service) -> dict[str, str]:
    return {"Authorization": f"Bearer {service.airflow_token()}"}


def _system_naming(conn_id: str, sid: str) -> dict:
    return {
        "id": sid,
        "name": "borrowed",
        "type": "STORAGE",
        "storage": {
            "protocol": "SFTP",
            "host": "h.example.org",
            "port": 22,
            "connectionId": conn_id,
            "rootDir": "/",
            "homeDir": "/",
        },
    }


def test_credentials_stay_with_their_owner(service):
    alice_sys = {
        "id": f"alice-creds-{time.time_ns()}",
        "name": "alice's",
        "type": "STORAGE",
        "storage": {
            "protocol": "SFTP",
            "host": "h.example.org",
            "port": 22,
            "rootDir": "/",
            "homeDir": "/",
            "auth": {"type": "PASSWORD", "username": "alice", "password": "alice-secret"},
        },
    }
    with service.client("alice") as c:
        r = c.post("/systems/v2", json=alice_sys)
        assert r.status_code == 201, r.text
        conn_id = r.json()["result"]["storage"]["connectionId"]
    unassigned = f"admin-only-{time.time_ns()}"
    r = httpx.post(
        f"{service.base}/api/v2/connections",
        headers=_airflow(service),
        json={"connection_id": unassigned, "conn_type": "ssh", "host": "h.example.org", "login": "root"},
    )
    assert r.status_code == 201, r.text
    with service.client("bob") as c:
        for i, cid in enumerate((conn_id, unassigned, "smtp_default", "airflow_db")):
            r = c.post("/systems/v2", json=_system_naming(cid, f"bob-borrow-{i}-{time.time_ns()}"))
            assert r.status_code == 400 and "that you may use" in r.json()["message"], (cid, r.text)
        # nor by changing alice's system or a public one: PUT with inline auth must not write a Connection
        assert c.put(f"/systems/v2/{alice_sys['id']}", json=alice_sys).status_code == 404
        demo = registry.get_system("demo-storage")
        hijack = {
            **demo,
            "storage": {
                **demo["storage"],
                "protocol": "SFTP",
                "host": "evil.example.org",
                "auth": {"username": "x", "password": "y"},
            },
        }
        assert c.put("/systems/v2/demo-storage", json=hijack).status_code == 403
        assert (
            c.post(
                "/systems/v2",
                json={**alice_sys, "storage": {**alice_sys["storage"], "auth": {"username": "b", "password": "c"}}},
            ).status_code
            == 403
        )
    r = httpx.get(f"{service.base}/api/v2/connections/airjobs-demo-storage-storage", headers=_airflow(service))
    assert r.status_code == 404
    r = httpx.get(f"{service.base}/api/v2/connections/{conn_id}", headers=_airflow(service))
    assert r.json()["host"] == "h.example.org" and r.json()["login"] == "alice"
    with service.client("alice") as c:  # the owner still may
        r = c.post("/systems/v2", json=_system_naming(conn_id, f"alice-reuse-{time.time_ns()}"))
        assert r.status_code == 201, r.text


# ---------------------------------------------------------------- deleting what active jobs use


def test_deleting_an_app_or_system_with_active_jobs_is_a_409(service):
    from conftest import install_app

    install_app("busy", "sleep 60\n")
    registry.put_system({**registry.get_system("demo-fork"), "id": "busy-fork"}, "admin")
    app = {**registry.get_app("busy-1.0"), "name": "busy2", "executionSystem": "busy-fork"}
    registry.put_app(app, "admin")
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json={"name": "busy", "appId": "busy2-1.0", "archive": False}).json()["result"][
            "id"
        ]
    try:
        with service.client("admin") as c:
            r = c.delete("/apps/v2/busy2-1.0")
            assert r.status_code == 409 and job_id in r.json()["message"], r.text
            r = c.delete("/systems/v2/busy-fork")
            assert r.status_code == 409 and job_id in r.json()["message"], r.text
    finally:
        with service.client("alice") as c:
            c.post(f"/jobs/v2/{job_id}", json={"action": "kill"})
    assert service.wait_terminal(job_id)["status"] == "STOPPED"
    with service.client("admin") as c:
        assert c.delete("/apps/v2/busy2-1.0").status_code == 200


# ---------------------------------------------------------------- sharing (/pems) and the positive paths


def test_sharing_a_job_and_using_its_outputs_as_an_input_by_url(service, victim):
    job_id = victim["id"]
    with service.client("alice") as c:
        pems = c.get(f"/jobs/v2/{job_id}/pems").json()["result"]
        assert pems[0]["username"] == "alice" and pems[0]["permission"] == {"read": True, "write": True}
        r = c.post(f"/jobs/v2/{job_id}/pems", json={"username": "bob", "permission": "READ"})
        assert r.status_code == 201, r.text
        assert r.json()["result"]["permission"] == {"read": True, "write": False}
        assert r.json()["result"]["_links"]["self"]["href"].endswith(f"/jobs/v2/{job_id}/pems/bob")
    with service.client("bob") as c:
        assert c.get(f"/jobs/v2/{job_id}").status_code == 200
        assert job_id in [j["id"] for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]]
        assert c.get(f"/jobs/v2/{job_id}/outputs/media/counts.txt").text == victim["counts"]
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 403
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "ALL"}).status_code == 403
        url = f"{service.base}/jobs/v2/{job_id}/outputs/media/counts.txt"
        r = _submit(c, inputs={"inputFile": url})
        assert r.status_code == 201, r.text
        mine = service.wait_terminal(r.json()["result"]["id"], user="bob")
    assert mine["status"] == "FINISHED", mine
    staged = store.get_job(mine["id"]).staged_inputs
    assert staged[0]["size"] == len(victim["counts"].encode())
    with service.client("carol") as c:  # not shared with carol
        assert c.get(f"/jobs/v2/{job_id}").status_code == 404
        _refused(service, "carol", inputs={"inputFile": url})
    with service.client("alice") as c:  # revoke: bob loses it again
        assert c.delete(f"/jobs/v2/{job_id}/pems/bob").status_code == 200
        events = [e["status"] for e in c.get(f"/jobs/v2/{job_id}/history").json()["result"]]
        assert "PERMISSION_GRANT" in events and "PERMISSION_REVOKE" in events
    with service.client("bob") as c:
        assert c.get(f"/jobs/v2/{job_id}").status_code == 404


def test_pems_request_shapes_and_refusals(service, victim):
    job_id = victim["id"]
    with service.client("alice") as c:
        # the Agave CLI's jobs-pems-update: form-encoded permission to /pems/{user}
        r = c.post(f"/jobs/v2/{job_id}/pems/carol", data={"permission": "read_write"})
        assert r.status_code == 201 and r.json()["result"]["permission"] == {"read": True, "write": True}, r.text
        assert c.get(f"/jobs/v2/{job_id}/pems/carol").json()["result"]["permission"]["write"] is True
        r = c.post(f"/jobs/v2/{job_id}/pems", data={"username": "carol", "permission": "READ"})  # replaces
        assert r.status_code == 201 and r.json()["result"]["permission"] == {"read": True, "write": False}
        r = c.post(f"/jobs/v2/{job_id}/pems/carol", json={"permission": "BOGUS"})
        assert r.status_code == 400 and "Valid values are" in r.json()["message"]
        r = c.post(f"/jobs/v2/{job_id}/pems/carol", json={})
        assert r.status_code == 400 and "Missing permission field" in r.json()["message"]
        r = c.post(f"/jobs/v2/{job_id}/pems/nobody-{time.time_ns()}", json={"permission": "READ"})
        assert r.status_code == 404 and "No user found" in r.json()["message"]
        r = c.post(f"/jobs/v2/{job_id}/pems/alice", json={"permission": "NONE"})  # the owner keeps ALL
        assert r.status_code == 200 and r.json()["result"]["permission"] == {"read": True, "write": True}
        r = c.post(f"/jobs/v2/{job_id}/pems/carol", json={"permission": ""})  # empty revokes
        assert r.status_code == 200 and r.json()["result"]["permission"] == {"read": False, "write": False}
        c.post(f"/jobs/v2/{job_id}/pems/carol", json={"permission": "READ"})
        assert c.delete(f"/jobs/v2/{job_id}/pems").status_code == 200
        assert [p["username"] for p in c.get(f"/jobs/v2/{job_id}/pems").json()["result"]] == ["alice"]
    with service.client("carol") as c:
        assert c.get(f"/jobs/v2/{job_id}").status_code == 404


# ---------------------------------------------------------------- the permission matrix

ENDPOINTS = [  # (method, path, needs)
    ("GET", "", "read"),
    ("GET", "/status", "read"),
    ("GET", "/history", "read"),
    ("GET", "/pems", "read"),
    ("GET", "/pems/bob", "read"),
    ("GET", "/outputs/listings", "read"),
    ("GET", "/outputs/media/counts.txt", "read"),
    ("POST", "", "write"),
    ("POST", "/cancel", "write"),
    ("POST", "/pems/carol", "write"),
    ("DELETE", "/pems/carol", "write"),
]
VALUES = ["NONE", "READ", "WRITE", "EXECUTE", "READ_WRITE", "READ_EXECUTE", "WRITE_EXECUTE", "ALL"]


def _call(c: httpx.Client, method: str, url: str) -> int:
    if method == "GET":
        return c.get(url).status_code
    if method == "DELETE":
        return c.delete(url).status_code
    if url.endswith("/pems/carol"):
        return c.post(url, json={"permission": "NONE"}).status_code  # a change that leaves carol without rights
    return c.post(url, json={"action": "kill"} if not url.endswith("/cancel") else None).status_code


@pytest.mark.parametrize("value", VALUES)
def test_permission_matrix(service, victim, value):
    """alice owns the (finished) job, bob holds ``value``, carol nothing, admin everything: every job endpoint
    answers 200 where the value allows, 403 where bob may read but not change, 404 where he holds nothing."""
    job_id = victim["id"]
    with service.client("alice") as c:
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": value}).status_code in (200, 201)
    read = value in ("READ", "READ_WRITE", "READ_EXECUTE", "ALL")
    write = value in ("WRITE", "READ_WRITE", "WRITE_EXECUTE", "ALL")
    seen = {}
    for user in ("alice", "bob", "carol", "admin"):
        with service.client(user) as c:
            for method, path, _needs in ENDPOINTS:
                seen[(user, method, path)] = _call(c, method, f"/jobs/v2/{job_id}{path}")
    for method, path, needs in ENDPOINTS:
        ok = 200
        assert seen[("alice", method, path)] == ok, (value, "alice", method, path)
        assert seen[("admin", method, path)] == ok, (value, "admin", method, path)
        assert seen[("carol", method, path)] == 404, (value, "carol", method, path)
        allowed = read if needs == "read" else write
        expect = ok if allowed else (403 if needs == "write" and read else 404)
        assert seen[("bob", method, path)] == expect, (value, "bob", method, path, seen[("bob", method, path)])
    with service.client("bob") as c:
        listed = job_id in [j["id"] for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]]
    assert listed == read
    with service.client("alice") as c:
        c.delete(f"/jobs/v2/{job_id}/pems/bob")


# ---------------------------------------------------------------- found by the red-team pass


def test_a_deleted_systems_id_does_not_hand_its_connection_to_the_next_user(service):
    sid = f"reused-{time.time_ns()}"
    bob_sys = {
        "id": sid,
        "name": "bob's",
        "type": "STORAGE",
        "storage": {
            "protocol": "SFTP",
            "host": "bob.example.org",
            "port": 22,
            "rootDir": "/",
            "homeDir": "/",
            "auth": {"type": "PASSWORD", "username": "bob", "password": "bob-secret"},
        },
    }
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=bob_sys)
        assert r.status_code == 201, r.text
        conn_id = r.json()["result"]["storage"]["connectionId"]
        keep = _system_naming(conn_id, f"{sid}-2")  # a second system of bob's names that Connection
        assert c.post("/systems/v2", json=keep).status_code == 201
        assert c.delete(f"/systems/v2/{sid}").status_code == 200
    evil = {
        **bob_sys,
        "storage": {
            **bob_sys["storage"],
            "host": "evil.example.org",
            "auth": {"type": "PASSWORD", "username": "alice", "password": "x"},
        },
    }
    with service.client("alice") as c:
        r = c.post("/systems/v2", json=evil)
        assert r.status_code == 400 and "already exists" in r.json()["message"], r.text
    conn = httpx.get(f"{service.base}/api/v2/connections/{conn_id}", headers=_airflow(service)).json()
    assert conn["host"] == "bob.example.org" and conn["login"] == "bob"


def test_a_refused_registration_writes_no_connection(service):
    sid = f"refused-{time.time_ns()}"
    body = {
        "id": sid,
        "name": "x",
        "type": "STORAGE",
        "public": True,  # only admins publish: 403
        "storage": {
            "protocol": "SFTP",
            "host": "h.example.org",
            "port": 22,
            "rootDir": "/",
            "homeDir": "/",
            "auth": {"type": "PASSWORD", "username": "b", "password": "c"},
        },
    }
    with service.client("bob") as c:
        assert c.post("/systems/v2", json=body).status_code == 403
    r = httpx.get(f"{service.base}/api/v2/connections/airjobs-{sid}-storage", headers=_airflow(service))
    assert r.status_code == 404


@pytest.mark.parametrize(
    "host, port",
    [
        ("127.0.0.1", 5432),
        ("localhost", 22),
        ("0x7f000001", 8080),
        ("169.254.169.254", 22),
        ("10.0.0.1", 22),
        ("::1", 22),
    ],
)
def test_a_users_system_cannot_point_inside(service, host, port):
    body = {
        "id": f"inside-{time.time_ns()}",
        "name": "x",
        "type": "STORAGE",
        "storage": {
            "protocol": "SFTP",
            "host": host,
            "port": port,
            "rootDir": "/",
            "homeDir": "/",
            "auth": {"type": "PASSWORD", "username": "b", "password": "c"},
        },
    }
    with service.client("bob") as c:
        r = c.post("/systems/v2", json=body)
    assert r.status_code == 400 and "egress guard" in r.json()["message"], r.text


def test_archiving_through_a_link_into_another_users_folder_is_refused(service, victim):
    (_storage() / "bob").mkdir(parents=True, exist_ok=True)
    (_storage() / "bob/keep.txt").write_text("bob's\n")
    link = _storage() / "alice/to-bob"
    if not link.is_symlink():
        os.symlink(_storage() / "bob", link)
    with service.client("alice") as c:
        r = _submit(c, archivePath="alice/to-bob/stolen")
        assert r.status_code == 201, r.text
    job = service.wait_terminal(r.json()["result"]["id"])
    with service.client("alice") as c:
        history = [e["status"] for e in c.get(f"/jobs/v2/{job['id']}/history").json()["result"]]
    assert "ARCHIVING_FAILED" in history and "ARCHIVING_FINISHED" not in history
    assert not (_storage() / "bob/stolen").exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"appId": "wc\u0000"},
        {"appId": "wc\ud800"},
        {"archiveSystem": "\u0000"},
        {"archivePath": "alice/\ud800"},
        {"inputs": {"inputFile": "sftp://[x/a"}},
        {"inputs": {"inputFile": "agave://[x/a"}},
        {"nodeCount": 2**40},
        {"processorsPerNode": 2**31},
        {"name": "x\u0000y"},
        {"batchQueue": "\ud800"},
    ],
)
def test_odd_values_are_400_not_500(service, fields):
    _refused(service, "bob", codes=(400,), **fields)


def test_a_slow_validator_is_cut_short(service):
    from conftest import install_app

    install_app(
        "redos",
        "echo ${p}\n",
        parameters=[{"id": "p", "value": {"type": "string", "required": True, "validator": "^(a|aa)+$"}}],
    )
    started = time.monotonic()
    msg = _refused(service, "bob", codes=(400,), appId="redos-1.0", inputs={}, parameters={"p": "a" * 60 + "!"})
    assert "took too long" in msg and time.monotonic() - started < 10


def test_a_grant_uses_the_users_own_name(service, victim):
    job_id = victim["id"]
    with service.client("alice") as c:
        r = c.post(f"/jobs/v2/{job_id}/pems/BOB", json={"permission": "READ"})
        if r.status_code == 404:  # this FAB matches names exactly: nothing to canonicalise
            return
        assert r.json()["result"]["username"] == "bob"
    with service.client("bob") as c:
        assert c.get(f"/jobs/v2/{job_id}").status_code == 200
    with service.client("alice") as c:
        c.delete(f"/jobs/v2/{job_id}/pems/bob")


def test_changing_someone_elses_public_app_says_nothing_but_no(service):
    """PUT on another user's public app is a 403 before the description is validated: its validation
    messages would tell whether the owner's (private) systems exist and what they are."""
    probe = {**registry.get_app("wc-1.0"), "isPublic": False, "executionSystem": f"admin-secret-{time.time_ns()}"}
    with service.client("bob") as c:
        r = c.put("/apps/v2/wc-1.0", json=probe)
    assert r.status_code == 403 and "no system found" not in r.json()["message"], r.text
    assert registry.get_app("wc-1.0")["executionSystem"] == "demo-fork"
