"""Job outputs through the REST facade (spec §8, D4, D5): listings and downloads with HTTP Range while a job
runs, after it finished without archiving, and from the archive (work directory removed); a traversal corpus
that must never serve a byte from outside the job."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from airjobs import registry

pytestmark = pytest.mark.e2e

# writes a log line every 0.2 s for ~4 s, a 3 MiB binary, a sub-folder, and a symlink out of the work dir
TEMPLATE = """\
head -c 3145728 /dev/urandom > blob.bin
mkdir -p sub/deeper && echo nested > sub/deeper/n.txt
ln -s /etc etc-link
ln -s /etc/passwd passwd-link
for i in $(seq 1 20); do echo "line $i" >> grow.log; sleep 0.2; done
echo done > done.txt
"""


@pytest.fixture(scope="module")
def app(service):
    from conftest import install_app

    install_app("outputs", TEMPLATE)
    return "outputs-1.0"


def _submit(service, app, **fields) -> str:
    with service.client() as c:
        r = c.post("/jobs/v2", json={"name": "outputs", "appId": app, **fields})
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _status(c, job_id) -> str:
    return c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"]


def _work_dir(job: dict) -> Path:
    return Path(registry.get_system("demo-fork")["storage"]["rootDir"] + job["outputPath"])


def test_outputs_while_running_then_from_the_work_dir(service, app):
    job_id = _submit(service, app, archive=False)
    with service.client() as c:
        deadline = time.monotonic() + 60
        while not (
            _status(c, job_id) == "RUNNING" and c.get(f"/jobs/v2/{job_id}/outputs/media/grow.log").status_code == 200
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        names = {f["name"]: f for f in c.get(f"/jobs/v2/{job_id}/outputs/listings").json()["result"]}
        assert {"blob.bin", "grow.log", "sub", "outputs.ipcexe"} <= set(names)
        assert "etc-link" not in names and "passwd-link" not in names  # links out of the job are not shown
        assert names["sub"]["type"] == "dir" and names["sub"]["mimeType"] == "text/directory"
        assert names["blob.bin"]["length"] == 3145728 and names["blob.bin"]["path"] == "/blob.bin"
        assert names["blob.bin"]["_links"]["self"]["href"].endswith(f"/jobs/v2/{job_id}/outputs/media/blob.bin")
        first = c.get(f"/jobs/v2/{job_id}/outputs/media/grow.log").content
        time.sleep(1)
        later = c.get(f"/jobs/v2/{job_id}/outputs/media/grow.log").content
        assert _status(c, job_id) == "RUNNING"
        assert later.startswith(first) and len(later) > len(first), "the growing log is served as it grows"
        r = c.get(f"/jobs/v2/{job_id}/outputs/media/grow.log", headers={"Range": "bytes=0-5"})
        assert r.status_code == 206 and r.content == b"line 1" and r.headers["content-range"].startswith("bytes 0-5/")
    job = service.wait_terminal(job_id)
    assert job["status"] == "FINISHED"
    blob = (_work_dir(job) / "blob.bin").read_bytes()
    with service.client() as c:
        log = c.get(f"/jobs/v2/{job_id}/outputs/media/grow.log").text
        assert log.splitlines()[-1] == "line 20"
        sub = c.get(f"/jobs/v2/{job_id}/outputs/listings/sub/deeper").json()["result"]
        assert [f["path"] for f in sub] == ["/sub/deeper/n.txt"]
        _check_ranges(c, job_id, blob)


def _check_ranges(c, job_id, blob: bytes) -> None:
    url = f"/jobs/v2/{job_id}/outputs/media/blob.bin"
    whole = c.get(url)
    assert whole.status_code == 200 and whole.content == blob
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-length"] == str(len(blob))
    assert whole.headers["content-type"] == "application/octet-stream" and "last-modified" in whole.headers
    for header, (a, b) in {
        "bytes=0-99": (0, 99),
        "bytes=1000000-1999999": (1000000, 1999999),
        "bytes=-4096": (len(blob) - 4096, len(blob) - 1),
        "bytes=3145000-": (3145000, len(blob) - 1),
        "bytes=3145000-99999999": (3145000, len(blob) - 1),
    }.items():
        r = c.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == blob[a : b + 1], header
        assert r.headers["content-range"] == f"bytes {a}-{b}/{len(blob)}", header
    head = c.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(blob)) and not head.content
    for header in ("bytes=3145728-", "bytes=5000000-5000010", "bytes=10-5"):
        r = c.get(url, headers={"Range": header})
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{len(blob)}"
    folder = c.get(f"/jobs/v2/{job_id}/outputs/media/sub")
    assert folder.status_code == 400 and "folder" in folder.json()["message"]
    assert c.get(f"/jobs/v2/{job_id}/outputs/media/nope.txt").status_code == 404


def test_archived_outputs_come_from_the_archive_and_the_work_dir_goes(service, app):
    job = service.wait_terminal(_submit(service, app))
    assert job["status"] == "FINISHED"
    assert not _work_dir(job).exists(), "the work directory is removed after archiving"
    archive = Path(registry.get_system("demo-storage")["storage"]["rootDir"]) / job["archivePath"]
    blob = (archive / "blob.bin").read_bytes()
    with service.client() as c:
        names = {f["name"] for f in c.get(f"/jobs/v2/{job['id']}/outputs/listings").json()["result"]}
        assert {"blob.bin", "grow.log", "done.txt", "sub"} <= names and "outputs.ipcexe" not in names
        listing = c.get(f"/jobs/v2/{job['id']}/outputs/listings").json()["result"]
        assert all(f["_links"]["system"]["href"].endswith("/systems/v2/demo-storage") for f in listing)
        _check_ranges(c, job["id"], blob)


TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252fetc%252fpasswd",
    "..%252f..%252fetc/passwd",
    "/etc/passwd",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "etc-link/passwd",
    "passwd-link",
    "etc-link",
    "sub/../../../../etc/passwd",
    "sub/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..\\..\\..\\etc\\passwd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "~/../../etc/passwd",
    "~root/.bashrc",
    "....//....//etc/passwd",
    "%00../../etc/passwd",
    "blob.bin%00/../../../etc/passwd",
    ".%2e/.%2e/.%2e/etc/passwd",
    "sub/deeper/../../../../../../etc/shadow",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
]


def _raw_get(service, path: str, token: str) -> tuple[int, bytes]:
    return service.raw_get(path, token)


def test_traversal_corpus_serves_nothing_from_outside(service, app):
    job = service.wait_terminal(_submit(service, app, archive=False))
    token = service.token("alice")
    secrets = [Path(p).read_bytes() for p in ("/etc/passwd", "/etc/hostname") if os.path.exists(p)]
    outside = 0
    for attempt in TRAVERSALS:
        for kind in ("media", "listings"):
            status, body = _raw_get(service, f"/jobs/v2/{job['id']}/outputs/{kind}/{attempt}", token)
            assert status in (400, 404), (kind, attempt, status, body[:200])
            assert b"root:" not in body and not any(s[:40] in body for s in secrets), (kind, attempt)
            outside += sum(body.count(s[:40]) for s in secrets)
    assert outside == 0


def test_unreachable_archive_system_ends_archiving_failed_and_outputs_stay_in_the_work_dir(service, app):
    import httpx

    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    conn = {
        "connection_id": "nowhere-sftp",
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": 1,
        "login": "nobody",
        "extra": '{"no_host_key_check": true}',
    }
    r = httpx.post(f"{service.base}/api/v2/connections", json=conn, headers=headers)
    assert r.status_code in (201, 409), r.text
    registry.put_system(
        {
            "id": "nowhere.storage",
            "name": "an SFTP server that is down",
            "type": "STORAGE",
            "public": True,
            "storage": {
                "protocol": "SFTP",
                "host": "127.0.0.1",
                "port": 1,
                "connectionId": "nowhere-sftp",
                "rootDir": "/data",
            },
        },
        "admin",
    )
    job_id = _submit(service, app, archiveSystem="nowhere.storage", archivePath="alice/results")
    job = service.wait_terminal(job_id)
    assert job["status"] == "FINISHED"
    with service.client() as c:
        history = c.get(f"/jobs/v2/{job_id}/history").json()["result"]
        failed = [e for e in history if e["status"] == "ARCHIVING_FAILED"]
        assert failed and "127.0.0.1" in failed[0]["description"], history[-3:]
        assert history[-1]["description"] == "Job completed, but failed to archive output."
        names = {f["name"] for f in c.get(f"/jobs/v2/{job_id}/outputs/listings").json()["result"]}
        assert {"blob.bin", "done.txt"} <= names  # still served from the work directory
        assert c.get(f"/jobs/v2/{job_id}/outputs/media/done.txt").text == "done\n"
