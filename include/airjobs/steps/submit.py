"""The DAG's ``submit`` task (spec §10.2, §10.6): the app's assets and the rendered wrapper go into the job's
work directory, and the wrapper is handed to the system's scheduler exactly once (``once``), whatever happens
to the service meanwhile. The job ends QUEUED with the scheduler's id (RUNNING at once for a ``DETACHED``
scheduler, FORK)."""

from __future__ import annotations

import contextlib
import logging
import posixpath
from shlex import quote
from typing import Any

from airjobs import assets, registry, runs, store, transports
from airjobs.errors import IllegalTransition, StepError
from airjobs.lifecycle import transition
from airjobs.models import Job
from airjobs.paths import clean_relative, host_path
from airjobs.remote import kill_remote, run, scheduler_of
from airjobs.rendering import RenderContext, render_wrapper
from airjobs.schedulers.base import JobRequest, Scheduler
from airjobs.statuses import AFTER_SUBMIT, JobStatus, is_terminal
from airjobs.steps.context import JobContext, JobPaths, active_job
from airjobs.steps.context import system as get_system
from airjobs.steps.run import JobAlreadyFinal
from airjobs.timeutil import iso

log = logging.getLogger(__name__)
S = JobStatus

#: how long a retried submit waits for the record of a hand-over still under way before trying again later
SUBMIT_WAIT_SECONDS = 120


def submit(job_id: str) -> None:
    job = active_job(job_id)
    if job.local_id and JobStatus(job.status) in AFTER_SUBMIT:  # the task ran again: never submit twice
        log.warning("job %s is already %s as %s; not submitting it again", job_id, job.status, job.local_id)
        return
    ctx = JobContext.of(job)
    system, paths, transport = ctx.system, ctx.paths, ctx.transport
    app = registry.get_app(job.app_id)
    if app is None:
        raise StepError(f"App {job.app_id} is no longer registered.")
    host_dir = paths.host_dir
    if transport.exists(paths.submit_mark):  # an earlier try handed it over (or is doing so) and was cut
        # before recording it: read that hand-over back, rewrite nothing the job may be running
        transition(job_id, S.SUBMITTING, "Reading back the submission of an earlier try that was cut short")
        sched = scheduler_of(system)
        with runs.shielded():
            _hand_over(job_id, system, sched, host_dir, sched.submit_command(host_dir, paths.script))
        return
    transition(job_id, S.SUBMITTING, "Preparing job for execution and staging assets to execution system")

    deploy = get_system(app.get("deploymentSystem") or system["id"])
    deploy_transport = transports.storage(deploy)
    if app.get("isPublic"):  # nobody but its owner changes what a public app runs
        now_sums = assets.fingerprint(app, deploy)
        if "assetChecksums" not in app:  # published before checksums were kept: these are its assets from now on
            registry.record_asset_checksums(app["id"], now_sums)
        changed = assets.changes(app.get("assetChecksums", now_sums), now_sums)
        if changed:
            raise StepError(
                f"The assets of app {app['id']} changed since it was published ({', '.join(changed[:10])})"
                f"; its owner must update the app before it runs again."
            )
    asset_dir = host_path(deploy, app["deploymentPath"])
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
            transports.copy(deploy_transport, posixpath.join(asset_dir, name), transport, paths.file(name))
            manifest.append(name)

    sched = scheduler_of(system)
    script = paths.script
    request = _job_request(job, system, sched, paths)
    header = sched.header(request)
    command = sched.submit_command(host_dir, script)
    submit_file = getattr(sched, "submit_file", None)
    if submit_file is not None:  # HTCondor: the settings go in a submit description beside the wrapper
        name = sched.submit_file_name(script)  # type: ignore[attr-defined]  # HTCondor's own
        transport.write_text(paths.file(name), submit_file(request, script))
        manifest.append(name)
    text = render_wrapper(template, _render_context(job, app, system, paths, header))
    transport.write_text(paths.file(script), text, mode=0o700)
    transport.write_text(paths.manifest, "".join(f"{m}\n" for m in [*manifest, script, JobPaths.SUBMIT_MARK]))
    with runs.shielded():  # handed to the scheduler and recorded, or neither: never cut in between
        _hand_over(job_id, system, sched, host_dir, command)


def once(host_dir: str, command: str) -> str:
    """``command`` run at most once per work directory, whatever happens to the service meanwhile: ``mkdir``
    of ``SUBMIT_MARK`` decides who submits, the command runs in its own session (``setsid -w``: a task killed
    mid-way, its process group with it, or an SSH connection dropped, does not cut it) and leaves its exit
    status and output there. Every caller, the first and any retry, prints ``rc``, then ``out``, then ``err``
    of that one run, separated by marker lines; a run still under way is waited for."""
    d = quote(posixpath.join(host_dir, JobPaths.SUBMIT_MARK))
    inner = f"( {command} ) > {d}/out 2> {d}/err; echo $? > {d}/rc.tmp && mv -f {d}/rc.tmp {d}/rc"
    return (
        f"if mkdir {d} 2>/dev/null; then setsid -w /bin/sh -c {quote(inner)} < /dev/null > /dev/null 2>&1; "
        f"elif [ ! -d {d} ]; then echo 'cannot create '{d} >&2; exit 1; fi; "
        f"i=0; while [ ! -e {d}/rc ] && [ $i -lt {SUBMIT_WAIT_SECONDS * 5} ]; do sleep 0.2; i=$((i+1)); done; "
        f"if [ ! -e {d}/rc ]; then echo 'an earlier submission of this job is still under way' >&2; exit 75; fi; "
        f"cat {d}/rc; echo {_OUT}; cat {d}/out; echo {_ERR}; cat {d}/err"
    )


_OUT, _ERR = "@@airjobs-submit-out@@", "@@airjobs-submit-err@@"


def parse_once(rc: int, out: str, err: str) -> tuple[int, str, str]:
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


def _hand_over(job_id: str, system: dict[str, Any], sched: Scheduler, host_dir: str, command: str) -> None:
    rc, out, err = parse_once(*run(system, once(host_dir, command)))
    unreachable = getattr(sched, "controller_unreachable", None)
    if rc != 0 and unreachable is not None and unreachable(f"{out}\n{err}"):  # nothing was submitted: the
        run(system, f"rm -rf -- {quote(posixpath.join(host_dir, JobPaths.SUBMIT_MARK))}")  # next try submits
        raise OSError(f"{sched.NAME} on {system['id']} could not reach its controller: {(err or out).strip()[:300]}")
    # a detached process prints its pid and its exit status says nothing; a batch scheduler's whole answer counts
    try:
        remote_id = sched.parse_submit(out if sched.DETACHED else f"{out}\n{err}")
    except ValueError as e:
        said = (err or out).strip()[:1000]
        raise StepError(f"{sched.NAME} on {system['id']} refused the job: {said or e}") from None
    if rc != 0 and not sched.DETACHED:
        raise StepError(f"{sched.NAME} on {system['id']} refused the job ({rc}): {(err or out).strip()[:1000]}")
    what = f"process {remote_id}" if sched.DETACHED else f"{sched.NAME} job {remote_id}"
    try:
        transition(job_id, S.QUEUED, f"Job queued on {system['id']} as {what}", local_id=remote_id)
        if sched.DETACHED:  # no queue: it runs
            transition(job_id, S.RUNNING, "Job started running")
    except IllegalTransition:  # killed while submitting: the job must not stay behind on the host
        job = store.get_job(job_id)
        if job is not None and is_terminal(job.status):
            job.local_id = remote_id
            with contextlib.suppress(Exception):
                kill_remote(job, system)
            raise JobAlreadyFinal(f"Job {job_id} was {job.status} while it was being submitted.") from None
        raise


def _job_request(job: Job, system: dict[str, Any], sched: Scheduler, paths: JobPaths) -> JobRequest:
    queue: dict[str, Any] = next((q for q in system.get("queues") or [] if q.get("name") == job.batch_queue), {})
    return JobRequest(
        name=paths.slug,
        job_id=job.id,
        work_dir=paths.host_dir,
        # a detached process has no queue and no directives: nothing of them may refuse it
        queue=None if sched.DETACHED else queue.get("mappedName") or job.batch_queue or None,
        node_count=job.node_count or 1,
        processors_per_node=job.processors_per_node or 1,
        memory_gb=float(job.memory_per_node or 0),
        max_run_time=job.max_run_time,
        custom_directives=None if sched.DETACHED else queue.get("customDirectives"),
    )


def _render_context(
    job: Job, app: dict[str, Any], system: dict[str, Any], paths: JobPaths, header: str
) -> RenderContext:
    return RenderContext(
        job={
            "id": job.id,
            "name": job.name,
            "slug": paths.slug,
            "owner": job.owner,
            "appId": job.app_id,
            "executionSystem": job.execution_system,
            "batchQueue": job.batch_queue,
            "nodeCount": job.node_count,
            "processorsPerNode": job.processors_per_node,
            "memoryPerNode": job.memory_per_node,
            "maxRunTime": job.max_run_time,
            "archive": job.archive,
            "archiveSystem": job.archive_system,
            "archivePath": job.archive_path,
            "submitTime": iso(job.submit_time),
            "inputs": job.inputs or {},
            "parameters": job.parameters or {},
        },
        app=app,
        system=system,
        work_dir=paths.host_dir,
        header=header,
    )
