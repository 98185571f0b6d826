"""Grid Engine (SGE, Son of Grid Engine, Univa/Altair GE): ``#$`` header, ``qsub`` / ``qstat -xml`` / ``qdel``
(spec §10.6, §10.7).

``qstat`` lists only jobs still in the system, with no exit code; a finished job is simply absent, and its
exit-code file decides (``qacct`` is not queried: it rescans the accounting file for every job).
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
    unknown_state,
)
from airjobs.statuses import JobStatus

NAME = "SGE"
DETACHED = False  # a batch scheduler (``base.Scheduler``)
PREFIX = "#$ "

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED

#: The state strings ``qstat`` prints, from qstat(1) "state": d(eletion), E(rror), h(old), r(unning), R(estarted),
#: s(uspended), S(uspended queue), t(ransferring), T(hreshold), w(aiting), q(ueued), z(ombie).
#: https://gridscheduler.sourceforge.net/htmlman/htmlman1/qstat.html
STATE_MAP: dict[str, JobStatus] = {
    "qw": Q,
    "hqw": Q,
    "hRwq": Q,  # pending, possibly held or rescheduled
    "r": R,
    "t": R,
    "Rr": R,
    "Rt": R,  # running, or being transferred to its execution host
    "s": P,
    "ts": P,
    "S": P,
    "tS": P,
    "T": P,
    "tT": P,
    "Rs": P,
    "Rts": P,
    "RS": P,
    "RtS": P,
    "RT": P,
    "RtT": P,
    "Eqw": F,
    "Ehqw": F,
    "EhRqw": F,  # error state: the job cannot start until an admin clears it
    # deleted while pending or running (qdel from outside the service)
    "dr": F,
    "dt": F,
    "dRr": F,
    "dRt": F,
    "ds": F,
    "dS": F,
    "dT": F,
    "dRs": F,
    "dRS": F,
    "dRT": F,
    "z": D,  # zombie: finished (only listed with ``qstat -s z``)
}

#: combinations not listed above are classified by their most telling letter, in this order
_LETTERS = (
    ("E", F),
    ("d", F),
    ("z", D),
    ("s", P),
    ("S", P),
    ("T", P),
    ("r", R),
    ("t", R),
    ("q", Q),
    ("w", Q),
    ("h", Q),
)


def directives(req: JobRequest) -> str:
    # no ``-pe``: parallel environment names are site-specific, so a site puts ``-pe <pe> <slots>`` in the queue's
    # customDirectives; with one slot, ``h_vmem`` (per slot) is the per-node memory
    lines = [f"-N {req.name}", f"-o {req.out}", f"-e {req.err}", "-S /bin/bash", "-cwd"]
    if req.max_run_time:
        lines.append(f"-l h_rt={hms(req.max_run_time)}")
    if req.queue:
        lines.append(f"-q {req.queue}")
    if req.memory_gb:
        lines.append(f"-l h_vmem={req.memory_mb}M")
    return render(PREFIX, lines, req.custom_directives)


def header(req: JobRequest) -> str:
    return SHEBANG + directives(req)


def submit_command(work_dir: str, script: str) -> str:
    return executable_submit(work_dir, script, "qsub")


def parse_submit(output: str) -> str:
    """``Your job 123 ("name") has been submitted``, ``Your job-array 123.1-10:1 ...``, or ``-terse`` ``123``."""
    return find_id(NAME, output, r"Your job(?:-array)? (\d+)", r"\s*(\d+)(?:\.\S+)?\s*")


def status_command(ids: list[str]) -> str:
    """All of the user's jobs in one XML listing (``qstat`` cannot filter a state listing by job ids)."""
    return "qstat -xml 2>/dev/null; true" if ids else "true"


def _map(code: str) -> JobStatus:
    if code in STATE_MAP:
        return STATE_MAP[code]
    for letter, status in _LETTERS:
        if letter in code:
            return status
    return unknown_state(code)


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    """``<job_list>`` elements of ``qstat -xml``, read with a tolerant regex (stray lines never break it)."""
    out: dict[str, tuple[JobStatus, int | None]] = {}
    for block in re.findall(r"<job_list\b[^>]*>(.*?)</job_list>", output, re.S):
        num = re.search(r"<JB_job_number>\s*(\d+)\s*</JB_job_number>", block)
        state = re.search(r"<state>\s*([A-Za-z]+)\s*</state>", block)
        if num and state:
            out[num.group(1)] = (_map(state.group(1)), None)
    return out


def states(output: str, ids: list[str]) -> dict[str, State]:
    return states_of(parse_status(output))


def kill_command(remote_id: str) -> str:
    return f"qdel {quote(remote_id)}"
