"""Notification delivery benchmark (issue 13; numbers go into README.md; this is not a test).

    .venv/bin/python bench/notifications.py [--jobs 1000] [--threads 4]

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

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]
os.environ.setdefault("AIRJOBS_VAR", tempfile.mkdtemp(prefix="ajb-", dir="/tmp"))
os.environ["AIRJOBS_EGRESS_ALLOW"] = "127.0.0.2"
EVENTS = ("QUEUED", "RUNNING", "FINISHED")
PATH = ("STAGED", "SUBMITTING", "QUEUED", "RUNNING", "CLEANING_UP", "FINISHED")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


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
    ap.add_argument("--jobs", type=int, default=1000)
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

    stop = threading.Event()
    loop = asyncio.new_event_loop()

    async def deliver() -> None:
        trigger = OutboxTrigger(run_for=3600)
        async for _ in trigger.run():
            break

    task = loop.create_task(deliver())
    threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True).start()
    time.sleep(1.0)  # the listener is up

    committed: dict[tuple[str, str], float] = {}
    lock = threading.Lock()

    def drive(job_id: str) -> None:
        for status in PATH:
            transition(job_id, status)
            if status in EVENTS:
                with lock:
                    committed[(job_id, status)] = time.time()

    started = time.time()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(drive, ids))
    changes_done = time.time()
    expected = len(ids) * len(EVENTS)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len({(j, e) for j, e, _, _ in receiver.got}) < expected:
        time.sleep(0.2)
    time.sleep(2.0)  # anything duplicated arrives too
    stop.set()
    loop.call_soon_threadsafe(task.cancel)

    first: dict[tuple[str, str], float] = {}
    for j, e, _, at in receiver.got:
        first.setdefault((j, e), at)
    lat = [first[k] - committed[k] for k in first if k in committed]
    wall = max(first.values()) - started if first else float("nan")
    result = {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "jobs": len(ids),
        "expected_deliveries": expected,
        "delivered": len(first),
        "lost": expected - len(first),
        "duplicates": len(receiver.got) - len(first),
        "status_changes": len(ids) * len(PATH),
        "status_changes_per_s": round(len(ids) * len(PATH) / (changes_done - started), 1),
        "deliveries_per_s": round(len(first) / wall, 1),
        "latency_s": {"p50": round(pct(lat, 50), 3), "p99": round(pct(lat, 99), 3), "max": round(max(lat), 3)},
    }
    print(json.dumps(result, indent=2))
    (CHECKOUT / "bench/results-notifications.json").write_text(json.dumps(result, indent=2) + "\n")
    pgserver.stop()


if __name__ == "__main__":
    main()
