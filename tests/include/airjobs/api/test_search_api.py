"""Job search through HTTP (issue 14): the Agave CLI's request shapes (``jobs-search`` sends lowercased terms,
``curl -G --data``, ``?pretty=true``), the legacy ``GET /jobs/v2/{attribute}/{value}`` form, which never shadows a
job's own paths, history search, the 400s, and hiding. The facade on a backend that knows a few tokens and
permits everything; the database is the real one (the ``pg`` fixture)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from airjobs import store
from airjobs.api.app import User, create_app
from airjobs.api.throttle import LoginThrottle
from airjobs.errors import Unauthorized
from airjobs.models import Job, JobEvent

TAG = secrets.token_hex(3)
OWNER, OTHER = f"srchapi-{TAG}", f"srchapi-o-{TAG}"
NOW = datetime.now(UTC).replace(microsecond=0)


class Tokens:
    """A token is the user's name; "root" is an admin. Everything is permitted (the auth manager's part is
    tested elsewhere)."""

    async def authenticate(self, token: str) -> User:
        if token not in (OWNER, OTHER, "root"):
            raise Unauthorized("Invalid bearer token.")
        return User(token, is_admin=token == "root")

    def authorize(self, user: User, method: str, resource: str) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"not in these tests: {name}")


def _job(i: int, owner: str, **kw: Any) -> Job:
    fields: dict[str, Any] = {
        "id": f"{i:016d}-{TAG}a{i:03d}-0001-007",
        "name": f"run {i}",
        "owner": owner,
        "app_id": "wc-1.0" if i % 2 else "hadoop-2.1",
        "execution_system": "aws-demo",
        "status": "RUNNING" if i % 3 == 0 else "FINISHED",
        "created": NOW - timedelta(hours=i),
        "last_updated": NOW - timedelta(hours=i),
        "inputs": {"inputFile": f"file-{i}.txt"},
        "parameters": {},
        "notifications": [],
        "request": {},
        "max_run_time": "01:00:00",
        **kw,
    }
    return Job(**fields)


@pytest.fixture(scope="module")
def jobs(pg) -> list[Job]:
    rows = [_job(i, OWNER) for i in range(1, 9)] + [_job(20, OWNER, visible=False), _job(21, OTHER)]
    events = []
    for j in rows:
        for k, st in enumerate(("PENDING", "QUEUED", "RUNNING", j.status)):
            events.append(
                JobEvent(job_id=j.id, status=st, description=f"{st} now", created=j.created + timedelta(minutes=k))
            )
    store.insert_many(rows, events)
    return rows


@pytest.fixture(scope="module")
def client(pg):
    with TestClient(create_app(Tokens(), LoginThrottle())) as c:  # type: ignore[arg-type]
        yield c


def _get(client: TestClient, url: str, who: str = OWNER, **kw: Any) -> Any:
    return client.get(url, headers={"Authorization": f"Bearer {who}"}, **kw)


def _ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    body = r.json()
    return [j["id"] for j in (body if isinstance(body, list) else body["result"])]


def _visible(jobs: list[Job], owner: str = OWNER) -> list[Job]:
    return sorted((j for j in jobs if j.owner == owner and j.visible), key=lambda j: j.created, reverse=True)


def _restore(jobs: list[Job]) -> None:
    """The harness stops every active job after each test (tests/conftest.py): put the RUNNING ones back."""
    from sqlalchemy import update

    from airjobs import db

    with db.transaction() as s:
        for j in jobs:
            s.execute(update(Job).where(Job.id == j.id).values(status=j.status, message=None))


def test_the_cli_shapes_lowercased_terms_pretty_naked_filter(client, jobs):
    _restore(jobs)
    want = [j.id for j in _visible(jobs) if j.app_id.startswith("hadoop")]
    r = _get(client, "/jobs/v2?pretty=true&appid.like=*HADOOP*")
    assert _ids(r) == want and r.text.startswith("{\n")
    r = _get(client, "/jobs/v2/", params={"naked": "true", "filter": "id,appId", "appId.like": "hadoop*"})
    assert r.json() == [{"id": i, "appId": "hadoop-2.1"} for i in want]
    # curl -G --data 'name.like=run 1*' --data status.eq=RUNNING (a space sent as +)
    running = [j.id for j in _visible(jobs) if j.status == "RUNNING"]
    assert _ids(_get(client, "/jobs/v2?status.eq=RUNNING&executionsystem=AWS-DEMO")) == running
    assert _ids(_get(client, "/jobs/v2?name.like=run+3*")) == [jobs[2].id]
    # filter= switches to full jobs, and its names are not search terms
    r = _get(client, "/jobs/v2?filter=id,maxRunTime&maxruntime.lte=3600&limit=2&offset=1")
    assert r.json()["result"] == [{"id": j.id, "maxRunTime": "01:00:00"} for j in _visible(jobs)[1:3]]


def test_dates_free_form_and_iso_through_http(client, jobs):
    recent = [j.id for j in _visible(jobs) if j.created > NOW - timedelta(hours=3, minutes=30)]
    assert recent and _ids(_get(client, "/jobs/v2?created.after=" + quote("-210 minutes"))) == recent
    since = (NOW - timedelta(hours=4)).isoformat()  # "+00:00": sent raw, its + arrives as a space
    assert _ids(_get(client, f"/jobs/v2?created.gte={since}")) == [
        j.id for j in _visible(jobs) if j.created >= NOW - timedelta(hours=4)
    ]


def test_order_and_order_by(client, jobs):
    mine = _visible(jobs)
    assert _ids(_get(client, "/jobs/v2?order=asc")) == [j.id for j in mine[::-1]]
    assert (
        _ids(_get(client, "/jobs/v2?orderBy=NAME&order=DESC"))
        == [j.id for j in sorted(mine, key=lambda j: j.name)][::-1]
    )


def test_the_legacy_attribute_value_form(client, jobs):
    _restore(jobs)
    running = [j.id for j in _visible(jobs) if j.status == "RUNNING"]
    assert _ids(_get(client, "/jobs/v2/status/RUNNING")) == running
    assert _ids(_get(client, "/jobs/v2/STATUS/running/?limit=1&pretty=true")) == running[:1]
    assert _ids(_get(client, "/jobs/v2/appid/wc-1.0?status=FINISHED")) == [
        j.id for j in _visible(jobs) if j.app_id == "wc-1.0" and j.status == "FINISHED"
    ]
    assert _ids(_get(client, f"/jobs/v2/id/{jobs[0].id}")) == [jobs[0].id]
    assert _ids(_get(client, f"/jobs/v2/id/{jobs[8].id}")) == []  # hidden
    assert _ids(_get(client, f"/jobs/v2/owner/{OTHER}")) == []  # not readable
    r = _get(client, "/jobs/v2/status/SLEEPING")
    assert r.status_code == 400 and "is not a job status" in r.json()["message"]
    r = _get(client, "/jobs/v2/nodecount/many")
    assert r.status_code == 400 and "nodeCount.eq=many" in r.json()["message"]


def test_the_legacy_form_never_shadows_a_jobs_own_paths(client, jobs):
    job = jobs[0]
    r = _get(client, f"/jobs/v2/{job.id}/status")
    assert r.status_code == 200 and r.json()["result"]["id"] == job.id
    r = _get(client, f"/jobs/v2/{job.id}/history")
    assert r.status_code == 200 and [e["status"] for e in r.json()["result"]][:2] == ["PENDING", "QUEUED"]
    assert _get(client, f"/jobs/v2/{job.id}/pems").status_code == 200
    assert _get(client, "/jobs/v2/colour/red").status_code == 404  # not a search field: no such path
    assert _get(client, "/jobs/v2/status/history").status_code == 404  # the history of a job "status"


def test_history_search(client, jobs):
    job = jobs[1]
    url = f"/jobs/v2/{job.id}/history"
    r = _get(client, url + "?status.eq=running&naked=true")
    assert [e["status"] for e in r.json()] == ["RUNNING"]
    after = (job.created + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    r = _get(client, url + f"?created.after={after}&order=desc&filter=status")
    assert r.json()["result"] == [{"status": s} for s in ("FINISHED", "RUNNING", "QUEUED")]
    r = _get(client, url + "?description.like=*now&createdBy.eq=nobody")
    assert r.json()["result"] == []
    r = _get(client, url + "?appId=x")
    assert r.status_code == 400 and "Valid history search fields: status, created, createdBy, description" in r.text
    assert _get(client, f"/jobs/v2/{jobs[8].id}/history?status=RUNNING").status_code == 404  # hidden


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("colour=red", "Unknown search field 'colour'. Valid job search fields: appId, archive, archivePath"),
        ("status.sorta=RUNNING", "Unknown search operator 'sorta'"),
        ("nodeCount.like=1", "Valid operators for nodeCount: eq, neq, lt, lte, gt, gte, in, nin, between"),
        ("created.on=someday", "created.on=someday: 'someday' is not a date"),
        ("archive=perhaps", "archive.eq=perhaps: 'perhaps' is not true or false"),
        ("order=up", "Invalid value for order 'up'"),
        ("orderBy=colour", "Invalid value for orderBy 'colour'"),
    ],
)
def test_bad_terms_are_400s(client, jobs, query, fragment):
    r = _get(client, f"/jobs/v2?{query}")
    assert r.status_code == 400 and r.json()["status"] == "error"
    assert fragment in r.json()["message"], r.json()["message"]


def test_hidden_jobs_and_admins(client, jobs):
    hidden = jobs[8]
    assert _ids(_get(client, "/jobs/v2?visible=false")) == []
    assert _ids(_get(client, f"/jobs/v2?owner={OWNER}&visible.eq=false", who="root")) == [hidden.id]
    assert hidden.id not in _ids(_get(client, f"/jobs/v2?owner={OWNER}", who="root"))
    assert _ids(_get(client, f"/jobs/v2/owner/{OTHER}", who="root")) == [jobs[9].id]
    r = _get(client, "/jobs/v2?appId=x", who="nobody")
    assert r.status_code == 401  # who is calling comes before the terms
