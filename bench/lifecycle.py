"""Lifecycle benchmark on the embedded default (numbers go into README.md; this is not a test).

    make bench            # or: .venv/bin/python bench/lifecycle.py [--sequential 20] [--burst 100]

Starts its own service (own var dir and port), then measures:
  (a) N sequential demo jobs, submit -> FINISHED: p50/p95
  (b) N sequential runs of the no-op 5-task DAG bench_noop_5 through Airflow's REST API: p50/p95, ratio a/b
  (c) a burst of concurrent submissions: lost jobs, time until all FINISHED, jobs/s
  (d) POST /jobs/v2 and GET /jobs/v2/{id}/status latency, 1 client and 20 concurrent clients, and the
      20-client throughput as a ratio to Airflow's own /api/v2/version in the same run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import pct

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]

TERMINAL = {"FINISHED", "FAILED", "STOPPED", "KILLED"}
PASSWORD = "bench-admin-pw"


class Bench:
    def __init__(self, base: str):
        self.base = base
        r = httpx.post(f"{base}/token", data={"grant_type": "password", "username": "admin", "password": PASSWORD})
        r.raise_for_status()
        self.agave = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": PASSWORD})
        r.raise_for_status()
        self.airflow = {"Authorization": f"Bearer {r.json()['access_token']}"}
        self.demo = json.loads((CHECKOUT / "include/examples/demo-job.json").read_text())

    def submit(self, c: httpx.Client, **changes) -> str:
        r = c.post(f"{self.base}/jobs/v2", json={**self.demo, **changes}, headers=self.agave)
        r.raise_for_status()
        return r.json()["result"]["id"]

    def job_latency(self, c: httpx.Client) -> float:
        t0 = time.perf_counter()
        job_id = self.submit(c)
        while True:
            status = c.get(f"{self.base}/jobs/v2/{job_id}/status", headers=self.agave).json()["result"]["status"]
            if status in TERMINAL:
                if status != "FINISHED":
                    raise RuntimeError(f"job {job_id} ended {status}")
                return time.perf_counter() - t0
            time.sleep(0.02)

    def noop_latency(self, c: httpx.Client) -> float:
        t0 = time.perf_counter()
        r = c.post(f"{self.base}/api/v2/dags/bench_noop_5/dagRuns", json={"logical_date": None}, headers=self.airflow)
        r.raise_for_status()
        run_id = r.json()["dag_run_id"]
        while True:
            state = c.get(f"{self.base}/api/v2/dags/bench_noop_5/dagRuns/{run_id}", headers=self.airflow).json()[
                "state"
            ]
            if state in ("success", "failed"):
                if state != "success":
                    raise RuntimeError(f"bench_noop_5 run {run_id} {state}")
                return time.perf_counter() - t0
            time.sleep(0.02)

    def burst(self, n: int) -> dict:
        from airjobs import store

        before = store.count_jobs()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=20) as pool, httpx.Client(timeout=120) as c:
            ids = list(pool.map(lambda i: self.submit(c, name=f"burst-{i}"), range(n)))
        accepted = time.perf_counter() - t0
        while True:
            jobs = store.jobs_by_ids(ids)
            if all(j.status in TERMINAL for j in jobs) or time.perf_counter() - t0 > 1800:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - t0
        jobs = store.jobs_by_ids(ids)
        return {
            "submitted": n,
            "distinct_ids": len(set(ids)),
            "rows_written": store.count_jobs() - before,
            "lost": n - len(jobs),
            "finished": sum(j.status == "FINISHED" for j in jobs),
            "not_finished": [j.id for j in jobs if j.status != "FINISHED"],
            "accept_s": round(accepted, 2),
            "all_terminal_s": round(elapsed, 1),
            "jobs_per_s": round(n / elapsed, 2),
        }

    def http_latency(self, job_id: str, clients: int, per_client: int) -> dict:
        """Closed-loop clients; returns latency percentiles (ms) and throughput for each endpoint."""
        out = {}
        endpoints = {
            "status": lambda c: c.get(f"{self.base}/jobs/v2/{job_id}/status", headers=self.agave),
            "airflow_version": lambda c: c.get(f"{self.base}/api/v2/version"),
            "submit": lambda c: c.post(
                f"{self.base}/jobs/v2", json={**self.demo, "archive": False}, headers=self.agave
            ),
        }
        for name, call in endpoints.items():
            count = per_client if name != "submit" else max(5, per_client // 10)
            lat: list[float] = []
            lock = threading.Lock()

            def worker(call=call, count=count, lock=lock, lat=lat):
                with httpx.Client(timeout=120) as c:
                    call(c)  # connect once before timing
                    for _ in range(count):
                        t = time.perf_counter()
                        r = call(c)
                        d = time.perf_counter() - t
                        assert r.status_code < 300, r.text
                        with lock:
                            lat.append(d)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            out[name] = {
                "p50_ms": round(pct(lat, 50) * 1000, 1),
                "p99_ms": round(pct(lat, 99) * 1000, 1),
                "req_per_s": round(len(lat) / wall, 1),
                "n": len(lat),
            }
        return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait after warm-up")
    parser.add_argument("--no-http", action="store_true", help="skip (d)")
    parser.add_argument("--out", default=str(CHECKOUT / "bench" / "results-lifecycle.json"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRJOBS_BENCH_PORT", "38080")))
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="ajb-", dir="/tmp"))
    os.environ.update({"AIRJOBS_VAR": str(var), "AIRJOBS_PORT": str(args.port), "AIRJOBS_ADMIN_PASSWORD": PASSWORD})
    os.environ.pop("AIRJOBS_DB_URL", None)
    (var / "xdg").mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(var / "xdg")
    from airjobs import service

    print(f"[bench] starting the service in {var} on port {args.port}", flush=True)
    proc = service.spawn([], var / "service.log")
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
        f"Python {platform.python_version()}"
    }
    try:
        b = Bench(f"http://127.0.0.1:{args.port}")
        with httpx.Client(timeout=120) as c:
            for _ in range(2):  # warm-up: first runs import, fill pools and caches
                b.job_latency(c)
                b.noop_latency(c)
            time.sleep(args.settle)  # let the dag-processor's start-up parsing finish
            jobs, noops = [], []
            for _ in range(args.sequential):  # interleaved, so both see the same machine
                jobs.append(b.job_latency(c))
                noops.append(b.noop_latency(c))
            probe = b.submit(c, name="probe")
        results["a_jobs"] = {"n": len(jobs), "p50_s": round(pct(jobs, 50), 2), "p95_s": round(pct(jobs, 95), 2)}
        results["b_noop_5"] = {"n": len(noops), "p50_s": round(pct(noops, 50), 2), "p95_s": round(pct(noops, 95), 2)}
        results["ratio_a_b_p50"] = round(pct(jobs, 50) / pct(noops, 50), 3)
        print(json.dumps(results, indent=1), flush=True)
        if args.burst:
            results["c_burst"] = b.burst(args.burst)
            print(json.dumps(results["c_burst"], indent=1), flush=True)
        if args.no_http:
            return 0
        time.sleep(args.settle)  # let the burst's last runs finish
        results["d_http_1_client"] = b.http_latency(probe, clients=1, per_client=200)
        time.sleep(args.settle)  # let the jobs the submissions started finish
        results["d_http_20_clients"] = b.http_latency(probe, clients=20, per_client=50)
        d20 = results["d_http_20_clients"]
        results["d_status_throughput_vs_airflow_version"] = round(
            d20["status"]["req_per_s"] / d20["airflow_version"]["req_per_s"], 2
        )
    finally:
        service.terminate(proc)
        results["settings"] = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("AIRFLOW__", "AIRJOBS_MONITOR")) and "SECRET" not in k and "FERNET" not in k
        }
        print(json.dumps(results, indent=1))
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"[bench] written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
