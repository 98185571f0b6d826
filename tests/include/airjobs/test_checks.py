"""The pure parts of the monitor's handling of hosts that fail (issue 11): the one remote command of a cycle
and how its answer is read (did the scheduler answer, or could its status command not run?), which errors
only say that something could not be reached, and the back-off and time limit of an outage."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
from sqlalchemy.exc import OperationalError

from airjobs import checks, egress
from airjobs.errors import StepError
from airjobs.schedulers import fork, slurm
from airjobs.statuses import JobStatus

SQUEUE = {  # what the real squeue prints (slurm-wlm 22.05) and exits with
    "answers": ("echo '12|RUNNING'", 0),
    "knows none of the ids": ("echo 'slurm_load_jobs error: Invalid job id specified' >&2", 1),
    "controller down": ("echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2", 1),
}


@pytest.fixture
def fake_slurm(tmp_path: Path):
    """squeue and sacct on PATH: squeue behaves as $CASE says, sacct (slurmdbd) answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = "\n".join(f"  {name!r}) {cmd}; exit {rc} ;;" for name, (cmd, rc) in SQUEUE.items())
    (bin_dir / "squeue").write_text(f'#!/bin/sh\ncase "$CASE" in\n{squeue}\nesac\n')
    (bin_dir / "sacct").write_text("#!/bin/sh\necho '12|RUNNING|0:0'\necho '13|COMPLETED|0:0'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (tmp_path / "done.code").write_text("0\n")
    return tmp_path


def _run(shell: str, command: str, case: str, tmp_path: Path) -> str:
    p = subprocess.run(
        [shell, "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        env={"CASE": case, "PATH": f"{tmp_path}/bin:/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_nothing_at_all_from_squeue_and_sacct_is_no_answer(fake_slurm):
    """slurmctld and slurmdbd both unreachable: the answer is empty, and says it is no answer (an empty answer
    used to count as a scheduler that no longer knows the jobs, which declared them lost)."""
    (fake_slurm / "bin/sacct").write_text(
        "#!/bin/sh\necho 'sacct: error: Problem talking to the database' >&2\nexit 1\n"
    )
    out = _run("bash", checks.status_script(slurm, ["12"], [str(fake_slurm / "none")]), "controller down", fake_slurm)
    answer = checks.parse_answer(out, 1)
    assert answer is not None and not answer.answered and answer.status_out.strip() == "" and answer.codes == ["-"]
    assert "Unable to contact slurm controller" in answer.error


@pytest.mark.parametrize("shell", ["dash", "bash"])  # LOCAL systems run commands with /bin/sh, SSH hosts a login shell
@pytest.mark.parametrize("case", list(SQUEUE))
def test_the_status_command_says_whether_the_scheduler_answered(fake_slurm, shell, case):
    files = [str(fake_slurm / "done.code"), str(fake_slurm / "no such file")]
    out = _run(shell, checks.status_script(slurm, ["12", "13"], files), case, fake_slurm)
    answer = checks.parse_answer(out, 2)
    assert answer is not None, out
    assert answer.codes == [0, "-"]  # the exit-code files are read whatever the scheduler said
    states = slurm.parse_status(answer.status_out)
    assert states["13"] == (JobStatus.CLEANING_UP, 0)  # sacct's answer is used in every case
    if case == "controller down":  # no information: the jobs sacct does not list may be running
        assert not answer.answered
        assert answer.error == "squeue: slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    else:  # an answer: a job it does not list is unknown to SLURM ("Invalid job id" too)
        assert answer.answered and answer.error == ""
    assert states["12"] == (JobStatus.RUNNING, None)


def test_fork_and_the_batch_schedulers_without_failure_reporting_always_answer(tmp_path):
    out = _run("dash", checks.status_script(fork, ["999999"], [str(tmp_path / "x")]), "", tmp_path)
    answer = checks.parse_answer(out, 1)
    assert answer is not None and answer.answered and answer.codes == ["-"]
    assert fork.parse_status(answer.status_out) == {}  # the process is gone: FORK's own answer


def test_an_answer_that_did_not_all_arrive_is_no_answer(fake_slurm):
    out = _run("bash", checks.status_script(slurm, ["12"], [str(fake_slurm / "done.code")]), "answers", fake_slurm)
    assert checks.parse_answer(out, 1) is not None
    for cut in (out.index(checks.STATUS_MARK), out.index(checks.MARK), out.index(checks.END), 0):
        assert checks.parse_answer(out[:cut], 1) is None, out[:cut]  # a connection that dropped midway
    assert checks.parse_answer("", 1) is None


def test_status_and_exit_code_values_are_quoted(fake_slurm):
    evil = fake_slurm / "$(touch pwned); x"
    out = _run("bash", checks.status_script(slurm, ["1;touch pwned2"], [str(evil)]), "answers", fake_slurm)
    assert checks.parse_answer(out, 1).codes == ["-"]
    assert not list(fake_slurm.glob("pwned*")) and not Path("pwned").exists()


def _paramiko_errors():
    return [
        paramiko.SSHException("Error reading SSH protocol banner"),
        paramiko.ssh_exception.NoValidConnectionsError({("127.0.0.1", 9): ConnectionRefusedError(111, "x")}),
        paramiko.ChannelException(2, "Connect failed"),
    ]


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        TimeoutError("timed out"),
        EOFError(),
        socket.gaierror(-3, "Temporary failure"),
        subprocess.TimeoutExpired(["/bin/sh", "-c", "squeue"], 120),
        OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
        *_paramiko_errors(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_reaching_a_host_or_the_database_are_transient(error):
    assert checks.transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PermissionError("Connection x is not one bob may use"),
        egress.EgressRefused("refused by the egress guard"),
        StepError("System x names no login.connectionId."),
        FileNotFoundError("/no/such/key"),
        paramiko.AuthenticationException("Authentication failed."),
        paramiko.BadHostKeyException("h", paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)),
        ValueError("bad"),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_and_bugs_are_not_transient(error):
    assert not checks.transient(error)


def test_back_off_doubles_from_the_first_interval_to_the_last(monkeypatch):
    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "1,1,2,3")
    assert [checks.retry_in(e) for e in (0, 0.5, 1, 2, 2.5, 3, 100, 10**9)] == [1, 1, 1, 2, 2.5, 3, 3, 3]
    monkeypatch.delenv("AIRJOBS_POLL_SCHEDULE")
    assert checks.retry_in(0) == 15 and checks.retry_in(100) == 100 and checks.retry_in(10**6) == 300


@pytest.mark.parametrize(
    "raw,expected",
    [(None, 21600), ("", 21600), ("90", 90), ("1.5", 1.5), ("0", 21600), ("-5", 21600), ("six hours", 21600)],
)
def test_unreachable_limit(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("AIRJOBS_HOST_UNREACHABLE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("AIRJOBS_HOST_UNREACHABLE_SECONDS", raw)
    assert checks.unreachable_limit() == expected


def test_durations_in_words():
    assert [checks.duration(s) for s in (0, 45.4, 119, 120, 3599, 7199, 7200, 21600, 5400 * 2 + 60)] == [
        "0 s",
        "45 s",
        "119 s",
        "2 min",
        "59 min",
        "119 min",
        "2 h",
        "6 h",
        "3 h 1 min",
    ]


def test_marks_in_remote_status():
    assert checks._since("UNREACHABLE:1700000000", checks.UNREACHABLE) == 1700000000
    assert checks._since("KILL_PENDING:1700000000", checks.UNREACHABLE) is None
    assert checks._since("RUNNING", checks.KILL_PENDING) is None and checks._since(None, checks.UNREACHABLE) is None
    assert checks._lost_count("UNREACHABLE:1700000000") == 0 and checks._lost_count("UNKNOWN:2") == 2
    assert checks._word("UNREACHABLE:1") is None and checks._word("PENDING") == "PENDING"


# ---------------------------------------------------------------- one cycle, on a host whose SLURM fails

FAKE_SQUEUE = """#!/bin/sh
read sq sa < "$(dirname "$0")/../mode"
case "$sq" in
  running) echo '4242|RUNNING' ;;
  invalid) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1 ;;
  down) echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1 ;;
esac
"""
FAKE_SACCT = """#!/bin/sh
read sq sa < "$(dirname "$0")/../mode"
case "$sa" in
  running) echo '4242|RUNNING|0:0' ;;
  pending) echo '4242|PENDING|0:0' ;;
  down) echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1 ;;
esac
"""


@pytest.fixture
def slurm_host(pg):
    """A LOCAL system whose SLURM commands are small scripts (on PATH through its startupScript) that answer,
    or fail as squeue and sacct do when slurmctld or slurmdbd is down, as the file ``mode`` says; and a job
    RUNNING there as SLURM job 4242."""
    import tempfile

    from airjobs import registry, store, submission
    from airjobs.lifecycle import transition
    from conftest import install_app

    root = Path(tempfile.mkdtemp(prefix="ajt-slurm-"))  # LOCAL commands run as the run-as account: readable
    (root / "bin").mkdir()
    (root / "bin/squeue").write_text(FAKE_SQUEUE)
    (root / "bin/sacct").write_text(FAKE_SACCT)
    (root / "bin/scancel").write_text('#!/bin/sh\necho "$@" >> "$(dirname "$0")/../cancelled"\n')
    (root / "env.sh").write_text(f'PATH={root}/bin:"$PATH"; export PATH\n')
    (root / "mode").write_text("running running\n")
    (root / "cancelled").touch()
    for p in (root, root / "bin", *root.glob("bin/*"), root / "env.sh", root / "mode", root / "cancelled"):
        p.chmod(0o777 if p.name == "cancelled" else 0o755)
    registry.put_system(
        {
            "id": "fake-slurm.local",
            "name": "SLURM that fails",
            "type": "EXECUTION",
            "executionType": "HPC",
            "scheduler": "SLURM",
            "public": True,
            "login": {"protocol": "LOCAL", "host": "localhost"},
            "storage": {"protocol": "LOCAL", "host": "localhost", "rootDir": str(root), "homeDir": "/"},
            "startupScript": str(root / "env.sh"),
            "workDir": "/work",
            "queues": [{"name": "normal", "default": True}],
        },
        "admin",
    )
    install_app("slurm-fails", "true\n", execution_system="fake-slurm.local")
    job, _ = store.create_job(
        submission.build_job({"name": "fails", "appId": "slurm-fails-1.0", "archive": False}, "monitor-user"),
        created_by="monitor-user",
    )
    transition(job.id, JobStatus.STAGED, "staged")
    transition(job.id, JobStatus.SUBMITTING, "submitting", work_path="/work/monitor-user/fails")
    transition(job.id, JobStatus.RUNNING, "running", local_id="4242")
    return root, job.id


def _events(job_id: str) -> list[tuple[str, str]]:
    from sqlalchemy import select

    from airjobs import db
    from airjobs.models import JobEvent

    with db.session() as s:
        return [
            (e.status, e.description)
            for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        ]


def test_a_scheduler_that_cannot_answer_never_loses_a_job(slurm_host, monkeypatch):
    from airjobs import store

    monkeypatch.setenv("AIRJOBS_POLL_SCHEDULE", "1,1,2,3")
    root, job_id = slurm_host
    check = lambda: checks.check("fake-slurm.local", [job_id])[job_id]  # noqa: E731
    assert check() == checks.Check(False, next_in=1.0) and store.get_job(job_id).remote_status == "RUNNING"

    (root / "mode").write_text("down down\n")  # slurmctld and slurmdbd down: nothing at all (used to mean "lost")
    for _ in range(checks.LOST_AFTER_SILENT + 2):
        result = check()
        assert not result.done and 1 <= result.next_in <= 3, result
    (root / "mode").write_text("down pending\n")  # slurmdbd back, with an old word: the job keeps its status
    assert not check().done
    job = store.get_job(job_id)
    assert job.status == "RUNNING" and job.remote_status.startswith(checks.UNREACHABLE)
    lost = [d for _, d in _events(job_id) if d.startswith("Lost contact")]
    assert lost == [
        "Lost contact with fake-slurm.local: SLURM did not answer: squeue: slurm_load_jobs error: "
        "Unable to contact slurm controller (connect failure); still trying (for up to 6 h)"
    ]
    assert job.message == lost[0]

    (root / "mode").write_text("running running\n")  # the controller is back: it knows the job
    assert not check().done
    events = _events(job_id)
    assert [s for s, d in events if d.startswith(("Lost contact", "Contact with"))] == ["RUNNING", "RUNNING"]
    assert events[-1][1].startswith("Contact with fake-slurm.local restored after ")
    assert store.get_job(job_id).remote_status == "RUNNING"

    (root / "mode").write_text("invalid none\n")  # an answer: SLURM no longer knows the job, as before
    results = [check() for _ in range(checks.LOST_AFTER_SILENT)]
    assert [r.done for r in results] == [False] * (checks.LOST_AFTER_SILENT - 1) + [True]
    assert results[-1].detail == "SLURM no longer knows job 4242 and it left no exit code"


def test_past_the_limit_a_job_whose_scheduler_does_not_answer_ends_failed(slurm_host, monkeypatch):
    from airjobs import store

    monkeypatch.setenv("AIRJOBS_HOST_UNREACHABLE_SECONDS", "2")
    root, job_id = slurm_host
    (root / "mode").write_text("down running\n")
    first = checks.check("fake-slurm.local", [job_id])[job_id]
    assert not first.done and first.next_in <= 2
    import time

    time.sleep(2.1)
    result = checks.check("fake-slurm.local", [job_id])[job_id]
    job = store.get_job(job_id)
    assert result.done and result.retry_kill and job.status == "FAILED"
    assert job.message == (
        "Execution system fake-slurm.local unreachable for 2 s: SLURM did not answer: squeue: "
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    )
    assert job.remote_status.startswith(checks.KILL_PENDING)
    (root / "mode").write_text("running running\n")  # the kill reaches the host when it answers again
    assert checks.retry_kills("fake-slurm.local", [job_id]) == {}
    assert _events(job_id)[-1] == (
        "FAILED",
        "Its process was killed on fake-slurm.local now that it answers again (SLURM job 4242 killed)",
    )
    assert (root / "cancelled").read_text() == "4242\n"
    assert store.get_job(job_id).remote_status is None
