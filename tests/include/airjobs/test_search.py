"""Job and history search (airjobs.search, issue 14) against the real database: every operator on every field
of every type, each checked against an independent filter of the same rows in Python; the free-form dates; the
400s for bad terms; ordering; permissions and hiding."""

from __future__ import annotations

import json
import random
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from airjobs import db, search, statuses, store
from airjobs.errors import BadRequest
from airjobs.models import Job, JobEvent, JobPermission
from airjobs.search import JOB_FIELDS, KIND_OPS, parse_date

NOW = datetime(2026, 12, 2, 14, 0, 0, tzinfo=UTC)  # a Wednesday
TAG = secrets.token_hex(3)
ALICE, BOB = f"srch-a-{TAG}", f"srch-b-{TAG}"
STATUSES = ("PENDING", "QUEUED", "RUNNING", "FINISHED", "FAILED", "STOPPED", "ARCHIVING")


def _rows() -> tuple[list[Job], list[JobEvent]]:
    rnd = random.Random(1414)
    jobs, events = [], []
    for i in range(60):
        created = NOW - timedelta(days=rnd.randrange(0, 8), hours=rnd.randrange(24), minutes=rnd.randrange(60))
        status = rnd.choice(STATUSES)
        started = created + timedelta(minutes=rnd.randrange(1, 90)) if status not in ("PENDING",) else None
        ended = started + timedelta(seconds=rnd.randrange(30, 9000)) if started and i % 3 else None
        app = rnd.choice(("wc-1.0", "Hadoop-2.1", "cloud_runner-0.9", "blast-2.2"))
        job = Job(
            id=f"{i:016d}-{TAG}{rnd.randrange(16**4):04x}-0001-007",
            name=rnd.choice(("word count", "Hadoop job", "big_run", "100% done", "test*star")) + f" {i}",
            owner=ALICE if i < 45 else BOB,
            app_id=app,
            execution_system=rnd.choice(("aws-demo", "AWS-Other", "stampede")),
            batch_queue=rnd.choice(("normal", "debug", None)),
            node_count=rnd.randint(1, 8),
            processors_per_node=rnd.choice((1, 2, 4)),
            memory_per_node=rnd.choice((0.5, 1.0, 2.5)),
            max_run_time=rnd.choice(("00:30:00", "01:00:00", "12:00:00", None)),
            archive=rnd.random() < 0.5,
            archive_system=rnd.choice(("store", "archive-2", None)),
            archive_path=rnd.choice((f"{ALICE}/archive/jobs/job-{i}", None)),
            retries=rnd.randint(0, 2),
            local_id=str(5000 + i) if started else None,
            status=status,
            message=rnd.choice(("exit code 1", "Disk Full", None)),
            work_path=f"/work/{TAG}/{i}",
            submit_time=started and started - timedelta(seconds=5),
            start_time=started,
            end_time=ended,
            created=created,
            last_updated=ended or started or created,
            inputs={"inputFile": f"agave://store/data/file-{i % 7}.txt"},
            parameters={"words": bool(i % 2), "threads": i % 4},
            notifications=[],
            request={},
            visible=i not in (5, 50),
        )
        jobs.append(job)
        t = created
        for st in ("PENDING", "QUEUED", "RUNNING", status)[: 2 + i % 3]:
            by = "airjobs" if st != "PENDING" else job.owner
            events.append(
                JobEvent(job_id=job.id, status=st, description=f"Job {st.lower()} now", created=t, created_by=by)
            )
            t += timedelta(minutes=7)
    return jobs, events


@pytest.fixture(scope="module")
def inserted(pg) -> list[Job]:
    jobs, events = _rows()
    store.insert_many(jobs, events)
    with db.transaction() as s:  # ALICE may read BOB's job 46 (READ), not 47 (no grant)
        s.add(JobPermission(job_id=jobs[46].id, username=ALICE, permission="READ", created=NOW, created_by=BOB))
    return jobs


@pytest.fixture
def rows(inserted) -> list[Job]:
    """The rows as inserted: the harness stops every active job after each test (tests/conftest.py), so the
    statuses and messages it changed are put back first."""
    with db.transaction() as s:
        for j in inserted:
            if j.status in statuses.values(statuses.ACTIVE):
                s.execute(update(Job).where(Job.id == j.id).values(status=j.status, message=j.message))
    return inserted


def _readable(rows: list[Job]) -> list[Job]:
    """What ALICE sees: her visible jobs and the one shared with her."""
    return [j for j in rows if j.visible and (j.owner == ALICE or j is rows[46])]


def _ids(params: list[tuple[str, str]], user: str = ALICE, admin: bool = False, **kw: Any) -> list[str]:
    found = search.job_search(params, now=NOW)
    return [j.id for j in store.list_jobs(user, admin, limit=1000, offset=0, search=found, **kw)]


# ---------------------------------------------------------------- the independent filter


def _hms(v: str | None) -> float | None:
    if v is None:
        return None
    h, m, s = (int(x) for x in v.split(":"))
    return h * 3600 + m * 60 + s


def _secs(a: datetime | None, b: datetime | None) -> float | None:
    return (a - b).total_seconds() if a is not None and b is not None else None


VALUE = {
    "appId": lambda j: j.app_id,
    "archive": lambda j: j.archive,
    "archivePath": lambda j: j.archive_path,
    "archiveSystem": lambda j: j.archive_system,
    "batchQueue": lambda j: j.batch_queue,
    "charge": lambda j: 0.0,
    "created": lambda j: j.created,
    "endTime": lambda j: j.end_time,
    "errorMessage": lambda j: j.message,
    "executionSystem": lambda j: j.execution_system,
    "id": lambda j: j.id,
    "inputs": lambda j: json.dumps(j.inputs),
    "lastModified": lambda j: j.last_updated,
    "lastUpdated": lambda j: j.last_updated,
    "localId": lambda j: j.local_id,
    "maxRunTime": lambda j: _hms(j.max_run_time),
    "memoryPerNode": lambda j: j.memory_per_node,
    "name": lambda j: j.name,
    "nodeCount": lambda j: j.node_count,
    "outputPath": lambda j: j.work_path,
    "owner": lambda j: j.owner,
    "parameters": lambda j: json.dumps(j.parameters),
    "processorsPerNode": lambda j: j.processors_per_node,
    "retries": lambda j: j.retries,
    "runtime": lambda j: _secs(j.end_time, j.start_time),
    "startTime": lambda j: j.start_time,
    "status": lambda j: j.status,
    "submitTime": lambda j: j.submit_time,
    "visible": lambda j: j.visible,
    "walltime": lambda j: _secs(j.end_time, j.created),
}


def _like(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c in "*%" else re.escape(c) for c in pattern), re.IGNORECASE | re.DOTALL)


def _window(raw: str) -> tuple[datetime, datetime | None]:
    """An ISO day -> [its midnight, the next), an ISO instant -> (it, None)."""
    if len(raw) == 10:
        d = datetime.fromisoformat(raw).replace(tzinfo=UTC)
        return d, d + timedelta(days=1)
    return datetime.fromisoformat(raw), None


def _date_match(v: datetime, op: str, raw: str) -> bool:
    parts = raw.split(",")
    lo, hi = _window(parts[0])

    def inside(x: tuple[datetime, datetime | None]) -> bool:
        return x[0] <= v < x[1] if x[1] else v == x[0]

    if op == "eq":
        return inside((lo, hi))
    if op == "neq":
        return not inside((lo, hi))
    if op in ("in", "nin"):
        hit = any(inside(_window(p)) for p in parts)
        return hit if op == "in" else not hit
    if op == "on":
        return v.date() == lo.date()
    if op in ("lt", "before"):
        return v < lo
    if op == "lte":
        return v < hi if hi else v <= lo
    if op in ("gt", "after"):
        return v >= hi if hi else v > lo
    if op == "gte":
        return v >= lo
    lo2, hi2 = _window(parts[1])
    return lo <= v and (v < hi2 if hi2 else v <= lo2)


def _number(kind: str, raw: str) -> float:
    if kind == "seconds" and ":" in raw:
        return _hms(raw) or 0
    return float(raw)


def matches(job: Job, name: str, kind: str, op: str, raw: str) -> bool:
    v = VALUE[name](job)
    if v is None:
        return False  # a missing value matches no term, neq included
    if kind == "date":
        return _date_match(v, op, raw)
    if kind == "bool":
        want = raw.lower() in ("true", "1", "yes", "on")
        return (v == want) if op == "eq" else (v != want)
    if kind in ("int", "float", "seconds"):
        vals = [_number(kind, x) for x in raw.split(",")]
        return {
            "eq": lambda: v == vals[0],
            "neq": lambda: v != vals[0],
            "lt": lambda: v < vals[0],
            "lte": lambda: v <= vals[0],
            "gt": lambda: v > vals[0],
            "gte": lambda: v >= vals[0],
            "in": lambda: v in vals,
            "nin": lambda: v not in vals,
            "between": lambda: vals[0] <= v <= vals[1],
        }[op]()
    s = str(v).lower()
    vals = [x.lower() for x in (raw.split(",") if op in ("in", "nin", "between") else [raw])]
    if kind == "status" and op in ("eq", "neq", "in", "nin"):
        hit = any(_like(x).fullmatch(s) for x in vals)
        return hit if op in ("eq", "in") else not hit
    return {
        "eq": lambda: s == vals[0],
        "neq": lambda: s != vals[0],
        "lt": lambda: s < vals[0],
        "lte": lambda: s <= vals[0],
        "gt": lambda: s > vals[0],
        "gte": lambda: s >= vals[0],
        "in": lambda: s in vals,
        "nin": lambda: s not in vals,
        "between": lambda: vals[0] <= s <= vals[1],
        "like": lambda: bool(_like(vals[0]).fullmatch(s)),
        "nlike": lambda: not _like(vals[0]).fullmatch(s),
        "rlike": lambda: bool(re.search(raw, str(v), re.IGNORECASE)),
    }[op]()


# ---------------------------------------------------------------- values to try per field and operator


def _present(rows: list[Job], name: str) -> list[Any]:
    return [VALUE[name](j) for j in _readable(rows) if VALUE[name](j) is not None]


def _cases(rows: list[Job], name: str, kind: str) -> list[tuple[str, str]]:
    vals = _present(rows, name)
    a, b = vals[3], vals[len(vals) // 2]
    if kind == "date":
        day_a, day_b = sorted((a.date().isoformat(), b.date().isoformat()))
        inst = a.isoformat()
        out = [(op, day_a) for op in KIND_OPS["date"] if op not in ("in", "nin", "between")]
        out += [(op, inst) for op in ("eq", "neq", "lt", "lte", "gt", "gte", "on", "before", "after")]
        out += [("between", f"{day_a},{day_b}"), ("between", f"{day_a},{b.isoformat()}")]
        return [*out, ("in", f"{day_a},{day_b}"), ("nin", f"{day_a},{day_b}")]
    if kind == "bool":
        return [("eq", "true"), ("eq", "FALSE"), ("neq", "yes"), ("eq", "0"), ("neq", "off")]
    if kind in ("int", "float", "seconds"):
        na, nb = sorted((a, b))
        fmt = (lambda x: f"{int(x) // 3600:02d}:{int(x) % 3600 // 60:02d}:00") if name == "maxRunTime" else str
        out = [(op, fmt(na)) for op in ("eq", "neq", "lt", "lte", "gt", "gte")]
        return [*out, ("in", f"{na},{nb}"), ("nin", f"{na},{nb}"), ("between", f"{na},{nb}"), ("eq", str(na))]
    sa, sb = str(a), str(b)
    mid = sa[len(sa) // 3 : len(sa) // 3 + 3]
    out = [
        ("eq", sa.upper()),
        ("neq", sa),
        ("in", f"{sa},{sb.swapcase()}"),
        ("nin", f"{sa},{sb}"),
        ("like", f"*{mid}*"),
        ("like", f"{sa[:4].upper()}%"),
        ("like", sa),
        ("nlike", f"*{mid}*"),
        ("rlike", "^" + re.escape(sa[:3])),
    ]
    if kind == "status":
        return [*out, ("eq", "*ING"), ("nin", "*ED,pending"), ("like", "*u*"), ("eq", "running")]
    if kind == "string":
        out += [(op, sa.lower()) for op in ("lt", "lte", "gt", "gte")] + [("between", ",".join(sorted((sa, sb))))]
    return out


@pytest.mark.parametrize("f", JOB_FIELDS, ids=[f.name for f in JOB_FIELDS])
def test_every_operator_on_every_field_matches_an_independent_filter(rows, f):
    checked = set()
    for op, raw in _cases(rows, f.name, f.kind):
        key = f"{f.name.lower() if len(checked) % 2 else f.name}.{op.upper() if len(checked) % 3 == 1 else op}"
        got = set(_ids([(key, raw)]))
        want = {j.id for j in _readable(rows) if matches(j, f.name, f.kind, op, raw)}
        assert got == want, (key, raw, sorted(got ^ want)[:5])
        checked.add(op)
    if f.name != "visible":
        assert checked == set(KIND_OPS[f.kind]), (f.name, set(KIND_OPS[f.kind]) - checked)


def test_a_bare_field_is_eq_and_terms_are_anded(rows):
    mine = _readable(rows)
    want = {j.id for j in mine if j.app_id.lower() == "wc-1.0" and j.node_count > 2}
    assert set(_ids([("APPID", "WC-1.0"), ("nodecount.gt", "2")])) == want
    two = {j.id for j in mine if j.node_count not in (1, 2)}
    assert set(_ids([("nodeCount.neq", "1"), ("nodeCount.neq", "2")])) == two


def test_like_wildcards_and_literal_characters(rows):
    mine = _readable(rows)
    assert set(_ids([("name.like", "100% done*")])) == {j.id for j in mine if j.name.startswith("100")}
    star = {j.id for j in mine if j.name.startswith("test*star")}
    assert star and set(_ids([("name.like", "test*star *")])) == star  # * is a wildcard: matches itself too
    under = {j.id for j in mine if j.name.startswith("big_run")}
    assert under and set(_ids([("name.like", "big_run*")])) == under
    assert _ids([("name.like", "big?run*")]) == []  # _ and ? are literal
    assert set(_ids([("inputs.like", '*/file-3.txt"}')])) == {j.id for j in mine if "file-3.txt" in str(j.inputs)}


def test_free_form_dates():
    assert parse_date("now", NOW).start == NOW
    day = datetime(2026, 12, 2, tzinfo=UTC)
    assert parse_date("today", NOW) == search.When(day, day + timedelta(days=1))
    assert parse_date("Yesterday", NOW).start == day - timedelta(days=1)
    assert parse_date("tomorrow", NOW).start == day + timedelta(days=1)
    assert parse_date("-3 hours", NOW).start == NOW - timedelta(hours=3)
    assert parse_date("-3hours", NOW).start == NOW - timedelta(hours=3)
    assert parse_date("+2 days", NOW).start == NOW + timedelta(days=2)
    assert parse_date("3 days ago", NOW).start == NOW - timedelta(days=3)
    assert parse_date("1 week ago", NOW).start == NOW - timedelta(weeks=1)
    assert parse_date("in 30 min", NOW).start == NOW + timedelta(minutes=30)
    assert parse_date("-1 month", NOW).start == datetime(2026, 11, 2, 14, tzinfo=UTC)
    assert parse_date("-1 year", NOW).start == datetime(2025, 12, 2, 14, tzinfo=UTC)
    assert parse_date("last monday", NOW).start == datetime(2026, 11, 30, tzinfo=UTC)
    assert parse_date("last wednesday", NOW).start == datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_date("next friday", NOW).start == datetime(2026, 12, 4, tzinfo=UTC)
    assert parse_date("10/1", NOW) == search.When(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC))
    assert parse_date("10/30/2025", NOW).start == datetime(2025, 10, 30, tzinfo=UTC)
    assert parse_date("2026-11-05", NOW).is_day
    assert parse_date("2026-11-05T10:00:00Z", NOW) == search.When(datetime(2026, 11, 5, 10, tzinfo=UTC))
    assert parse_date("2026-11-05T10:00:00", NOW).start == datetime(2026, 11, 5, 10, tzinfo=UTC)  # UTC
    assert parse_date("2026-11-05T12:00:00 02:00", NOW).start == datetime(2026, 11, 5, 10, tzinfo=UTC)  # + lost
    assert parse_date("2026-11-05 12:00:00-02:00", NOW).start == datetime(2026, 11, 5, 14, tzinfo=UTC)
    for bad in ("", "someday", "-3 parsecs", "13/45", "2026-13-01", "last moonday", "12", "2026-11-05Tnoon"):
        with pytest.raises(ValueError):
            parse_date(bad, NOW)


def test_free_form_dates_in_terms(rows):
    mine = _readable(rows)
    want = {j.id for j in mine if j.created > NOW - timedelta(hours=30)}
    assert set(_ids([("created.after", "-30 hours")])) == want
    yesterday = (NOW - timedelta(days=1)).date()
    assert set(_ids([("created.on", "yesterday")])) == {j.id for j in mine if j.created.date() == yesterday}
    assert set(_ids([("created.eq", "yesterday")])) == {j.id for j in mine if j.created.date() == yesterday}
    since = {j.id for j in mine if j.created >= NOW - timedelta(days=3)}  # an instant, to the end of today
    assert set(_ids([("created.between", "3 days ago,today")])) == since
    assert set(_ids([("created.before", "last monday")])) == {
        j.id for j in mine if j.created < datetime(2026, 11, 30, tzinfo=UTC)
    }


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([("nosuchfield", "1")], "Valid job search fields: appId, archive"),
        ([("status.like.more", "1")], "Unknown search field"),
        ([("status.foo", "1")], "Valid operators: eq, neq, lt"),
        ([("nodeCount.like", "1")], "Valid operators for nodeCount: eq, neq"),
        ([("created.rlike", "1")], "does not apply to created"),
        ([("archive.in", "true")], "Valid operators for archive: eq, neq"),
        ([("status.lt", "RUNNING")], "does not apply to status"),
        ([("nodeCount", "seven")], "nodeCount.eq=seven: 'seven' is not an integer"),
        ([("memoryPerNode.gt", "nan")], "is not a number"),
        ([("maxRunTime.lt", "1:xx:00")], "maxRunTime.lt=1:xx:00"),
        ([("created.after", "the day before")], "created.after=the day before: 'the day before' is not a date"),
        ([("created.between", "today")], "between takes two"),
        ([("archive", "maybe")], "archive.eq=maybe: 'maybe' is not true or false"),
        ([("status", "SLEEPING")], "'SLEEPING' is not a job status"),
        ([("name.rlike", "(unclosed")], "not a regular expression"),
        ([("order", "sideways")], "Invalid value for order 'sideways'"),
        ([("orderBy", "colour")], "Invalid value for orderBy 'colour'. Valid fields: appId"),
    ],
)
def test_bad_terms_are_400s_that_name_them(params, fragment):
    with pytest.raises(BadRequest) as info:
        search.job_search(params, now=NOW)
    assert fragment in info.value.message, info.value.message


def test_a_regular_expression_postgresql_refuses_is_a_400(rows):
    with pytest.raises(BadRequest, match="Invalid search term"):
        _ids([("name.rlike", "(?P<x>a)")])  # Python's named group: PostgreSQL does not know it


def test_envelope_and_paging_parameters_are_not_terms(rows):
    params = [(k, "x") for k in ("filter", "naked", "pretty", "limit", "offset", "FORCE")]
    assert search.job_search(params).where == []


def test_ordering(rows):
    mine = _readable(rows)
    default = [j.id for j in sorted(mine, key=lambda j: (j.created, j.id), reverse=True)]
    assert _ids([]) == default
    assert _ids([("order", "ASC")]) == default[::-1]
    by_nodes = [j.id for j in sorted(mine, key=lambda j: (j.node_count, j.id))]
    assert _ids([("orderby", "NODECOUNT"), ("order", "asc")]) == by_nodes
    assert _ids([("orderBy", "nodeCount")]) == by_nodes[::-1]  # DESC by default
    found = search.job_search([("status", "RUNNING")], now=NOW)
    page = store.list_jobs(ALICE, False, limit=2, offset=1, search=found)
    running = [j for j in default if any(r.id == j and r.status == "RUNNING" for r in mine)]
    assert [j.id for j in page] == running[1:3]


def test_permissions_and_hiding(rows):
    hidden, bobs_hidden = rows[5], rows[50]
    assert hidden.owner == ALICE and not hidden.visible
    mine = set(_ids([]))
    assert rows[46].id in mine and rows[47].id not in mine and hidden.id not in mine
    # a non-admin never sees a hidden job, whatever visible says
    assert _ids([("visible", "false")]) == []
    assert hidden.id not in _ids([("visible.neq", "true"), ("id", hidden.id)])
    assert _ids([("id", hidden.id)]) == []
    assert _ids([("id", rows[47].id)]) == []  # BOB's, not shared
    assert _ids([("owner", BOB)]) == [rows[46].id]  # only the shared one
    # an admin sees everyone's visible jobs, and hidden ones only when asking for them by visible
    scope = [("owner.in", f"{ALICE},{BOB}")]
    everyone = set(_ids(scope, "root", True))
    assert everyone == {j.id for j in rows if j.visible}
    assert set(_ids([*scope, ("visible", "false")], "root", True)) == {hidden.id, bobs_hidden.id}
    assert set(_ids([*scope, ("visible.neq", "false")], "root", True)) == everyone


# ---------------------------------------------------------------- history search


def _history(job: Job, params: list[tuple[str, str]]) -> list[JobEvent]:
    return store.history(job.id, limit=100, offset=0, search=search.history_search(params, now=NOW))


def test_history_search(rows):
    job = next(j for j in rows if j.owner == ALICE and j.visible and j.status not in ("PENDING", "QUEUED", "RUNNING"))
    every = store.history(job.id, limit=100, offset=0)
    assert [e.id for e in every] == sorted(e.id for e in every)  # oldest first
    assert [e.id for e in _history(job, [("order", "DESC")])] == [e.id for e in every][::-1]
    assert [e.status for e in _history(job, [("status.eq", "running")])] == [
        e.status for e in every if e.status == "RUNNING"
    ]
    after = every[0].created.isoformat()
    assert [e.id for e in _history(job, [("created.after", after)])] == [
        e.id for e in every if e.created > every[0].created
    ]
    assert [e.id for e in _history(job, [("createdby", "AIRJOBS")])] == [
        e.id for e in every if e.created_by == "airjobs"
    ]
    assert [e.id for e in _history(job, [("description.like", "*queued*")])] == [
        e.id for e in every if "queued" in e.description
    ]
    assert [
        e.id for e in _history(job, [("status.in", "PENDING,QUEUED"), ("orderBy", "created"), ("order", "desc")])
    ] == [e.id for e in every if e.status in ("PENDING", "QUEUED")][::-1]
    assert [e.id for e in _history(job, [("created.on", every[0].created.date().isoformat())])] == [
        e.id for e in every if e.created.date() == every[0].created.date()
    ]
    with pytest.raises(BadRequest, match="Valid history search fields: status, created, createdBy, description"):
        search.history_search([("appId", "x")])
