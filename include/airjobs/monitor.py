"""Watching submitted jobs (spec §10.7, D8): ONE status query per execution system per cycle, covering all of
that system's active jobs, with the exit-code files of those jobs read in the same remote command.

``check(system_id, job_ids)`` is one cycle. It moves jobs QUEUED <-> RUNNING <-> PAUSED as the scheduler
reports them, kills a job that outlived its ``maxRunTime`` (KILLED, D1), and says which jobs are done: the
exit-code file the wrapper writes is the truth; a job the scheduler reports ended without one, or no longer
knows at all, is done too (never left RUNNING). ``interval(checks)`` is the back-off as jobs age.

The Airflow trigger (``airjobs_airflow.triggers``) shares one poller per system in the triggerer and calls
``check``; nothing here knows about Airflow.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from datetime import timedelta
from shlex import quote
from types import ModuleType
from typing import Any

from sqlalchemy import select, update

from airjobs import db, registry, schedulers, store, transports
from airjobs.errors import IllegalTransition, StepError
from airjobs.lifecycle import transition
from airjobs.models import Job
from airjobs.paths import host_path
from airjobs.rendering import EXIT_CODE_FILE
from airjobs.statuses import EXECUTING, TERMINAL, JobStatus
from airjobs.timeutil import hms_to_seconds, now

log = logging.getLogger(__name__)
S = JobStatus

MARK = "@@airjobs-exit-codes@@"
#: checks of a job the scheduler does not know (and that left no exit code) before it is declared lost;
#: a scheduler that answered nothing at all (controller down) gets more patience
LOST_AFTER, LOST_AFTER_SILENT = 3, 10

#: Agave's schedule (spec §10.7): 15 s for the first 4 checks, 30 s up to 14, 60 s up to 44, then the last
#: value; ``AIRJOBS_POLL_SCHEDULE`` overrides the four intervals (seconds, comma-separated)
_THRESHOLDS = (4, 14, 44)
_DEFAULT_SCHEDULE = (15.0, 30.0, 60.0, 300.0)


def schedule() -> tuple[float, ...]:
    raw = os.environ.get("AIRJOBS_POLL_SCHEDULE", "")
    try:
        values = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        values = ()
    return values if len(values) == 4 and all(v > 0 for v in values) else _DEFAULT_SCHEDULE


def interval(checks: int) -> float:
    """Seconds until the next status check of a job that has had ``checks`` so far."""
    values = schedule()
    for threshold, value in zip(_THRESHOLDS, values):
        if checks < threshold:
            return value
    return values[-1]


@dataclass(frozen=True)
class Check:
    done: bool
    exit_code: int | None = None
    detail: str = ""
    next_in: float | None = None  # seconds until this job wants its next check

    def as_event(self) -> dict[str, Any]:
        return {"done": self.done, "exit_code": self.exit_code, "detail": self.detail}


# ---------------------------------------------------------------- remote commands


def startup_prefix(system: dict[str, Any]) -> str:
    """The system's ``startupScript`` sourced before a command (spec §11.2), when it names a plain path."""
    script = str(system.get("startupScript") or "").strip()
    if not script or "$" in script:  # job macros only make sense inside a job's wrapper
        return ""
    path = f'"$HOME"/{quote(script[2:])}' if script.startswith("~/") else quote(script)
    return f"if [ -f {path} ]; then . {path} >/dev/null 2>&1; fi; "


def host_work_dir(job: Job, system: dict[str, Any]) -> str:
    return host_path(system, job.work_path or "/")


def scheduler_of(system: dict[str, Any]) -> ModuleType:
    return schedulers.get(schedulers.name_of(system))


def run(system: dict[str, Any], command: str, timeout: float = 120) -> tuple[int, str, str]:
    return transports.execution(system).run(startup_prefix(system) + command, timeout=timeout)


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


def _states(sched: ModuleType, output: str, ids: list[str]) -> dict[str, tuple[JobStatus, int | None, str]]:
    """remote id -> (status, scheduler exit code, scheduler's word) for the ids the scheduler reported."""
    if schedulers.is_fork(sched):
        alive = sched.parse_status(output)
        return {pid: (sched.map_state(alive.get(pid)), None, alive.get(pid) or "ENDED") for pid in ids}
    parsed = sched.parse_status(output)
    return {rid: (status, code, status.value) for rid, (status, code) in parsed.items()}


def _codes(text: str, count: int) -> list[int | None | str]:
    """The exit-code section: one line per job, ``-`` when the file does not exist (yet)."""
    lines = text.splitlines()
    out: list[int | None | str] = []
    for i in range(count):
        line = lines[i].strip() if i < len(lines) else "-"
        if line == "-" or line == "":
            out.append("-")
        else:
            try:
                out.append(int(line))
            except ValueError:
                out.append(None)  # written but unreadable: ended, code unknown
    return out


# ---------------------------------------------------------------- one cycle


def _lost_count(remote_status: str | None) -> int:
    if remote_status and remote_status.startswith("UNKNOWN:"):
        try:
            return int(remote_status.split(":", 1)[1])
        except ValueError:
            return 0
    return 0


def _over_time(job: Job) -> float | None:
    """Seconds left before the job's maxRunTime runs out (negative once over), None without a limit."""
    if not job.max_run_time or job.start_time is None or job.status != S.RUNNING.value:
        return None
    try:
        limit = hms_to_seconds(job.max_run_time)
    except ValueError:
        return None
    return (job.start_time + timedelta(seconds=limit) - now()).total_seconds()


def check(system_id: str, job_ids: list[str]) -> dict[str, Check]:
    """One status check of the given jobs of one execution system (one remote command)."""
    results: dict[str, Check] = {}
    jobs = {j.id: j for j in store.jobs_by_ids(job_ids)}
    for job_id in job_ids:
        job = jobs.get(job_id)
        if job is None:
            results[job_id] = Check(True, None, f"job {job_id} vanished")
        elif JobStatus(job.status) in TERMINAL:
            results[job_id] = Check(True, job.exit_code, f"job is {job.status}")
    active = [j for j in jobs.values() if j.id not in results]
    if not active:
        return results
    system = registry.get_system(system_id)
    if system is None:
        raise StepError(f"System {system_id} is not registered.")
    sched = scheduler_of(system)

    for job in list(active):  # the service's own run-time limit (spec §10.7): KILLED
        left = _over_time(job)
        if left is not None and left <= 0:
            results[job.id] = _kill_overtime(job, system)
            active.remove(job)
    if not active:
        return results

    ids = [j.local_id for j in active if j.local_id]
    files = [posixpath.join(host_work_dir(j, system), EXIT_CODE_FILE) for j in active]
    reads = " ".join(quote(f) for f in files)
    command = (
        f"{{ {sched.status_command(ids)} ; }} 2>/dev/null; echo {MARK}; "
        f'for f in {reads}; do if [ -e "$f" ]; then printf "%s\\n" "$(head -c 32 "$f")"; else echo -; fi; done'
    )
    rc, out, err = run(system, command)
    if MARK not in out:
        raise OSError(f"status check on {system_id} failed ({rc}): {(err or out).strip()[:300]}")
    status_out, _, codes_out = out.partition(MARK)
    states = _states(sched, status_out, ids)
    silent = not status_out.strip()
    codes = _codes(codes_out.lstrip("\n"), len(active))

    counters: list[dict[str, Any]] = []
    for job, code in zip(active, codes):
        state = states.get(job.local_id or "")
        word = state[2] if state else None
        if code != "-":  # the wrapper finished: its exit code is the truth
            if job.status == S.QUEUED.value:  # it ran between two checks: history still shows that it ran
                _move(job, S.RUNNING, system_id, sched.NAME)
            results[job.id] = Check(True, code if isinstance(code, int) else None,
                                    "exit code file found" if isinstance(code, int) else "exit code file unreadable")
            counters.append({"id": job.id, "remote_status": word or job.remote_status})
            continue
        if state is None:
            lost = _lost_count(job.remote_status) + 1
            if lost >= (LOST_AFTER_SILENT if silent else LOST_AFTER):
                results[job.id] = Check(True, None, f"{sched.NAME} no longer knows job {job.local_id} "
                                                    f"and it left no exit code")
            counters.append({"id": job.id, "remote_status": f"UNKNOWN:{lost}"})
            continue
        status, sched_code, _ = state
        counters.append({"id": job.id, "remote_status": word})
        if status in (S.CLEANING_UP, S.FAILED):
            results[job.id] = Check(True, sched_code, f"{sched.NAME} reports job {job.local_id} {word} without an exit code file")
            continue
        if status in EXECUTING and status.value != job.status:
            _move(job, status, system_id, sched.NAME)
    _record(counters)
    for job in active:
        if job.id not in results:
            wait = interval(job.status_checks + 1)
            left = _over_time(job)
            results[job.id] = Check(False, next_in=min(wait, max(left, 0.5)) if left is not None else wait)
    return results


def _move(job: Job, status: JobStatus, system_id: str, sched_name: str) -> None:
    message = {
        S.RUNNING: f"Job started running on {system_id} ({sched_name} job {job.local_id})",
        S.QUEUED: f"Job is queued on {system_id} ({sched_name} job {job.local_id})",
        S.PAUSED: f"Job is suspended on {system_id} ({sched_name} job {job.local_id})",
    }[status]
    try:
        updated = transition(job.id, status, message)
        job.status, job.start_time = updated.status, updated.start_time
    except IllegalTransition as e:  # raced with a kill: the next check sees the job terminal
        log.info("status update of job %s skipped: %s", job.id, e)


def _kill_overtime(job: Job, system: dict[str, Any]) -> Check:
    try:
        what = kill_remote(job, system)
    except Exception as e:  # the limit is still enforced: the job ends KILLED, the failure is recorded
        what = f"the kill command failed: {e}"
    reason = f"Job exceeded its maximum run time of {job.max_run_time} and was killed ({what})."
    try:
        transition(job.id, S.KILLED, reason)
    except IllegalTransition:
        pass
    return Check(True, None, reason)


def _record(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = now()
    with db.transaction() as s:
        for row in rows:
            s.execute(
                update(Job).where(Job.id == row["id"])
                .values(status_checks=Job.status_checks + 1, last_polled=t, remote_status=row["remote_status"])
            )


def terminal_among(job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
    """id -> (status, exit code) of the jobs of ``job_ids`` that reached a terminal status (killed, failed by the
    service): one query reading three columns of those rows only, as the triggerer runs it every second."""
    if not job_ids:
        return {}
    q = select(Job.id, Job.status, Job.exit_code).where(
        Job.id.in_(job_ids), Job.status.in_([t.value for t in TERMINAL]))
    with db.session() as s:
        return {row.id: (row.status, row.exit_code) for row in s.execute(q)}
