"""Input staging (airjobs.staging, spec §4.2 Table 2 and §10.1) on the real embedded PostgreSQL, real files,
a real local HTTP server and, when AIRJOBS_INFRA_ENV names the test hosts, the real loopback OpenSSH server.
No Airflow scheduler involved: ``staging.stage`` is called directly."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from airjobs import registry, store, submission
from airjobs.errors import StepError
from airjobs.lifecycle import transition
from airjobs.statuses import JobStatus
from airjobs.steps import JobAlreadyFinal
from airjobs.steps import stage as staging

OWNER = "stager"
APP = "stagetest-1.0"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def roots(pg):
    """(demo-storage root, demo-fork root) and a test app on demo-fork whose inputs take many values."""
    registry.put_app(
        {
            "name": "stagetest",
            "version": "1.0",
            "executionSystem": "demo-fork",
            "executionType": "CLI",
            "parallelism": "SERIAL",
            "isPublic": True,
            "deploymentSystem": "demo-storage",
            "deploymentPath": "/apps/wc-1.0",
            "templatePath": "wc.sh",
            "inputs": [
                {"id": "data", "value": {"required": False}, "semantics": {"maxCardinality": -1}},
                {"id": "more", "value": {"required": False}, "semantics": {"maxCardinality": -1}},
            ],
        },
        "admin",
    )
    storage = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
    execution = Path(registry.get_system("demo-fork")["storage"]["rootDir"])
    return storage, execution


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setenv("AIRJOBS_STAGING_BACKOFF_SECONDS", "0.2")


def new_job(inputs: dict, owner: str = OWNER) -> str:
    job, _ = store.create_job(
        submission.build_job({"name": "staging test", "appId": APP, "inputs": inputs}, owner), created_by=owner
    )
    return job.id


def events(job_id):
    return store.history(job_id, limit=1000, offset=0)


def statuses(job_id) -> list[str]:
    return [e.status for e in events(job_id)]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staged_file(execution: Path, job_id: str, name: str) -> Path:
    return execution / store.get_job(job_id).work_path.lstrip("/") / name


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


# ---------------------------------------------------------------- a real HTTP server


class Server:
    def __init__(self):
        self.blob = os.urandom(3 * (1 << 20) + 12345)
        self.requests: dict[str, int] = {}
        self.first_bytes_sent = threading.Event()
        self.aborted = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                parts = self.path.strip("/").split("/")
                try:
                    if parts[0] == "data":
                        self._send(200, server.blob)
                    elif parts[0] == "redirect":
                        self.send_response(302)
                        self.send_header("Location", "/data/" + parts[-1])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif parts[0] == "flaky":  # /flaky/<failures>/<key>/<name>: 503 for the first <failures>
                        self._send(503, b"busy") if server.requests[self.path] <= int(parts[1]) else self._send(
                            200, server.blob
                        )
                    elif parts[0] == "slow":  # /slow[/<n>]/<name>: n (256) times 64 KiB, one every 50 ms
                        n = int(parts[1]) if len(parts) > 2 else 256
                        self.send_response(200)
                        self.send_header("Content-Length", str(n * 65536))
                        self.end_headers()
                        for _ in range(n):
                            self.wfile.write(os.urandom(65536))
                            self.wfile.flush()
                            server.first_bytes_sent.set()
                            time.sleep(0.05)
                    else:
                        self._send(404, b"not here")
                except (BrokenPipeError, ConnectionResetError):
                    server.aborted.set()

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.2:{self.httpd.server_address[1]}"  # allowed: AIRJOBS_EGRESS_ALLOW
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def web():
    server = Server()
    yield server
    server.httpd.shutdown()


# ---------------------------------------------------------------- local and agave:// inputs


def test_relative_absolute_and_agave_inputs_with_sizes_and_checksums(roots):
    storage, execution = roots
    a = write(storage / OWNER / "in/a.txt", os.urandom((1 << 20) * 2 + 7))  # three chunks
    b = write(storage / OWNER / "in/b.bin", os.urandom(1000))
    c = write(storage / OWNER / "in/abs/c.dat", b"absolute\n")
    tree = {"tree/x.txt": os.urandom(5000), "tree/sub/y.txt": os.urandom(70000), "tree/sub/z.txt": b""}
    for rel, data in tree.items():
        write(storage / OWNER / "in" / rel, data)
    job_id = new_job(
        {
            "data": [f"{OWNER}/in/a.txt", f"agave://demo-storage/{OWNER}/in/b.bin"],
            "more": [f"agave://demo-storage//{OWNER}/in/abs/c.dat", f"/{OWNER}/in/tree/"],
        }
    )

    staging.stage(job_id)

    job = store.get_job(job_id)
    assert job.status == "STAGED"
    assert statuses(job_id) == ["PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS"] + ["STAGING_INPUTS"] * 4 + ["STAGED"]
    assert events(job_id)[1].description == "Attempt 1 to stage job inputs"
    wpath = job.work_path
    assert wpath.startswith(f"/work/{OWNER}/job-{job_id}-")
    total_tree = sum(len(d) for d in tree.values())
    assert job.staged_inputs == [
        {"id": "data", "source": f"{OWNER}/in/a.txt", "path": f"{wpath}/a.txt", "size": len(a), "sha256": sha(a)},
        {
            "id": "data",
            "source": f"agave://demo-storage/{OWNER}/in/b.bin",
            "path": f"{wpath}/b.bin",
            "size": len(b),
            "sha256": sha(b),
        },
        {
            "id": "more",
            "source": f"agave://demo-storage//{OWNER}/in/abs/c.dat",
            "path": f"{wpath}/c.dat",
            "size": len(c),
            "sha256": sha(c),
        },
        {"id": "more", "source": f"/{OWNER}/in/tree/", "path": f"{wpath}/tree", "size": total_tree, "sha256": None},
    ]
    # the bytes really are in the work directory on the execution system, the folder recursively
    assert staged_file(execution, job_id, "a.txt").read_bytes() == a
    assert staged_file(execution, job_id, "c.dat").read_bytes() == c
    for rel, data in tree.items():
        assert staged_file(execution, job_id, rel).read_bytes() == data
    done = [e for e in events(job_id) if e.description.startswith("Copy of")]
    assert [e.progress["filesDone"] for e in done] == [1, 2, 3, 4]
    assert done[0].progress == {
        **done[0].progress,
        "source": f"{OWNER}/in/a.txt",
        "totalBytes": len(a),
        "totalBytesTransferred": len(a),
        "totalFiles": 4,
        "totalActiveTransfers": 3,
    }
    assert (
        done[0].description == f"Copy of {OWNER}/in/a.txt to agave://demo-fork{wpath}/a.txt completed ({len(a)} bytes)"
    )


def test_job_without_inputs_skips_staging(roots):
    job_id = new_job({})
    staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "STAGED" and job.staged_inputs == []
    assert job.message == "Skipping staging. No input data associated with this job."
    assert staged_file(roots[1], job_id, "").is_dir()


def test_missing_input_fails_at_once_without_retries(roots, monkeypatch):
    monkeypatch.setenv("AIRJOBS_STAGING_BACKOFF_SECONDS", "30")  # a retry would make this test time out
    write(roots[0] / OWNER / "in/present.txt", b"here\n")
    job_id = new_job({"data": [f"{OWNER}/in/present.txt"], "more": [f"agave://demo-storage/{OWNER}/in/none.txt"]})
    t0 = time.monotonic()
    with pytest.raises(StepError, match="does not exist"):
        staging.stage(job_id)
    assert time.monotonic() - t0 < 10
    job = store.get_job(job_id)
    assert job.status == "FAILED"
    assert (
        job.message == f"Input more: agave://demo-storage/{OWNER}/in/none.txt does not exist: "
        f"no {OWNER}/in/none.txt on localhost (system demo-storage)."
    )
    assert statuses(job_id) == ["PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGING_INPUTS", "FAILED"]
    assert not staged_file(roots[1], job_id, "none.txt").exists()


@pytest.mark.parametrize(
    "inputs, error",
    [
        ({"data": ["agave://no-such-system/x.txt"]}, "System no-such-system is not registered"),
        ({"data": ["sftp://somebody@127.0.0.1:1/home/x.txt"]}, "No SFTP storage system that stager may use"),
        ({"data": ["agave://demo-storage/", "x"]}, "names no file to stage"),
    ],
)
def test_unusable_inputs_fail_at_once(roots, inputs, error):
    job_id = new_job(inputs)
    with pytest.raises(StepError, match=error):
        staging.stage(job_id)
    assert store.get_job(job_id).status == "FAILED"
    assert statuses(job_id) == ["PENDING", "PROCESSING_INPUTS", "FAILED"]


def test_two_inputs_with_the_same_name_are_refused(roots):
    write(roots[0] / OWNER / "in/one/same.txt", b"1")
    write(roots[0] / OWNER / "in/two/same.txt", b"2")
    job_id = new_job({"data": [f"{OWNER}/in/one/same.txt"], "more": [f"{OWNER}/in/two/same.txt"]})
    with pytest.raises(StepError, match=r"would both be staged as same\.txt"):
        staging.stage(job_id)


def test_a_job_already_stopped_is_not_staged(roots):
    job_id = new_job({"data": ["whatever.txt"]})
    transition(job_id, JobStatus.STOPPED, "Job cancelled by user.")
    with pytest.raises(JobAlreadyFinal):
        staging.stage(job_id)
    assert statuses(job_id) == ["PENDING", "STOPPED"]


# ---------------------------------------------------------------- http(s)


def test_http_input_is_streamed_following_redirects(roots, web):
    job_id = new_job({"data": [f"{web.base}/redirect/blob.bin"]})
    staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "STAGED"
    assert staged_file(roots[1], job_id, "blob.bin").read_bytes() == web.blob
    (record,) = job.staged_inputs
    assert record == {
        "id": "data",
        "source": f"{web.base}/redirect/blob.bin",
        "path": f"{job.work_path}/blob.bin",
        "size": len(web.blob),
        "sha256": sha(web.blob),
    }
    last = events(job_id)[-2]
    assert last.progress["totalBytes"] == len(web.blob) and last.progress["source"] == record["source"]


def test_http_404_fails_at_once_naming_url_and_status(roots, web):
    url = f"{web.base}/nothing/here.csv"
    job_id = new_job({"data": [url]})
    with pytest.raises(StepError):
        staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "FAILED" and url in job.message and "HTTP 404" in job.message
    assert statuses(job_id).count("PROCESSING_INPUTS") == 1 and web.requests[url.removeprefix(web.base)] == 1
    assert not staged_file(roots[1], job_id, "here.csv").exists()


def test_http_503_twice_then_staged_at_the_third_attempt(roots, web):
    path = f"/flaky/2/{time.time_ns()}/flaky.bin"
    job_id = new_job({"data": [web.base + path]})
    t0 = time.monotonic()
    staging.stage(job_id)
    assert time.monotonic() - t0 >= 0.2 + 0.4  # the backoff: base, then twice the base
    job = store.get_job(job_id)
    assert job.status == "STAGED" and web.requests[path] == 3
    assert job.staged_inputs[0]["sha256"] == sha(web.blob)
    history = events(job_id)
    expected = [
        ("PENDING", "Job accepted and queued for submission."),
        ("PROCESSING_INPUTS", "Attempt 1 to stage job inputs"),
        ("STAGING_INPUTS", f"Staging 1 input(s) to agave://demo-fork{job.work_path}"),
        ("PENDING", "Attempt 1 to stage job inputs failed"),
        ("PROCESSING_INPUTS", "Attempt 2 to stage job inputs"),
        ("STAGING_INPUTS", f"Staging 1 input(s) to agave://demo-fork{job.work_path}"),
        ("PENDING", "Attempt 2 to stage job inputs failed"),
        ("PROCESSING_INPUTS", "Attempt 3 to stage job inputs"),
        ("STAGING_INPUTS", f"Staging 1 input(s) to agave://demo-fork{job.work_path}"),
        ("STAGING_INPUTS", f"Copy of {web.base}{path} to agave://demo-fork{job.work_path}/flaky.bin completed"),
        ("STAGED", "Job inputs staged to execution system"),
    ]
    assert [e.status for e in history] == [status for status, _ in expected]
    assert all(e.description.startswith(text) for e, (_, text) in zip(history, expected, strict=False)), [
        e.description for e in history
    ]
    assert "HTTP 503" in history[3].description and web.base + path in history[3].description
    assert history[3].description.endswith("Retrying in 0.2 s.") and history[6].description.endswith("0.4 s.")


def test_http_503_three_times_is_left_to_the_service_to_retry_not_failed(roots, web):
    path = f"/flaky/9/{time.time_ns()}/busy.bin"
    job_id = new_job({"data": [web.base + path]})
    with pytest.raises(staging.Unavailable, match="HTTP 503"):  # not the job's fault: the task is retried
        staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "PENDING" and web.requests[path] == 3
    assert job.message.startswith("Unable to stage inputs after 3 attempts") and web.base + path in job.message
    assert job.message.endswith("The stage task will be retried.")
    assert statuses(job_id).count("PROCESSING_INPUTS") == 3 and statuses(job_id).count("PENDING") == 4


def test_progress_events_during_a_long_copy(roots, web, monkeypatch):
    monkeypatch.setattr(staging, "PROGRESS_EVERY", 0.4)  # instead of 2 s
    job_id = new_job({"data": [f"{web.base}/slow/30/paced.bin"]})  # 30 x 64 KiB over 1.5 s
    staging.stage(job_id)
    running = [e for e in events(job_id) if e.description.startswith("Copy in progress")]
    assert 2 <= len(running) <= 4, [e.description for e in running]
    sent = [e.progress["totalBytesTransferred"] for e in running]
    assert sent == sorted(sent) and 0 < sent[0] < sent[-1] < 30 * 65536
    assert all(
        e.progress["totalBytes"] == 30 * 65536
        and e.progress["source"].endswith("/paced.bin")
        and e.progress["filesDone"] == 0
        and e.progress["totalFiles"] == 1
        for e in running
    )
    assert running[0].description == f"Copy in progress: {web.base}/slow/30/paced.bin ({sent[0]} of {30 * 65536} bytes)"

    monkeypatch.setattr(staging, "PROGRESS_BYTES", 1 << 20)  # instead of 64 MiB
    monkeypatch.setattr(staging, "PROGRESS_EVERY", 60)
    big = write(roots[0] / OWNER / "in/big.bin", os.urandom(3 * (1 << 20) + 5))
    job_id = new_job({"data": [f"{OWNER}/in/big.bin"]})
    staging.stage(job_id)
    running = [
        e.progress["totalBytesTransferred"] for e in events(job_id) if e.description.startswith("Copy in progress")
    ]
    assert running == [1 << 20, 2 << 20, 3 << 20]
    assert store.get_job(job_id).staged_inputs[0]["sha256"] == sha(big)


# ---------------------------------------------------------------- cancellation


def _stop_when(job_id: str, ready, out: dict):
    def run():
        ready()
        out["stopped_at"] = time.monotonic()
        transition(job_id, JobStatus.STOPPED, "Job cancelled by user.")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_stop_during_a_slow_download_ends_it_and_removes_the_partial_file(roots, web):
    web.first_bytes_sent.clear()
    web.aborted.clear()
    job_id = new_job({"data": [f"{web.base}/slow/slow.bin"]})
    target = {}

    def ready():
        assert web.first_bytes_sent.wait(10)
        time.sleep(0.3)
        target["path"] = staged_file(roots[1], job_id, "slow.bin")
        target["partial"] = target["path"].exists()

    out: dict = {}
    stopper = _stop_when(job_id, ready, out)
    with pytest.raises(JobAlreadyFinal):
        staging.stage(job_id)
    took = time.monotonic() - out["stopped_at"]
    stopper.join(5)
    assert target["partial"], "the copy had started"
    assert took < 1.0, f"staging noticed the stop after {took:.2f} s"
    assert not target["path"].exists(), "the partial file was left behind"
    assert web.aborted.wait(5), "the download was still running"
    job = store.get_job(job_id)
    assert job.status == "STOPPED" and job.staged_inputs is None
    assert statuses(job_id)[-1] == "STOPPED" and "FAILED" not in statuses(job_id)


def test_stop_while_waiting_to_retry(roots, web, monkeypatch):
    monkeypatch.setenv("AIRJOBS_STAGING_BACKOFF_SECONDS", "20")
    path = f"/flaky/9/{time.time_ns()}/never.bin"
    job_id = new_job({"data": [web.base + path]})

    def ready():
        deadline = time.monotonic() + 10
        while statuses(job_id)[-1] != "PENDING" or len(statuses(job_id)) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    out: dict = {}
    _stop_when(job_id, ready, out)
    with pytest.raises(JobAlreadyFinal):
        staging.stage(job_id)
    assert time.monotonic() - out["stopped_at"] < 1.0 and web.requests[path] == 1
    assert store.get_job(job_id).status == "STOPPED"


# ---------------------------------------------------------------- SFTP over the real OpenSSH test host


def _infra() -> dict[str, str]:
    from conftest import read_infra

    return read_infra()


def _connection(conn_id: str, infra: dict, port: int) -> None:
    """An Airflow Connection given the way Airflow reads them without its database: AIRFLOW_CONN_<ID>."""
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {
            "conn_type": "ssh",
            "host": infra["AIRJOBS_SSH_HOST"],
            "port": port,
            "login": infra["AIRJOBS_SSH_USER"],
            "extra": {"key_file": infra["AIRJOBS_SSH_KEY"], "no_host_key_check": True},
        }
    )


def _sftp_system(system_id: str, infra: dict, port: int, conn_id: str, owner: str = OWNER) -> None:
    user = infra["AIRJOBS_SSH_USER"]
    registry.put_system(
        {
            "id": system_id,
            "name": "SFTP storage on the test host",
            "type": "STORAGE",
            "storage": {
                "protocol": "SFTP",
                "host": infra["AIRJOBS_SSH_HOST"],
                "port": port,
                "connectionId": conn_id,
                "rootDir": f"/home/{user}",
                "homeDir": "/",
                "auth": {"type": "SSHKEYS", "username": user},
            },
        },
        owner,
    )


@pytest.fixture(scope="module")
def sftp(roots):
    infra = _infra()
    import airjobs_airflow  # noqa: F401  registers the SSH/SFTP transports

    user, port = infra["AIRJOBS_SSH_USER"], int(infra["AIRJOBS_SSH_PORT"])
    _connection("ajt_staging_sftp", infra, port)
    _sftp_system("stager.sftp", infra, port, "ajt_staging_sftp")
    home = Path(f"/home/{user}")
    base = home / "staging-inputs"
    subprocess.run(["install", "-d", "-o", user, str(base), str(base / "tree"), str(base / "tree/deeper")], check=True)
    files = {
        "remote.bin": os.urandom(5 * (1 << 20) // 2),
        "tree/one.txt": b"one\n",
        "tree/deeper/two.bin": os.urandom(300000),
    }
    for rel, data in files.items():
        (base / rel).write_bytes(data)
    yield infra | {"HOME": str(home), "PORT": str(port)}, files
    shutil.rmtree(base, ignore_errors=True)
    os.environ.pop("AIRFLOW_CONN_AJT_STAGING_SFTP", None)


def test_sftp_url_is_read_through_the_matching_registered_system(sftp):
    infra, files = sftp
    url = (
        f"sftp://{infra['AIRJOBS_SSH_USER']}@{infra['AIRJOBS_SSH_HOST']}:{infra['PORT']}"
        f"{infra['HOME']}/staging-inputs/remote.bin"
    )
    job_id = new_job({"data": [url]})
    staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "STAGED", job.message
    (record,) = job.staged_inputs
    assert record["size"] == len(files["remote.bin"]) and record["sha256"] == sha(files["remote.bin"])
    assert (
        staged_file(Path(registry.get_system("demo-fork")["storage"]["rootDir"]), job_id, "remote.bin").read_bytes()
        == files["remote.bin"]
    )


def test_agave_url_of_an_sftp_system_file_and_folder(sftp):
    _, files = sftp
    job_id = new_job(
        {
            "data": ["agave://stager.sftp/staging-inputs/remote.bin"],
            "more": ["agave://stager.sftp//staging-inputs/tree"],
        }
    )
    staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "STAGED", job.message
    assert [(r["size"], r["sha256"]) for r in job.staged_inputs] == [
        (len(files["remote.bin"]), sha(files["remote.bin"])),
        (len(files["tree/one.txt"]) + len(files["tree/deeper/two.bin"]), None),
    ]
    execution = Path(registry.get_system("demo-fork")["storage"]["rootDir"])
    for rel in ("remote.bin", "tree/one.txt", "tree/deeper/two.bin"):
        assert staged_file(execution, job_id, rel).read_bytes() == files[rel]


def test_sftp_url_needs_a_system_the_owner_may_use_with_that_user(sftp):
    infra, _ = sftp
    where = f"{infra['AIRJOBS_SSH_HOST']}:{infra['PORT']}{infra['HOME']}/staging-inputs/remote.bin"
    # someone else's (private) system for that host does not serve this owner
    job_id = new_job({"data": [f"sftp://{where}"]}, owner="stranger")
    with pytest.raises(StepError, match="No SFTP storage system that stranger may use"):
        staging.stage(job_id)
    # nor does a URL naming another user, even with a password in it
    job_id = new_job({"data": [f"sftp://root:secret@{where}"]})
    with pytest.raises(StepError, match=re.escape(f"registered for root@{infra['AIRJOBS_SSH_HOST']}")):
        staging.stage(job_id)
    # a path outside the system's root is refused
    job_id = new_job({"data": [f"sftp://{infra['AIRJOBS_SSH_HOST']}:{infra['PORT']}/etc/hostname"]})
    with pytest.raises(StepError, match="outside the root"):
        staging.stage(job_id)


class PrivateSshd:
    """A second OpenSSH server of our own (the shared one on the infra port stays untouched)."""

    def __init__(self, infra: dict, workdir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        text = Path(infra["AIRJOBS_INFRA"], "ssh/sshd_config").read_text()
        text = re.sub(r"(?m)^Port .*$", f"Port {self.port}", text)
        text = re.sub(r"(?m)^PidFile .*$", f"PidFile {workdir}/sshd.pid", text)
        self.config = workdir / "sshd_config"
        self.config.write_text(text)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(self.config), "-E", str(self.workdir / "sshd.log")]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, (self.workdir / "sshd.log").read_text()
                time.sleep(0.05)

    def stop(self) -> None:
        """The listener and the sessions it forked (found by parent pid before it goes)."""
        if self.proc is None:
            return
        children = self._descendants(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(10)
        for pid in children:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        self.proc = None

    @classmethod
    def _descendants(cls, pid: int) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        kids = [int(p) for p in out.split()]
        return [k for kid in kids for k in [kid, *cls._descendants(kid)]]


@pytest.fixture
def private_sshd(sftp, tmp_path):
    infra, _ = sftp
    sshd = PrivateSshd(infra, tmp_path)
    _connection("ajt_staging_private", infra, sshd.port)
    _sftp_system("stager.private", infra, sshd.port, "ajt_staging_private")
    yield sshd
    sshd.stop()
    os.environ.pop("AIRFLOW_CONN_AJT_STAGING_PRIVATE", None)


def test_unreachable_sshd_three_attempts_then_retried_not_failed_then_fine_once_it_is_back(sftp, private_sshd):
    _, files = sftp
    uri = "agave://stager.private/staging-inputs/remote.bin"
    private_sshd.start()
    job_id = new_job({"data": [uri]})
    staging.stage(job_id)
    assert store.get_job(job_id).status == "STAGED"

    private_sshd.stop()  # the host goes away, with the connection the service had cached
    job_id = new_job({"data": [uri]})
    with pytest.raises(staging.Unavailable) as raised:  # the host is away: retried, the job not failed
        staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "PENDING" and job.message == f"{raised.value}. The stage task will be retried."
    assert f"Unable to connect to 127.0.0.1:{private_sshd.port} (system stager.private)" in job.message, job.message
    assert "Connection refused" in job.message and "after 3 attempts" in job.message
    history = events(job_id)
    attempts = [e.description for e in history if e.status == "PROCESSING_INPUTS"]
    assert attempts == [f"Attempt {n} to stage job inputs" for n in (1, 2, 3)]
    retries = [e.description for e in history if e.status == "PENDING"][1:]
    assert len(retries) == 3 and all(
        f"127.0.0.1:{private_sshd.port}" in d and "Connection refused" in d for d in retries
    )
    assert history[-1].status == "PENDING"

    private_sshd.start()
    job_id = new_job({"data": [uri]})
    staging.stage(job_id)
    job = store.get_job(job_id)
    assert job.status == "STAGED" and job.staged_inputs[0]["sha256"] == sha(files["remote.bin"])
