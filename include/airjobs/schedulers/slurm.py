"""SLURM: ``#SBATCH`` header, ``sbatch`` / ``sacct`` + ``squeue`` / ``scancel`` (spec §10.6, §10.7)."""

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

NAME = "SLURM"
DETACHED = False  # a batch scheduler (``base.Scheduler``)
PREFIX = "#SBATCH "

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED

#: Job state codes, long and short forms: https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
#: (sacct uses the same names: https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES)
STATE_MAP: dict[str, JobStatus] = {
    "PENDING": Q,
    "PD": Q,
    "CONFIGURING": Q,
    "CF": Q,  # allocated, nodes booting
    "REQUEUED": Q,
    "RQ": Q,
    "REQUEUE_FED": Q,
    "RF": Q,
    "REQUEUE_HOLD": Q,
    "RH": Q,
    "RESV_DEL_HOLD": Q,
    "RD": Q,
    "RUNNING": R,
    "R": R,
    "COMPLETING": R,
    "CG": R,  # some processes still finishing
    "RESIZING": R,
    "RS": R,
    "SIGNALING": R,
    "SI": R,
    "STAGE_OUT": R,
    "SO": R,
    "SUSPENDED": P,
    "S": P,
    "STOPPED": P,
    "ST": P,  # SIGSTOP, allocation kept
    "COMPLETED": D,
    "CD": D,  # every process exited 0
    "FAILED": F,
    "F": F,  # non-zero exit code or other failure
    "CANCELLED": F,
    "CA": F,
    "TIMEOUT": F,
    "TO": F,
    "BOOT_FAIL": F,
    "BF": F,
    "DEADLINE": F,
    "DL": F,
    "NODE_FAIL": F,
    "NF": F,
    "OUT_OF_MEMORY": F,
    "OOM": F,
    "PREEMPTED": F,
    "PR": F,  # not requeued (a requeued job shows REQUEUED)
    "REVOKED": F,
    "RV": F,
    "SPECIAL_EXIT": F,
    "SE": F,
}

_LINE = re.compile(r"\s*([0-9][0-9_+.\[\]-]*)\|([^|]*)(?:\|([^|]*))?")


def directives(req: JobRequest) -> str:
    lines = [f"-J {req.name}", f"-o {req.out}", f"-e {req.err}"]
    if req.max_run_time:
        lines.append(f"-t {hms(req.max_run_time)}")
    if req.queue:
        lines.append(f"-p {req.queue}")
    lines += [f"-N {req.node_count}", f"--ntasks-per-node={req.processors_per_node}"]
    if req.memory_gb:
        lines.append(f"--mem={req.memory_mb}M")  # per node
    return render(PREFIX, lines, req.custom_directives)


def header(req: JobRequest) -> str:
    return SHEBANG + directives(req)


def submit_command(work_dir: str, script: str) -> str:
    return executable_submit(work_dir, script, "sbatch")


def parse_submit(output: str) -> str:
    """``Submitted batch job 12345`` (or the ``--parsable`` form ``12345[;cluster]``)."""
    return find_id(NAME, output, r"Submitted batch job (\d+)", r"\s*(\d+)(?:;\S+)?\s*")


def status_command(ids: list[str]) -> str:
    """``squeue`` first (works without accounting), then ``sacct``: a later line for the same id wins. Exits
    non-zero, with squeue's error on stderr, when the controller did not answer (slurmctld down): what sacct
    printed still holds, but a job it does not list may be running. "Invalid job id" is an answer (none of the
    ids is known to the controller any more)."""
    if not ids:
        return "true"
    j = quote(",".join(ids))
    return (
        f"{{ q=$(squeue -h -o {quote('%i|%T')} -j {j} 2>&1 >&3); s=$?; }} 3>&1; "
        f"sacct -n -P -X -o JobID,State,ExitCode -j {j} 2>/dev/null; "
        f'[ "$s" -eq 0 ] || case "$q" in *"Invalid job id"*) true ;; '
        f'*) printf "squeue: %s\\n" "${{q:-exit status $s}}" >&2; false ;; esac'
    )


def _exit_code(field: str | None) -> int | None:
    """sacct ``ExitCode`` is ``<code>:<signal>``; a signal death reads as 128+signal, as a shell reports it."""
    if not field:
        return None
    code, _, sig = field.strip().partition(":")
    code_i, sig_i = to_int(code), to_int(sig)
    if code_i == 0 and sig_i:
        return 128 + sig_i
    return code_i


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    out: dict[str, tuple[JobStatus, int | None]] = {}
    for line in output.splitlines():
        m = _LINE.match(line)
        if not m or not m.group(2).strip():
            continue
        state = m.group(2).split()[0].rstrip("+").upper()  # "CANCELLED by 1000"
        status = STATE_MAP.get(state) or unknown_state(state)
        # sacct shows "0:0" for jobs that have not ended: only an ended job has an exit code
        out[m.group(1)] = (status, _exit_code(m.group(3)) if status in (D, F) else None)
    return out


def states(output: str, ids: list[str]) -> dict[str, State]:
    return states_of(parse_status(output))


def kill_command(remote_id: str) -> str:
    return f"scancel {quote(remote_id)}"


_NO_CONTROLLER = re.compile(r"Unable to contact slurm controller|Zero Bytes were transmitted|Connection refused")


def controller_unreachable(output: str) -> bool:
    """Did ``sbatch`` fail because slurmctld could not be reached (so nothing was submitted, and a retry may
    work), rather than refuse the job?"""
    return bool(_NO_CONTROLLER.search(output))
