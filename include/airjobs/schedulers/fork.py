"""FORK: the wrapper runs as a detached background process on the execution host (spec §10.6).

A scheduler module like the batch ones (``base.Scheduler``), with ``DETACHED = True``: the job runs at once, its
remote id is the wrapper's process id, and a process ``ps`` does not list has ended.
"""

from __future__ import annotations

import re
from shlex import quote

from airjobs.jobpaths import JobPaths, stem
from airjobs.schedulers.base import JobRequest, State
from airjobs.statuses import JobStatus

NAME = "FORK"
DETACHED = True


def header(req: JobRequest) -> str:
    """First lines of the wrapper: the process records its own pid (spec §10.2 ``ForkSubmitScript``)."""
    return f"#!/bin/bash\necho $$ > {quote(req.paths.pid_file)}\n"


def submit_command(work_dir: str, script: str) -> str:
    """Start the wrapper in its own session so it outlives the worker; prints the wrapper's pid. Its output goes
    to ``<slug>.out``/``.err`` (the slug: the script's name without ``.ipcexe``)."""
    paths = JobPaths.named(work_dir, stem(script))
    return (
        f"cd {quote(work_dir)} || exit 1; "
        f"setsid nohup /bin/bash ./{quote(script)} > {quote(paths.stdout)} 2> {quote(paths.stderr)} "
        f"< /dev/null & echo $!"
    )


def parse_submit(output: str) -> str:
    """The first purely numeric line is the pid."""
    for line in output.splitlines():
        line = line.strip()
        if re.fullmatch(r"\d+", line):
            return line
    raise ValueError(f"FORK submission returned no process id: {output.strip()[:500]!r}")


def status_command(pids: list[str]) -> str:
    ids = ",".join(p for p in pids if p.isdigit()) or "0"
    return f"ps -o pid= -o stat= -p {ids} || true"


def parse_ps(output: str) -> dict[str, str]:
    """pid -> ps STAT for the processes that still exist (zombies count as ended)."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and not parts[1].startswith("Z"):
            out[parts[0]] = parts[1]
    return out


def parse_status(output: str) -> dict[str, tuple[JobStatus, int | None]]:
    """pid -> (RUNNING or PAUSED, no exit code) for the processes that still exist."""
    return {pid: (map_state(stat), None) for pid, stat in parse_ps(output).items()}


def states(output: str, ids: list[str]) -> dict[str, State]:
    """Every asked pid: a process ``ps`` lists runs (its word: the ``ps`` STAT), one it does not list has ended
    (CLEANING_UP, word ``ENDED``)."""
    alive = parse_ps(output)
    return {pid: (map_state(alive.get(pid)), None, alive.get(pid) or "ENDED") for pid in ids}


def map_state(stat: str | None) -> JobStatus:
    """``ps`` STAT -> Agave status: present means RUNNING (T = stopped -> PAUSED); absent means done."""
    if stat is None:
        return JobStatus.CLEANING_UP
    if stat.startswith("T"):
        return JobStatus.PAUSED
    return JobStatus.RUNNING


def kill_command(pid: str) -> str:
    """The wrapper's whole process group (it leads its own session), else the wrapper alone. ``kill -9 -<pgid>``,
    not ``kill -9 -- -<pgid>``: dash (``/bin/sh`` on Debian, which runs the LOCAL commands) refuses ``--``, and
    the fallback then killed the wrapper but left its children running."""
    return f"kill -9 -{quote(pid)} 2>/dev/null || kill -9 {quote(pid)}"
