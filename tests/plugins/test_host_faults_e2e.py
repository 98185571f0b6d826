"""Execution hosts fail too (issue 11, item 4): a host's sshd down while FORK and SLURM jobs run, slurmctld
killed and restarted while SLURM jobs run, and a maxRunTime that runs out while the host is unreachable. The
hosts are real: a private OpenSSH server of this module (a copy of the test host's configuration on another
port, so the shared sshd on 2222 is never stopped) and the single-node SLURM of .ci/infra-up.sh.
Skipped unless AIRJOBS_INFRA_ENV names the infra.env that .ci/infra-up.sh wrote (`make test` as root)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from airjobs import registry, store
from conftest import CHECKOUT, install_probe_app, process_alive, read_infra

pytestmark = [pytest.mark.e2e, pytest.mark.faults]  # it stops hosts: runs after the other tests (conftest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SSHD_PORT = _free_port()
# the private sshd is on loopback like the shared one: let the egress guard through to it (read at each use;
# the service fixture, started after this import, passes the environment on)
os.environ["AIRJOBS_EGRESS_ALLOW"] = ",".join(
    filter(None, [os.environ.get("AIRJOBS_EGRESS_ALLOW", ""), f"127.0.0.1:{SSHD_PORT}"])
)

FORK, SLURM, CONN = "faults.fork", "faults.slurm", "faults-ssh"
FORK_APP, SLURM_APP = "faults-fork-probe-1.0", "faults-slurm-probe-1.0"
TERMINAL = ("FINISHED", "FAILED", "STOPPED", "KILLED")


class Sshd:
    """An OpenSSH server of this test: the test host's sshd_config on another port and pid file."""

    def __init__(self, infra: dict[str, str], port: int):
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="ajt-sshd-"))
        self.pid_file, self.log = self.dir / "sshd.pid", self.dir / "sshd.log"
        lines = []
        for line in (Path(infra["AIRJOBS_INFRA"]) / "ssh/sshd_config").read_text().splitlines():
            key = line.split()[0].lower() if line.split() else ""
            lines.append(f"Port {port}" if key == "port" else f"PidFile {self.pid_file}" if key == "pidfile" else line)
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join(lines) + "\n")

    def listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self) -> None:
        subprocess.run(["/usr/sbin/sshd", "-f", str(self.config), "-E", str(self.log)], check=True, timeout=30)
        deadline = time.monotonic() + 20
        while not self.listening():
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.1)

    def _ours(self) -> list[int]:
        """The listener and every sshd process below it (the per-connection ones), by parent pid."""
        try:
            root = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return []
        parents: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    comm = (entry / "comm").read_text().strip()
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if comm.startswith("sshd"):
                    parents.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [root] if process_alive(root) else []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += parents.get(pid, [])
        return found

    def stop(self) -> None:
        """Down as a crashed host: the listener and its live connections killed, the port closed."""
        for pid in reversed(self._ours()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while self.listening():
            assert time.monotonic() < deadline, "the private sshd still listens"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def sshd():
    server = Sshd(read_infra(), SSHD_PORT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hosts(service, sshd):
    """A FORK system and a SLURM system reached through the private sshd, and a probe app on each."""
    infra = read_infra()
    conn = {
        "connection_id": CONN,
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": SSHD_PORT,
        "login": infra["AIRJOBS_SSH_USER"],
        "extra": '{{"key_file": "{}", "no_host_key_check": true}}'.format(infra["AIRJOBS_SSH_KEY"]),
    }
    r = httpx.post(
        f"{service.base}/api/v2/connections", json=conn, headers={"Authorization": f"Bearer {service.airflow_token()}"}
    )
    assert r.status_code in (201, 409), r.text
    home = f"/home/{infra['AIRJOBS_SSH_USER']}"
    ssh = {"protocol": "SSH", "host": "127.0.0.1", "port": SSHD_PORT, "connectionId": CONN}
    storage = {
        "protocol": "SFTP",
        "host": "127.0.0.1",
        "port": SSHD_PORT,
        "connectionId": CONN,
        "rootDir": home,
        "homeDir": "/",
    }
    queue = {
        "maxJobs": 100,
        "maxUserJobs": 100,
        "maxNodes": 1,
        "maxProcessorsPerNode": 1,
        "maxMemoryPerNode": "1GB",
        "maxRequestedTime": "01:00:00",
    }
    registry.put_system(
        {
            "id": FORK,
            "name": "FORK behind the private sshd",
            "type": "EXECUTION",
            "executionType": "CLI",
            "scheduler": "FORK",
            "public": True,
            "login": ssh,
            "storage": storage,
            "workDir": "/faults-fork",
            "queues": [{"name": "normal", "default": True, **queue}],
        },
        "admin",
    )
    partition = infra["AIRJOBS_SLURM_PARTITIONS"].split(",")[0]
    registry.put_system(
        {
            "id": SLURM,
            "name": "SLURM behind the private sshd",
            "type": "EXECUTION",
            "executionType": "HPC",
            "scheduler": "SLURM",
            "public": True,
            "login": ssh,
            "storage": storage,
            "workDir": "/faults-slurm",
            "queues": [{"name": "debug", "mappedName": partition, "default": True, **queue}],
        },
        "admin",
    )
    assert install_probe_app("faults-fork-probe", FORK, "normal") == FORK_APP
    assert install_probe_app("faults-slurm-probe", SLURM, "debug") == SLURM_APP
    subprocess.run(["install", "-d", "-o", infra["AIRJOBS_SSH_USER"], f"{home}/gates"], check=True)
    return infra | {"HOME": home}


def _submit(service, app: str, name: str, **fields) -> str:
    with service.client() as c:
        r = c.post("/jobs/v2", json={"name": name, "appId": app, "archive": False, **fields})
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def _statuses(service, ids: list[str]) -> dict[str, str]:
    with service.client() as c:
        return {i: c.get(f"/jobs/v2/{i}/status").json()["result"]["status"] for i in ids}


def _deferred_monitors(service) -> int:
    r = httpx.get(
        f"{service.base}/api/v2/dags/airjobs_lifecycle/dagRuns/~/taskInstances",
        params={"limit": 1, "task_id": "monitor", "state": "deferred"},
        headers={"Authorization": f"Bearer {service.airflow_token()}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()["total_entries"]


def _all_running_and_watched(service, ids: list[str], timeout: float = 180) -> None:
    """Every job RUNNING on its host and its monitor deferred to the shared poller of the triggerer."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = _statuses(service, ids)
        assert not set(TERMINAL) & set(statuses.values()), statuses
        if set(statuses.values()) == {"RUNNING"} and _deferred_monitors(service) >= len(ids):
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)


def _wait_terminal(service, ids: list[str], timeout: float) -> dict[str, dict]:
    return {i: service.wait_terminal(i, timeout=timeout) for i in ids}


def _open(hosts, gate: str) -> None:
    Path(f"{hosts['HOME']}/gates/{gate}").touch()


def _slurm(infra: dict, *args: str) -> str:
    env = {"SLURM_CONF": infra["AIRJOBS_SLURM_CONF"], "PATH": "/usr/bin:/bin"}
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60).stdout


def _sbatch_count(infra: dict, name: str) -> int:
    """SLURM jobs submitted today under this job name (each job's SLURM name is the slug of its name)."""
    since = (datetime.now() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    out = _slurm(infra, "sacct", "-n", "-X", "-P", "-S", since, f"--name={name}", "-o", "JobID")
    return len([line for line in out.splitlines() if line.strip()])


def _contact_events(history: list[dict], system: str) -> tuple[list[int], list[int]]:
    lost = [i for i, e in enumerate(history) if e["description"].startswith(f"Lost contact with {system}")]
    back = [i for i, e in enumerate(history) if e["description"].startswith(f"Contact with {system} restored")]
    return lost, back


def test_jobs_wait_for_a_host_whose_sshd_is_down_and_finish_when_it_is_back(service, hosts, sshd):
    tag = f"{time.time_ns() % 10**9}"
    early, late = f"early-{tag}", f"late-{tag}"  # gates: opened while sshd is down / after it is back
    names, waiting = {}, []  # job id -> name; the jobs still waiting for their gate when sshd is back
    for app, kind in ((FORK_APP, "fork"), (SLURM_APP, "slurm")):
        for i, gate in enumerate((early, early, late, late)):
            name = f"hf-a-{kind}-{i}-{tag}"
            names[job_id := _submit(service, app, name, parameters={"gate": gate})] = name
            if gate == late:
                waiting.append(job_id)
    ids = list(names)
    try:
        _all_running_and_watched(service, ids)
        local_ids = {i: store.get_job(i).local_id for i in ids}
        sshd.stop()
        down = time.monotonic()
        time.sleep(20)
        _open(hosts, early)  # half the jobs end while nobody can look
        time.sleep(max(0.0, down + 45 - time.monotonic()))
        # 45 s of refused connections: ~15 failed status checks per system (the back-off stops at the schedule's 3 s)
        statuses = _statuses(service, ids)
        assert set(statuses.values()) == {"RUNNING"}, statuses
        sshd.start()
        time.sleep(8)
        statuses = _statuses(service, ids)
        assert all(statuses[i] == "RUNNING" for i in waiting), statuses
    finally:
        _open(hosts, early)
        _open(hosts, late)
        if not sshd.listening():
            sshd.start()
    jobs = _wait_terminal(service, ids, timeout=180)
    assert {i: j["status"] for i, j in jobs.items()} == dict.fromkeys(ids, "FINISHED"), {
        i: (j["status"], store.get_job(i).message) for i, j in jobs.items()
    }
    for job_id, job in jobs.items():
        assert job["localId"] == local_ids[job_id]  # never submitted again
        system = FORK if "-fork-" in names[job_id] else SLURM
        history = service.history(job_id, user="alice")
        lost, back = _contact_events(history, system)
        # once per outage: one event when contact was lost, one when it came back, in that order
        assert len(lost) == 1 and len(back) == 1 and lost[0] < back[0], [e["description"] for e in history]
        assert "still trying" in history[lost[0]]["description"]
        assert "FAILED" not in [e["status"] for e in history]
    for name in names.values():
        if "-slurm-" in name:
            assert _sbatch_count(hosts, name) == 1, name


def _slurmctld_pid(infra: dict) -> int:
    return int((Path(infra["AIRJOBS_INFRA"]) / "slurm/run/slurmctld.pid").read_text().strip())


def _restart_slurmctld(infra: dict) -> None:
    """As the test hosts are brought up: infra-up.sh starts what is not running. Its last readiness check
    wants the node idle, which it is not while jobs run, so what counts here is that the controller answers."""
    subprocess.run(
        ["bash", str(CHECKOUT / ".ci/infra-up.sh"), infra["AIRJOBS_INFRA"]],
        capture_output=True,
        timeout=300,
        env={**os.environ, "AIRJOBS_INFRA_TIMEOUT": "30"},
    )
    env = {"SLURM_CONF": infra["AIRJOBS_SLURM_CONF"], "PATH": "/usr/bin:/bin"}
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h"], env=env, capture_output=True, timeout=60).returncode != 0:
        assert time.monotonic() < deadline, "slurmctld did not come back"
        time.sleep(1)


def test_slurm_jobs_survive_a_slurmctld_restart(service, hosts):
    tag = f"{time.time_ns() % 10**9}"
    early, late = f"early-{tag}", f"late-{tag}"
    names, waiting = {}, []
    for i, gate in enumerate((early, early, late, late)):
        name = f"hf-b-{i}-{tag}"
        names[job_id := _submit(service, SLURM_APP, name, parameters={"gate": gate})] = name
        if gate == late:
            waiting.append(job_id)
    ids = list(names)
    restarted = False
    try:
        _all_running_and_watched(service, ids)
        local_ids = {i: store.get_job(i).local_id for i in ids}
        time.sleep(3)  # slurmctld saves its job state every few seconds: the jobs are in it
        pid = _slurmctld_pid(hosts)
        os.kill(pid, signal.SIGKILL)
        down = time.monotonic()
        while process_alive(pid):
            assert time.monotonic() < down + 10
            time.sleep(0.1)
        time.sleep(8)
        _open(hosts, early)  # these end while the controller is down
        time.sleep(max(0.0, down + 18 - time.monotonic()))
        statuses = _statuses(service, ids)
        assert not {"FAILED", "KILLED", "STOPPED"} & set(statuses.values()), statuses
        _restart_slurmctld(hosts)
        restarted = True
        time.sleep(5)
        statuses = _statuses(service, ids)
        assert all(statuses[i] == "RUNNING" for i in waiting), statuses
    finally:
        _open(hosts, early)
        _open(hosts, late)
        if not restarted:  # others use this SLURM: never leave it down
            _restart_slurmctld(hosts)
    jobs = _wait_terminal(service, ids, timeout=180)
    assert {i: j["status"] for i, j in jobs.items()} == dict.fromkeys(ids, "FINISHED"), {
        i: (j["status"], store.get_job(i).message) for i, j in jobs.items()
    }
    for job_id, name in names.items():
        assert jobs[job_id]["localId"] == local_ids[job_id]
        assert _sbatch_count(hosts, name) == 1, name  # one sbatch per job: nothing resubmitted
        history = service.history(job_id, user="alice")
        assert "FAILED" not in [e["status"] for e in history]
        if job_id in waiting:  # still running when the controller came back
            lost, back = _contact_events(history, SLURM)
            assert len(lost) == 1 and len(back) == 1 and lost[0] < back[0], [e["description"] for e in history]
            assert "squeue" in history[lost[0]]["description"] or "slurm" in history[lost[0]]["description"].lower()


def _group_alive(pgid: int) -> bool:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return any(len(p := line.split()) == 2 and not p[1].startswith("Z") for line in out.splitlines())


def test_max_run_time_kill_happens_on_time_while_the_host_is_unreachable(service, hosts, sshd):
    name = f"hf-c-{time.time_ns() % 10**9}"
    job_id = _submit(service, FORK_APP, name, parameters={"seconds": 300}, maxRunTime="00:00:20")
    try:
        _all_running_and_watched(service, [job_id], timeout=60)
        job = store.get_job(job_id)
        pid_file = Path(hosts["HOME"] + job.work_path) / f"{name}.pid"
        pgid = int(pid_file.read_text().strip())  # the wrapper leads its own process group
        assert _group_alive(pgid)
        time.sleep(
            max(0.0, (job.start_time + timedelta(seconds=10) - datetime.now(job.start_time.tzinfo)).total_seconds())
        )
        sshd.stop()
        ended = service.wait_terminal(job_id, timeout=40)
        assert ended["status"] == "KILLED", ended
        job = store.get_job(job_id)
        took = (job.end_time - job.start_time).total_seconds()
        assert 20 <= took < 27, took  # on time, although the host could not be told
        assert "maximum run time" in job.message and "unreachable" in job.message, job.message
        time.sleep(3)
        assert _group_alive(pgid)  # nobody could reach the host: the process still runs there
    finally:
        if not sshd.listening():
            sshd.start()
    deadline = time.monotonic() + 30  # once the host answers again, the kill reaches it
    while _group_alive(pgid):
        assert time.monotonic() < deadline, "the job's process still runs after the host came back"
        time.sleep(0.5)
    descriptions = [e["description"] for e in service.history(job_id, user="alice")]
    assert any("killed" in d and "answer" in d for d in descriptions[-2:]), descriptions
    assert process_alive(pgid) is False
