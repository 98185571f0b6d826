"""Checking submitted jobs on their hosts (spec §10.7, D8): ONE status query per execution system per cycle,
covering all of that system's active jobs, with the exit-code files of those jobs read in the same remote
command. Every check says what it found as a ``Check``: the batched ``check`` of the trigger, and ``poll``,
the inline check of one job of a ``DETACHED`` scheduler (FORK) that the monitor step makes in the worker.

``check(system_id, job_ids)`` is one cycle. It moves jobs QUEUED <-> RUNNING <-> PAUSED as the scheduler
reports them, kills a job that outlived its ``maxRunTime`` (KILLED, D1), and says which jobs are done: the
exit-code file the wrapper writes is the truth; a job the scheduler reports ended without one, or no longer
knows at all, is done too (never left RUNNING). ``interval(checks)`` is the back-off as jobs age.

A host that cannot be reached (SSH refused, reset, timed out) or a scheduler whose status command failed
(slurmctld down) tells nothing about the jobs: they keep their status and are checked again with a back-off
(``retry_in``), their history says once per outage that contact was lost and when it came back, and only after
``unreachable_limit()`` seconds (``AIRJOBS_HOST_UNREACHABLE_SECONDS``, default 6 h) do they end FAILED with
that reason. The ``maxRunTime`` kill still ends a job on time while its host is unreachable; the kill command
then reaches the host when it answers again (``retry_kills``). The outage and a pending kill are kept in the
job's ``remote_status`` (``UNREACHABLE:<since>``, ``KILL_PENDING:<since>``, epoch seconds), so they survive a
restart of the triggerer.

The Airflow trigger (``airjobs_airflow.triggers``) shares one poller per system in the triggerer and calls
``check`` and ``retry_kills``; the DAG's monitor step is ``airjobs.steps.monitor``; nothing here knows about
Airflow. The commands themselves (run one after the startup script, kill) are ``airjobs.remote``'s.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import timedelta
from shlex import quote
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from airjobs import db, registry, store, transports
from airjobs.errors import AgaveError, IllegalTransition, StepError
from airjobs.jobpaths import JobPaths
from airjobs.lifecycle import fail, record_event, transition
from airjobs.models import Job
from airjobs.remote import kill_remote, require_system, run, scheduler_of
from airjobs.schedulers.base import Scheduler, State
from airjobs.statuses import AFTER_MONITOR, EXECUTING, TERMINAL, JobStatus, is_terminal, values
from airjobs.timeutil import hms_to_seconds, now

log = logging.getLogger(__name__)
S = JobStatus

MARK = "@@airjobs-exit-codes@@"
STATUS_MARK = "@@airjobs-status@@"  # then the status command's exit status and, when it failed, its error
END = "@@airjobs-end@@"  # the whole answer arrived
#: checks of a job the scheduler does not know (and that left no exit code) before it is declared lost;
#: a scheduler that answered nothing at all gets more patience
LOST_AFTER, LOST_AFTER_SILENT = 3, 10
#: ``remote_status`` while the job's host does not answer / while a kill waits for the host (then epoch seconds)
UNREACHABLE, KILL_PENDING = "UNREACHABLE:", "KILL_PENDING:"

#: Agave's schedule (spec §10.7): 15 s for the first 4 checks, 30 s up to 14, 60 s up to 44, then the last
#: value; ``AIRJOBS_POLL_SCHEDULE`` overrides the four intervals (seconds, comma-separated)
_THRESHOLDS = (4, 14, 44)
_DEFAULT_SCHEDULE = (15.0, 30.0, 60.0, 300.0)
_DEFAULT_UNREACHABLE = 6 * 3600.0


def schedule() -> tuple[float, ...]:
    raw = os.environ.get("AIRJOBS_POLL_SCHEDULE", "")
    try:
        values = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        values = ()
    return values if len(values) == len(_DEFAULT_SCHEDULE) and all(v > 0 for v in values) else _DEFAULT_SCHEDULE


def interval(checks: int) -> float:
    """Seconds until the next status check of a job that has had ``checks`` so far."""
    values = schedule()
    for threshold, value in zip(_THRESHOLDS, values, strict=False):  # the last value has no threshold
        if checks < threshold:
            return value
    return values[-1]


def unreachable_limit() -> float:
    """Seconds a job's host (or its scheduler) may stay unreachable before the job ends FAILED:
    ``AIRJOBS_HOST_UNREACHABLE_SECONDS``, default 6 h."""
    try:
        value = float(os.environ.get("AIRJOBS_HOST_UNREACHABLE_SECONDS", "") or _DEFAULT_UNREACHABLE)
    except ValueError:
        return _DEFAULT_UNREACHABLE
    return value if value > 0 else _DEFAULT_UNREACHABLE


def retry_in(elapsed: float) -> float:
    """Seconds until the next try after failing for ``elapsed`` seconds: as long again as it has been failing
    (a doubling back-off), from the schedule's first interval up to its last."""
    values = schedule()
    return min(max(values[0], elapsed), values[-1])


#: paramiko's errors that are refusals, not trouble on the way (matched by name: no paramiko import here)
#: what a host or Airflow says when retrying cannot help: a rejected key, a host key that changed, a Connection
#: that does not exist (by class name: paramiko's and Airflow's, which the core does not import)
_REFUSALS = frozenset(
    {"AuthenticationException", "BadHostKeyException", "PasswordRequiredException", "AirflowNotFoundException"}
)


def transient(e: BaseException) -> bool:
    """Does ``e`` say only that the host, its SSH server or the database could not be reached (refused, reset,
    timed out, an SSH protocol error, a dropped database connection)? A refusal (permissions, the egress guard,
    a rejected key, a system that is not set up) is not: retrying cannot change it."""
    names = {c.__name__ for c in type(e).__mro__}
    if isinstance(e, (PermissionError, FileNotFoundError, AgaveError, StepError)) or names & _REFUSALS:
        return False
    if isinstance(e, (OperationalError, DisconnectionError)):
        return True
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, (OSError, EOFError, subprocess.TimeoutExpired)):  # the last: a LOCAL command that hung
        return True
    return any(c.__module__.startswith("paramiko") for c in type(e).__mro__)


def describe(e: BaseException) -> str:
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``6 h``, ``1 h 30 min``."""
    s = round(seconds)
    if s < 2 * 60:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m} min" if m else f"{h} h"


@dataclass(frozen=True)
class Check:
    """What one check of a job found: ``done`` (its process ended, or the job did), with the exit code when it
    is known and, in words, how that was found; else when it wants its next check."""

    done: bool
    exit_code: int | None = None
    detail: str = ""
    next_in: float | None = None  # seconds until this job wants its next check
    retry_kill: bool = False  # the job ended KILLED but its host could not be told yet: ``retry_kills``

    def as_event(self) -> dict[str, Any]:
        return {"done": self.done, "exit_code": self.exit_code, "detail": self.detail}


# ---------------------------------------------------------------- the one remote command of a cycle


def status_script(sched: Scheduler, ids: list[str], code_files: list[str]) -> str:
    """The one remote command of a cycle: the scheduler's status command (its output; then ``STATUS_MARK``, its
    exit status and, when that is not 0, its error output on one line), then ``MARK`` and one line per exit-code
    file (``-`` while it does not exist), then ``END``."""
    reads = " ".join(quote(f) for f in code_files)
    return (
        f"{{ e=$( {{ {sched.status_command(ids)} ; }} 2>&1 >&3 ); r=$?; }} 3>&1; "
        f'if [ "$r" -eq 0 ]; then e=; fi; '
        f'printf "\\n%s %s %s\\n" {STATUS_MARK} "$r" "$(printf %s "$e" | tr "\\n" " " | cut -c1-300)"; '
        f"echo {MARK}; "
        f'for f in {reads}; do if [ -e "$f" ]; then printf "%s\\n" "$(head -c 32 "$f")"; else echo -; fi; done; '
        f"echo {END}"
    )


@dataclass(frozen=True)
class Answer:
    status_out: str  # what the status command printed
    answered: bool  # it exited 0: a job it does not list is unknown to the scheduler
    error: str  # its error output when it did not
    codes: list[int | str | None]  # per exit-code file: the code, None (unreadable) or "-" (no file yet)


def parse_answer(out: str, count: int) -> Answer | None:
    """The output of ``status_script`` for ``count`` exit-code files; None when it did not all arrive."""
    head, sep, rest = out.partition(f"\n{STATUS_MARK} ")
    if not sep or END not in rest:
        return None
    line, _, rest = rest.partition("\n")
    rc, _, error = line.partition(" ")
    before, sep, codes = rest.partition(MARK)
    if not sep or before.strip():
        return None
    return Answer(head, rc.strip() == "0", error.strip(), _codes(codes.partition(END)[0].lstrip("\n"), count))


def _codes(text: str, count: int) -> list[int | str | None]:
    """The exit-code section: one line per job, ``-`` when the file does not exist (yet)."""
    lines = text.splitlines()
    out: list[int | str | None] = []
    for i in range(count):
        line = lines[i].strip() if i < len(lines) else "-"
        if line in {"-", ""}:
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


def _since(remote_status: str | None, prefix: str) -> float | None:
    """The epoch seconds of an ``UNREACHABLE:``/``KILL_PENDING:`` mark, None without one."""
    if remote_status and remote_status.startswith(prefix):
        try:
            return float(remote_status[len(prefix) :])
        except ValueError:
            return time.time()
    return None


def _word(remote_status: str | None) -> str | None:
    """The scheduler's last word about a job, not one of the service's own marks."""
    return None if remote_status and remote_status.startswith((UNREACHABLE, KILL_PENDING)) else remote_status


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
        elif is_terminal(job.status):
            results[job_id] = Check(
                True,
                job.exit_code,
                f"job is {job.status}",
                retry_kill=_since(job.remote_status, KILL_PENDING) is not None,
            )
    active = [j for j in jobs.values() if j.id not in results]
    if not active:
        return results
    system = require_system(system_id)
    sched = scheduler_of(system)

    for job in list(active):  # the service's own run-time limit (spec §10.7): KILLED
        left = _over_time(job)
        if left is not None and left <= 0:
            results[job.id] = _kill_overtime(job, system)
            active.remove(job)
    if not active:
        return results

    ids = [j.local_id for j in active if j.local_id]
    files = [JobPaths.of(j, system).exit_code_file for j in active]
    try:
        rc, out, err = run(system, status_script(sched, ids, files))
    except Exception as e:
        if not transient(e):
            raise
        return results | _no_contact(active, system_id, describe(e))
    answer = parse_answer(out, len(active))
    if answer is None:  # the connection dropped midway, or the shell could not run the command
        return results | _no_contact(
            active,
            system_id,
            f"the status command ended early (exit status {rc}): {' '.join((err or out).split())[:300]}",
        )
    states: dict[str, State] = sched.states(answer.status_out, ids)
    silent = not answer.status_out.strip()

    counters: list[dict[str, Any]] = []
    unknown: list[Job] = []  # no word about them: the scheduler could not answer
    for job, code in zip(active, answer.codes, strict=True):  # one code per job (``_codes``)
        state = states.get(job.local_id or "")
        word = state[2] if state else None
        if code != "-":  # the wrapper finished: its exit code is the truth
            if job.status == S.QUEUED.value:  # it ran between two checks: history still shows that it ran
                _move(job, S.RUNNING, system_id, sched.NAME)
            if answer.answered:
                _restored(job, system_id)
            results[job.id] = Check(
                True,
                code if isinstance(code, int) else None,
                "exit code file found" if isinstance(code, int) else "exit code file unreadable",
            )
            counters.append({"id": job.id, "remote_status": word or _word(job.remote_status)})
            continue
        if state is None:
            if not answer.answered:
                unknown.append(job)
                continue
            _restored(job, system_id)
            lost = _lost_count(job.remote_status) + 1
            if lost >= (LOST_AFTER_SILENT if silent else LOST_AFTER):
                results[job.id] = Check(
                    True, None, f"{sched.NAME} no longer knows job {job.local_id} and it left no exit code"
                )
            counters.append({"id": job.id, "remote_status": f"UNKNOWN:{lost}"})
            continue
        status, sched_code, _ = state
        if status in (S.CLEANING_UP, S.FAILED):  # ended (also in a partial answer: accounting knows it ended)
            if answer.answered:
                _restored(job, system_id)
            counters.append({"id": job.id, "remote_status": word})
            results[job.id] = Check(
                True, sched_code, f"{sched.NAME} reports job {job.local_id} {word} without an exit code file"
            )
            continue
        if not answer.answered:  # a partial answer (squeue down, sacct up): keep the job's state
            unknown.append(job)
            continue
        _restored(job, system_id)
        counters.append({"id": job.id, "remote_status": word})
        if status in EXECUTING and status.value != job.status:
            _move(job, status, system_id, sched.NAME)
    _record(counters)
    if unknown:
        results |= _no_contact(
            unknown, system_id, f"{sched.NAME} did not answer: {answer.error or 'its status command failed'}"
        )
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


def _note(job_id: str, description: str, *, active_only: bool = True, **fields: Any) -> bool:
    """One history event with the job's status unchanged, and ``fields`` set, in one transaction; False (and
    nothing written) when the job is gone, or has ended and ``active_only``."""
    with db.transaction() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None or (active_only and is_terminal(job.status)):
            return False
        for key, value in fields.items():
            setattr(job, key, value)
        if active_only:
            job.message = description
        job.last_updated = now()
        record_event(s, job, job.status, description, created_by=None)
    return True


def _no_contact(jobs: list[Job], system_id: str, error: str) -> dict[str, Check]:
    """The host or its scheduler said nothing about ``jobs``: they wait, with a back-off; their history says so
    once per outage; past ``unreachable_limit()`` they end FAILED (and their process is killed when the host
    answers again)."""
    t, limit = time.time(), unreachable_limit()
    out: dict[str, Check] = {}
    for job in jobs:
        since = _since(job.remote_status, UNREACHABLE)
        if since is None:
            since = t
            mark = f"{UNREACHABLE}{t:.3f}"
            if _note(
                job.id,
                f"Lost contact with {system_id}: {error}; still trying (for up to {duration(limit)})",
                remote_status=mark,
            ):
                job.remote_status = mark
        elif t - since >= limit:
            reason = f"Execution system {system_id} unreachable for {duration(t - since)}: {error}"
            ended = fail(job.id, reason, remote_status=f"{KILL_PENDING}{t:.3f}" if job.local_id else None)
            out[job.id] = Check(
                True,
                None,
                reason,
                retry_kill=bool(job.local_id and ended is not None and ended.status == S.FAILED.value),
            )
            continue
        wait = min(retry_in(t - since), max(limit - (t - since), 0.5))
        left = _over_time(job)
        out[job.id] = Check(False, next_in=min(wait, max(left, 0.5)) if left is not None else wait)
    log.warning("no contact with %s for %d job(s): %s", system_id, len(jobs), error)
    return out


def _restored(job: Job, system_id: str) -> None:
    """The host answered about a job of an outage: history says so (the next ``_record`` replaces the mark)."""
    since = _since(job.remote_status, UNREACHABLE)
    if since is not None:
        _note(job.id, f"Contact with {system_id} restored after {duration(time.time() - since)}")


def _kill_overtime(job: Job, system: dict[str, Any]) -> Check:
    pending = None
    try:
        what = kill_remote(job, system)
    except Exception as e:
        if transient(e):
            what = (
                f"{job.execution_system} was unreachable ({describe(e)}): its process there is killed as "
                f"soon as it answers again"
            )
            pending = f"{KILL_PENDING}{time.time():.3f}"
        else:
            what = f"the kill command failed: {e}"
    reason = f"Job exceeded its maximum run time of {job.max_run_time} and was killed ({what})."
    try:
        transition(job.id, S.KILLED, reason, **({"remote_status": pending} if pending else {}))
    except IllegalTransition:
        pending = None
    return Check(True, None, reason, retry_kill=pending is not None)


def pending_kills(system_id: str) -> list[str]:
    """Ids of the ended jobs of ``system_id`` whose process still has to be killed on the host."""
    q = select(Job.id).where(
        Job.execution_system == system_id, Job.remote_status.like(f"{KILL_PENDING}%"), Job.status.in_(values(TERMINAL))
    )
    with db.session() as s:
        return list(s.scalars(q))


def retry_kills(system_id: str, job_ids: list[str]) -> dict[str, float]:
    """Try again the kill commands the host could not be given (``KILL_PENDING``): a process whose exit-code
    file exists has ended by itself and is left alone. Each outcome is an event in the job's history; a kill
    the host still refuses after ``unreachable_limit()`` is given up. Returns, for the jobs still waiting,
    the seconds until their next try."""
    system = registry.get_system(system_id)
    t, limit = time.time(), unreachable_limit()
    later: dict[str, float] = {}
    for job in store.jobs_by_ids(job_ids):
        since = _since(job.remote_status, KILL_PENDING)
        if since is None:
            continue
        if system is None or not job.local_id:
            _note(
                job.id,
                "Its process was not killed on its host: the system is gone",
                active_only=False,
                remote_status=None,
            )
            continue
        sched = scheduler_of(system)
        code_file = JobPaths.of(job, system).exit_code_file
        try:
            rc, out, err = run(
                system,
                f"if [ -e {quote(code_file)} ]; then echo {END}; else {sched.kill_command(job.local_id)}; fi",
                timeout=60,
            )
        except Exception as e:
            if transient(e) and t - since < limit:
                later[job.id] = retry_in(t - since)
                continue
            _note(
                job.id,
                f"Gave up killing {sched.NAME} job {job.local_id} on {system_id}: {describe(e)}",
                active_only=False,
                remote_status=None,
            )
            continue
        said = " ".join((err or out).split())[:300]
        if END in out:  # its exit-code file: a pid of a FORK job that ended may be someone else's by now
            text = f"{system_id} answers again: the job's process there had ended by itself"
        else:
            what = (
                f"{sched.NAME} job {job.local_id} killed"
                if rc == 0
                else f"{sched.NAME} kill of {job.local_id} answered {rc}{': ' + said if said else ''}"
            )
            text = f"Its process was killed on {system_id} now that it answers again ({what})"
        _note(job.id, text, active_only=False, remote_status=None)
    return later


def _record(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = now()
    with db.transaction() as s:
        for row in rows:
            s.execute(
                update(Job)
                .where(Job.id == row["id"])
                .values(status_checks=Job.status_checks + 1, last_polled=t, remote_status=row["remote_status"])
            )


def terminal_among(job_ids: list[str]) -> dict[str, tuple[str, int | None]]:
    """id -> (status, exit code) of the jobs of ``job_ids`` that reached a terminal status (killed, failed by the
    service): one query reading three columns of those rows only, as the triggerer runs it every second."""
    if not job_ids:
        return {}
    q = select(Job.id, Job.status, Job.exit_code).where(Job.id.in_(job_ids), Job.status.in_(values(TERMINAL)))
    with db.session() as s:
        return {row.id: (row.status, row.exit_code) for row in s.execute(q)}


# ---------------------------------------------------------------- the inline check of one job


def poll(job_id: str) -> Check:
    """Observe one job of a ``DETACHED`` scheduler (FORK) on its host without changing it, as the monitor step
    does in the worker before it defers (a file read and a row read): done when the exit-code file exists, or
    when the process ended without writing one."""
    job = store.get_job(job_id)
    if job is None:
        return Check(True, None, f"job {job_id} vanished")
    if is_terminal(job.status) or JobStatus(job.status) in AFTER_MONITOR:
        return Check(True, job.exit_code, f"job is {job.status}")
    system = require_system(job.execution_system)
    transport = transports.execution(system)
    code_file = JobPaths.of(job, system).exit_code_file
    for attempt in range(2):
        try:  # one round trip: read, rather than stat then read
            text = transport.read_text(code_file).strip()
        except FileNotFoundError:
            pass
        else:
            return Check(True, int(text) if text.lstrip("-").isdigit() else None, "exit code file found")
        if attempt == 0 and not _alive(scheduler_of(system), transport, job.local_id):
            continue  # the process may have written the file just before exiting: read once more
        if attempt == 0:
            return Check(False)
    return Check(True, None, f"process {job.local_id} ended without writing {JobPaths.EXIT_CODE_FILE}")


def _alive(sched: Scheduler, transport: transports.Transport, remote_id: str | None) -> bool:
    """Does the scheduler list the job as queued, running or paused?"""
    if not remote_id:
        return False
    _, out, _ = transport.run(sched.status_command([remote_id]), timeout=30)
    state = sched.states(out, [remote_id]).get(remote_id)
    return state is not None and state[0] in EXECUTING
