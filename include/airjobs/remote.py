"""Commands on a job's execution host: run one (after the system's startup script), and the two a job's
scheduler is asked besides submit and status (``airjobs.steps.submit``, ``airjobs.checks``): which remote job
a cut submit left (``submitted_id``), and kill it (``kill_remote``). Used by the steps, the checker, a user's
kill (``airjobs.control``) and the reconciler's end of a job (``airjobs.runs``)."""

from __future__ import annotations

from shlex import quote
from typing import Any

from airjobs import registry, schedulers, transports
from airjobs.errors import StepError
from airjobs.jobpaths import JobPaths
from airjobs.models import Job
from airjobs.schedulers.base import Scheduler
from airjobs.statuses import JobStatus


def startup_prefix(system: dict[str, Any]) -> str:
    """The system's ``startupScript`` sourced before a command (spec §11.2), when it names a plain path."""
    script = str(system.get("startupScript") or "").strip()
    if not script or "$" in script:  # job macros only make sense inside a job's wrapper
        return ""
    path = f'"$HOME"/{quote(script[2:])}' if script.startswith("~/") else quote(script)
    return f"if [ -f {path} ]; then . {path} >/dev/null 2>&1; fi; "


def scheduler_of(system: dict[str, Any]) -> Scheduler:
    return schedulers.get(schedulers.name_of(system))


def run(system: dict[str, Any], command: str, timeout: float = 120) -> tuple[int, str, str]:
    """``command`` on the system's execution host, after its startup script: (exit status, stdout, stderr)."""
    return transports.execution(system).run(startup_prefix(system) + command, timeout=timeout)


def submitted_id(job: Job, system: dict[str, Any]) -> str | None:
    """The remote id of a job handed to its scheduler by a submit that was cut before recording it (its work
    directory's ``SUBMIT_MARK`` holds the scheduler's answer), else ``job.local_id``; None when there is none."""
    if job.local_id or job.status != JobStatus.SUBMITTING.value:
        return job.local_id
    mark = JobPaths.of(job, system).submit_mark
    rc, out, _ = run(
        system, f"cat {quote(mark + '/rc')} && cat {quote(mark + '/out')} {quote(mark + '/err')}", timeout=30
    )
    lines = out.splitlines()
    if rc != 0 or not lines or lines[0].strip() != "0":
        return None
    try:
        return scheduler_of(system).parse_submit("\n".join(lines[1:]))
    except ValueError:
        return None


def kill_remote(job: Job, system: dict[str, Any]) -> str:
    """Run the scheduler's kill command for the job; returns what happened, in words. Raises ``OSError`` (and
    the transport's own errors) when the host cannot be reached."""
    sched = scheduler_of(system)
    if not job.local_id:
        return "no remote job to kill"
    rc, out, err = run(system, sched.kill_command(job.local_id), timeout=60)
    said = (err or out).strip()[:300]
    if rc == 0:
        return f"{sched.NAME} job {job.local_id} killed"
    return f"{sched.NAME} kill of {job.local_id} answered {rc}{': ' + said if said else ''}"


def require_system(system_id: str) -> dict[str, Any]:
    """The registered system ``system_id``; ``StepError`` when there is none."""
    system = registry.get_system(system_id)
    if system is None:
        raise StepError(f"System {system_id} is not registered.")
    return system
