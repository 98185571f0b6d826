"""The lifecycle steps: one function per task of the lifecycle DAG (stage, submit, poll/complete,
archive, finalize). Each moves the job through its statuses with ``lifecycle.transition``.

``run_step`` is how the DAG calls them: any exception ends the job FAILED with the real error in
``message`` and history, then propagates so the Airflow task fails too.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import time
from shlex import quote
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from airjobs import access, assets, monitor, recovery, registry, runs, schedulers, store, transports
from airjobs.errors import IllegalTransition, StepError
from airjobs.lifecycle import fail, transition
from airjobs.models import Job
from airjobs.paths import clean_relative, slug
from airjobs.paths import host_path as _host_path
from airjobs.rendering import ARCHIVE_MANIFEST, EXIT_CODE_FILE, SUBMIT_MARK, RenderContext, render_wrapper
from airjobs.schedulers import fork
from airjobs.schedulers.base import JobRequest
from airjobs.statuses import TERMINAL, JobStatus
from airjobs.timeutil import iso

log = logging.getLogger(__name__)
S = JobStatus


#: statuses that mean the job reached its host (a task run again after one of them must not redo its work)
AFTER_SUBMIT = frozenset({S.QUEUED, S.RUNNING, S.PAUSED, S.CLEANING_UP, S.ARCHIVING, S.ARCHIVING_FINISHED,
                          S.ARCHIVING_FAILED, S.HEARTBEAT})
AFTER_STAGING = AFTER_SUBMIT | {S.STAGED, S.SUBMITTING, S.STAGING_JOB}


class JobAlreadyFinal(Exception):
    """The job reached a terminal status (stopped, failed) while the DAG run was still going."""


# ---------------------------------------------------------------- systems and paths


def _system(system_id: str) -> dict[str, Any]:
    system = registry.get_system(system_id)
    if system is None:
        raise StepError(f"System {system_id} is not registered.")
    return system


def work_path(job: Job, system: dict[str, Any]) -> str:
    """``<scratchDir|workDir>/<owner>/job-<id>-<slug>`` on the execution system (spec §10.1)."""
    base = system.get("scratchDir") or system.get("workDir") or ""
    path = posixpath.join("/" + clean_relative(base), clean_relative(job.owner), f"job-{job.id}-{slug(job.name)}")
    return path[:255]


def _job(job_id: str) -> Job:
    job = store.get_job(job_id)
    if job is None:
        raise StepError(f"No job found with job id {job_id}.")
    if JobStatus(job.status) in TERMINAL:
        raise JobAlreadyFinal(f"Job {job_id} is already {job.status}.")
    return job


# ---------------------------------------------------------------- stage


def resolve_input(uri: str, owner: str) -> tuple[dict[str, Any], str]:
    """An input value -> (storage system, path on it). Relative paths are on the owner's default storage."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "agave":
        system = _system(parts.netloc)
        # agave://sys/rel is under homeDir, agave://sys//abs under rootDir (spec §4.2)
        path = "/" + parts.path.lstrip("/") if parts.path.startswith("//") else parts.path.lstrip("/")
        return system, path
    if scheme in ("", "file"):
        system = registry.default_storage(owner)
        if system is None:
            raise StepError(f"No default storage system to resolve the input path {uri}.")
        return system, uri
    raise StepError(f"Inputs with the {scheme} scheme cannot be staged by this release yet: {uri}")


def stage(job_id: str) -> None:
    """Stage the job's inputs into its work directory (``airjobs.staging``)."""
    from airjobs import staging  # staging builds on this module

    staging.stage(job_id)


# ---------------------------------------------------------------- submit


def _render_context(job: Job, app: dict, system: dict, host_dir: str, header: str) -> RenderContext:
    return RenderContext(
        job={
            "id": job.id, "name": job.name, "slug": slug(job.name), "owner": job.owner, "appId": job.app_id,
            "executionSystem": job.execution_system, "batchQueue": job.batch_queue,
            "nodeCount": job.node_count, "processorsPerNode": job.processors_per_node,
            "memoryPerNode": job.memory_per_node, "maxRunTime": job.max_run_time,
            "archive": job.archive, "archiveSystem": job.archive_system, "archivePath": job.archive_path,
            "submitTime": iso(job.submit_time), "inputs": job.inputs or {}, "parameters": job.parameters or {},
        },
        app=app,
        system=system,
        work_dir=host_dir,
        header=header,
    )


def submit(job_id: str) -> None:
    job = _job(job_id)
    if job.local_id and JobStatus(job.status) in AFTER_SUBMIT:  # the task ran again: never submit twice
        log.warning("job %s is already %s as %s; not submitting it again", job_id, job.status, job.local_id)
        return
    system = _system(job.execution_system)
    transport = transports.execution(system)
    app = registry.get_app(job.app_id)
    if app is None:
        raise StepError(f"App {job.app_id} is no longer registered.")
    host_dir = _host_path(system, job.work_path or work_path(job, system))
    if transport.exists(posixpath.join(host_dir, SUBMIT_MARK)):  # an earlier try handed it over (or is doing so)
        # and was cut before recording it: read that hand-over back, rewrite nothing the job may be running
        transition(job_id, S.SUBMITTING, "Reading back the submission of an earlier try that was cut short")
        sched = monitor.scheduler_of(system)
        name = slug(job.name)
        command = (fork.submit_command(host_dir, f"{name}.ipcexe", name) if schedulers.is_fork(sched)
                   else sched.submit_command(host_dir, f"{name}.ipcexe"))
        with runs.shielded():
            _hand_over(job_id, system, sched, host_dir, command)
        return
    transition(job_id, S.SUBMITTING, "Preparing job for execution and staging assets to execution system")

    deploy = _system(app.get("deploymentSystem") or system["id"])
    deploy_transport = transports.storage(deploy)
    if app.get("isPublic"):  # nobody but its owner changes what a public app runs
        now_sums = assets.fingerprint(app, deploy)
        if "assetChecksums" not in app:  # published before checksums were kept: these are its assets from now on
            registry.record_asset_checksums(app["id"], now_sums)
        changed = assets.changes(app.get("assetChecksums", now_sums), now_sums)
        if changed:
            raise StepError(f"The assets of app {app['id']} changed since it was published ({', '.join(changed[:10])})"
                            f"; its owner must update the app before it runs again.")
    asset_dir = _host_path(deploy, app["deploymentPath"])
    template_path = posixpath.join(asset_dir, clean_relative(app["templatePath"]))
    if not deploy_transport.exists(template_path):
        raise StepError(
            f"Wrapper template {app['templatePath']} of app {app['id']} not found at "
            f"agave://{deploy['id']}/{app['deploymentPath'].strip('/')}/{app['templatePath']}"
        )
    template = deploy_transport.read_text(template_path)
    manifest = []
    if deploy_transport.is_dir(asset_dir):
        for name in deploy_transport.listdir(asset_dir):
            transports.copy(deploy_transport, posixpath.join(asset_dir, name), transport,
                            posixpath.join(host_dir, name))
            manifest.append(name)

    sched = monitor.scheduler_of(system)
    name = slug(job.name)
    script = f"{name}.ipcexe"
    if schedulers.is_fork(sched):
        header = fork.header(name)
        command = fork.submit_command(host_dir, script, name)
    else:
        request = _job_request(job, system, name, host_dir)
        header = sched.header(request)
        command = sched.submit_command(host_dir, script)
        if hasattr(sched, "submit_file"):  # HTCondor: the settings go in a submit description beside the wrapper
            transport.write_text(posixpath.join(host_dir, sched.submit_file_name(script)),
                                 sched.submit_file(request, script))
            manifest.append(sched.submit_file_name(script))
    text = render_wrapper(template, _render_context(job, app, system, host_dir, header))
    transport.write_text(posixpath.join(host_dir, script), text, mode=0o700)
    transport.write_text(posixpath.join(host_dir, ARCHIVE_MANIFEST),
                         "".join(f"{m}\n" for m in [*manifest, script, SUBMIT_MARK]))
    with runs.shielded():  # handed to the scheduler and recorded, or neither: never cut in between
        _hand_over(job_id, system, sched, host_dir, command)


#: how long a retried submit waits for the record of a hand-over still under way before trying again later
SUBMIT_WAIT_SECONDS = 120


def once(host_dir: str, command: str) -> str:
    """``command`` run at most once per work directory, whatever happens to the service meanwhile: ``mkdir``
    of ``SUBMIT_MARK`` decides who submits, the command runs in its own session (``setsid -w``: a task killed
    mid-way, its process group with it, or an SSH connection dropped, does not cut it) and leaves its exit
    status and output there. Every caller, the first and any retry, prints ``rc``, then ``out``, then ``err``
    of that one run, separated by marker lines; a run still under way is waited for."""
    d = quote(posixpath.join(host_dir, SUBMIT_MARK))
    inner = f"( {command} ) > {d}/out 2> {d}/err; echo $? > {d}/rc.tmp && mv -f {d}/rc.tmp {d}/rc"
    return (
        f"if mkdir {d} 2>/dev/null; then setsid -w /bin/sh -c {quote(inner)} < /dev/null > /dev/null 2>&1; "
        f"elif [ ! -d {d} ]; then echo 'cannot create '{d} >&2; exit 1; fi; "
        f"i=0; while [ ! -e {d}/rc ] && [ $i -lt {SUBMIT_WAIT_SECONDS * 5} ]; do sleep 0.2; i=$((i+1)); done; "
        f"if [ ! -e {d}/rc ]; then echo 'an earlier submission of this job is still under way' >&2; exit 75; fi; "
        f"cat {d}/rc; echo {_OUT}; cat {d}/out; echo {_ERR}; cat {d}/err"
    )


_OUT, _ERR = "@@airjobs-submit-out@@", "@@airjobs-submit-err@@"


def _parse_once(rc: int, out: str, err: str) -> tuple[int, str, str]:
    """(rc, out, err) of the one hand-over, from what ``once`` printed; OSError when it could not tell."""
    if _OUT not in out or _ERR not in out:
        raise OSError(f"the submission could not be run or read back ({rc}): {(err or out).strip()[:300]}")
    head, _, rest = out.partition(_OUT)
    sub_out, _, sub_err = rest.partition(_ERR)
    try:
        code = int(head.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OSError(f"the submission left an unreadable exit status: {head.strip()[:100]}") from None
    return code, sub_out.strip("\n") + "\n", sub_err.strip("\n")


def _hand_over(job_id: str, system: dict[str, Any], sched: Any, host_dir: str, command: str) -> None:
    rc, out, err = _parse_once(*monitor.run(system, once(host_dir, command)))
    unreachable = getattr(sched, "controller_unreachable", None)
    if rc != 0 and unreachable is not None and unreachable(f"{out}\n{err}"):  # nothing was submitted: the
        monitor.run(system, f"rm -rf -- {quote(posixpath.join(host_dir, SUBMIT_MARK))}")  # next try submits
        raise OSError(f"{sched.NAME} on {system['id']} could not reach its controller: {(err or out).strip()[:300]}")
    try:
        remote_id = sched.parse_submit(out if schedulers.is_fork(sched) else f"{out}\n{err}")
    except ValueError as e:
        said = (err or out).strip()[:1000]
        raise StepError(f"{sched.NAME} on {system['id']} refused the job: {said or e}") from None
    if rc != 0 and not schedulers.is_fork(sched):
        raise StepError(f"{sched.NAME} on {system['id']} refused the job ({rc}): {(err or out).strip()[:1000]}")
    what = f"process {remote_id}" if schedulers.is_fork(sched) else f"{sched.NAME} job {remote_id}"
    try:
        transition(job_id, S.QUEUED, f"Job queued on {system['id']} as {what}", local_id=remote_id)
        if schedulers.is_fork(sched):
            transition(job_id, S.RUNNING, "Job started running")
    except IllegalTransition:  # killed while submitting: the job must not stay behind on the host
        job = store.get_job(job_id)
        if job is not None and JobStatus(job.status) in TERMINAL:
            job.local_id = remote_id
            with contextlib.suppress(Exception):
                monitor.kill_remote(job, system)
            raise JobAlreadyFinal(f"Job {job_id} was {job.status} while it was being submitted.") from None
        raise


def _job_request(job: Job, system: dict[str, Any], name: str, host_dir: str) -> JobRequest:
    queue = next((q for q in system.get("queues") or [] if q.get("name") == job.batch_queue), {})
    return JobRequest(
        name=name, job_id=job.id, work_dir=host_dir,
        queue=queue.get("mappedName") or job.batch_queue or None,
        node_count=job.node_count or 1, processors_per_node=job.processors_per_node or 1,
        memory_gb=float(job.memory_per_node or 0), max_run_time=job.max_run_time,
        custom_directives=queue.get("customDirectives"),
    )


# ---------------------------------------------------------------- monitor


@dataclass(frozen=True)
class PollResult:
    done: bool
    exit_code: int | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "exit_code": self.exit_code, "detail": self.detail}


def _pid_alive(transport: transports.Transport, pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return False
    rc, out, _ = transport.run(fork.status_command([pid]), timeout=30)
    return pid in fork.parse_status(out)


def monitor_plan(job_id: str) -> tuple[str, bool]:
    """(execution system id, whether the worker may watch the job briefly itself): only FORK jobs, whose
    check is a file read, are watched inline; batch jobs go straight to the shared poller (D8)."""
    job = _job(job_id)
    system = _system(job.execution_system)
    # a job completed by an earlier try is "watched" inline: its first check says done, nothing is redone
    return system["id"], schedulers.is_fork(monitor.scheduler_of(system)) or JobStatus(job.status) in AFTER_MONITOR


def poll(job_id: str) -> PollResult:
    """Observe the job on its host without changing it: finished when the exit-code file exists."""
    job = store.get_job(job_id)
    if job is None:
        return PollResult(True, None, f"job {job_id} vanished")
    if JobStatus(job.status) in TERMINAL or JobStatus(job.status) in AFTER_MONITOR:
        return PollResult(True, job.exit_code, f"job is {job.status}")
    system = _system(job.execution_system)
    transport = transports.execution(system)
    host_dir = _host_path(system, job.work_path or work_path(job, system))
    code_file = posixpath.join(host_dir, EXIT_CODE_FILE)
    for attempt in range(2):
        try:  # one round trip: read, rather than stat then read
            text = transport.read_text(code_file).strip()
        except FileNotFoundError:
            pass
        else:
            return PollResult(True, int(text) if text.lstrip("-").isdigit() else None, "exit code file found")
        if attempt == 0 and not _pid_alive(transport, job.local_id):
            continue  # the process may have written the file just before exiting: read once more
        if attempt == 0:
            return PollResult(False)
    return PollResult(True, None, f"process {job.local_id} ended without writing {EXIT_CODE_FILE}")


#: statuses after ``complete``: a monitor try run again after it (its process was lost) leaves them alone
AFTER_MONITOR = frozenset({S.CLEANING_UP, S.ARCHIVING, S.ARCHIVING_FINISHED, S.ARCHIVING_FAILED})


def complete(job_id: str, result: dict[str, Any]) -> None:
    """The job's process ended: CLEANING_UP on exit 0; FAILED with ``exitCode`` otherwise (D5)."""
    job = _job(job_id)
    if JobStatus(job.status) in AFTER_MONITOR:  # an earlier try completed it already
        log.warning("job %s is already %s; not completing it again", job_id, job.status)
        return
    code = result.get("exit_code")
    if code == 0:
        transition(job_id, S.CLEANING_UP, "Job completed execution", exit_code=0)
        return
    reason = (
        f"Job failed: the app exited with code {code}." if code is not None
        else f"Job failed: {result.get('detail') or 'the process ended without an exit code'}."
    )
    if job.archive_on_app_error and job.archive:
        transition(job_id, S.CLEANING_UP, reason + " Archiving its outputs (archiveOnAppError).", exit_code=code)
        return
    fail(job_id, reason, exit_code=code)
    raise StepError(reason)


# ---------------------------------------------------------------- archive and finalize


def archive(job_id: str) -> None:
    job = _job(job_id)
    if not job.archive or job.status not in (S.CLEANING_UP.value, S.ARCHIVING.value):
        return
    # ARCHIVING: an earlier try of this task was stopped midway (a cleared run): copy again, over what it left
    transition(job_id, S.ARCHIVING, "Transferring job output to archive system" if job.status == S.CLEANING_UP.value
               else "Archiving was interrupted; transferring job output to archive system again")
    try:
        system = _system(job.execution_system)
        host_dir = _host_path(system, job.work_path or work_path(job, system))
        storage = _system(job.archive_system or "")
        dest_transport = transports.storage(storage)
        # checked at submit, and again now: an app may have been deployed there since
        apps = registry.all_apps()
        owner, admin = job.owner, bool(job.owner_admin)
        dest = access.check_archive_target(storage, job.archive_path or "", owner, admin, apps)
        for made in (False, True):  # a link on the way must not lead into someone else's folder: checked on
            real = _real_path(dest_transport, dest)  # the real path before anything is created, and after
            access.check_host_path(storage, real, owner, admin, write=True, what="archivePath",
                                   shown=job.archive_path, apps=apps)
            access.check_overlap(storage, real, job.archive_path or "", apps)
            if not made:
                dest_transport.makedirs(dest)
        src_transport = transports.execution(system)
        manifest_path = posixpath.join(host_dir, ARCHIVE_MANIFEST)
        skip = {ARCHIVE_MANIFEST, EXIT_CODE_FILE}
        if src_transport.exists(manifest_path):
            skip |= {line.strip() for line in src_transport.read_text(manifest_path).splitlines() if line.strip()}
        real_root = src_transport.realpath(host_dir).rstrip("/") + "/"
        entries = [e.name for e in src_transport.scandir(host_dir) if e.name not in skip and not (
            e.is_link and not src_transport.realpath(posixpath.join(host_dir, e.name)).startswith(real_root))]
        progress = _ArchiveProgress(job_id, len(entries))  # the manifest, and links leading out, stay behind
        done = _archived_entries(job_id) if job.status == S.ARCHIVING.value else {}
        for name in entries:
            if name in done and dest_transport.exists(posixpath.join(dest, name)):  # an earlier try copied it
                progress.files += 1
                progress.bytes += done[name]
                continue
            before = progress.bytes
            transports.copy(src_transport, posixpath.join(host_dir, name), dest_transport,
                            posixpath.join(dest, name), on_chunk=progress)
            progress.file_done(name, progress.bytes - before)
        copied = progress.bytes
    except Exception as e:
        if not recovery.is_jobs_fault(e) and not _reachable(job):  # the outputs' host is away: retried, the
            raise  # outputs are only there (an archive system that fails ends ARCHIVING_FAILED, as in Agave)
        log.exception("archiving job %s failed", job_id)
        where = f"agave://{job.archive_system}/{job.archive_path}"
        transition(job_id, S.ARCHIVING_FAILED, f"Job archiving to {where} failed: {type(e).__name__}: {e}")
        return
    transition(
        job_id, S.ARCHIVING_FINISHED,
        f"Job archiving complete: {copied} bytes to agave://{storage['id']}/{job.archive_path}",
    )
    try:  # the outputs now live in the archive (spec §10.8): the work directory goes
        src_transport.remove_tree(host_dir)
    except Exception as e:
        log.warning("could not remove the work directory of job %s (%s): %s", job_id, host_dir, e)


def _reachable(job: Job) -> bool:
    """Can the job's work directory on its execution system be read right now?"""
    try:
        system = _system(job.execution_system)
        transports.execution(system).exists(_host_path(system, job.work_path or work_path(job, system)))
        return True
    except Exception:
        return False


def _real_path(transport: transports.Transport, path: str) -> str:
    """Where ``path`` really leads on its host, links resolved, also when its last parts do not exist yet."""
    probe, rest = path, []
    while probe not in ("", "/") and not transport.exists(probe):
        probe, tail = posixpath.split(probe)
        rest.insert(0, tail)
    return posixpath.join(transport.realpath(probe), *rest)


class _ArchiveProgress:
    """ARCHIVING events with ``progress`` after each top-level entry and every ~2 s of a long copy."""

    EVERY = 2.0

    def __init__(self, job_id: str, total: int):
        self.job_id, self.total, self.files, self.bytes = job_id, total, 0, 0
        self.last = time.monotonic()

    def __call__(self, chunk: bytes, size: int | None) -> None:
        self.bytes += len(chunk)
        if time.monotonic() - self.last >= self.EVERY:
            self._event(f"Archiving in progress: {self.bytes} bytes copied")

    def file_done(self, name: str, size: int) -> None:
        self.files += 1
        self._event(f"Copied {name} to the archive ({self.files} of {self.total}, {self.bytes} bytes so far)",
                    entry={"name": name, "bytes": size})

    def _event(self, message: str, **extra: Any) -> None:
        self.last = time.monotonic()
        transition(self.job_id, S.ARCHIVING, message,
                   progress={"totalFiles": self.total, "filesDone": self.files, "totalBytesTransferred": self.bytes,
                             "totalActiveTransfers": self.total - self.files, **extra})


def _archived_entries(job_id: str) -> dict[str, int]:
    """name -> bytes of the work directory's entries an interrupted try already copied to the archive (its
    ARCHIVING events say so): a retry copies only the rest."""
    from sqlalchemy import select

    from airjobs import db
    from airjobs.models import JobEvent

    with db.session() as s:
        rows = s.scalars(select(JobEvent.progress).where(JobEvent.job_id == job_id,
                                                          JobEvent.status == S.ARCHIVING.value))
        out = {}
        for p in rows:
            entry = p.get("entry") if isinstance(p, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                out[entry["name"]] = int(entry.get("bytes") or 0)
        return out


def finalize(job_id: str) -> None:
    job = _job(job_id)
    status = JobStatus(job.status)
    if job.exit_code not in (None, 0):
        fail(job_id, f"Job failed: the app exited with code {job.exit_code}.")
        return
    if status is S.ARCHIVING_FAILED:
        transition(job_id, S.FINISHED, "Job completed, but failed to archive output.")
    elif status is S.CLEANING_UP and not job.archive:
        transition(job_id, S.FINISHED, "Job completed. Skipping archiving at user request.")
    else:
        transition(job_id, S.FINISHED, "Job complete")


STEPS: dict[str, Callable[[str], None]] = {
    "stage": stage,
    "submit": submit,
    "archive": archive,
    "notify": finalize,
}


class JobFailed(StepError):
    """The step ended its job FAILED (what the job did, or the service failing past the retry budget): the
    Airflow task must fail without another try."""


def run_step(name: str, job_id: str, fn: Callable[[], Any] | None = None, attempt: int = 1) -> Any:
    """Run one step (try ``attempt`` of its task). What the job did (``recovery.is_jobs_fault``) ends the job
    FAILED with the error and raises ``JobFailed``; a failure of the service is recorded in the job's history
    and re-raised for Airflow to retry the task, until ``recovery.budget()`` runs out (then FAILED, ``JobFailed``)."""
    try:
        result = fn() if fn is not None else STEPS[name](job_id)
    except JobAlreadyFinal:
        raise
    except Exception as e:
        if recovery.is_jobs_fault(e):
            runs.fail_and_stop(job_id, str(e))  # a job that ends FAILED does not run on on its host
            raise JobFailed(str(e)) from e
        log.warning("step %s of job %s failed because of the service (try %d): %s", name, job_id, attempt,
                    recovery.describe(e))
        try:
            recovery.note_failure(job_id, name, attempt, e)
        except recovery.GaveUp as gave_up:
            runs.fail_and_stop(job_id, str(gave_up))
            raise JobFailed(str(gave_up)) from e
        except Exception as note_error:  # the database itself is away: Airflow retries all the same
            log.warning("could not record the failure of step %s of job %s: %s", name, job_id, note_error)
        raise
    if fn is None:
        recovery.recovered(job_id)
    return result
