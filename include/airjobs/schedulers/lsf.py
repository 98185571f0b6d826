"""IBM Spectrum LSF: ``#BSUB`` header, ``bsub <`` / ``bjobs`` / ``bkill`` (spec §10.6, §10.7)."""

from __future__ import annotations

import re
from shlex import quote

from airjobs.schedulers.base import (
    SHEBANG,
    JobRequest,
    State,
    cd,
    find_id,
    hms_to_minutes,
    render,
    script_arg,
    states_of,
    to_int,
    unknown_state,
)
from airjobs.statuses import JobStatus

NAME = "LSF"
DETACHED = False  # a batch scheduler (``base.Scheduler``)
PREFIX = "#BSUB "

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED

#: ``bjobs`` STAT values: https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=bjobs-description (Job states)
STATE_MAP: dict[str, JobStatus] = {
    "PEND": Q,  # waiting in a queue
    "WAIT": Q,  # chunk job member waiting to run
    "PROV": Q,  # waiting for its dynamic hosts to be provisioned
    "RUN": R,
    "UNKWN": R,  # mbatchd lost contact with the execution host: the job may well be running
    "PSUSP": P,  # suspended by its owner or an admin while pending
    "USUSP": P,  # suspended by its owner or an admin while running
    "SSUSP": P,  # suspended by LSF (load, run window)
    "DONE": D,  # exited with status 0
    "EXIT": F,  # non-zero exit, or killed (bkill, run limit)
    "ZOMBI": F,  # killed while its execution host was unreachable
}

#: ``bjobs -o`` field list: id, state and exit code, ``|``-separated
FORMAT = "jobid stat exit_code delimiter='|'"


def directives(req: JobRequest) -> str:
    lines = [f"-J {req.name}", f"-o {req.out}", f"-e {req.err}"]
    if req.max_run_time:
        m = hms_to_minutes(req.max_run_time)
        lines.append(f"-W {m // 60}:{m % 60:02d}")  # LSF run limit is [hours:]minutes
    if req.queue:
        lines.append(f"-q {req.queue}")
    lines += [f"-n {req.node_count * req.processors_per_node}", f'-R "span[ptile={req.processors_per_node}]"']
    if req.memory_gb:
        lines.append(f"-M {req.memory_mb}MB")
    return render(PREFIX, lines, req.custom_directives)


def header(req: JobRequest) -> str:
    return SHEBANG + directives(req)


def submit_command(work_dir: str, script: str) -> str:
    """``bsub`` reads the ``#BSUB`` lines only from a script given on standard input."""
    return f"{cd(work_dir)}bsub < {script_arg(script)}"


def parse_submit(output: str) -> str:
    """``Job <123> is submitted to queue <normal>.`` (or ``... to default queue <normal>.``)."""
    return find_id(NAME, output, r"Job <(\d+)> is submitted")


def status_command(ids: list[str]) -> str:
    if not ids:
        return "true"
    return f"bjobs -a -noheader -o {quote(FORMAT)} {' '.join(quote(i) for i in ids)} 2>/dev/null; true"


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    """``-o`` lines ``123|RUN|-``; plain ``bjobs -w`` lines (JOBID USER STAT ...) are read too."""
    out: dict[str, tuple[JobStatus, int | None]] = {}
    for line in output.splitlines():
        parts = [p.strip() for p in line.split("|")] if "|" in line else line.split()
        if len(parts) < 3 or not re.fullmatch(r"\d+(?:\[\d+\])?", parts[0]):
            continue  # blank lines, "Job <9> is not found", headers
        if "|" in line:
            job_id, stat, code = parts[0], parts[1].upper(), to_int(parts[2])
        else:
            job_id, stat, code = parts[0], parts[2].upper(), None
        if not stat:
            continue
        status = STATE_MAP.get(stat) or unknown_state(stat)
        out[job_id] = (status, code if status in (D, F) else None)
    return out


def states(output: str, ids: list[str]) -> dict[str, State]:
    return states_of(parse_status(output))


def kill_command(remote_id: str) -> str:
    return f"bkill {quote(remote_id)}"
