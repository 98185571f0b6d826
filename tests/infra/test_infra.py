"""Checks of the test infrastructure started by `.ci/infra-up.sh`: the loopback OpenSSH server (key login
only) and the real single-node SLURM behind it. Skipped unless AIRJOBS_INFRA_ENV names the infra.env that
infra-up.sh wrote, e.g.

    bash .ci/infra-up.sh /tmp/ajinfra
    AIRJOBS_INFRA_ENV=/tmp/ajinfra/infra.env .venv/bin/python -m pytest -q tests/infra
    bash .ci/infra-down.sh /tmp/ajinfra
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from pathlib import Path

import pytest

ENV_FILE = os.environ.get("AIRJOBS_INFRA_ENV", "")

pytestmark = pytest.mark.skipif(
    not ENV_FILE or not Path(ENV_FILE).is_file(),
    reason="AIRJOBS_INFRA_ENV does not point to an infra.env written by .ci/infra-up.sh",
)

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def _read_env(path: str) -> dict[str, str]:
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def infra() -> dict[str, str]:
    return _read_env(ENV_FILE)


@pytest.fixture(scope="module")
def ssh(infra):
    paramiko = pytest.importorskip("paramiko")
    client = paramiko.SSHClient()
    client.load_host_keys(infra["AIRJOBS_SSH_KNOWN_HOSTS"])  # the pinned host key; anything else is refused
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        infra["AIRJOBS_SSH_HOST"],
        port=int(infra["AIRJOBS_SSH_PORT"]),
        username=infra["AIRJOBS_SSH_USER"],
        key_filename=infra["AIRJOBS_SSH_KEY"],
        allow_agent=False,
        look_for_keys=False,
        timeout=15,
    )
    yield client
    client.close()


def run(client, command: str, timeout: float = 30) -> str:
    """Run COMMAND over ssh; returns stdout, fails the test on a non-zero exit status."""
    _, out, err = client.exec_command(command, timeout=timeout)
    stdout, stderr = out.read().decode(), err.read().decode()
    status = out.channel.recv_exit_status()
    assert status == 0, f"{command!r} exited {status}: {stderr.strip() or stdout.strip()}"
    return stdout


def test_ssh_key_login_runs_hostname(ssh, infra):
    assert run(ssh, "hostname").strip() == socket.gethostname()
    assert run(ssh, "id -un").strip() == infra["AIRJOBS_SSH_USER"]


def test_password_login_is_refused(infra):
    paramiko = pytest.importorskip("paramiko")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            infra["AIRJOBS_SSH_HOST"],
            port=int(infra["AIRJOBS_SSH_PORT"]),
            username=infra["AIRJOBS_SSH_USER"],
            password="not-a-key",
            allow_agent=False,
            look_for_keys=False,
            timeout=15,
        )
    client.close()


def test_sbatch_job_completes_and_writes_its_output(ssh):
    out_file = f"infra-test-{os.getpid()}-{time.time_ns()}.out"
    job_id = run(ssh, f"sbatch --parsable -J infra-test -o {shlex.quote(out_file)} --wrap 'echo hi'")
    job_id = job_id.strip().split(";")[0]
    assert job_id.isdigit(), job_id

    state, deadline = "", time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = run(ssh, f"sacct -n -P -X -o JobID,State -j {job_id}").splitlines()
        states = [row.split("|")[1].split()[0] for row in rows if row.split("|")[0] == job_id]
        state = states[-1] if states else ""
        if state in TERMINAL:
            break
        time.sleep(0.5)
    assert state == "COMPLETED", f"job {job_id} ended as {state or 'nothing in sacct'}"

    try:
        assert run(ssh, f"cat {shlex.quote(out_file)}") == "hi\n"
    finally:
        run(ssh, f"rm -f {shlex.quote(out_file)}")
