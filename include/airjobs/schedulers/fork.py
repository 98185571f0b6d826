"""FORK: the wrapper runs as a detached background process on the execution host (spec §10.6)."""

from __future__ import annotations

import re
from shlex import quote

from airjobs.statuses import JobStatus

NAME = "FORK"


def header(slug: str) -> str:
    """First lines of the wrapper: the process records its own pid (spec §10.2 ``ForkSubmitScript``)."""
    return f"#!/bin/bash\necho $$ > {quote(slug + '.pid')}\n"


def submit_command(work_dir: str, script: str, slug: str) -> str:
    """Start the wrapper in its own session so it outlives the worker; prints the wrapper's pid."""
    return (
        f"cd {quote(work_dir)} || exit 1; "
        f"setsid nohup /bin/bash ./{quote(script)} > {quote(slug + '.out')} 2> {quote(slug + '.err')} "
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


def parse_status(output: str) -> dict[str, str]:
    """pid -> ps STAT for the processes that still exist (zombies count as ended)."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and not parts[1].startswith("Z"):
            out[parts[0]] = parts[1]
    return out


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
