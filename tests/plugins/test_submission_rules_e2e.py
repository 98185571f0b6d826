"""The submission rules of spec §4 through HTTP, table-driven: each refusal's code, the field its message
names, and that no job row was written; the valid cases run to FINISHED."""

from __future__ import annotations

import time

import pytest

from airjobs import registry, store

pytestmark = pytest.mark.e2e

ZEN = "agave://demo-storage/samples/zen-of-python.txt"
TEMPLATE = "sleep ${sleep} 0\nprintf '%s\\n' ${word} ${count} ${level} ${fast} ${debug} ${hidden} ${multi} > out.txt\n"


@pytest.fixture(scope="module")
def limits(service):
    fork = dict(registry.get_system("demo-fork"))
    fork.update(
        id="limits-fork",
        queues=[
            {
                "name": "small",
                "default": True,
                "maxJobs": -1,
                "maxUserJobs": -1,
                "maxNodes": 1,
                "maxProcessorsPerNode": 2,
                "maxMemoryPerNode": "2GB",
                "maxRequestedTime": "00:30:00",
            },
            {
                "name": "big",
                "maxJobs": -1,
                "maxUserJobs": -1,
                "maxNodes": 4,
                "maxProcessorsPerNode": 8,
                "maxMemoryPerNode": "16GB",
                "maxRequestedTime": "24:00:00",
            },
            {
                "name": "capped",
                "maxJobs": -1,
                "maxUserJobs": 1,
                "maxNodes": 1,
                "maxProcessorsPerNode": 1,
                "maxMemoryPerNode": "1GB",
                "maxRequestedTime": "01:00:00",
            },
        ],
    )
    registry.put_system(fork, "admin")
    from conftest import install_app

    install_app(
        "limits",
        TEMPLATE,
        execution_system="limits-fork",
        inputs=[
            {
                "id": "data",
                "value": {"required": True, "validator": r"\.txt$"},
                "semantics": {"minCardinality": 1, "maxCardinality": 2},
            },
            {"id": "opt", "value": {"required": False}},
            {"id": "fixed", "value": {"visible": False, "default": ZEN}},
        ],
        parameters=[
            {"id": "word", "value": {"type": "string", "required": False, "validator": "[a-z]{3}"}},
            {"id": "count", "value": {"type": "number", "required": False}},
            {"id": "level", "value": {"type": "enumeration", "required": False, "enumValues": ["low", "high"]}},
            {"id": "fast", "value": {"type": "bool", "required": False}},
            {"id": "debug", "value": {"type": "flag", "required": False}, "details": {"argument": "--debug"}},
            {"id": "hidden", "value": {"type": "string", "visible": False, "default": "h"}},
            {
                "id": "multi",
                "value": {"type": "string", "required": False},
                "semantics": {"minCardinality": 2, "maxCardinality": 3},
            },
            {"id": "sleep", "value": {"type": "number", "required": False, "default": 0}},
        ],
    )
    return "limits-1.0"


BASE = {"name": "rules", "appId": "limits-1.0", "inputs": {"data": ZEN}, "archive": False}


def body(**changes):
    out = {**BASE}
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


DROP = object()
P = lambda **p: {"parameters": p}  # noqa: E731

# (case id, request changes, expected code, fragment of message, expected values for a valid job)
CASES = [
    ("name missing", {"name": DROP}, 400, "name", None),
    ("name empty", {"name": "  "}, 400, "name", None),
    ("name 65 chars", {"name": "n" * 65}, 400, "64 characters", None),
    ("jobName alias", {"name": DROP, "jobName": "aliased"}, 201, None, {"name": "aliased"}),
    ("appId missing", {"appId": DROP}, 400, "appId", None),
    ("softwareName alias", {"appId": DROP, "softwareName": "limits-1.0"}, 201, None, {"appId": "limits-1.0"}),
    ("appId unknown", {"appId": "nope-1.0"}, 400, "nope-1.0", None),
    ("appId 81 chars", {"appId": "a" * 77 + "-1.0"}, 400, "appId", None),
    ("executionSystem other", {"executionSystem": "demo-fork"}, 403, "execution system", None),
    ("executionHost alias other", {"executionHost": "demo-fork"}, 403, "execution system", None),
    ("executionSystem same", {"executionSystem": "limits-fork"}, 201, None, {"executionSystem": "limits-fork"}),
    ("batchQueue unknown", {"batchQueue": "gpu"}, 400, "batchQueue", None),
    ("queue alias", {"queue": "big"}, 201, None, {"batchQueue": "big"}),
    (
        "default queue when it fits",
        {},
        201,
        None,
        {"batchQueue": "small", "memoryPerNode": 2.0, "maxRunTime": "00:30:00"},
    ),
    ("nodeCount 0", {"nodeCount": 0}, 400, "nodeCount", None),
    ("nodeCount -1", {"nodeCount": -1}, 400, "nodeCount", None),
    ("nodeCount text", {"nodeCount": "abc"}, 400, "nodeCount", None),
    ("nodeCount over named queue", {"nodeCount": 2, "batchQueue": "small"}, 400, "No queue found", None),
    ("nodeCount picks a bigger queue", {"nodeCount": 2}, 201, None, {"batchQueue": "big", "nodeCount": 2}),
    ("nodeCount over every queue", {"nodeCount": 5}, 400, "5 nodes", None),
    ("processorsPerNode 0", {"processorsPerNode": 0}, 400, "processorsPerNode", None),
    ("processorCount alias", {"processorCount": 4}, 201, None, {"processorsPerNode": 4, "batchQueue": "big"}),
    ("processorsPerNode over every queue", {"processorsPerNode": 9}, 400, "9 processors", None),
    ("memoryPerNode text", {"memoryPerNode": "lots"}, 400, "memoryPerNode", None),
    ("memoryPerNode negative", {"memoryPerNode": "-5GB"}, 400, "memoryPerNode", None),
    (
        "memoryPerNode picks a bigger queue",
        {"memoryPerNode": "4GB"},
        201,
        None,
        {"batchQueue": "big", "memoryPerNode": 4.0},
    ),
    ("maxMemory alias over every queue", {"maxMemory": "32GB"}, 400, "No queue found", None),
    ("memoryPerNode plain number is GB", {"memoryPerNode": 1}, 201, None, {"memoryPerNode": 1.0}),
    ("memoryPerNode MB", {"memoryPerNode": "512MB"}, 201, None, {"memoryPerNode": 0.5}),
    ("maxRunTime short form", {"maxRunTime": "1:00"}, 400, "maxRunTime", None),
    ("maxRunTime 61 minutes", {"maxRunTime": "00:61:00"}, 400, "maxRunTime", None),
    # the smallest queue that fits: capped (1 node, 1 GB, 1 processor, 1 h) sorts before big
    (
        "requestedTime alias picks the smallest queue that fits",
        {"requestedTime": "01:00:00"},
        201,
        None,
        {"batchQueue": "capped", "maxRunTime": "01:00:00"},
    ),
    (
        "requestedTime over capped picks big",
        {"requestedTime": "02:00:00"},
        201,
        None,
        {"batchQueue": "big", "maxRunTime": "02:00:00"},
    ),
    ("maxRunTime over every queue", {"maxRunTime": "25:00:00"}, 400, "25:00:00", None),
    ("maxRunTime over named queue", {"maxRunTime": "00:31:00", "batchQueue": "small"}, 400, "No queue found", None),
    ("archive not boolean", {"archive": "maybe"}, 400, "archive", None),
    ("archive as 1", {"archive": "1"}, 201, None, {"archive": True, "archiveSystem": "demo-storage"}),
    ("archive default true", {"archive": DROP}, 201, None, {"archive": True}),
    ("archiveSystem unknown", {"archive": True, "archiveSystem": "nowhere"}, 400, "archiveSystem", None),
    ("archiveSystem not storage", {"archive": True, "archiveSystem": "demo-fork"}, 400, "archiveSystem", None),
    (
        "archivePath macros",
        {"archive": True, "archivePath": "${JOB_OWNER}/runs/${APP_ID}/${BATCH_QUEUE}"},
        201,
        None,
        {"archivePath": "alice/runs/limits-1.0/small"},
    ),
    ("archivePath escapes", {"archive": True, "archivePath": "alice/../../etc"}, 400, "archivePath", None),
    ("archivePath not text", {"archive": True, "archivePath": 12}, 400, "archivePath", None),
    ("archiveOnAppError not boolean", {"archiveOnAppError": "x"}, 400, "archiveOnAppError", None),
    ("dependencies", {"dependencies": [{"appId": "x"}]}, 400, "dependencies", None),
    ("inputs not object", {"inputs": ["a"]}, 400, "inputs", None),
    ("parameters not object", {"parameters": "a"}, 400, "parameters", None),
    ("input missing", {"inputs": {}}, 400, "No input specified for data", None),
    ("input too many", {"inputs": {"data": [ZEN, ZEN, ZEN]}}, 400, "data may have at most 2", None),
    (
        "input semicolon list",
        {"inputs": {"data": f"{ZEN};{ZEN}"}},
        201,
        None,
        {"inputs": {"data": [ZEN, ZEN], "fixed": [ZEN]}},
    ),
    ("input validator", {"inputs": {"data": "agave://demo-storage/samples/x.csv"}}, 400, "data", None),
    ("hidden input set", {"inputs": {"data": ZEN, "fixed": ZEN}}, 400, "fixed", None),
    ("unknown input", {"inputs": {"data": ZEN, "other": ZEN}}, 400, "other", None),
    ("input scheme", {"inputs": {"data": "gsiftp://h/x.txt"}}, 400, "gsiftp", None),
    ("input dot-dot", {"inputs": {"data": "agave://demo-storage/../x.txt"}}, 400, "data", None),
    ("input id case-insensitive", {"inputs": {"DATA": ZEN}}, 201, None, {"inputs": {"data": [ZEN], "fixed": [ZEN]}}),
    ("validator fails", P(word="ab"), 400, "word", None),
    ("validator search semantics", P(word="12abc!"), 201, None, {"parameters": {"word": "12abc!", "hidden": "h"}}),
    ("number not a number", P(count="ten"), 400, "count", None),
    ("number decimal", P(count="1.5"), 201, None, {"parameters": {"count": 1.5, "hidden": "h"}}),
    ("enumeration outside", P(level="medium"), 400, "level", None),
    ("enumeration inside", P(level="high"), 201, None, {"parameters": {"level": "high", "hidden": "h"}}),
    ("bool not boolean", P(fast="maybe"), 400, "fast", None),
    ("bool on", P(fast="on"), 201, None, {"parameters": {"fast": True, "hidden": "h"}}),
    ("flag two values", P(debug=[True, False]), 400, "debug", None),
    ("hidden parameter set", P(hidden="x"), 400, "hidden", None),
    ("cardinality under min", P(multi="one"), 400, "multi requires at least 2", None),
    ("cardinality over max", P(multi=["a", "b", "c", "d"]), 400, "multi may have at most 3", None),
    ("cardinality semicolons", P(multi="a;b"), 201, None, {"parameters": {"multi": ["a", "b"], "hidden": "h"}}),
    ("unknown parameter", P(nope=1), 400, "nope", None),
    ("NUL in a value", P(word="abc\x00"), 400, "word", None),
]


@pytest.mark.parametrize("case,changes,code,fragment,expect", CASES, ids=[c[0] for c in CASES])
def test_submission_rule(service, limits, case, changes, code, fragment, expect):
    before = store.count_jobs()
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json=body(**changes))
    assert r.status_code == code, r.text
    if code >= 400:
        assert r.json()["status"] == "error" and fragment in r.json()["message"], r.json()["message"]
        assert store.count_jobs() == before
        return
    job = r.json()["result"]
    for key, value in expect.items():
        assert job[key] == value, (key, job[key])
    final = service.wait_terminal(job["id"])
    assert final["status"] == "FINISHED", final.get("message")


def test_enough_cases():
    assert len(CASES) >= 60


def test_max_user_jobs_counts_active_jobs(service, limits):
    with service.client("alice") as c:
        first = c.post("/jobs/v2", json=body(batchQueue="capped", parameters={"sleep": 6}))
        assert first.status_code == 201, first.text
        before = store.count_jobs()
        second = c.post("/jobs/v2", json=body(batchQueue="capped"))
        assert (
            second.status_code == 400
            and "queue capped allows at most 1 active jobs per user" in second.json()["message"]
        )
        assert store.count_jobs() == before
    with service.client("bob") as c:  # another user's quota is separate
        other = c.post("/jobs/v2", json=body(batchQueue="capped"))
        assert other.status_code == 201, other.text
    assert service.wait_terminal(first.json()["result"]["id"])["status"] == "FINISHED"
    with service.client("alice") as c:  # the slot is free again
        again = c.post("/jobs/v2", json=body(batchQueue="capped"))
        assert again.status_code == 201, again.text
    service.wait_terminal(again.json()["result"]["id"])
    service.wait_terminal(other.json()["result"]["id"], user="bob")


def test_a_job_longer_than_the_inline_check_defers_and_finishes(service, limits):
    """The monitor hands a 5 s job to the triggerer; it resumes and the run succeeds (no stale-event race)."""
    import httpx

    with service.client("alice") as c:
        r = c.post("/jobs/v2", json=body(parameters={"sleep": 5}))
        assert r.status_code == 201, r.text
        job_id = r.json()["result"]["id"]
    assert service.wait_terminal(job_id)["status"] == "FINISHED"
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    url = f"{service.base}/api/v2/dags/airjobs_lifecycle/dagRuns/{job_id}/taskInstances/monitor"
    for _ in range(60):
        ti = httpx.get(url, headers=headers).json()
        if ti["state"] in ("success", "failed"):
            break
        time.sleep(0.5)
    assert ti["state"] == "success", ti
    assert ti["duration"] >= 5  # it waited (in the triggerer) rather than finishing inline
