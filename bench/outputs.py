"""Output download benchmark: a large job output served from an SSH execution system's work directory through
``GET /jobs/v2/{id}/outputs/media/{path}`` (numbers go into README.md; this is not a test).

    .venv/bin/python bench/outputs.py [--size-mib 1024] [--runs 2] [--port 28380]

Needs the test hosts (.ci/infra-up.sh; settings in $AIRJOBS_INFRA_ENV, default var/infra/infra.env) and root
(the file is checked on disk in the SSH user's home). Starts its own service (temporary AIRJOBS_VAR, own port),
makes an Airflow Connection to the loopback OpenSSH server through Airflow's REST API, registers a FORK SSH
execution system and an app that writes ``--size-mib`` MiB of random bytes to ``big.bin``, runs one job with
``archive: false`` (the output stays in the work directory) and measures, alternating:

* (a) api: the download through the REST API with httpx streaming (bytes discarded, sha256 computed)
* (b) sftp: the same file read directly over SFTP in this process with the project's
  ``SSHTransport(conn).open_read`` (the same reader the api-server uses; an ``AIRFLOW_CONN_<ID>`` Connection,
  SSH connection kept open across runs as the api-server keeps its own), sha256 computed
* (b') paramiko: plain paramiko ``SFTPFile.prefetch()`` on its own connection (for reference only)
* (c) during each API download, the api-server's RSS (VmRSS of the ``airflow api-server`` process and all its
  descendants, from /proc, every 50 ms): peak minus the value just before the request
* a suffix Range request (``bytes=-1048576``): status 206, the right bytes, and its latency

MB/s are 10^6 bytes per second of file size over wall time of the whole transfer (request to last byte).
Writes bench/results-outputs.json; removes the files it made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import read_infra, sha256_file

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(CHECKOUT / "include"), str(CHECKOUT / "plugins")]

PASSWORD = "bench-admin-pw"
APP_NAME = "outbench"
SERVER_CONN = "ajb_outputs_ssh"  # made through Airflow's REST API, used by the service
LOCAL_CONN = "ajb_outputs_local"  # AIRFLOW_CONN_<ID> in this process, for the direct SFTP reads
TERMINAL = {"FINISHED", "FAILED", "STOPPED", "KILLED"}
RANGE_BYTES = 1 << 20


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False).stderr.strip()
    except OSError:
        ssh_v = ""
    import paramiko

    return {
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": paramiko.__version__,
        "httpx": httpx.__version__,
        "openssh_client": ssh_v,
    }


# ------------------------------------------------------------------ api-server RSS from /proc


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(root: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    kids = kids if kids is not None else _children()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def find_api_server(service_pid: int) -> int:
    """The topmost descendant of the service whose command line names the api-server."""
    kids = _children()
    todo = [service_pid]
    while todo:  # breadth first: the first match is the topmost
        pid = todo.pop(0)
        cmd = _cmdline(pid)
        if pid != service_pid and ("api-server" in cmd or "api_server" in cmd):
            return pid
        todo.extend(kids.get(pid, []))
    raise RuntimeError(f"no api-server process under {service_pid}")


def rss_kib(root: int) -> tuple[int, int]:
    """(VmRSS summed over ROOT and its descendants in KiB, number of processes)."""
    total, n = 0, 0
    for pid in descendants(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    n += 1
                    break
        except OSError:
            continue
    return total, n


TICK = os.sysconf("SC_CLK_TCK")
SERVICE_PID: int | None = None  # the spawned service (its whole process tree, api-server included)


def cpu_ticks(root: int | None) -> dict[int, int]:
    """{pid: utime + stime in clock ticks} of ROOT and its live descendants."""
    out: dict[int, int] = {}
    if root is None:
        return out
    for pid in descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])
    return out


def cpu_delta(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU seconds used between two cpu_ticks() by the processes alive at the end (new ones counted whole;
    ones that ended in between are not counted)."""
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / TICK


def sshd_pid(infra: dict[str, str]) -> int | None:
    path = Path(infra.get("AIRJOBS_INFRA", str(CHECKOUT / "var/infra"))) / "ssh" / "sshd.pid"
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used during a block by this process, the api-server (and children) and the sshd sessions
    (the sshd listener's descendants alive at the end; a session closed in between is not counted)."""

    def __init__(self, api_pid: int | None, sshd: int | None):
        self.api_pid, self.sshd = api_pid, sshd

    def __enter__(self):
        self.t0 = (time.process_time(), cpu_ticks(self.api_pid), cpu_ticks(self.sshd), cpu_ticks(SERVICE_PID))
        return self

    def read(self) -> dict:
        now = (time.process_time(), cpu_ticks(self.api_pid), cpu_ticks(self.sshd), cpu_ticks(SERVICE_PID))
        api, sshd, service = (cpu_delta(a, b) for a, b in zip(self.t0[1:], now[1:], strict=True))
        return {
            "bench_process": round(now[0] - self.t0[0], 2),
            "api_server": round(api, 2),
            "sshd": round(sshd, 2),
            "rest_of_service": round(service - api, 2),
        }

    def __exit__(self, *exc):
        return None


class RssSampler:
    def __init__(self, root: int, every: float = 0.05):
        self.root, self.every = root, every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.root)[0])
            self._stop.wait(self.every)

    def __enter__(self):
        self.before, self.procs = rss_kib(self.root)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.after = rss_kib(self.root)[0]

    def report(self) -> dict:
        peak = max([*self.samples, self.after])
        return {
            "before_MB": round(self.before * 1024 / 1e6, 1),
            "peak_MB": round(peak * 1024 / 1e6, 1),
            "after_MB": round(self.after * 1024 / 1e6, 1),
            "peak_growth_MB": round((peak - self.before) * 1024 / 1e6, 1),
            "samples": len(self.samples),
            "processes": self.procs,
        }


# ------------------------------------------------------------------ the measurements


def download_api(base: str, headers: dict, job_id: str, size: int, api_pid: int, sshd: int | None) -> dict:
    h = hashlib.sha256()
    n = 0
    with httpx.Client(timeout=600) as c, RssSampler(api_pid) as rss, CpuMeter(api_pid, sshd) as cpu:
        t0 = time.perf_counter()
        with c.stream("GET", f"{base}/jobs/v2/{job_id}/outputs/media/big.bin", headers=headers) as r:
            if r.status_code != 200:
                r.read()
                raise RuntimeError(f"download: {r.status_code} {r.text[:500]}")
            ttfb = time.perf_counter() - t0
            for chunk in r.iter_raw(1 << 20):
                h.update(chunk)
                n += len(chunk)
            used = cpu.read()
        took = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"download: {n} bytes, expected {size}")
    return {
        "s": round(took, 3),
        "MBps": round(size / 1e6 / took, 1),
        "ttfb_ms": round(ttfb * 1000, 1),
        "sha256": h.hexdigest(),
        "cpu_s": used,
        "rss": rss.report(),
    }


def download_curl(base: str, headers: dict, job_id: str, size: int) -> dict:
    """The same download with curl to /dev/null (a client that costs almost no CPU: shows what the server side
    alone delivers); no sha256 (the bytes are not kept), size checked."""
    argv = [
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download} %{time_total}",
        "-H",
        f"Authorization: {headers['Authorization']}",
        f"{base}/jobs/v2/{job_id}/outputs/media/big.bin",
    ]
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    code, n, _ = [*p.stdout.split(), "", "", ""][:3]
    if p.returncode != 0 or code != "200" or int(n or 0) != size:
        raise RuntimeError(f"curl: rc {p.returncode} {p.stdout} {p.stderr}")
    return {"s": round(took, 3), "MBps": round(size / 1e6 / took, 1)}


def download_sftp(path: str, size: int, api_pid: int, sshd: int | None) -> dict:
    from airjobs_airflow.transport_ssh import SSHTransport

    h = hashlib.sha256()
    n = 0
    with CpuMeter(api_pid, sshd) as cpu:
        t0 = time.perf_counter()
        with SSHTransport(LOCAL_CONN).open_read(path) as f:
            while chunk := f.read(1 << 20):  # as airjobs.outputs.read_range does
                h.update(chunk)
                n += len(chunk)
            used = cpu.read()
        took = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"sftp: {n} bytes, expected {size}")
    return {"s": round(took, 3), "MBps": round(size / 1e6 / took, 1), "sha256": h.hexdigest(), "cpu_s": used}


def download_paramiko(client, path: str, size: int) -> dict:
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    sftp = client.open_sftp()
    try:
        with sftp.open(path, "rb") as f:
            f.prefetch(size, max_concurrent_requests=128)
            while chunk := f.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
    finally:
        sftp.close()
    took = time.perf_counter() - t0
    if n != size:
        raise RuntimeError(f"paramiko: {n} bytes, expected {size}")
    return {"s": round(took, 3), "MBps": round(size / 1e6 / took, 1), "sha256": h.hexdigest()}


def range_request(base: str, headers: dict, job_id: str, local: Path, size: int) -> dict:
    with open(local, "rb") as f:
        f.seek(size - RANGE_BYTES)
        want = f.read()
    times, ok = [], True
    with httpx.Client(timeout=120) as c:
        for _ in range(5):
            t0 = time.perf_counter()
            r = c.get(
                f"{base}/jobs/v2/{job_id}/outputs/media/big.bin", headers={**headers, "Range": f"bytes=-{RANGE_BYTES}"}
            )
            times.append(time.perf_counter() - t0)
            ok = (
                ok
                and r.status_code == 206
                and r.content == want
                and r.headers.get("content-range") == f"bytes {size - RANGE_BYTES}-{size - 1}/{size}"
            )
    return {
        "status": r.status_code,
        "content_range": r.headers.get("content-range"),
        "bytes": len(r.content),
        "bytes_ok": ok,
        "ms_runs": [round(t * 1000, 1) for t in times],
        "median_ms": round(statistics.median(times) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2, help="runs of each way (alternating), at least 2")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRJOBS_BENCH_PORT", "28380")))
    parser.add_argument("--no-paramiko", action="store_true", help="skip the plain paramiko prefetch reads")
    parser.add_argument("--out", default=str(CHECKOUT / "bench" / "results-outputs.json"))
    args = parser.parse_args()
    runs = max(2, args.runs)
    size = args.size_mib << 20

    infra = read_infra()
    ssh_user, ssh_host, ssh_port = infra["AIRJOBS_SSH_USER"], infra["AIRJOBS_SSH_HOST"], int(infra["AIRJOBS_SSH_PORT"])
    home = Path(f"/home/{ssh_user}")
    work_name = f"bench-work-{os.getpid()}"

    var = Path(tempfile.mkdtemp(prefix="ajo-", dir="/tmp"))
    os.environ.update(
        {
            "AIRJOBS_VAR": str(var),
            "AIRJOBS_PORT": str(args.port),
            "AIRJOBS_ADMIN_PASSWORD": PASSWORD,
            "AIRJOBS_POLL_SCHEDULE": os.environ.get("AIRJOBS_POLL_SCHEDULE", "1,1,2,3"),
        }
    )
    os.environ.pop("AIRJOBS_DB_URL", None)
    (var / "xdg").mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(var / "xdg")
    from airjobs import service

    results: dict = {"machine": machine(), "size_mib": args.size_mib, "size_bytes": size}
    base = f"http://127.0.0.1:{args.port}"
    print(f"[bench] starting the service in {var} on port {args.port}", flush=True)
    t0 = time.perf_counter()
    proc = service.spawn([], var / "service.log")
    print(f"[bench] service ready in {time.perf_counter() - t0:.0f} s", flush=True)
    pclient = None
    try:
        r = httpx.post(
            f"{base}/token", data={"grant_type": "password", "username": "admin", "password": PASSWORD}, timeout=60
        )
        r.raise_for_status()
        agave = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=60)
        r.raise_for_status()
        airflow = {"Authorization": f"Bearer {r.json()['access_token']}"}
        extra = {"key_file": infra["AIRJOBS_SSH_KEY"], "no_host_key_check": True}
        conn = {
            "connection_id": SERVER_CONN,
            "conn_type": "ssh",
            "host": ssh_host,
            "port": ssh_port,
            "login": ssh_user,
            "extra": json.dumps(extra),
        }
        r = httpx.post(f"{base}/api/v2/connections", json=conn, headers=airflow, timeout=60)
        if r.status_code not in (201, 409):
            raise RuntimeError(f"connection: {r.status_code} {r.text}")
        os.environ[f"AIRFLOW_CONN_{LOCAL_CONN.upper()}"] = json.dumps(
            {"conn_type": "ssh", "host": ssh_host, "port": ssh_port, "login": ssh_user, "extra": extra}
        )

        from airjobs import registry

        registry.put_system(
            {
                "id": "bench.outputs.ssh",
                "name": "Outputs bench SSH (FORK)",
                "type": "EXECUTION",
                "executionType": "CLI",
                "scheduler": "FORK",
                "login": {"protocol": "SSH", "host": ssh_host, "port": ssh_port, "connectionId": SERVER_CONN},
                "storage": {
                    "protocol": "SFTP",
                    "host": ssh_host,
                    "port": ssh_port,
                    "connectionId": SERVER_CONN,
                    "rootDir": str(home),
                    "homeDir": "/",
                },
                "workDir": f"/{work_name}",
                "queues": [{"name": "normal", "default": True}],
            },
            "admin",
        )
        storage_root = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
        (storage_root / f"apps/{APP_NAME}-1.0").mkdir(parents=True, exist_ok=True)
        (storage_root / f"apps/{APP_NAME}-1.0/run.sh").write_text(f"head -c {size} /dev/urandom > big.bin\n")
        registry.put_app(
            {
                "name": APP_NAME,
                "version": "1.0",
                "executionSystem": "bench.outputs.ssh",
                "executionType": "CLI",
                "parallelism": "SERIAL",
                "isPublic": True,
                "deploymentSystem": "demo-storage",
                "deploymentPath": f"/apps/{APP_NAME}-1.0",
                "templatePath": "run.sh",
                "defaultQueue": "normal",
                "defaultMaxRunTime": "00:30:00",
            },
            "admin",
        )

        with httpx.Client(base_url=base, headers=agave, timeout=120) as c:
            t0 = time.perf_counter()
            r = c.post("/jobs/v2", json={"name": "outputs bench", "appId": f"{APP_NAME}-1.0", "archive": False})
            if r.status_code != 201:
                raise RuntimeError(f"submit: {r.status_code} {r.text}")
            job_id = r.json()["result"]["id"]
            while True:
                job = c.get(f"/jobs/v2/{job_id}").json()["result"]
                if job["status"] in TERMINAL:
                    break
                if time.perf_counter() - t0 > 900:
                    raise RuntimeError(f"job {job_id} not terminal after 900 s: {job['status']}")
                time.sleep(0.5)
            if job["status"] != "FINISHED":
                raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('message')}")
            results["job"] = {
                "id": job_id,
                "outputPath": job["outputPath"],
                "submit_to_finished_s": round(time.perf_counter() - t0, 1),
            }
            print(
                f"[bench] job {job_id} FINISHED in {results['job']['submit_to_finished_s']} s: {job['outputPath']}",
                flush=True,
            )
            listing = {f["name"]: f for f in c.get(f"/jobs/v2/{job_id}/outputs/listings").json()["result"]}
            if listing.get("big.bin", {}).get("length") != size:
                raise RuntimeError(f"listing: {listing.get('big.bin')}")

        local = home / job["outputPath"].lstrip("/") / "big.bin"
        remote = f"{home}{job['outputPath']}/big.bin"
        t0 = time.perf_counter()
        digest = sha256_file(local)
        results["file"] = {"path": remote, "sha256": digest, "local_sha256_s": round(time.perf_counter() - t0, 2)}
        print(f"[bench] {remote}: sha256 {digest}", flush=True)

        api_pid = find_api_server(proc.pid)
        results["api_server"] = {
            "pid": api_pid,
            "cmdline": _cmdline(api_pid).strip(),
            "processes": len(descendants(api_pid)),
        }
        print(
            f"[bench] api-server pid {api_pid} ({results['api_server']['processes']} processes): "
            f"{results['api_server']['cmdline']}",
            flush=True,
        )

        # warm-up: both sides' SSH connections opened, caches filled (a small range, not timed)
        range_request(base, agave, job_id, local, size)
        from airjobs_airflow import transport_ssh

        # as the api-server does (locate/resolve/stat before open_read): the first SFTP session of the connection
        # moves it to AES-GCM (transport_ssh._prefer_aead); open_read alone would keep aes128-ctr + hmac-sha2-256
        transport_ssh.SSHTransport(LOCAL_CONN).stat(remote)
        with transport_ssh.SSHTransport(LOCAL_CONN).open_read(remote) as f:
            f.read(1 << 20)
        if not args.no_paramiko:
            import paramiko

            pclient = paramiko.SSHClient()
            pclient.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            pclient.connect(
                ssh_host,
                ssh_port,
                ssh_user,
                key_filename=infra["AIRJOBS_SSH_KEY"],
                allow_agent=False,
                look_for_keys=False,
            )

        sshd = sshd_pid(infra)
        global SERVICE_PID
        SERVICE_PID = proc.pid
        api, sftp, plain, curl, load = [], [], [], [], [os.getloadavg()[0]]
        for n in range(runs):
            api.append(download_api(base, agave, job_id, size, api_pid, sshd))
            print(f"[bench] (a) api #{n + 1}: {api[-1]}", flush=True)
            sftp.append(download_sftp(remote, size, api_pid, sshd))
            print(f"[bench] (b) sftp (SSHTransport) #{n + 1}: {sftp[-1]}", flush=True)
            if pclient is not None:
                plain.append(download_paramiko(pclient, remote, size))
                print(f"[bench] (b') paramiko prefetch #{n + 1}: {plain[-1]}", flush=True)
            if shutil.which("curl"):
                curl.append(download_curl(base, agave, job_id, size))
                print(f"[bench] (a') api with curl #{n + 1}: {curl[-1]}", flush=True)
            load.append(os.getloadavg()[0])
        rng = range_request(base, agave, job_id, local, size)
        print(f"[bench] range bytes=-{RANGE_BYTES}: {rng}", flush=True)

        api_mbps = statistics.median(r["MBps"] for r in api)
        sftp_mbps = statistics.median(r["MBps"] for r in sftp)
        growth = max(r["rss"]["peak_growth_MB"] for r in api)
        results.update(
            {
                "a_api_runs": api,
                "a_api_median_MBps": api_mbps,
                "b_sftp_runs": sftp,
                "b_sftp_median_MBps": sftp_mbps,
                "b_sftp_how": "airjobs_airflow.transport_ssh.SSHTransport(AIRFLOW_CONN_ env Connection).open_read, "
                "read(1 MiB) until EOF, in the benchmark process",
                "ratio_a_b": round(api_mbps / sftp_mbps, 3),
                "c_rss_peak_growth_MB_max": growth,
                "c_rss_target_MB": 50,
                "c_rss_ok": growth < 50,
                "range": rng,
                "sha256_ok": all(r["sha256"] == digest for r in api + sftp + plain),
                "ssh_algorithms_bench_process": transport_ssh.describe(LOCAL_CONN),
                "loadavg_1min_between_rounds": [round(x, 1) for x in load],
            }
        )
        if curl:
            results["a2_curl_runs"] = curl
            results["a2_curl_median_MBps"] = statistics.median(r["MBps"] for r in curl)
            results["ratio_a2_curl_b"] = round(results["a2_curl_median_MBps"] / sftp_mbps, 3)
        if plain:
            results["b2_paramiko_prefetch_runs"] = plain
            results["b2_paramiko_prefetch_median_MBps"] = statistics.median(r["MBps"] for r in plain)
            t = pclient.get_transport()
            results["b2_paramiko_cipher"] = t.local_cipher
    finally:
        if pclient is not None:
            pclient.close()
        try:
            from airjobs_airflow import transport_ssh

            transport_ssh.close_all()
        except Exception:
            pass
        service.terminate(proc)
        shutil.rmtree(home / work_name, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"[bench] written to {args.out}\n")
    print(f"{'size':<28}{args.size_mib} MiB, sha256 ok: {results['sha256_ok']}")
    print(
        f"{'(a) API download':<28}{results['a_api_median_MBps']:>8.1f} MB/s  runs "
        f"{[r['MBps'] for r in results['a_api_runs']]}"
    )
    print(
        f"{'(b) SFTP direct':<28}{results['b_sftp_median_MBps']:>8.1f} MB/s  runs "
        f"{[r['MBps'] for r in results['b_sftp_runs']]}"
    )
    if "b2_paramiko_prefetch_median_MBps" in results:
        print(f"{'(b2) paramiko prefetch':<28}{results['b2_paramiko_prefetch_median_MBps']:>8.1f} MB/s")
    if "a2_curl_median_MBps" in results:
        print(
            f"{'(a2) API download, curl':<28}{results['a2_curl_median_MBps']:>8.1f} MB/s  runs "
            f"{[r['MBps'] for r in results['a2_curl_runs']]}  (ratio to b {results['ratio_a2_curl_b']})"
        )
    print(f"{'ratio a/b':<28}{results['ratio_a_b']:>8.3f}")
    print(f"{'(c) api-server RSS growth':<28}{results['c_rss_peak_growth_MB_max']:>8.1f} MB  (target < 50)")
    print(
        f"{'range bytes=-1MiB':<28}{results['range']['median_ms']:>8.1f} ms  status {results['range']['status']}, "
        f"bytes ok {results['range']['bytes_ok']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
