"""Job search benchmark (issue 14; numbers go into README.md; this is not a test).

    .venv/bin/python bench/search.py [--jobs 100000] [--runs 40]

Its own embedded PostgreSQL (own var dir), the project's tables (migrations up to 0009, the search indexes).
N jobs with their histories (5 events each on average) are inserted through ``store.insert_many``: 200 owners,
20 apps, 10 systems, every status, created over the last 365 days, 2% hidden, a few grants. Then every operator
on the fields of its type is timed through the real search: ``search.job_search`` (parsing the terms) and
``store.list_jobs`` (the SQL ``GET /jobs/v2`` runs, limit 100), for an admin (all 100,000 jobs) and for a user
(her ~500 jobs and a few shared ones); history search through ``store.history``; and a few queries through the
HTTP route itself (FastAPI TestClient, a backend that knows two tokens). p50 and p99 per query, in ms.
Results also go to bench/results-search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import pct

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]
os.environ.setdefault("AIRJOBS_VAR", tempfile.mkdtemp(prefix="ajs-", dir="/tmp"))

OWNERS = [f"user{i:03d}" for i in range(200)]
APPS = [f"{name}-{v}.0" for name in ("wc", "hadoop", "blast", "cloud-runner", "gromacs") for v in range(1, 5)]
SYSTEMS = [f"{s}-{i}" for s in ("aws-demo", "stampede", "hpc") for i in range(3)] + ["demo-fork"]
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")
ACTIVE = ("PENDING", "STAGED", "QUEUED", "RUNNING", "ARCHIVING")
USER = "user007"


def make_rows(n: int, now: datetime, seed: int = 14) -> tuple[list[Any], list[Any]]:
    from airjobs.models import Job, JobEvent
    from airjobs.timeutil import new_job_id

    rnd = random.Random(seed)
    jobs, events = [], []
    for i in range(n):
        created = now - timedelta(seconds=rnd.randrange(365 * 86400))
        status = rnd.choice(TERMINAL * 3 + ACTIVE)
        started = created + timedelta(seconds=rnd.randrange(5, 3600)) if status not in ("PENDING", "STAGED") else None
        ended = started + timedelta(seconds=rnd.randrange(10, 20000)) if started and status in TERMINAL else None
        app = rnd.choice(APPS)
        job = Job(
            id=new_job_id(),
            name=f"{app.split('-')[0]}-run-{i}",
            owner=rnd.choice(OWNERS),
            app_id=app,
            execution_system=rnd.choice(SYSTEMS),
            batch_queue=rnd.choice(("normal", "debug", "long", None)),
            node_count=rnd.randint(1, 64),
            processors_per_node=rnd.choice((1, 2, 4, 8, 16, 32)),
            memory_per_node=rnd.choice((0.5, 1.0, 2.0, 4.0, 16.0, 64.0)),
            max_run_time=f"{rnd.randint(0, 48):02d}:{rnd.randrange(60):02d}:00",
            archive=rnd.random() < 0.7,
            archive_system="store" if rnd.random() < 0.7 else None,
            archive_path=f"{OWNERS[i % 200]}/archive/jobs/job-{i}",
            retries=rnd.randint(0, 3),
            local_id=str(100000 + i) if started else None,
            status=status,
            message="exit code 1" if status == "FAILED" else None,
            work_path=f"/work/{i}",
            submit_time=started and started - timedelta(seconds=2),
            start_time=started,
            end_time=ended,
            created=created,
            last_updated=ended or started or created,
            inputs={"inputFile": f"agave://store/data/sample-{i % 977}.txt"},
            parameters={"words": rnd.random() < 0.5, "threads": rnd.randint(1, 8)},
            notifications=[],
            request={},
            visible=rnd.random() >= 0.02,
        )
        jobs.append(job)
        t = created
        for st in ("PENDING", "STAGED", "QUEUED", "RUNNING", status)[: rnd.randint(2, 6)]:
            events.append(
                JobEvent(job_id=job.id, status=st, description=f"{st} reached", created=t, created_by=job.owner)
            )
            t += timedelta(seconds=rnd.randrange(1, 600))
    return jobs, events


def job_queries(now: datetime) -> list[tuple[str, list[tuple[str, str]]]]:
    day = (now - timedelta(days=30)).date().isoformat()
    t = (now - timedelta(days=60)).isoformat()
    return [
        ("listing (no terms)", []),
        ("string eq  executionsystem=aws-demo-1", [("executionsystem", "aws-demo-1")]),
        ("string neq appId.neq=wc-1.0", [("appId.neq", "wc-1.0")]),
        ("string lt  name.lt=blast", [("name.lt", "blast")]),
        ("string in  appid.in=blast-2.0,gromacs-3.0", [("appid.in", "blast-2.0,gromacs-3.0")]),
        ("string nin batchQueue.nin=normal,debug", [("batchQueue.nin", "normal,debug")]),
        ("string like appId.like=*hadoop*", [("appId.like", "*hadoop*")]),
        ("string like name.like=blast-run-99*", [("name.like", "blast-run-99*")]),
        ("string nlike name.nlike=*run*", [("name.nlike", "*run*")]),
        ("string rlike name.rlike=^gromacs-run-1[0-9]$", [("name.rlike", "^gromacs-run-1[0-9]$")]),
        ("string between owner.between=user010,user012", [("owner.between", "user010,user012")]),
        ("id eq", [("id", "__ID__")]),
        ("status eq status=RUNNING", [("status", "RUNNING")]),
        ("status in status.in=PENDING,ARCHIVING", [("status.in", "PENDING,ARCHIVING")]),
        ("status wildcard status=*ING", [("status", "*ING")]),
        ("status nin status.nin=FINISHED,FAILED", [("status.nin", "FINISHED,FAILED")]),
        ("int eq nodeCount=7", [("nodeCount", "7")]),
        ("int gt nodecount.gt=60", [("nodecount.gt", "60")]),
        ("int between processorsPerNode.between=4,8", [("processorsPerNode.between", "4,8")]),
        ("float gte memoryPerNode.gte=64", [("memoryPerNode.gte", "64")]),
        ("int in retries.in=0,3", [("retries.in", "0,3")]),
        ("seconds maxRunTime.lt=00:30:00", [("maxRunTime.lt", "00:30:00")]),
        ("seconds runtime.gt=19000", [("runtime.gt", "19000")]),
        ("seconds walltime.between=100,200", [("walltime.between", "100,200")]),
        ("date on created.on=<30 days ago>", [("created.on", day)]),
        ("date after created.after=-3 hours", [("created.after", "-3 hours")]),
        ("date before created.before=<60 days ago>", [("created.before", t)]),
        ("date between endtime.between=yesterday,today", [("endtime.between", "yesterday,today")]),
        ("date gte starttime.gte=-2 days", [("starttime.gte", "-2 days")]),
        ("date lt lastModified.lt=<60 days ago>", [("lastModified.lt", t)]),
        ("date eq submitTime.eq=yesterday", [("submitTime.eq", "yesterday")]),
        ("bool eq archive=false", [("archive", "false")]),
        ("bool visible.eq=false (admin: hidden jobs)", [("visible.eq", "false")]),
        ("json like inputs.like=*sample-42.txt*", [("inputs.like", "*sample-42.txt*")]),
        ('json like parameters.like=*"threads": 8*', [("parameters.like", '*"threads": 8*')]),
        (
            "3 terms appId.like=*hadoop*&executionSystem.eq=aws-demo-1&status.eq=FINISHED",
            [("appId.like", "*hadoop*"), ("executionSystem.eq", "aws-demo-1"), ("status.eq", "FINISHED")],
        ),
        ("orderBy=name&order=asc", [("orderBy", "name"), ("order", "asc")]),
        ("orderBy=endTime, status=FINISHED", [("orderBy", "endTime"), ("status", "FINISHED")]),
    ]


def timed(fn: Any, runs: int) -> tuple[float, float, Any]:
    for _ in range(3):
        out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return pct(times, 50), pct(times, 99), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()

    from sqlalchemy import text

    from airjobs import db, pgserver, search, store
    from airjobs.models import JobPermission

    pgserver.start()
    try:
        db.migrate()
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        jobs, events = make_rows(args.jobs, now)
        for i in range(0, len(jobs), 5000):
            chunk = jobs[i : i + 5000]
            ids = {j.id for j in chunk}
            store.insert_many(chunk, [e for e in events if e.job_id in ids])
        ids = [j.id for j in jobs]
        shared = [i for i, j in enumerate(jobs) if j.owner != USER][:40]
        with db.transaction() as s:
            for i in shared:
                s.add(JobPermission(job_id=ids[i], username=USER, permission="READ", created=now, created_by="x"))
        with db.engine().connect() as c:
            c.execute(text("ANALYZE"))
            c.commit()
        load_s = time.perf_counter() - t0
        print(f"inserted {len(jobs)} jobs and {len(events)} events in {load_s:.1f} s", flush=True)
        some_id = ids[len(ids) // 2]
        del jobs, events

        rows: list[dict[str, Any]] = []
        for label, params in job_queries(now):
            params = [(k, some_id if v == "__ID__" else v) for k, v in params]
            row: dict[str, Any] = {"query": label}
            for who, admin in (("admin", True), (USER, False)):

                def run(params: list[tuple[str, str]] = params, who: str = who, admin: bool = admin) -> Any:
                    return store.list_jobs(who, admin, limit=100, offset=0, search=search.job_search(params))

                p50, p99, out = timed(run, args.runs)
                row[who] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "rows": len(out)}
            rows.append(row)
            print(
                f"{label:72s} admin p50 {row['admin']['p50_ms']:6.2f} p99 {row['admin']['p99_ms']:6.2f} "
                f"({row['admin']['rows']:3d})  user p50 {row[USER]['p50_ms']:6.2f} p99 {row[USER]['p99_ms']:6.2f}",
                flush=True,
            )

        history_rows = []
        for label, params in (
            ("history (no terms)", []),
            ("history status.eq=RUNNING", [("status.eq", "RUNNING")]),
            ("history created.after=-1 year&description.like=*reached*", [("created.after", "-1 year")]),
            ("history status.in=PENDING,QUEUED&order=desc", [("status.in", "PENDING,QUEUED"), ("order", "desc")]),
        ):

            def hist(params: list[tuple[str, str]] = params) -> Any:
                return store.history(some_id, limit=100, offset=0, search=search.history_search(params))

            p50, p99, out = timed(hist, args.runs)
            history_rows.append({"query": label, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "rows": len(out)})
            print(f"{label:72s} p50 {p50:6.2f} p99 {p99:6.2f} ({len(out)})", flush=True)

        http_rows = http_bench(args.runs)
        out = {
            "jobs": len(ids),
            "load_seconds": round(load_s, 1),
            "runs_per_query": args.runs,
            "limit": 100,
            "user": USER,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "queries": rows,
            "history": history_rows,
            "http": http_rows,
        }
        (CHECKOUT / "bench/results-search.json").write_text(json.dumps(out, indent=2) + "\n")
    finally:
        pgserver.stop()


def http_bench(runs: int) -> list[dict[str, Any]]:
    """A few queries through GET /jobs/v2 itself (TestClient: the facade in this process, no network)."""
    from fastapi.testclient import TestClient

    from airjobs.api.app import User, create_app
    from airjobs.api.throttle import LoginThrottle
    from airjobs.errors import Unauthorized

    class Bench:
        async def authenticate(self, token: str) -> User:
            if token not in ("admin", USER):
                raise Unauthorized("no")
            return User(token, is_admin=token == "admin")

        def authorize(self, user: User, method: str, resource: str) -> bool:
            return True

        def __getattr__(self, name: str) -> Any:
            raise AttributeError(name)

    app = create_app(Bench(), LoginThrottle())  # type: ignore[arg-type]
    rows = []
    with TestClient(app) as c:
        for query in (
            "",
            "appId.like=*hadoop*&executionSystem.eq=aws-demo-1&status.eq=FINISHED",
            "created.after=-3%20hours",
            "status.in=PENDING,ARCHIVING&naked=true&filter=id,status",
        ):
            for who in ("admin", USER):
                headers = {"Authorization": f"Bearer {who}"}

                def get(query: str = query, headers: dict[str, str] = headers) -> Any:
                    r = c.get(f"/jobs/v2?{query}", headers=headers)
                    assert r.status_code == 200, r.text
                    return r

                p50, p99, _ = timed(get, runs)
                rows.append(
                    {"query": f"GET /jobs/v2?{query}", "as": who, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
                )
                print(f"HTTP {who:8s} {query:70s} p50 {p50:6.2f} p99 {p99:6.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
