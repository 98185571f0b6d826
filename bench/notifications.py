"""Notification delivery benchmark (issue 13; numbers go into README.md; this is not a test).

    .venv/bin/python bench/notifications.py [--jobs 2000] [--threads 4]

Its own embedded PostgreSQL (own var dir), the project's tables, the demo app. N jobs are created through the
store, each with three webhook notifications (QUEUED, RUNNING, FINISHED) to a local HTTP receiver on 127.0.0.2;
then every job is moved PENDING -> STAGED -> SUBMITTING -> QUEUED -> RUNNING -> CLEANING_UP -> FINISHED through
``lifecycle.transition`` (the outbox rows are written in those transactions) by a few threads at once, while
the deliverer runs: the real ``OutboxTrigger.run()`` of the triggerer, in this process's event loop, woken by
NOTIFY. Measured: from each status change's commit to the receipt of its webhook (p50/p99), deliveries per
second, lost and duplicated deliveries. Results also go to bench/results-notifications.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import pct

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]
os.environ.setdefault("AIRJOBS_VAR", tempfile.mkdtemp(prefix="ajb-", dir="/tmp"))
os.environ["AIRJOBS_EGRESS_ALLOW"] = "127.0.0.2"
EVENTS = ("QUEUED", "RUNNING", "FINISHED")
PATH = ("STAGED", "SUBMITTING", "QUEUED", "RUNNING", "CLEANING_UP", "FINISHED")


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, str, str, float]] = []  # job, event, webhook-id, time
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                at = time.time()
                with outer.lock:
                    outer.got.append((body["id"], body["status"], self.headers["webhook-id"], at))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.2:{self.server.server_address[1]}/hook"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    from airjobs import db, demo, pgserver, store, submission
    from airjobs.lifecycle import transition
    from airjobs_airflow.notifier import OutboxTrigger

    pgserver.start()
    db.migrate()
    demo.register()
    receiver = Receiver()
    body = json.loads((CHECKOUT / "include/examples/demo-job.json").read_text())
    body["notifications"] = [{"url": receiver.url, "event": e} for e in EVENTS]
    t0 = time.monotonic()
    ids = [store.create_job(submission.build_job(body, "bench"), created_by="bench")[0].id for _ in range(args.jobs)]
    print(f"{len(ids)} jobs with 3 notifications each created in {time.monotonic() - t0:.1f}s", flush=True)

    committed: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def drive(job_id: str) -> None:
        for status in PATH:
            transition(job_id, status)
            if status in EVENTS:
                with lock:
                    committed[(job_id, status)] = time.time()

    def drive_all(job_ids: list[str]) -> float:
        started = time.time()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(drive, job_ids))
        return started

    def wait_for(job_ids: list[str]) -> dict[tuple[str, str], float]:
        want = {(j, e) for j in job_ids for e in EVENTS}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with receiver.lock:
                have = {(j, e) for j, e, _, _ in receiver.got} & want
            if len(have) == len(want):
                break
            time.sleep(0.2)
        time.sleep(2.0)  # anything duplicated arrives too
        first: dict[tuple[str, str], float] = {}
        with receiver.lock:
            for j, e, _, at in receiver.got:
                if (j, e) in want:
                    first.setdefault((j, e), at)
        return first

    loop = asyncio.new_event_loop()

    async def deliver() -> None:
        try:
            async for _ in OutboxTrigger(run_for=3600).run():
                break
        except asyncio.CancelledError:
            pass

    # (b) first, without a deliverer: the backlog of half the jobs' status changes
    backlog, live = ids[: len(ids) // 2], ids[len(ids) // 2 :]
    drive_all(backlog)
    task = loop.create_task(deliver())
    drain_start = time.time()
    threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True).start()
    drained = wait_for(backlog)
    drain_s = max(drained.values()) - drain_start if drained else float("nan")
    # (a) then live: status changes while the deliverer runs, commit -> receipt
    time.sleep(1.0)
    started = drive_all(live)
    changes_done = time.time()
    first = wait_for(live)
    loop.call_soon_threadsafe(task.cancel)

    lat = [first[k] - committed[k] for k in first if k in committed]
    wall = max(first.values()) - started if first else float("nan")
    with receiver.lock:
        total, unique = len(receiver.got), len({(j, e) for j, e, _, _ in receiver.got})
    expected = len(ids) * len(EVENTS)
    result = {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "jobs": len(ids),
        "expected_deliveries": expected,
        "delivered": unique,
        "lost": expected - unique,
        "duplicates": total - unique,
        "live": {
            "jobs": len(live),
            "status_changes_per_s": round(len(live) * len(PATH) / (changes_done - started), 1),
            "deliveries_per_s": round(len(first) / wall, 1),
            "latency_s": {"p50": round(pct(lat, 50), 3), "p99": round(pct(lat, 99), 3), "max": round(max(lat), 3)},
        },
        "backlog": {
            "deliveries": len(drained),
            "drained_in_s": round(drain_s, 2),
            "deliveries_per_s": round(len(drained) / drain_s, 1),
        },
    }
    print(json.dumps(result, indent=2))
    (CHECKOUT / "bench/results-notifications.json").write_text(json.dumps(result, indent=2) + "\n")
    pgserver.stop()


if __name__ == "__main__":
    main()
