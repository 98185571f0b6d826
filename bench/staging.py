"""Input staging benchmark over SFTP on the loopback OpenSSH test host (numbers go into README.md; this is
not a test).

    .venv/bin/python bench/staging.py [--size-mib 1024] [--runs 3] [--one-connection]

Needs the test hosts (.ci/infra-up.sh; settings in $AIRJOBS_INFRA_ENV, default var/infra/infra.env) and
root (the input file is written straight into the SSH user's home). Starts its own embedded PostgreSQL in a
temporary AIRJOBS_VAR; the Airflow service is not needed (Connections are given as AIRFLOW_CONN_<ID>).

What it measures, alternating baseline and staging runs so both see the same machine:

* staging: ``airjobs.steps.stage.stage`` of a job whose one input is ``agave://<sftp storage>/<file>`` on an SSH
  execution system (FORK) of the same host: the real code path (SSHTransport over the SSH provider's
  SSHHook, ``transports.copy``, sha256 and progress events, the job's history in PostgreSQL). Each run opens
  its SSH connections anew, as the baseline's ssh processes do.
* baseline (the ratio's denominator): ``scp -3 -s`` between two SFTP sessions to the same server: OpenSSH's
  own SFTP client reading the file over one connection and writing it over another, streamed through this
  host. That is exactly what staging does (SFTP read -> this host -> SFTP write, no local file), done by
  OpenSSH in C with its default cipher.
* also reported: ``sftp get`` to /dev/shm followed by ``sftp put`` of that copy (the same bytes through the
  same server, one direction after the other, with a local file in between), and each half alone.

MB/s are 10^6 bytes per second of input size over wall time (connection set-up included for all).
Writes bench/results-staging.json; removes the files it made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import read_infra, sha256_file

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]

OWNER = "benchuser"
APP = "stagebench-1.0"
STORAGE_CONN, EXEC_CONN = "ajb_stage_storage", "ajb_stage_exec"


def make_input(path: Path, size: int, user: str) -> str:
    """``size`` random bytes at ``path`` owned by ``user``; returns their sha256."""
    h = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return h.hexdigest()


def mkdir_as(path: Path, user: str) -> None:
    subprocess.run(["install", "-d", "-o", user, str(path)], check=True)


def rm(path: Path | str) -> None:
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class OpenSSH:
    """The baseline: OpenSSH's own clients against the same server, with their defaults."""

    def __init__(self, infra: dict[str, str]):
        self.user, self.host = infra["AIRJOBS_SSH_USER"], infra["AIRJOBS_SSH_HOST"]
        self.port = infra["AIRJOBS_SSH_PORT"]
        self.opts = [
            "-i",
            infra["AIRJOBS_SSH_KEY"],
            "-o",
            f"UserKnownHostsFile={infra['AIRJOBS_SSH_KNOWN_HOSTS']}",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ]
        self.remote = f"{self.user}@{self.host}"

    def _timed(self, argv: list[str], stdin: str | None = None) -> float:
        t0 = time.perf_counter()
        p = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        took = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
        return took

    def sftp(self, command: str) -> float:
        return self._timed(["sftp", *self.opts, "-P", self.port, "-b", "-", self.remote], stdin=command + "\n")

    def crossload(self, src: str, dst: str) -> float:
        """scp -3 in SFTP mode: remote -> this host -> remote, streamed (OpenSSH's sftp_crossload)."""
        return self._timed(
            ["scp", "-3", "-s", "-q", *self.opts, "-P", self.port, f"{self.remote}:{src}", f"{self.remote}:{dst}"]
        )

    def ciphers(self) -> str:
        p = subprocess.run(
            ["ssh", "-v", *self.opts, "-p", self.port, self.remote, "true"], capture_output=True, text=True, check=False
        )
        return "; ".join(
            line.split("kex: ", 1)[1] for line in p.stderr.splitlines() if "kex: " in line and "cipher" in line
        )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3, help="runs of each (alternating), at least 2")
    parser.add_argument(
        "--one-connection",
        action="store_true",
        help="storage and execution system share one Airflow Connection (one SSH connection)",
    )
    parser.add_argument("--skip-getput", action="store_true", help="do not measure sftp get + put")
    parser.add_argument("--out", default=str(CHECKOUT / "bench" / "results-staging.json"))
    args = parser.parse_args()
    runs = max(2, args.runs)
    size = args.size_mib << 20
    mb = size / 1e6

    infra = read_infra()
    user, home = infra["AIRJOBS_SSH_USER"], Path(f"/home/{infra['AIRJOBS_SSH_USER']}")
    port = int(infra["AIRJOBS_SSH_PORT"])
    var = Path(tempfile.mkdtemp(prefix="ajs-", dir="/tmp"))
    os.environ.update(
        {"AIRJOBS_VAR": str(var), "XDG_RUNTIME_DIR": str(var / "xdg"), "AIRJOBS_STAGING_BACKOFF_SECONDS": "1"}
    )
    os.environ.pop("AIRJOBS_DB_URL", None)
    (var / "xdg").mkdir(mode=0o700)
    base_name = f"bench-staging-{os.getpid()}"
    base = home / base_name
    shm = Path(f"/dev/shm/{base_name}.bin")
    exec_conn = STORAGE_CONN if args.one_connection else EXEC_CONN
    for conn_id in {STORAGE_CONN, exec_conn}:
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "ssh",
                "host": infra["AIRJOBS_SSH_HOST"],
                "port": port,
                "login": user,
                "extra": {"key_file": infra["AIRJOBS_SSH_KEY"], "no_host_key_check": True},
            }
        )

    import airflow.providers.ssh.hooks.ssh  # noqa: F401  imported once per process, not a cost of a transfer

    import airjobs_airflow  # noqa: F401  registers the SSH/SFTP transports
    from airjobs import db, demo, pgserver, registry, store, submission
    from airjobs.steps import stage as staging
    from airjobs_airflow import transport_ssh

    ssh = OpenSSH(infra)
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
        f"Python {platform.python_version()}",
        "size_mib": args.size_mib,
        "connections": 1 if args.one_connection else 2,
    }
    print(f"[bench] embedded PostgreSQL in {var}; files under {base}", flush=True)
    pgserver.start()
    try:
        db.migrate()
        demo.register()
        mkdir_as(base, user)
        mkdir_as(base / "src", user)
        mkdir_as(base / "work", user)
        mkdir_as(base / "scp", user)
        t0 = time.perf_counter()
        src = base / "src" / f"input-{args.size_mib}MiB.bin"
        digest = make_input(src, size, user)
        print(
            f"[bench] {src}: {args.size_mib} MiB of random bytes in {time.perf_counter() - t0:.1f} s, sha256 {digest}",
            flush=True,
        )

        registry.put_system(
            {
                "id": "bench.sftp",
                "name": "Bench SFTP storage",
                "type": "STORAGE",
                "storage": {
                    "protocol": "SFTP",
                    "host": infra["AIRJOBS_SSH_HOST"],
                    "port": port,
                    "connectionId": STORAGE_CONN,
                    "rootDir": str(home),
                    "homeDir": "/",
                    "auth": {"type": "SSHKEYS", "username": user},
                },
            },
            OWNER,
        )
        registry.put_system(
            {
                "id": "bench.ssh",
                "name": "Bench SSH execution (FORK)",
                "type": "EXECUTION",
                "executionType": "CLI",
                "scheduler": "FORK",
                "login": {
                    "protocol": "SSH",
                    "host": infra["AIRJOBS_SSH_HOST"],
                    "port": port,
                    "connectionId": exec_conn,
                },
                "storage": {
                    "protocol": "SFTP",
                    "host": infra["AIRJOBS_SSH_HOST"],
                    "port": port,
                    "connectionId": exec_conn,
                    "rootDir": str(home),
                    "homeDir": "/",
                },
                "workDir": f"/{base_name}/work",
                "queues": [{"name": "normal", "default": True}],
            },
            OWNER,
        )
        registry.put_app(
            {
                "name": "stagebench",
                "version": "1.0",
                "executionSystem": "bench.ssh",
                "executionType": "CLI",
                "parallelism": "SERIAL",
                "isPublic": True,
                "deploymentSystem": "demo-storage",
                "deploymentPath": "/apps/wc-1.0",
                "templatePath": "wc.sh",
                "inputs": [{"id": "data", "value": {"required": True}}],
            },
            "admin",
        )
        uri = f"agave://bench.sftp/{base_name}/src/{src.name}"

        def run_staging(n: int) -> dict:
            transport_ssh.close_all()  # each run connects anew, like the baseline's ssh processes
            job, _ = store.create_job(
                submission.build_job({"name": f"staging bench {n}", "appId": APP, "inputs": {"data": uri}}, OWNER),
                created_by=OWNER,
            )
            cpu0, t0 = time.process_time(), time.perf_counter()
            staging.stage(job.id)
            took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            job = store.get_job(job.id)
            if job.status != "STAGED":
                raise RuntimeError(f"job {job.id} ended {job.status}: {job.message}")
            (record,) = job.staged_inputs
            staged = home / job.work_path.lstrip("/") / src.name
            on_disk = sha256_file(staged)
            ok = record["sha256"] == digest and on_disk == digest and record["size"] == size
            history = store.history(job.id, limit=1000, offset=0)
            rm(home / job.work_path.lstrip("/"))
            if not ok:
                raise RuntimeError(f"staged file differs: recorded {record}, on disk {on_disk}, source {digest}")
            return {
                "s": round(took, 3),
                "MBps": round(mb / took, 1),
                "cpu_s": round(cpu, 2),
                "progress_events": sum(e.description.startswith("Copy in progress") for e in history),
                "sha256_ok": ok,
            }

        def run_crossload() -> dict:
            dst = base / "scp" / "crossload.bin"
            took = ssh.crossload(str(src), str(dst))
            ok = sha256_file(dst) == digest
            rm(dst)
            if not ok:
                raise RuntimeError("scp -3 copy differs from the source")
            return {"s": round(took, 3), "MBps": round(mb / took, 1), "sha256_ok": ok}

        def run_getput() -> dict:
            dst = base / "scp" / "put.bin"
            get = ssh.sftp(f"get {src} {shm}")
            put = ssh.sftp(f"put {shm} {dst}")
            ok = sha256_file(dst) == digest
            rm(dst)
            rm(shm)
            if not ok:
                raise RuntimeError("sftp get + put copy differs from the source")
            return {
                "get_s": round(get, 3),
                "put_s": round(put, 3),
                "s": round(get + put, 3),
                "MBps": round(mb / (get + put), 1),
                "get_MBps": round(mb / get, 1),
                "put_MBps": round(mb / put, 1),
                "sha256_ok": ok,
            }

        crossload, getput, stagings = [], [], []
        load = [os.getloadavg()[0]]
        for n in range(runs):
            crossload.append(run_crossload())
            print(f"[bench] baseline scp -3 (SFTP) #{n + 1}: {crossload[-1]}", flush=True)
            if not args.skip_getput:
                getput.append(run_getput())
                print(f"[bench] sftp get + put #{n + 1}: {getput[-1]}", flush=True)
            stagings.append(run_staging(n))
            print(f"[bench] staging #{n + 1}: {stagings[-1]}", flush=True)
            load.append(os.getloadavg()[0])

        base_mbps = median([r["MBps"] for r in crossload])
        stage_mbps = median([r["MBps"] for r in stagings])
        results.update(
            {
                "openssh_ciphers": ssh.ciphers(),
                "paramiko_ciphers": transport_ssh.describe(STORAGE_CONN),
                "baseline": "scp -3 -s (OpenSSH SFTP read over one connection, write over another, streamed "
                "through this host): what staging does, in C",
                "baseline_scp3_runs": crossload,
                "baseline_scp3_median_MBps": base_mbps,
                "staging_runs": stagings,
                "staging_median_MBps": stage_mbps,
                "ratio_staging_baseline": round(stage_mbps / base_mbps, 3),
                "target_ratio": 0.8,
                "sha256_ok": all(r["sha256_ok"] for r in stagings + crossload + getput),
                "loadavg_1min_between_rounds": [round(x, 1) for x in load],
            }
        )
        if getput:
            results.update(
                {
                    "sftp_get_put_runs": getput,
                    "sftp_get_put_median_MBps": median([r["MBps"] for r in getput]),
                    "sftp_get_median_MBps": median([r["get_MBps"] for r in getput]),
                    "sftp_put_median_MBps": median([r["put_MBps"] for r in getput]),
                    "ratio_staging_get_put": round(stage_mbps / median([r["MBps"] for r in getput]), 3),
                }
            )
    finally:
        transport_ssh.close_all()
        rm(base)
        rm(shm)
        pgserver.stop()
        shutil.rmtree(var, ignore_errors=True)
    print(json.dumps(results, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"[bench] written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
