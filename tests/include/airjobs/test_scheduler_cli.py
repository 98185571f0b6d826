"""The PBS/Torque, SGE, LSF and HTCondor modules driving (fake) scheduler commands on the real SSH test host.

The commands are ``tests/fakes/<sched>/bin`` (installed in ``~/fakes`` of the SSH user by ``.ci/infra-up.sh``):
they print what the real tools print (formats from the schedulers' documentation) and really run the jobs on the
host, so these tests check that what the modules render is accepted, that their submit/status/kill commands do what
they mean, and that their parsers read the real answers: a job runs, exits 3 and is reported with that exit code; a
job is killed and its processes are gone; a bad queue is refused with the scheduler's own words; one status command
covers several jobs. Also checks the ``slurm-count`` wrappers (``~/fakes/slurm-count``) around the real SLURM.

Skipped unless AIRJOBS_INFRA_ENV names the infra.env that .ci/infra-up.sh wrote.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from shlex import quote
from typing import Any

import pytest

from airjobs.schedulers import condor, lsf, pbs, sge, slurm
from airjobs.schedulers.base import JobRequest
from airjobs.statuses import JobStatus

ENV_FILE = os.environ.get("AIRJOBS_INFRA_ENV", "")
pytestmark = pytest.mark.skipif(
    not ENV_FILE or not Path(ENV_FILE).is_file(),
    reason="AIRJOBS_INFRA_ENV does not point to an infra.env written by .ci/infra-up.sh",
)

Q, R, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CLEANING_UP, JobStatus.FAILED
GONE = None  # no longer listed by the scheduler's status command

# case -> (module, fake dir, environment for the fake, final (status, code) of: A (exit 3), B (killed), C (exit 0))
CASES: dict[str, tuple[Any, str, dict[str, str], tuple]] = {
    # PBS Pro: F + Exit_status; qdel'd = 256 + SIGTERM
    "pbspro": (pbs, "pbs", {"FAKE_PBS_FLAVOR": "pro"}, ((D, 3), (F, 271), (D, 0))),
    # Torque: C + exit_status, same encoding of a signal
    "torque": (pbs, "pbs", {"FAKE_PBS_FLAVOR": "torque"}, ((D, 3), (F, 271), (D, 0))),
    # Grid Engine: finished jobs leave qstat, the exit-code file decides
    "sge": (sge, "sge", {}, (GONE, GONE, GONE)),
    # LSF: EXIT with the exit code, bkill = SIGINT -> 130; DONE has no exit code ("-")
    "lsf": (lsf, "lsf", {}, ((F, 3), (F, 130), (D, None))),
    # HTCondor: Completed (4) with ExitCode; condor_rm = Removed (3), no ExitCode
    "condor": (condor, "condor", {}, ((D, 3), (F, None), (D, 0))),
}
REFUSAL = {  # what each scheduler says when asked for the queue "badq" (HTCondor: an initialdir that does not exist)
    "pbspro": "qsub: Unknown queue",
    "torque": "qsub: submit error (Unknown queue MSG=requested queue not found)",
    "sge": 'Unable to run job: Job was rejected because job requests unknown queue "badq".',
    "lsf": "badq: No such queue. Job not submitted.",
    "condor": "ERROR: No such directory: /nonexistent/airjobs",
}
PENDING = 2.5  # seconds job C stays queued (FAKE_PENDING), long enough to see it QUEUED


def _read_env(path: str) -> dict[str, str]:
    env = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


class Host:
    """One SSH connection to the test host; every command first sources the fake's env.sh."""

    def __init__(self, client, home: str):
        self.client = client
        self.sftp = client.open_sftp()
        self.home = home

    def run(
        self, command: str, fake: str | None = None, env: dict[str, str] | None = None, timeout: float = 30
    ) -> tuple[int, str, str]:
        prefix = "".join(f"export {k}={quote(v)}; " for k, v in (env or {}).items())
        if fake:
            prefix += f"source ~/fakes/{fake}/env.sh; "
        _, out, err = self.client.exec_command(prefix + "\n" + command, timeout=timeout)
        stdout, stderr = out.read().decode(), err.read().decode()
        return out.channel.recv_exit_status(), stdout, stderr

    def ok(self, command: str, **kw) -> str:
        rc, out, err = self.run(command, **kw)
        assert rc == 0, f"{command!r} exited {rc}: {err.strip() or out.strip()}"
        return out

    def write(self, path: str, text: str) -> None:
        with self.sftp.open(path, "w") as f:
            f.write(text)

    def read(self, path: str) -> str:
        with self.sftp.open(path) as f:
            return f.read().decode()


@pytest.fixture(scope="module")
def host():
    paramiko = pytest.importorskip("paramiko")
    infra = _read_env(ENV_FILE)
    client = paramiko.SSHClient()
    client.load_host_keys(infra["AIRJOBS_SSH_KNOWN_HOSTS"])
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
    h = Host(client, client.open_sftp().normalize("."))
    rc, _, _ = h.run("test -x ~/fakes/pbs/bin/qsub && test -x ~/fakes/slurm-count/bin/squeue")
    if rc != 0:
        pytest.fail("~/fakes is not installed on the SSH host: run .ci/infra-up.sh again")
    h.root = f"{h.home}/cli-tests/{time.time_ns()}"
    h.ok(f"mkdir -p {quote(h.root)}")
    h.submitted = []  # (module, fake, env, remote id): killed at the end whatever happened
    yield h
    kills: dict[tuple, list[str]] = {}  # one ssh call per fake: kill whatever may still run
    for module, fake, env, rid in h.submitted:
        kills.setdefault((fake, tuple(env.items())), []).append(f"{module.kill_command(rid)} >/dev/null 2>&1")
    for (fake, env), commands in kills.items():
        h.run("; ".join(commands) + "; true", fake=fake, env=dict(env))
    h.run(f"rm -rf {quote(h.root)}")
    client.close()


def _wait(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}; last: {value!r}")
        time.sleep(0.2)


def _request(case: str, tag: str, work: str, queue: str | None = "debug") -> JobRequest:
    return JobRequest(name=f"job{tag}", job_id=f"{case}-{tag}", work_dir=work, queue=queue, max_run_time="00:10:00")


def _submit(
    host: Host, case: str, req: JobRequest, body: str, env: dict[str, str] | None = None, record: bool = True
) -> tuple[int, str, str]:
    """Write the script (header + body; for HTCondor also its submit file) and run the module's submit command."""
    module, fake, fake_env, _ = CASES[case]
    script = f"{req.name}.ipcexe"
    text = module.header(req) + f'echo "start-dir=$PWD"\ncd {quote(req.work_dir)} || exit 1\n{body}\n'
    host.write(f"{host.case_dir}/{script}", text)
    if module is condor:
        host.write(f"{host.case_dir}/{condor.submit_file_name(script)}", condor.submit_file(req, script))
    rc, out, err = host.run(module.submit_command(host.case_dir, script), fake=fake, env={**fake_env, **(env or {})})
    if rc == 0 and record:
        host.submitted.append((module, fake, fake_env, module.parse_submit(f"{out}\n{err}")))
    return rc, out, err


def _status(host: Host, case: str, ids: list[str]) -> dict[str, tuple[JobStatus, int | None]]:
    module, fake, env, _ = CASES[case]
    rc, out, err = host.run(module.status_command(ids), fake=fake, env=env)
    assert rc == 0, err  # the modules' status commands always end in `; true`
    return module.parse_status(out)


def _unknown_id(case: str, like: str) -> str:
    return "99999" + like[like.index(".") :] if CASES[case][0] is pbs else "99999"


@pytest.fixture
def case_dir(host, request):
    case = request.node.callspec.params["case"]
    host.case_dir = f"{host.root}/{case}-{request.node.originalname.removeprefix('test_')}"
    host.ok(f"mkdir -p {quote(host.case_dir)}")
    return host.case_dir


@pytest.mark.parametrize("case", list(CASES))
def test_jobs_run_report_exit_codes_and_are_killed(host, case, case_dir):
    module, fake, env, (final_a, final_b, final_c) = CASES[case]
    work = case_dir
    # A: runs 3 s and exits 3; B: runs until killed; C: stays queued PENDING s, then exits 0
    ra, rb, rc_ = _request(case, "a", work), _request(case, "b", work), _request(case, "c", work)
    sub_a = _submit(host, case, ra, "sleep 3\necho hi > out.txt\necho done-a\necho warn-a >&2\nexit 3")
    sub_b = _submit(host, case, rb, "echo $$ > b.pid\nsleep 60")
    for rc, out, err in (sub_a, sub_b):
        assert rc == 0, f"submission refused: {out}{err}"
    a, b = (module.parse_submit(f"{out}\n{err}") for _, out, err in (sub_a, sub_b))
    _wait(
        lambda: _status(host, case, [a, b]),
        lambda s: s.get(a) == (R, None) and s.get(b) == (R, None),
        10,
        f"{case} jobs {a} and {b} RUNNING",
    )
    rc, out, err = _submit(host, case, rc_, "echo ok > c.txt", env={"FAKE_PENDING": str(PENDING)})
    assert rc == 0, out + err
    c = module.parse_submit(f"{out}\n{err}")
    assert len({a, b, c}) == 3

    # one status command for three jobs (and an id the scheduler never heard of): all three, nothing else asked for
    unknown = _unknown_id(case, a)
    states = _status(host, case, [a, b, c, unknown])
    assert states[a] == (R, None) and states[b] == (R, None) and states[c] == (Q, None), states
    assert unknown not in states

    # kill B: the scheduler reports it failed/gone, and nothing of it is left running
    pid = int(_wait(host.run(f"cat {quote(work)}/b.pid")[1].strip, str.isdigit, 10, "b.pid"))
    rc, out, err = host.run(module.kill_command(b), fake=fake, env=env)
    assert rc == 0, f"{module.kill_command(b)} exited {rc}: {out}{err}"
    _wait(lambda: _status(host, case, [b]).get(b), lambda s: s == final_b, 10, f"{case} job {b} killed")
    _wait(
        lambda: host.run(f"kill -0 {pid} 2>/dev/null || pgrep -g {pid}")[0],
        lambda rc: rc != 0,
        10,
        f"the processes of job {b} (process group {pid}) to be gone",
    )

    # A and C end: with their exit codes where the scheduler reports one
    states = _wait(
        lambda: _status(host, case, [a, b, c]),
        lambda s: s.get(a) == final_a and s.get(c) == final_c,
        15,
        f"{case} jobs {a} and {c} ended",
    )
    if final_a is not GONE:  # the schedulers that keep finished jobs: one command, all three
        assert states == {a: final_a, b: final_b, c: final_c}
    else:
        assert not {a, b, c} & states.keys()

    # the jobs really ran, in the work dir, with their output where the header's directives said
    assert host.read(f"{work}/out.txt") == "hi\n" and host.read(f"{work}/c.txt") == "ok\n"
    out_a, err_a = host.read(f"{work}/{ra.out}"), host.read(f"{work}/{ra.err}")
    assert "done-a\n" in out_a and err_a == "warn-a\n"
    start_dir = re.findall(r"^start-dir=(/.*)$", out_a, re.M)[-1]  # (LSF: after its report, which quotes the script)
    assert start_dir == (host.home if module is pbs else work)  # PBS starts jobs in $HOME, the others where asked
    if module is lsf:
        assert "Sender: LSF System" in out_a and "Exited with exit code 3." in out_a
    if case == "pbspro":  # why the module asks for -x: without it PBS Pro no longer shows a finished job
        rc, out, err = host.run(f"qstat -f {quote(a)}", fake=fake, env=env)
        assert rc != 0 and out == "" and "Job has finished, use -x or -H" in err
    if module is sge:  # Grid Engine keeps the exit status in its accounting only
        assert re.search(r"^exit_status\s+3$", host.ok(f"qacct -j {a}", fake=fake, env=env), re.M)


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_submission_raises_with_the_schedulers_words(host, case, case_dir):
    module = CASES[case][0]
    if module is condor:  # no queues in HTCondor: an initial directory that does not exist
        req = _request(case, "bad", "/nonexistent/airjobs", queue=None)
        host.write(f"{case_dir}/{req.name}.ipcexe", condor.header(req) + "exit 0\n")
        host.write(f"{case_dir}/{req.name}.submit", condor.submit_file(req, f"{req.name}.ipcexe"))
        _, fake, env, _ = CASES[case]
        rc, out, err = host.run(module.submit_command(case_dir, f"{req.name}.ipcexe"), fake=fake, env=env)
    else:
        rc, out, err = _submit(host, case, _request(case, "bad", case_dir, queue="badq"), "exit 0", record=False)
    assert rc != 0 and REFUSAL[case] in err
    with pytest.raises(ValueError) as e:
        module.parse_submit(f"{out}\n{err}")
    assert REFUSAL[case] in str(e.value) and module.NAME in str(e.value)


@pytest.mark.parametrize("case", list(CASES))
def test_unknown_ids(host, case, case_dir):
    """Nothing on stdout for an id the scheduler does not know (its complaint goes to stderr); killing it fails."""
    module, fake, env, _ = CASES[case]
    unknown = _unknown_id(case, f"1.{host.ok('hostname -s').strip()}")
    assert _status(host, case, [unknown]) == {}
    raw = {
        pbs: f"qstat -f {unknown}",
        sge: f"qstat -j {unknown}",
        lsf: f"bjobs {unknown}",
        condor: f"condor_q {unknown} -af ClusterId JobStatus",
    }[module]
    rc, out, err = host.run(raw, fake=fake, env=env)
    said = {
        "pbspro": f"qstat: Unknown Job Id {unknown}",
        "torque": f"qstat: Unknown Job Id Error {unknown}",
        "sge": "Following jobs do not exist",
        "lsf": f"Job <{unknown}> is not found",
        "condor": "",
    }[case]
    assert out == "" and said in err and (rc != 0 or module is condor)
    rc, out, err = host.run(module.kill_command(unknown), fake=fake, env=env)
    assert rc != 0 and err.strip()


def test_slurm_count_wrappers_log_each_call_and_return_real_output(host):
    log = "~/fakes/slurm-count/calls.log"
    rc, out, err = host.run("sbatch --parsable -J count-check -o /dev/null --wrap 'sleep 30'")
    assert rc == 0, err
    job = out.strip().split(";")[0]
    try:
        before = int(host.ok(f"cat {log} 2>/dev/null | wc -l").strip())
        t0 = int(time.time() * 1000)
        paths = host.ok("type -P squeue sacct", fake="slurm-count").split()
        assert paths == [f"{host.home}/fakes/slurm-count/bin/squeue", f"{host.home}/fakes/slurm-count/bin/sacct"]
        # the SLURM module's own status command, through the wrappers: real answers from the real SLURM
        states = slurm.parse_status(host.ok(slurm.status_command([job]), fake="slurm-count"))
        assert states.get(job) in ((Q, None), (R, None)), states
        assert host.ok(f"squeue -h -o %j -j {job}", fake="slurm-count") == "count-check\n"
        # concurrent calls each get a whole line of their own
        host.ok(f"for i in 1 2 3 4 5 6 7 8; do squeue -h -j {job} >/dev/null & done; wait", fake="slurm-count")
        t1 = int(time.time() * 1000)
        # only this test's calls (they all name its job): anyone else may use the wrappers meanwhile
        lines = [ln for ln in host.ok(f"cat {log}").splitlines()[before:] if ln.endswith(f" -j {job}")]
        assert len(lines) == 2 + 1 + 8, lines
        for line in lines:
            ms, command = line.split(" ", 2)[:2]
            assert command in ("squeue", "sacct") and t0 - 5000 <= int(ms) <= t1 + 5000, line
        assert lines[0].split(" ", 1)[1] == f"squeue -h -o %i|%T -j {job}"
        assert lines[1].split(" ", 1)[1] == f"sacct -n -P -X -o JobID,State,ExitCode -j {job}"
        assert lines[2].split(" ", 1)[1] == f"squeue -h -o %j -j {job}"
        assert all(line.split(" ", 1)[1] == f"squeue -h -j {job}" for line in lines[3:])
    finally:
        host.run(f"scancel {job}")


def test_slurm_status_tells_a_controller_that_is_down_from_one_that_does_not_know_a_job(host):
    """The real SLURM: the status command exits 0 when slurmctld answered (also "Invalid job id": none of the
    ids is known), non-zero with squeue's error when it could not be reached; sacct (slurmdbd) still answers."""
    rc, out, err = host.run("sbatch --parsable -J status-check -o /dev/null --wrap 'sleep 60'")
    assert rc == 0, err
    job = out.strip().split(";")[0]
    try:
        rc, out, err = host.run(slurm.status_command([job]))
        assert rc == 0 and slurm.parse_status(out)[job][0] in (Q, R), (rc, out, err)
        rc, out, err = host.run(slurm.status_command(["999999"]))
        assert rc == 0 and slurm.parse_status(out) == {}, (rc, out, err)
        # the same cluster, its controller on a port where nothing listens: as when slurmctld is down
        conf = re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=1", host.ok('cat "$SLURM_CONF"'))
        host.write(f"{host.home}/ctld-down.conf", conf)
        rc, out, err = host.run(
            slurm.status_command([job]), env={"SLURM_CONF": f"{host.home}/ctld-down.conf"}, timeout=120
        )
        assert rc != 0 and "squeue: " in err and "Unable to contact slurm controller" in err, (rc, out, err)
        assert slurm.parse_status(out)[job][0] in (Q, R)  # what slurmdbd knows is still printed
        # slurmdbd unreachable too: nothing printed, which is no answer (it used to count as "SLURM forgot the job")
        host.write(
            f"{host.home}/ctld-down.conf", re.sub(r"(?m)^AccountingStoragePort=.*$", "AccountingStoragePort=1", conf)
        )
        rc, out, err = host.run(
            slurm.status_command([job]), env={"SLURM_CONF": f"{host.home}/ctld-down.conf"}, timeout=120
        )
        assert rc != 0 and "Unable to contact slurm controller" in err and out.strip() == "", (rc, out, err)
    finally:
        host.run(f"scancel {job}; rm -f ~/ctld-down.conf")
