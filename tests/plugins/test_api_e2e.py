"""End to end through the real service: HTTP facade -> Airflow DAG run -> FORK process -> Agave states.

Runs against the api-server, scheduler, dag-processor and triggerer started by the ``service`` fixture on
the embedded PostgreSQL; Airflow is not mocked anywhere.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource

from airjobs import registry, store
from airjobs.statuses import TERMINAL

DEMO = json.loads(
    (__import__("pathlib").Path(__file__).resolve().parents[2] / "include/examples/demo-job.json").read_text()
)
HAPPY_PATH = [
    "PENDING",
    "PROCESSING_INPUTS",
    "STAGING_INPUTS",
    "STAGING_INPUTS",
    "STAGED",
    "SUBMITTING",
    "QUEUED",
    "RUNNING",
    "CLEANING_UP",
    "ARCHIVING",
    "ARCHIVING_FINISHED",
    "FINISHED",
]
TASKS = ["stage", "submit", "monitor", "archive", "notify"]

pytestmark = pytest.mark.e2e


def _dag_run(service, job_id: str) -> tuple[dict, list[dict]]:
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    with httpx.Client(base_url=service.base, headers=headers, timeout=60) as c:
        deadline = time.monotonic() + 60
        while True:  # the run's own state lands a scheduler loop after the job's last status
            run = c.get(f"/api/v2/dags/airjobs_lifecycle/dagRuns/{job_id}")
            assert run.status_code == 200, run.text
            if run.json()["state"] in ("success", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        tis = c.get(f"/api/v2/dags/airjobs_lifecycle/dagRuns/{job_id}/taskInstances")
        assert tis.status_code == 200, tis.text
    return run.json(), tis.json()["task_instances"]


def test_demo_job_runs_to_finished_as_a_dag_run(service):
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json=DEMO)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "success" and body["version"]
        job = body["result"]
        assert r.headers["location"].endswith(f"/jobs/v2/{job['id']}")
        assert job["owner"] == "alice" and job["status"] == "PENDING" and job["appId"] == "wc-1.0"
        assert job["id"].endswith("-0001-007")

        final = service.wait_terminal(job["id"])
        assert final["status"] == "FINISHED", final
        assert final["exitCode"] == 0 and final["startTime"] and final["endTime"]

        history = c.get(f"/jobs/v2/{job['id']}/history").json()["result"]
        statuses = [e["status"] for e in history]  # ARCHIVING repeats with progress, one event per output
        assert [x for i, x in enumerate(statuses) if x != "ARCHIVING" or statuses[i - 1] != "ARCHIVING"] == HAPPY_PATH
        assert all(set(e) >= {"status", "created", "createdBy", "description"} for e in history)
        assert [e["created"] for e in history] == sorted(e["created"] for e in history)

        status = c.get(f"/jobs/v2/{job['id']}/status").json()["result"]
        assert status == {
            "id": job["id"],
            "status": "FINISHED",
            "_links": {"self": {"href": f"{service.base}/jobs/v2/{job['id']}"}},
        }
        listing = c.get("/jobs/v2", params={"limit": 5}).json()["result"]
        assert job["id"] in [j["id"] for j in listing]

    run, tis = _dag_run(service, job["id"])
    assert run["dag_run_id"] == job["id"] and run["conf"] == {"job_id": job["id"]}
    assert run["state"] == "success"
    assert sorted(t["task_id"] for t in tis) == sorted(TASKS)
    assert {t["state"] for t in tis} == {"success"}


def test_app_exit_code_ends_failed_with_exit_code(service):
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json={**DEMO, "name": "exit-three", "parameters": {"exitCode": 3}})
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
    final = service.wait_terminal(job_id)
    assert final["status"] == "FAILED" and final["exitCode"] == 3
    assert "code 3" in final["message"]
    run, tis = _dag_run(service, job_id)
    assert run["state"] == "failed"
    states = {t["task_id"]: t["state"] for t in tis}
    assert states["monitor"] == "failed" and states["archive"] == "upstream_failed"


def test_task_that_raises_ends_the_job_failed_with_that_error(service):
    app = dict(registry.get_app("wc-1.0"))
    app.update(name="wc-e2e-broken", templatePath="no-such-wrapper.sh")
    registry.put_app(app, "admin")
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json={**DEMO, "appId": "wc-e2e-broken-1.0"})
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
        final = service.wait_terminal(job_id)
        assert final["status"] == "FAILED"
        assert "Wrapper template no-such-wrapper.sh" in final["message"]
        history = c.get(f"/jobs/v2/{job_id}/history").json()["result"]
        assert history[-1]["status"] == "FAILED" and history[-1]["description"] == final["message"]
    _run, tis = _dag_run(service, job_id)
    assert {t["task_id"]: t["state"] for t in tis}["submit"] == "failed"


BAD = [
    # (case, user, method, path, kwargs, code, fragment)
    (
        "malformed JSON",
        "alice",
        "POST",
        "/jobs/v2",
        {"content": b'{"name": "x",', "headers": {"Content-Type": "application/json"}},
        400,
        "malformed JSON",
    ),
    (
        "empty body",
        "alice",
        "POST",
        "/jobs/v2",
        {"content": b"", "headers": {"Content-Type": "application/json"}},
        400,
        "empty",
    ),
    (
        "unknown appId",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {**DEMO, "appId": "nope-9.9"}},
        400,
        "No app found matching nope-9.9",
    ),
    (
        "missing name",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {k: v for k, v in DEMO.items() if k != "name"}},
        400,
        "name",
    ),
    (
        "missing required input",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {**DEMO, "inputs": {}}},
        400,
        "No input specified for inputFile",
    ),
    (
        "wrong type",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {**DEMO, "parameters": {"topN": "lots"}}},
        400,
        "topN must be a number",
    ),
    (
        "wrong bool",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {**DEMO, "parameters": {"ignoreCase": "perhaps"}}},
        400,
        "ignoreCase",
    ),
    (
        "unsupported scheme",
        "alice",
        "POST",
        "/jobs/v2",
        {"json": {**DEMO, "inputs": {"inputFile": "s3://b/k"}}},
        400,
        "s3 scheme",
    ),
    ("bad limit", "alice", "GET", "/jobs/v2?limit=ten", {}, 400, "limit"),
    ("unknown job id", "alice", "GET", "/jobs/v2/123-abc-0001-007", {}, 404, "No job found with job id"),
    ("unknown job status", "alice", "GET", "/jobs/v2/123-abc-0001-007/status", {}, 404, "No job found"),
    ("no token", None, "POST", "/jobs/v2", {"json": DEMO}, 401, "bearer token"),
    ("no token on GET", None, "GET", "/jobs/v2", {}, 401, "bearer token"),
    ("bad token", "bad", "POST", "/jobs/v2", {"json": DEMO}, 401, "Invalid bearer token"),
    (
        "bad password",
        None,
        "POST",
        "/token",
        {"data": {"grant_type": "password", "username": "alice", "password": "wrong"}},
        401,
        "Invalid",
    ),
]


@pytest.mark.parametrize("case,user,method,path,kwargs,code,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_an_agave_error_and_writes_no_job(service, case, user, method, path, kwargs, code, fragment):
    before = store.count_jobs()
    headers = {}
    if user == "bad":
        headers = {"Authorization": "Bearer not-a-real-token"}
    elif user:
        headers = {"Authorization": f"Bearer {service.token(user)}"}
    headers.update(kwargs.pop("headers", {}))
    r = httpx.request(method, service.base + path, headers=headers, timeout=60, **kwargs)
    assert r.status_code == code, r.text
    body = r.json()
    assert body["status"] == "error" and fragment in body["message"], body
    assert "Traceback" not in r.text
    assert store.count_jobs() == before


def test_someone_elses_job_is_not_found_and_admin_sees_it(service):
    with service.client("alice") as c:
        job_id = c.post("/jobs/v2", json={**DEMO, "name": "private"}).json()["result"]["id"]
    with service.client("bob") as c:  # a job one may not read answers as if it did not exist
        r = c.get(f"/jobs/v2/{job_id}")
        assert r.status_code == 404 and r.json()["status"] == "error"
        assert job_id not in [j["id"] for j in c.get("/jobs/v2").json()["result"]]
    with service.client("admin") as c:
        assert c.get(f"/jobs/v2/{job_id}").status_code == 200
    service.wait_terminal(job_id)


def test_form_and_multipart_submissions(service):
    with service.client("alice") as c:
        form = c.post(
            "/jobs/v2",
            data={"name": "form-job", "appId": "wc-1.0", "inputFile": DEMO["inputs"]["inputFile"], "topN": "2"},
        )
        assert form.status_code == 201, form.text
        assert form.json()["result"]["parameters"] == {"topN": 2}
        upload = c.post("/jobs/v2", files={"fileToUpload": ("job.json", json.dumps(DEMO), "application/json")})
        assert upload.status_code == 201, upload.text
        assert upload.json()["result"]["name"] == DEMO["name"]
    for r in (form, upload):
        assert service.wait_terminal(r.json()["result"]["id"])["status"] == "FINISHED"


def test_idempotency_key_returns_the_first_job(service):
    with service.client("alice") as c:
        headers = {"Idempotency-Key": f"key-{time.time_ns()}"}
        first = c.post("/jobs/v2", json=DEMO, headers=headers)
        again = c.post("/jobs/v2", json=DEMO, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["result"]["id"] == again.json()["result"]["id"]
    service.wait_terminal(first.json()["result"]["id"])


def test_token_endpoint_speaks_oauth2_and_refreshes(service):
    r = httpx.post(
        f"{service.base}/token",
        data={"grant_type": "password", "username": "bob", "password": "bob-pw-1"},
        auth=("client-key", "secret"),
    )
    assert r.status_code == 200, r.text
    tok = r.json()
    assert set(tok) >= {"access_token", "refresh_token", "expires_in", "token_type"}
    refreshed = httpx.post(
        f"{service.base}/token", data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    me = httpx.get(f"{service.base}/jobs/v2", headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"})
    assert me.status_code == 200
    # the refresh token is not an access token
    r = httpx.get(f"{service.base}/jobs/v2", headers={"Authorization": f"Bearer {tok['refresh_token']}"})
    assert r.status_code == 401


def test_apps_and_systems_are_listed(service):
    with service.client("alice") as c:
        apps = c.get("/apps/v2").json()["result"]
        assert "wc-1.0" in [a["id"] for a in apps]
        assert c.get("/apps/v2/wc-1.0").json()["result"]["executionSystem"] == "demo-fork"
        systems = {s["id"]: s for s in c.get("/systems/v2/").json()["result"]}
        assert systems["demo-fork"]["type"] == "EXECUTION" and systems["demo-storage"]["default"] is True
        assert c.get("/systems/v2/nope").status_code == 404
        naked = c.get("/jobs/v2", params={"naked": "true", "limit": 1}).json()
        assert isinstance(naked, list)


def test_burst_of_100_concurrent_submissions(service):
    before = store.count_jobs()
    token = service.token("alice")

    def submit(i: int) -> str:
        r = httpx.post(
            f"{service.base}/jobs/v2",
            json={**DEMO, "name": f"burst-{i}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(submit, range(100)))
    assert len(set(ids)) == 100
    assert store.count_jobs() == before + 100

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        jobs = store.jobs_by_ids(ids)
        if all(j.status in {s.value for s in TERMINAL} for j in jobs):
            break
        time.sleep(1)
    jobs = store.jobs_by_ids(ids)
    assert len(jobs) == 100  # none lost
    assert [j.id for j in jobs if j.status != "FINISHED"] == []  # none stuck, none failed


def test_the_curl_line_make_run_prints_submits_the_demo_job(service):
    """The banner's literal curl line (what a new user copies) submits the demo job, which finishes."""
    import subprocess

    from conftest import VAR

    log = (VAR / "service-test.log").read_text().splitlines()
    line = log[log.index("  Submit the demo job:") + 1].strip()
    assert line.startswith("TOKEN=$(curl") and "demo-job.json" in line
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=60, check=True).stdout
    body = json.loads(out)
    assert body["status"] == "success" and body["result"]["status"] == "PENDING"
    assert service.wait_terminal(body["result"]["id"], user="admin")["status"] == "FINISHED"


def _conforms(doc: dict, path: str, method: str, r: httpx.Response) -> None:
    """The answer is what the served document says for its status code (schema and required headers)."""
    responses = doc["paths"][path][method]["responses"]
    code = str(r.status_code) if str(r.status_code) in responses else f"{str(r.status_code)[0]}XX"
    assert code in responses, f"{method} {path}: {r.status_code} is not documented"
    for name, header in responses[code].get("headers", {}).items():
        assert not header.get("required") or name.lower() in r.headers, f"{method} {path} {code}: no {name}"
    media = r.headers["content-type"].split(";")[0]
    pointer = "/".join(
        [
            "#/paths",
            path.replace("~", "~0").replace("/", "~1"),
            method,
            "responses",
            code,
            "content",
            media.replace("/", "~1"),
            "schema",
        ]
    )
    registry = Registry().with_resource("urn:openapi", Resource.opaque(doc))
    Draft202012Validator({"$ref": "urn:openapi" + pointer}, registry=registry).validate(r.json())


def test_the_served_openapi_document_is_valid_and_describes_real_answers(service):
    with service.client("alice") as c:
        r = c.get("/jobs/v2/openapi.json")
        assert r.status_code == 200, r.text
        doc = r.json()
        validate(doc)
        assert {"/jobs/v2", "/jobs/v2/{jobId}", "/apps/v2", "/systems/v2", "/token", "/revoke"} <= set(doc["paths"])
        submitted = c.post("/jobs/v2", json={**DEMO, "name": "openapi-check"})
        _conforms(doc, "/jobs/v2", "post", submitted)
        job_id = submitted.json()["result"]["id"]
        for query in ("", "?naked=true", "?filter=id,status,_links.self", "?naked=1&filter=name&pretty=true"):
            _conforms(doc, "/jobs/v2", "get", c.get("/jobs/v2" + query))
            _conforms(doc, "/jobs/v2/{jobId}", "get", c.get(f"/jobs/v2/{job_id}{query}"))
            _conforms(doc, "/jobs/v2/{jobId}/status", "get", c.get(f"/jobs/v2/{job_id}/status{query}"))
            _conforms(doc, "/jobs/v2/{jobId}/history", "get", c.get(f"/jobs/v2/{job_id}/history{query}"))
            _conforms(doc, "/jobs/v2/{jobId}/pems", "get", c.get(f"/jobs/v2/{job_id}/pems{query}"))
            _conforms(doc, "/apps/v2", "get", c.get("/apps/v2" + query))
            _conforms(doc, "/apps/v2/{appId}", "get", c.get("/apps/v2/wc-1.0" + query))
            _conforms(doc, "/systems/v2", "get", c.get("/systems/v2" + query))
            _conforms(doc, "/systems/v2/{systemId}", "get", c.get("/systems/v2/demo-storage" + query))
        service.wait_terminal(job_id)
        _conforms(doc, "/jobs/v2/{jobId}/outputs/listings", "get", c.get(f"/jobs/v2/{job_id}/outputs/listings"))
        _conforms(doc, "/jobs/v2/{jobId}/history", "get", c.get(f"/jobs/v2/{job_id}/history?naked=true"))
        _conforms(doc, "/jobs/v2/{jobId}/cancel", "post", c.post(f"/jobs/v2/{job_id}/cancel"))
        _conforms(doc, "/jobs/v2/{jobId}", "get", c.get("/jobs/v2/no-such-job"))
        _conforms(doc, "/token", "post", c.post("/token", data={"grant_type": "nonsense"}))
