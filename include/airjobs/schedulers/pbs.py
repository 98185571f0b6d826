"""PBS Pro / OpenPBS and Torque: ``#PBS`` header, ``qsub`` / ``qstat -f`` / ``qdel`` (spec §10.6, §10.7).

One status query serves both: PBS Pro needs ``-x`` to still show finished jobs, while Torque's ``-x`` means XML and
Torque keeps finished jobs (state ``C``) anyway, so the command asks ``qstat --version`` which flavour it talks to.
"""

from __future__ import annotations

import re
from shlex import quote

from airjobs.schedulers.base import (
    SHEBANG,
    JobRequest,
    State,
    executable_submit,
    find_id,
    hms,
    render,
    states_of,
    to_int,
    unknown_state,
)
from airjobs.statuses import JobStatus

NAME = "PBS"
DETACHED = False  # a batch scheduler (``base.Scheduler``)
PREFIX = "#PBS "

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED

#: ``job_state`` codes. PBS Pro: Reference Guide, "Job States" (https://help.altair.com/2022.1.0/PBS%20Professional/
#: PBSReferenceGuide2022.1.pdf, §8.1); Torque: Administrator Guide, ``qstat`` "job_state" (docs.adaptivecomputing.com).
STATE_MAP: dict[str, JobStatus] = {
    "Q": Q,  # queued, eligible to run
    "W": Q,  # waiting for its requested execution time
    "T": Q,  # being moved to a new location
    "H": Q,  # held: not running and not runnable until released (psij maps it to QUEUED too)
    "M": Q,  # PBS Pro: moved to another server
    "R": R,  # running
    "B": R,  # PBS Pro: array job with at least one subjob running
    "E": R,  # exiting after having run: output still being staged back, so not done yet
    "S": P,  # suspended
    "U": P,  # PBS Pro: suspended because the workstation became busy
    "F": D,  # PBS Pro: finished (see Exit_status)
    "X": D,  # PBS Pro: subjob finished or expired
    "C": D,  # Torque: completed (see exit_status)
}


def directives(req: JobRequest) -> str:
    lines = [f"-N {req.name}", f"-o {req.out}", f"-e {req.err}", "-S /bin/bash"]
    if req.max_run_time:
        lines.append(f"-l walltime={hms(req.max_run_time)}")
    if req.queue:
        lines.append(f"-q {req.queue}")
    lines.append(f"-l nodes={req.node_count}:ppn={req.processors_per_node}")  # PBS Pro converts it to a select
    if req.memory_gb:
        lines.append(f"-l mem={req.memory_mb * req.node_count}mb")  # job-wide: per-node memory x nodes
    return render(PREFIX, lines, req.custom_directives)


def header(req: JobRequest) -> str:
    return SHEBANG + directives(req)


def submit_command(work_dir: str, script: str) -> str:
    return executable_submit(work_dir, script, "qsub")


def parse_submit(output: str) -> str:
    """The job id alone on a line: ``1234.pbsserver`` (PBS Pro), ``1234.host.domain`` (Torque), ``12[].server``."""
    return find_id(NAME, output, line=r"\s*(\d+(?:\[\d*\])?(?:\.[A-Za-z0-9._-]+)?)\s*")


def status_command(ids: list[str]) -> str:
    if not ids:
        return "true"
    args = " ".join(quote(i) for i in ids)
    return (
        f"if qstat --version 2>&1 | grep -q pbs_version; then qstat -x -f {args}; else qstat -f {args}; fi "
        "2>/dev/null; true"
    )


def _state(job_state: str, exit_status: int | None) -> JobStatus:
    status = STATE_MAP.get(job_state) or unknown_state(job_state)
    # A finished job with a negative exit status never ran (e.g. -1 JOB_EXEC_FAIL1); 256+n means PBS killed it with
    # signal n (qdel, walltime exceeded): both are scheduler failures, not an app's own exit code.
    if status is D and exit_status is not None and (exit_status < 0 or exit_status >= 256):
        return F
    return status


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    """``qstat -f`` text: a ``Job Id: <id>`` line, then indented ``key = value`` attributes."""
    found: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    for line in output.splitlines():
        m = re.match(r"Job Id:\s*(\S+)", line.strip())
        if m:
            attrs = found.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        # attributes are indented; wrapped long values (Variable_List) continue on tab-indented lines: first wins
        if attrs is not None and sep and line[:1].isspace() and re.fullmatch(r"[a-z_][\w.]*", key):
            attrs.setdefault(key, value.strip())
    out: dict[str, tuple[JobStatus, int | None]] = {}
    for job_id, a in found.items():
        job_state = a.get("job_state", "").strip().upper()
        if not job_state:
            continue
        code = to_int(a.get("exit_status"))
        status = _state(job_state, code)
        out[job_id] = (status, code if status in (D, F) else None)
    return out


def states(output: str, ids: list[str]) -> dict[str, State]:
    return states_of(parse_status(output))


def kill_command(remote_id: str) -> str:
    return f"qdel {quote(remote_id)}"
