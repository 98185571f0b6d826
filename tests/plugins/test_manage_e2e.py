"""Job management (issue 14, parts 1, 2 and 4) against the real service: hide (DELETE, action=hide, /hide) and
restore (action=restore/unhide, /unhide), resubmit with its options (conflicts with the app as registered now,
preserveNotifications, the original named, the inputs' sha256 compared), each refusal, and the Agave CLI's own
request shapes sent with curl exactly as its scripts send them (``TACC-Cloud/agave-cli`` bin/jobs-hide,
jobs-unhide, jobs-resubmit, jobs-pems-update)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import install_app

pytestmark = pytest.mark.e2e

DEMO = json.loads((Path(__file__).resolve().parents[2] / "include/examples/demo-job.json").read_text())
TEMPLATE = """\
cat "$(basename ${data})" > copy.txt
echo "${greeting} ${level}" > said.txt
"""


def _submit(service, body: dict, user: str = "alice") -> str:
    with service.client(user) as c:
        r = c.post("/jobs/v2", json=body)
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _curl(*args: str) -> tuple[int, dict | None]:
    """curl as the Agave CLI runs it (``curl -sk ...``), plus ``-w`` for the status code."""
    out = subprocess.run(
        ["curl", "-sk", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    body, _, code = out.rpartition("\n")
    return int(code), (json.loads(body) if body.strip() else None)


@pytest.fixture
def finished(service) -> str:
    job_id = _submit(service, DEMO)
    assert service.wait_terminal(job_id, "alice", timeout=180)["status"] == "FINISHED"
    return job_id


def test_delete_hides_a_job_from_everything_until_it_is_restored(service, finished):
    job_id = finished
    with service.client("alice") as c:
        r = c.delete(f"/jobs/v2/{job_id}")
        assert r.status_code == 200 and r.json()["result"] is None, r.text
        for path in ("", "/status", "/history", "/pems", "/outputs/listings", "/events"):
            assert c.get(f"/jobs/v2/{job_id}{path}").status_code == 404, path
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "kill"}).status_code == 404
        assert c.post(f"/jobs/v2/{job_id}/resubmit").status_code == 404
        assert job_id not in [j["id"] for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]]
        assert c.delete(f"/jobs/v2/{job_id}").status_code == 404  # hidden: gone for everything but restore
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "restore"})
        assert r.status_code == 200 and r.json()["result"]["id"] == job_id, r.text
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "restore"}).status_code == 409  # already visible
        events = [(e["status"], e["description"]) for e in c.get(f"/jobs/v2/{job_id}/history").json()["result"]]
        assert ("DELETED", "Job was deleted by user alice.") in events
        assert events[-1] == ("RESTORED", "Job was restored by user alice.")
        assert job_id in [j["id"] for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]]
        assert c.post(f"/jobs/v2/{job_id}", json={"action": "hide"}).status_code == 200
        assert c.post(f"/jobs/v2/{job_id}", data={"action": "unhide"}).status_code == 200  # a form, as HTML sends


def test_hiding_an_active_job_stops_it_first(service):
    body = {**DEMO, "appId": "sleepy-1.0", "inputs": {}, "parameters": {"seconds": "60"}}
    install_app(
        "sleepy", "sleep ${seconds}\n", parameters=[{"id": "seconds", "value": {"type": "string", "required": True}}]
    )
    job_id = _submit(service, body)
    with service.client("alice") as c:
        deadline = time.monotonic() + 60
        while c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        r = c.delete(f"/jobs/v2/{job_id}")
        assert r.status_code == 200 and "stopped" in r.json()["message"], r.text
    with service.client("alice") as c:
        assert c.post(f"/jobs/v2/{job_id}/unhide").status_code == 200
        history = [e["status"] for e in c.get(f"/jobs/v2/{job_id}/history").json()["result"]]
    assert history[-3:] == ["STOPPED", "DELETED", "RESTORED"], history


def test_only_a_writer_hides_restores_or_resubmits(service, finished):
    job_id = finished
    with service.client("bob") as c:  # nothing on it: as if it did not exist
        assert c.delete(f"/jobs/v2/{job_id}").status_code == 404
        assert c.post(f"/jobs/v2/{job_id}/resubmit").status_code == 404
    with service.client("alice") as c:
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "READ"}).status_code in (200, 201)
        assert c.post(f"/jobs/v2/{job_id}/pems/carol", json={"permission": "WRITE"}).status_code in (200, 201)
    with service.client("bob") as c:  # may read, not change
        assert c.delete(f"/jobs/v2/{job_id}").status_code == 403
        assert c.post(f"/jobs/v2/{job_id}/hide").status_code == 403
        assert c.post(f"/jobs/v2/{job_id}/resubmit").status_code == 403
    with service.client("carol") as c:  # may change, not read: resubmitting needs both (spec §7.2)
        assert c.post(f"/jobs/v2/{job_id}/resubmit").status_code == 404
    with service.client("alice") as c:
        assert c.delete(f"/jobs/v2/{job_id}").status_code == 200
    with service.client("bob") as c:
        assert c.post(f"/jobs/v2/{job_id}/unhide").status_code == 403
        assert c.get(f"/jobs/v2/{job_id}").status_code == 404


def test_resubmit_makes_a_new_job_of_the_callers_that_names_the_original(service, finished):
    job_id = finished
    with service.client("alice") as c:
        assert c.post(f"/jobs/v2/{job_id}/pems/bob", json={"permission": "READ_WRITE"}).status_code in (200, 201)
    with service.client("bob") as c:
        r = c.post(f"/jobs/v2/{job_id}/resubmit")
        assert r.status_code == 201, r.text
        new = r.json()["result"]
        assert r.headers["location"].endswith(f"/jobs/v2/{new['id']}")
    assert new["id"] != job_id and new["owner"] == "bob" and new["resubmittedFrom"] == job_id
    assert new["inputs"] == service.job(job_id)["inputs"] and new["parameters"] == service.job(job_id)["parameters"]
    done = service.wait_terminal(new["id"], "bob", timeout=180)
    assert done["status"] == "FINISHED" and done["inputChanges"] == []
    first = service.history(new["id"], user="bob")[0]
    assert first["status"] == "PENDING" and job_id in first["description"]


def test_resubmit_preserves_notifications_only_when_asked(service):
    hook = {"url": "carol@example.org", "event": "FINISHED", "persistent": True}
    job_id = _submit(service, {**DEMO, "notifications": [hook]}, user="carol")
    service.wait_terminal(job_id, "carol", timeout=180)
    with service.client("carol") as c:
        plain = c.post(f"/jobs/v2/{job_id}/resubmit").json()["result"]["id"]
        kept = c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "preserveNotifications": True})
        assert kept.status_code == 201, kept.text
        kept_id = kept.json()["result"]["id"]
        assert c.get("/notifications/v2", params={"associatedUuid": plain}).json()["result"] == []
        copied = c.get("/notifications/v2", params={"associatedUuid": kept_id}).json()["result"]
        assert [(n["url"], n["event"], n["persistent"]) for n in copied] == [("carol@example.org", "FINISHED", True)]
    for jid in (plain, kept_id):
        service.wait_terminal(jid, "carol", timeout=180)


def test_resubmit_conflicts_with_the_app_as_registered_now(service):
    from airjobs import registry

    params = [
        {"id": "greeting", "value": {"type": "string", "required": True}},
        {"id": "level", "value": {"type": "string", "visible": False, "default": "low"}},
    ]
    inputs = [{"id": "data", "value": {"required": True}}]
    root = install_app("resub", TEMPLATE, inputs=inputs, parameters=params)
    data = root / "alice/resub/in.txt"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("first version\n")
    body = {
        "name": "resub",
        "appId": "resub-1.0",
        "archive": False,
        "inputs": {"data": "alice/resub/in.txt"},
        "parameters": {"greeting": "hello"},
    }
    job_id = _submit(service, body)
    assert service.wait_terminal(job_id, "alice", timeout=180)["status"] == "FINISHED"

    # the input's content changed: the resubmitted job runs, and says so
    data.write_text("second version\n")
    with service.client("alice") as c:
        again = c.post(f"/jobs/v2/{job_id}/resubmit").json()["result"]["id"]
    done = service.wait_terminal(again, "alice", timeout=180)
    assert done["status"] == "FINISHED"
    [change] = done["inputChanges"]
    assert change["id"] == "data" and change["previousSha256"] != change["sha256"]
    assert any("changed since job" in e["description"] for e in service.history(again, user="alice"))

    # a hidden parameter's fixed value changed, a parameter was removed: 400 unless ignored
    app = dict(registry.get_app("resub-1.0"))
    app["parameters"] = [{"id": "level", "value": {"type": "string", "visible": False, "default": "high"}}]
    app["inputs"] = inputs
    registry.put_app(app, "admin")
    with service.client("alice") as c:
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "ignoreParameterConflicts": False})
        assert r.status_code == 400, r.text
        message = r.json()["message"]
        assert "greeting" in message and "level" in message and "ignoreParameterConflicts" in message
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "ignoreParameterConflicts": "true"})
        assert r.status_code == 201, r.text
        migrated = r.json()["result"]
        assert migrated["parameters"] == {"level": "high"}
        service.wait_terminal(migrated["id"], "alice", timeout=180)
        # a newly required input: always a 400
        app["inputs"] = [*inputs, {"id": "extra", "value": {"required": True}}]
        registry.put_app(app, "admin")
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "ignoreInputConflicts": True})
        assert r.status_code == 400 and "extra" in r.json()["message"], r.text
        assert (
            c.post(f"/jobs/v2/{job_id}", json={"action": "resubmit", "preserveNotifications": "maybe"}).status_code
            == 400
        )


def test_the_agave_clis_requests_unchanged(service, finished):
    job_id = finished
    auth = f"Authorization: Bearer {service.token('alice')}"
    base = f"{service.base}/jobs/v2"
    json_type = "Content-Type: application/json"
    # jobs-hide: POST $hosturl$id/hide?pretty=true, JSON content type, no body
    code, doc = _curl("-H", auth, "-H", json_type, "-X", "POST", f"{base}/{job_id}/hide?pretty=true")
    assert code == 200 and doc["status"] == "success", doc
    # jobs-unhide, as the issue quotes it: a double slash after the service's path
    code, doc = _curl("-H", auth, "-H", json_type, "-X", "POST", f"{base}//{job_id}/unhide?pretty=true")
    assert code == 200 and doc["result"]["id"] == job_id, doc
    # jobs-pems-update: a form post to /pems/{user}
    code, doc = _curl("-H", auth, "-X", "POST", "-d", "permission=READ", f"{base}/{job_id}/pems/bob?pretty=true")
    assert code in (200, 201) and doc["result"]["username"] == "bob", doc
    # jobs-resubmit: POST $hosturl$id/resubmit?pretty=true, JSON content type, no body
    code, doc = _curl("-H", auth, "-H", json_type, "-X", "POST", f"{base}/{job_id}/resubmit?pretty=true")
    assert code == 201 and doc["result"]["resubmittedFrom"] == job_id, doc
    service.wait_terminal(doc["result"]["id"], "alice", timeout=180)
    # every path with a trailing slash, and with ?pretty=true
    for path in (f"/{job_id}/", f"/{job_id}/history/", f"/{job_id}/pems/", f"/{job_id}/status/"):
        code, doc = _curl("-H", auth, f"{base}{path}?pretty=true")
        assert code == 200 and doc["status"] == "success", (path, doc)
    code, doc = _curl("-H", auth, "-H", json_type, "-X", "POST", f"{base}/{job_id}/hide/?pretty=true")
    assert code == 200, doc
    code, doc = _curl("-H", auth, "-H", json_type, "-X", "POST", f"{base}/{job_id}/unhide/?pretty=true")
    assert code == 200, doc


def test_the_agave_clis_search_requests_unchanged(service, finished):
    job_id = finished
    auth = f"Authorization: Bearer {service.token('alice')}"
    base = f"{service.base}/jobs/v2"
    # jobs-search: curl -G ... '$jobsurl?pretty=true&limit=N' --data <term> (each term url-encoded but its "=")
    code, doc = _curl(
        "-G", "-H", auth, f"{base}?pretty=true&limit=50", "--data", "name.like=wc-*", "--data", "appid=wc-1.0"
    )
    assert code == 200, doc
    assert doc["result"] and all(j["name"].startswith("wc-") and j["appId"] == "wc-1.0" for j in doc["result"])
    assert job_id in [j["id"] for j in doc["result"]]
    code, doc = _curl(
        "-G", "-H", auth, f"{base}?pretty=true", "--data", "status.eq=FINISHED", "--data", "id.eq=" + job_id
    )
    assert code == 200 and [j["id"] for j in doc["result"]] == [job_id], doc
    code, doc = _curl("-G", "-H", auth, f"{base}?pretty=true", "--data", "colour.eq=red")
    assert code == 400 and "appId" in doc["message"], doc
    # the legacy form /jobs/v2/{attribute}/{value}
    code, doc = _curl("-H", auth, f"{base}/status/FINISHED?pretty=true&limit=1000")
    assert code == 200 and job_id in [j["id"] for j in doc["result"]], doc
    # jobs-history-search: curl -G ... '${hosturl}${jobid}/history?pretty=true' --data <term>
    code, doc = _curl("-G", "-H", auth, f"{base}/{job_id}/history?pretty=true", "--data", "status.eq=FINISHED")
    assert code == 200 and [e["status"] for e in doc["result"]] == ["FINISHED"], doc
    # a hidden job leaves the search
    with service.client("alice") as c:
        assert c.delete(f"/jobs/v2/{job_id}").status_code == 200
    code, doc = _curl("-G", "-H", auth, f"{base}?pretty=true", "--data", "id.eq=" + job_id)
    assert code == 200 and doc["result"] == [], doc
