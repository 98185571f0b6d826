"""Agave's own Python SDK against the service over HTTPS on the default port (issue 12, part 3).

Agave's SDKs only speak ``https://<host>``: agavepy builds every URL from ``api_server`` (its Swagger resources
have ``"basePath": "https://{{ api_server_base }}"``, agavepy/resources/api_jobs.json.j2) and attaches the
bearer token only when the request's host name equals ``urlsplit(api_server).netloc``
(``Authenticator.matches`` in agavepy/swaggerpy/http_client.py): with a port in the URL the token is never
sent. So the service must answer on ``https://localhost``, port 443, with a certificate the client verifies.

This test starts a service of its own (its own var dir and database, ``AIRJOBS_TLS=self-signed``,
``AIRJOBS_PORT=443``; only root may listen there, and only one service can) and drives it with agavepy 0.9.5
from PyPI, unmodified: login at ``/token`` (password grant), submit the demo job, its status, history, the job
list, the output listing and a download, all verified against the CA path the service printed (never
``verify=False``). Plain HTTP on port 443 is not served.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import USERS, Service

pytestmark = pytest.mark.e2e

CHECKOUT = Path(__file__).resolve().parents[2]
DEMO = json.loads((CHECKOUT / "include/examples/demo-job.json").read_text())
PASSWORD = USERS["alice"][0]
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")


def _port_443_free() -> str | None:
    """Why port 443 of 127.0.0.1 cannot be ours, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 443))
    except OSError as e:
        return "port 443 is in use by another process" if e.errno == errno.EADDRINUSE else str(e)
    finally:
        s.close()
    return None


@pytest.fixture(scope="module")
def https_service():
    """A whole service of its own on https://localhost (port 443, self-signed): (its start-up log, its var)."""
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: the HTTPS service listens on port 443, the only port on which Agave's SDKs "
            "send a token (run `make test` as root)"
        )
    if why := _port_443_free():
        pytest.skip(f"cannot listen on 127.0.0.1:443: {why} (only one service can hold it)")
    from airjobs import service as runner

    var = Path(tempfile.mkdtemp(prefix="ajh-", dir="/tmp"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AIRJOBS_DB_URL", "AIRJOBS_TLS_CERT", "AIRJOBS_TLS_KEY", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    }
    env.update(
        {
            "AIRJOBS_VAR": str(var),
            "AIRJOBS_PORT": "443",
            "AIRJOBS_TLS": "self-signed",
            "AIRJOBS_ADMIN_PASSWORD": USERS["admin"][0],
            "XDG_RUNTIME_DIR": str(var / "xdg"),
        }
    )
    log = var / "service.log"
    proc = runner.spawn([f"alice:{PASSWORD}:{USERS['alice'][1]}"], log, env)
    try:
        yield log.read_text(), var
    finally:
        runner.terminate(proc)
        shutil.rmtree(var, ignore_errors=True)


def _printed_ca(text: str) -> str:
    m = re.search(r"export REQUESTS_CA_BUNDLE=(\S+)", text)
    assert m, f"the service printed no CA bundle to trust:\n{text[-3000:]}"
    return m.group(1)


def test_start_up_prints_https_urls_and_how_to_trust_the_certificate(https_service):
    text, var = https_service
    ca = _printed_ca(text)
    assert Path(ca).is_relative_to(var), ca  # generated into the var dir
    banner = text[text.index("[airjobs] ready.") :]
    assert "https://localhost/jobs/v2" in banner and "http://" not in banner and ":443" not in banner, banner
    assert f"curl --cacert {ca} -s -X POST https://localhost/token" in banner, banner
    key = [p for p in Path(ca).parent.iterdir() if p.suffix == ".key"]
    assert len(key) == 1 and key[0].stat().st_mode & 0o777 == 0o600, key

    # the certificate verifies with that path alone (no system store, no verify=False), for localhost and 127.0.0.1
    ctx = ssl.create_default_context(cafile=ca)  # with a cafile, nothing else is trusted
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    for host in ("localhost", "127.0.0.1"):
        with (
            socket.create_connection(("127.0.0.1", 443), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # and curl, as printed
    out = subprocess.run(
        ["curl", "--cacert", ca, "-s", "-o", "/dev/null", "-w", "%{http_code}", "https://localhost/jobs/v2/"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0 and out.stdout == "401", (out.returncode, out.stdout, out.stderr)
    # without it (the system's store only), the certificate is not trusted: curl's 60, "SSL certificate problem"
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "https://localhost/jobs/v2/"], capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 60, (out.returncode, out.stderr)


def test_plain_http_is_not_served_on_port_443(https_service):
    import requests

    with pytest.raises(requests.exceptions.ConnectionError):
        r = requests.get("http://localhost:443/jobs/v2/", timeout=10)
        pytest.fail(f"plain HTTP on port 443 answered {r.status_code}: {r.text[:200]}")


def test_agave_sdk_runs_a_job_over_https_on_the_default_port(https_service, tmp_path, monkeypatch):
    from agavepy.agave import Agave

    text, _ = https_service
    ca = _printed_ca(text)
    monkeypatch.setenv("HOME", str(tmp_path))  # agavepy caches its client in ~/.agpy

    # as an Agave user would: https://<host>, no port; agavepy logs in at /token with the password grant (and a
    # client key and secret in HTTP Basic, which this service does not need)
    ag = Agave(
        api_server="https://localhost",
        username="alice",
        password=PASSWORD,
        api_key="airjobs",
        api_secret="unused",
        verify=ca,
        proxies={},
    )
    assert ag.token.token_info["access_token"] and ag.token.token_info["refresh_token"]
    assert ag.token.token_url == "https://localhost/token"

    job = ag.jobs.submit(body=DEMO)
    assert job["owner"] == "alice" and job["appId"] == DEMO["appId"], job
    assert job["_links"]["self"]["href"] == f"https://localhost/jobs/v2/{job['id']}", job["_links"]

    deadline = time.monotonic() + 120
    while (status := ag.jobs.getStatus(jobId=job["id"]))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["status"] == "FINISHED", ag.jobs.get(jobId=job["id"])

    history = ag.jobs.getHistory(jobId=job["id"])
    statuses = [e["status"] for e in history]
    assert statuses[0] == "PENDING" and statuses[-1] == "FINISHED" and "RUNNING" in statuses, statuses

    assert job["id"] in [j["id"] for j in ag.jobs.list()]

    outputs = ag.jobs.listOutputs(jobId=job["id"], filePath="")
    files = {f["name"]: f for f in outputs if f["type"] == "file"}
    assert files, outputs
    name, entry = sorted(files.items())[0]
    href = entry["_links"]["self"]["href"]
    assert href.startswith(f"https://localhost/jobs/v2/{job['id']}/outputs/media/"), href
    local = tmp_path / name
    ag.download_uri(href, str(local))
    assert local.stat().st_size == entry["length"], (name, entry)

    # the token went only because the host has no port: agavepy would not send it to https://localhost:443
    from agavepy.swaggerpy.http_client import TokenAuthenticator

    assert TokenAuthenticator("localhost", "t").matches(f"https://localhost/jobs/v2/{job['id']}")
    assert not TokenAuthenticator("localhost:443", "t").matches(f"https://localhost:443/jobs/v2/{job['id']}")


def test_the_tests_service_helper_speaks_https(https_service):
    text, _ = https_service
    svc = Service("https://localhost", _printed_ca(text))
    assert svc.host_port == ("localhost", 443)
    with svc.client("alice") as c:
        r = c.get("/jobs/v2/")
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
    status, body = svc.raw_get("/jobs/v2/?limit=1", svc.token("alice"))
    assert status == 200, body
    assert svc.airflow_token()  # Airflow's own /auth/token, over the same HTTPS
