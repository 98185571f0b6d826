"""HTCondor: a submit-description file next to the wrapper, ``condor_submit`` / ``condor_q`` + ``condor_history`` /
``condor_rm`` (spec §10.6, §10.7).

The wrapper itself carries no directives; ``submit_file`` renders ``<stem>.submit`` for it. HTCondor has no queues
and a vanilla-universe job runs on one machine, so ``queue`` and ``node_count`` are not rendered.
"""

from __future__ import annotations

from shlex import quote

from airjobs.jobpaths import stem
from airjobs.schedulers.base import (
    SHEBANG,
    JobRequest,
    State,
    custom_lines,
    executable_submit,
    find_id,
    states_of,
    to_int,
    unknown_state,
)
from airjobs.statuses import JobStatus
from airjobs.timeutil import hms_to_seconds

NAME = "CONDOR"
DETACHED = False  # a batch scheduler (``base.Scheduler``)

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED

#: ``JobStatus`` job ClassAd attribute, "JobStatus" in
#: https://htcondor.readthedocs.io/en/latest/classad-attributes/job-classad-attributes.html
STATE_MAP: dict[str, JobStatus] = {
    "1": Q,  # Idle
    "2": R,  # Running
    "3": F,  # Removed (condor_rm, periodic_remove on the run-time limit)
    "4": D,  # Completed (see ExitCode)
    "5": Q,  # Held: waits until released (often for an error; HoldReason says why), like a held PBS/SGE job
    "6": R,  # Transferring Output
    "7": P,  # Suspended
}

_ATTRS = "ClusterId JobStatus ExitCode"


def directives(req: JobRequest) -> str:
    """Nothing: HTCondor reads its settings from the submit file, not from the script (see ``submit_file``)."""
    return ""


def header(req: JobRequest) -> str:
    return SHEBANG


def submit_file_name(script: str) -> str:
    """``hello.ipcexe`` -> ``hello.submit``, in the same directory."""
    return stem(script) + ".submit"


def submit_file(req: JobRequest, script: str) -> str:
    if not script or any(c in script for c in "\n\r\0"):
        raise ValueError(f"invalid script name: {script!r}")
    lines = [
        "universe = vanilla",
        f"batch_name = {req.name}",
        f"executable = {script}",
        f"initialdir = {req.work_dir}",
        f"output = {req.out}",
        f"error = {req.err}",
        f"request_cpus = {req.processors_per_node}",
    ]
    if req.memory_gb:
        lines.append(f"request_memory = {req.memory_mb}")  # MB
    if req.max_run_time:
        secs = hms_to_seconds(req.max_run_time)
        lines.append(f"periodic_remove = JobStatus == 2 && (time() - JobCurrentStartDate) > {secs}")
    lines += custom_lines(req.custom_directives, "")
    lines.append("queue")
    return "".join(f"{x}\n" for x in lines)


def submit_command(work_dir: str, script: str) -> str:
    """Submits ``submit_file_name(script)``, which the caller wrote beside the wrapper."""
    return executable_submit(work_dir, script, "condor_submit", submit_file_name(script))


def parse_submit(output: str) -> str:
    """``1 job(s) submitted to cluster 42.`` -> ``42`` (the cluster id; the one job in it is ``42.0``)."""
    return find_id(NAME, output, r"submitted to cluster (\d+)")


def status_command(ids: list[str]) -> str:
    """Live jobs from ``condor_q``, then ended ones from ``condor_history``: a later line for the same id wins."""
    if not ids:
        return "true"
    args = " ".join(quote(i) for i in ids)
    return (
        f"condor_q {args} -af {_ATTRS} 2>/dev/null; "
        f"condor_history {args} -limit {len(ids)} -af {_ATTRS} 2>/dev/null; true"
    )


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    """``-af`` lines ``<ClusterId> <JobStatus> <ExitCode>``; ``ExitCode`` is ``undefined`` until the job exits."""
    out: dict[str, tuple[JobStatus, int | None]] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        status = STATE_MAP.get(parts[1]) or unknown_state(parts[1])
        code = to_int(parts[2]) if len(parts) > 2 else None
        out[parts[0]] = (status, code if status in (D, F) else None)
    return out


def states(output: str, ids: list[str]) -> dict[str, State]:
    return states_of(parse_status(output))


def kill_command(remote_id: str) -> str:
    return f"condor_rm {quote(remote_id)}"
