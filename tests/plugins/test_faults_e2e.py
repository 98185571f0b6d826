"""The fault suite (issue 11): with 20 jobs in flight (FORK on the LOCAL demo host and SLURM over SSH, spread
across stage, submit, monitor and archive), one part of the service or of the hosts is killed with SIGKILL (or
stopped), then restarted the way the service restarts it (the supervisor of ``python -m airjobs.service``) or
the way an administrator would (the hosts: ``.ci/infra-up.sh``). Every job must end FINISHED with nothing done
twice: each input staged once, one hand-over to the scheduler (one SLURM job per job name in ``sacct``), the
app run once (its ``runs.txt`` has one line), the outputs archived once. The results of each scenario are
appended to ``$AIRJOBS_VAR/faults.md`` (the README's table).

These tests run last (``faults`` marker, see conftest.py): they restart parts of the session's service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from airjobs import registry
from conftest import PROBE_TEMPLATE, VAR, read_infra, ssh_connection  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

CHECKOUT = Path(__file__).resolve().parents[2]
INPUT = "agave://demo-storage/samples/zen-of-python.txt"
TEMPLATE = """\
echo "ran $(date +%s%N) on $(hostname)" >> runs.txt
wc -w < "$(basename ${textFile})" > words.txt
sleep ${seconds}
"""
JOBS = 20
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")


def _slurm(infra: dict, *args: str) -> str:
    env = {"SLURM_CONF": infra["AIRJOBS_SLURM_CONF"], "PATH": "/usr/bin:/bin"}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30).stdout


def _app(name: str, system: str, queue: str | None) -> str:
    root = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
    (root / f"apps/{name}-1.0").mkdir(parents=True, exist_ok=True)
    (root / f"apps/{name}-1.0/run.sh").write_text(TEMPLATE)
    app = {
        "name": name,
        "version": "1.0",
        "executionSystem": system,
        "parallelism": "SERIAL",
        "isPublic": True,
        "executionType": "HPC" if queue else "CLI",
        "deploymentSystem": "demo-storage",
        "deploymentPath": f"/apps/{name}-1.0",
        "templatePath": "run.sh",
        "defaultMaxRunTime": "00:30:00",
        "inputs": [{"id": "textFile", "value": {"required": True}}],
        "parameters": [
            {"id": "seconds", "value": {"type": "number", "default": 0, "required": False, "validator": "^[0-9]{1,3}$"}}
        ],
    }
    if queue:
        app["defaultQueue"] = queue
    registry.put_app(app, "admin")
    return f"{name}-1.0"


@pytest.fixture(scope="module")
def apps(service):
    infra = ssh_connection(service, "airjobs-faults-ssh")
    host, port = infra["AIRJOBS_SSH_HOST"], int(infra["AIRJOBS_SSH_PORT"])
    home = f"/home/{infra['AIRJOBS_SSH_USER']}"
    login = {"protocol": "SSH", "host": host, "port": port, "connectionId": "airjobs-faults-ssh"}
    storage = {
        "protocol": "SFTP",
        "host": host,
        "port": port,
        "connectionId": "airjobs-faults-ssh",
        "rootDir": home,
        "homeDir": "/",
    }
    partition = infra["AIRJOBS_SLURM_PARTITIONS"].split(",")[0]
    registry.put_system(
        {
            "id": "slurm.faults",
            "name": "single-node SLURM (fault suite)",
            "type": "EXECUTION",
            "executionType": "HPC",
            "scheduler": "SLURM",
            "public": True,
            "login": login,
            "storage": storage,
            "workDir": "/faults-work",
            "queues": [
                {
                    "name": "debug",
                    "mappedName": partition,
                    "default": True,
                    "maxJobs": 1000,
                    "maxUserJobs": 1000,
                    "maxNodes": 1,
                    "maxProcessorsPerNode": 1,
                    "maxMemoryPerNode": "1GB",
                    "maxRequestedTime": "01:00:00",
                }
            ],
        },
        "admin",
    )
    return {
        "fork": _app("fault-fork", "demo-fork", None),
        "slurm": _app("fault-slurm", "slurm.faults", "debug"),
        "infra": infra,
    }


# ---------------------------------------------------------------- what is killed, and how it comes back


def _pid(name: str) -> int:
    return int((VAR / "run" / f"{name}.pid").read_text())


def _wait(what: str, check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not back yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not come back in {timeout}s")


def _component(name: str):
    def kill(service, infra):
        old = _pid(name)
        os.kill(old, signal.SIGKILL)
        _wait(f"the supervisor's restart of {name}", lambda: _pid(name) != old, 120)

    return kill


def _postgres(service, infra):
    """SIGKILL the postmaster; while it is away the facade answers 503 (never 500), a login too (never a 401
    counted as a failed login), and the supervisor brings it back."""
    import httpx

    from conftest import USERS

    pid = int((VAR / "pg" / "postmaster.pid").read_text().split()[0])
    codes = []
    with service.client("alice") as c:
        os.kill(pid, signal.SIGKILL)
        for _ in range(6):
            codes.append(c.get("/jobs/v2", timeout=10).status_code)
            codes.append(
                httpx.post(
                    f"{service.base}/token",
                    data={"grant_type": "password", "username": "bob", "password": USERS["bob"][0]},
                ).status_code
            )
    _wait("PostgreSQL", lambda: int((VAR / "pg" / "postmaster.pid").read_text().split()[0]) != pid, 120)
    assert set(codes) <= {200, 503}, codes


def _task_processes() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("airflow worker -- ") and "LocalExecutor" not in title:
                out.append(int(d.name))
    return out


def _tasks(service, infra):
    """SIGKILL every lifecycle task process running right now (a worker losing its tasks)."""
    deadline = time.monotonic() + 30
    while not (pids := _task_processes()):
        assert time.monotonic() < deadline, "no task process ran in 30 s"
        time.sleep(0.05)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _slurmctld(service, infra):
    """slurmctld stopped (SIGTERM, as a restart does) for 20 s while jobs run and are submitted. (A SIGKILL loses
    the controller's unsaved state: it then hands out job ids its node still runs and SLURM drains the node with
    "Duplicate jobid" until an administrator resumes it; that is SLURM's own recovery, not the service's.)"""
    pidfile = Path(infra["AIRJOBS_SLURM_CONF"]).parent / "run" / "slurmctld.pid"
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    time.sleep(20)
    _infra_up()
    _wait(
        "slurmctld",
        lambda: (
            subprocess.run(
                ["squeue", "-h"],
                env={"SLURM_CONF": infra["AIRJOBS_SLURM_CONF"], "PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=30,
            ).returncode
            == 0
        ),
    )


def _sshd(service, infra):
    """The whole sshd: the listener and every session it serves (established connections drop too)."""
    pidfile = Path(infra["AIRJOBS_SSH_KEY"]).parent / "sshd.pid"
    listener = int(pidfile.read_text())
    subprocess.run(["pkill", "-KILL", "-P", str(listener)], check=False)
    os.kill(listener, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", "^sshd: " + infra["AIRJOBS_SSH_USER"]], check=False)
    time.sleep(30)
    _infra_up()
    _wait(
        "sshd",
        lambda: (
            socket.create_connection((infra["AIRJOBS_SSH_HOST"], int(infra["AIRJOBS_SSH_PORT"])), timeout=2).close()
            is None
        ),
    )


def _infra_up() -> None:
    """What an administrator does: start what is not running (its end-to-end check may refuse a busy node,
    hence no check of its exit status: the callers wait for the daemon itself)."""
    state = Path(os.environ["AIRJOBS_INFRA_ENV"]).parent
    subprocess.run(["bash", str(CHECKOUT / ".ci" / "infra-up.sh"), str(state)], capture_output=True, timeout=300)


FAULTS = {
    "scheduler": _component("scheduler"),
    "triggerer": _component("triggerer"),
    "dag-processor": _component("dag-processor"),
    "api-server": _component("api-server"),
    "postgres": _postgres,
    "task-process": _tasks,
    "slurmctld": _slurmctld,
    "sshd": _sshd,
}


# ---------------------------------------------------------------- the scenario


def _submit_all(service, apps, fault: str) -> list[dict]:
    jobs = []
    with service.client("alice") as c:
        for i in range(JOBS):
            kind = "fork" if i % 2 == 0 else "slurm"
            name = f"fault-{fault}-{i}-{int(time.time())}"
            body = {
                "name": name,
                "appId": apps[kind],
                "inputs": {"textFile": INPUT},
                "parameters": {"seconds": 2 + (i % 5) * 3},
            }
            r = c.post("/jobs/v2", json=body)
            assert r.status_code == 201, r.text
            jobs.append({"id": r.json()["result"]["id"], "kind": kind, "name": name})
    return jobs


def _statuses(service, jobs) -> dict[str, str]:
    out = {}
    with service.client("alice") as c:
        for j in jobs:
            try:
                out[j["id"]] = c.get(f"/jobs/v2/{j['id']}", timeout=10).json()["result"]["status"]
            except Exception:  # the service is restarting a part: ask again
                out[j["id"]] = "?"
    return out


def _history(c, job_id) -> list[dict]:
    return c.get(f"/jobs/v2/{job_id}/history", params={"limit": 1000}).json()["result"]


def _duplicates(c, job: dict, infra: dict) -> list[str]:
    """What was done twice for this job (empty: nothing)."""
    found = []
    history = _history(c, job["id"])
    said = [e["description"] for e in history]
    copies = sum(d.startswith(f"Copy of {INPUT}") for d in said)
    if copies != 1:
        found.append(f"input staged {copies} times")
    queued = sum(e["status"] == "QUEUED" and e["description"].startswith("Job queued on") for e in history)
    if queued != 1:
        found.append(f"handed to the scheduler {queued} times")
    archived = sum(e["status"] == "ARCHIVING_FINISHED" for e in history)
    runs_copied = sum(d.startswith("Copied runs.txt to the archive") for d in said)
    if archived != 1 or runs_copied != 1:
        found.append(f"archived {archived} times (runs.txt copied {runs_copied} times)")
    r = c.get(f"/jobs/v2/{job['id']}/outputs/media/runs.txt")
    runs = r.text.splitlines() if r.status_code == 200 else []
    if len(runs) != 1:
        found.append(f"the app ran {len(runs)} times ({r.status_code})")
    if job["kind"] == "slurm":
        slug = job["name"].lower()
        names = [
            n
            for n in _slurm(infra, "sacct", "-n", "-P", "-X", "-a", "-o", "JobName%100", "-S", "now-3600").split()
            if n == slug
        ]
        if len(names) > 1:  # sacct may lag behind by a few seconds: 0 is not a duplicate
            found.append(f"{len(names)} SLURM jobs named {slug}")
    return found


def _phases(statuses: dict[str, str]) -> str:
    groups = {
        "stage": ("PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGED"),
        "submit": ("SUBMITTING", "STAGING_JOB"),
        "monitor": ("QUEUED", "RUNNING"),
        "archive": ("CLEANING_UP", "ARCHIVING", "ARCHIVING_FINISHED"),
    }
    counts = {k: sum(s in v for s in statuses.values()) for k, v in groups.items()}
    return ", ".join(f"{k} {n}" for k, n in counts.items())


@pytest.mark.parametrize("fault", list(FAULTS))
def test_jobs_in_flight_survive_the_loss_of(service, apps, fault):
    infra = apps["infra"]
    jobs = _submit_all(service, apps, fault)
    deadline = time.monotonic() + 90
    while True:  # the fault comes once the jobs are spread over the steps: some running, some not yet
        at_kill = _statuses(service, jobs)
        early = sum(
            s in ("PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGED", "SUBMITTING") for s in at_kill.values()
        )
        running = sum(s in ("QUEUED", "RUNNING") for s in at_kill.values())
        if (running >= 3 and early >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    in_flight = sum(s not in TERMINAL for s in at_kill.values())
    t0 = time.monotonic()
    FAULTS[fault](service, infra)
    deadline = time.monotonic() + 600
    while True:
        now = _statuses(service, jobs)
        if all(s in TERMINAL for s in now.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    took = time.monotonic() - t0
    with service.client("alice") as c:
        dups = {j["id"]: d for j in jobs if now[j["id"]] == "FINISHED" and (d := _duplicates(c, j, infra))}
        retried = sum(
            any(
                "because of the service" in e["description"] or "starts try" in e["description"]
                for e in _history(c, j["id"])
            )
            for j in jobs
        )
        messages = {
            j["id"]: c.get(f"/jobs/v2/{j['id']}").json()["result"]["message"]
            for j in jobs
            if now[j["id"]] != "FINISHED"
        }
    finished = sum(s == "FINISHED" for s in now.values())
    failed = sum(s in ("FAILED", "KILLED", "STOPPED") for s in now.values())
    stuck = sum(s not in TERMINAL for s in now.values())
    row = (
        f"| {fault} | {in_flight} ({_phases(at_kill)}) | {finished} | {failed} | {stuck} | {len(dups)} | "
        f"{retried} | {took:.0f} s |\n"
    )
    with open(VAR / "faults.md", "a") as f:
        f.write(row)
    print(row)
    assert (failed, stuck) == (0, 0), messages
    assert not dups, dups
    assert in_flight >= JOBS - 2, at_kill
