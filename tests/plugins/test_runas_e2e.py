"""No job runs as root (issue 10, item 9), through the real service: a FORK job on the LOCAL demo system runs as the
unprivileged run-as account (AIRJOBS_RUN_AS, default ``airjobs-run``) when the service runs as root, with no
supplementary groups and a clean environment; it cannot read the service's secrets nor another user's archive; it
still finishes with its outputs archived, and killing a long-running one still stops it. The environment checks
hold for any service user; the uid/group and secret-read checks only mean something as root (skipped otherwise)."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest

from airjobs import registry, transports
from conftest import process_alive

pytestmark = pytest.mark.e2e

ROOT = os.geteuid() == 0
ACCOUNT = os.environ.get("AIRJOBS_RUN_AS") or "airjobs-run"
BOB_SECRET = "bob's archived result, not for alice's job\n"

# every probe writes its output and its exit status; the job itself always succeeds
PROBES = """\
id -u > uid.txt
id -G > groups.txt
env > env.txt
cat {var}/secrets.env > secrets.txt 2>&1; echo $? > secrets.rc
cat {other} > other.txt 2>&1; echo $? > other.rc
ls {var} > varlist.txt 2>&1; echo $? > varlist.rc
ls {var}/pg > pglist.txt 2>&1; echo $? > pglist.rc
ls {storage} > storagelist.txt 2>&1; echo $? > storagelist.rc
echo written > written.txt
true
"""

SLEEPER = "sleep 300 &\necho $! > child.pid\nwait\n"


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # the real uid (effective, saved and fs uid follow)
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture(scope="module")
def other_archive(service):
    """A file in bob's archive, written the way the archive step writes one (the storage transport, as the service)."""
    storage = registry.get_system("demo-storage")
    t = transports.storage(storage)
    root = storage["storage"]["rootDir"]
    folder = f"{root}/bob/archive/jobs/job-runas-other"
    t.makedirs(folder)
    with t.open_write(f"{folder}/result.txt") as f:
        f.write(BOB_SECRET.encode())
    return f"{folder}/result.txt"


@pytest.fixture(scope="module")
def apps(service, other_archive):
    from conftest import VAR, install_app

    storage = registry.get_system("demo-storage")["storage"]["rootDir"]
    install_app("runas-probe", PROBES.format(var=VAR, other=other_archive, storage=storage))
    install_app("runas-sleeper", SLEEPER)
    return "runas-probe-1.0", "runas-sleeper-1.0"


def _submit(service, body: dict) -> str:
    with service.client("alice") as c:
        r = c.post("/jobs/v2", json=body)
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _secret_values() -> list[str]:
    from conftest import VAR

    values = []
    for line in (VAR / "secrets.env").read_text().splitlines():
        _, _, value = line.partition("=")
        if len(value) >= 8:
            values.append(value)
    return values


def test_job_runs_unprivileged_with_a_clean_environment_and_is_archived(service, apps):
    probe, _ = apps
    job_id = _submit(service, {"name": "runas probe", "appId": probe, "archive": True})
    job = service.wait_terminal(job_id)
    assert job["status"] == "FINISHED", job
    with service.client("alice") as c:

        def out(name: str) -> str:
            r = c.get(f"/jobs/v2/{job_id}/outputs/media/{name}")
            assert r.status_code == 200, (name, r.status_code, r.text)
            return r.text

        assert out("written.txt") == "written\n"  # outputs archived and served from the archive
        env = dict(line.partition("=")[::2] for line in out("env.txt").splitlines() if "=" in line)
        uid, groups = int(out("uid.txt")), out("groups.txt").split()
        rcs = {n: int(out(f"{n}.rc")) for n in ("secrets", "other", "varlist", "pglist", "storagelist")}
        leaked = {n: out(f"{n}.txt") for n in ("secrets", "other")}
    assert (
        job["archivePath"]
        and not Path(registry.get_system("demo-fork")["storage"]["rootDir"] + job["outputPath"]).exists()
    ), "the work directory is removed"

    # the service's environment never reaches the job, whoever the service runs as
    assert not [k for k in env if k.startswith("AIRFLOW")], sorted(env)
    assert not [k for k in env if k.startswith("AIRJOBS_") and not k.startswith("AIRJOBS_JOB")], sorted(env)
    text = "\n".join(f"{k}={v}" for k, v in env.items())
    assert not [s for s in _secret_values() if s in text], "a secret of the service reached the job's environment"
    assert env.get("PATH") and env.get("HOME")

    if not ROOT:
        pytest.skip("the service is not root: jobs run as the service user")
    account = pwd.getpwnam(ACCOUNT)
    assert uid == account.pw_uid != 0
    assert groups == [str(account.pw_gid)] and "0" not in groups
    assert env["HOME"] == account.pw_dir and env.get("USER") == ACCOUNT
    assert all(rcs.values()), rcs  # every read of the service's or another user's files failed
    assert "AIRFLOW__" not in leaked["secrets"] and BOB_SECRET not in leaked["other"], leaked


def test_kill_a_job_running_as_the_account(service, apps):
    _, sleeper = apps
    job_id = _submit(service, {"name": "runas sleeper", "appId": sleeper, "archive": False})
    root = registry.get_system("demo-fork")["storage"]["rootDir"]
    with service.client("alice") as c:
        deadline = time.monotonic() + 90
        while (job := c.get(f"/jobs/v2/{job_id}").json()["result"])["status"] != "RUNNING":
            assert time.monotonic() < deadline and job["status"] not in ("FAILED", "STOPPED"), job
            time.sleep(0.2)
        pid = int(job["localId"])
        child_file = Path(root + job["outputPath"]) / "child.pid"
        while not child_file.exists() or not child_file.read_text().strip():
            assert time.monotonic() < deadline, "the job never started its child"
            time.sleep(0.1)
        child = int(child_file.read_text())
        assert process_alive(pid) and process_alive(child)
        if ROOT:
            uid = pwd.getpwnam(ACCOUNT).pw_uid
            assert _uid_of(pid) == uid and _uid_of(child) == uid
            assert Path(root + job["outputPath"]).stat().st_uid == uid, "the work directory belongs to the account"
        r = c.post(f"/jobs/v2/{job_id}", json={"action": "stop"})
        assert r.status_code == 200, r.text
        assert c.get(f"/jobs/v2/{job_id}/status").json()["result"]["status"] == "STOPPED"
    deadline = time.monotonic() + 15
    while process_alive(pid) or process_alive(child):
        assert time.monotonic() < deadline, "the job's processes survived the kill"
        time.sleep(0.1)
    assert service.wait_terminal(job_id)["status"] == "STOPPED"
