"""Every directory and file name of a job on its execution host, in one place (spec §10.1, §10.2, §10.6).

``JobPaths.of(job, system)`` is the job's work directory (``job.work_path`` once staging recorded it, else
``<scratchDir|workDir>/<owner>/job-<id>-<slug>``) as a path on the system and on the host, and the names of
what lives in it: the wrapper script, FORK's ``.pid``/``.out``/``.err``, a batch scheduler's
``<slug>-<job id>.out``/``.err``, the exit-code file the wrapper writes, the archive manifest, the log, and the
record of the one hand-over to the scheduler. Pure: no I/O, no database.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from airjobs.paths import clean_relative, host_path, slug

if TYPE_CHECKING:
    from airjobs.models import Job


def default_work_path(job: Job, system: dict[str, Any]) -> str:
    """``<scratchDir|workDir>/<owner>/job-<id>-<slug>`` on the execution system (spec §10.1), at most 255 chars."""
    base = system.get("scratchDir") or system.get("workDir") or ""
    path = posixpath.join("/" + clean_relative(base), clean_relative(job.owner), f"job-{job.id}-{slug(job.name)}")
    return path[:255]


@dataclass(frozen=True)
class JobPaths:
    """One job's work directory and the names of its files there."""

    #: the exit status of the app, written by the wrapper when it ends: the truth about how the job ended
    EXIT_CODE_FILE: ClassVar[str] = ".agave.exitcode"
    #: what the service put into the work directory (not archived)
    ARCHIVE_MANIFEST: ClassVar[str] = ".agave.archive"
    #: the record of the one hand-over to the scheduler (``airjobs.steps.submit.once``)
    SUBMIT_MARK: ClassVar[str] = ".airjobs-submit"
    #: the wrapper's log (``AGAVE_LOG_FILE``: the startup script's output)
    LOG_FILE: ClassVar[str] = ".agave.log"
    SCRIPT_SUFFIX: ClassVar[str] = ".ipcexe"

    work_path: str  # the work directory as a path on the execution system (what ``job.work_path`` records)
    host_dir: str  # the same directory as an absolute path on the host
    slug: str  # the job name's slug: the stem of the script's and the scheduler's file names
    job_id: str

    @classmethod
    def of(cls, job: Job, system: dict[str, Any], work_path: str | None = None) -> JobPaths:
        """The paths of ``job`` on its execution ``system``, in ``work_path`` when given, else in the work
        directory the job records, else in its default one."""
        work_path = work_path or job.work_path or default_work_path(job, system)
        return cls(work_path, host_path(system, work_path), slug(job.name), job.id)

    @classmethod
    def named(cls, host_dir: str, name: str, job_id: str = "") -> JobPaths:
        """The file names of a job whose work directory is ``host_dir`` and whose slug is ``name``."""
        return cls(host_dir, host_dir, name, job_id)

    def file(self, name: str) -> str:
        """``name`` inside the work directory, as a path on the host."""
        return posixpath.join(self.host_dir, name)

    @property
    def script(self) -> str:
        """The wrapper script's name: ``<slug>.ipcexe``."""
        return self.slug + self.SCRIPT_SUFFIX

    @property
    def pid_file(self) -> str:
        """FORK: the wrapper records its pid here."""
        return self.slug + ".pid"

    @property
    def stdout(self) -> str:
        """FORK: the wrapper's standard output."""
        return self.slug + ".out"

    @property
    def stderr(self) -> str:
        return self.slug + ".err"

    @property
    def batch_stdout(self) -> str:
        """A batch scheduler's output file: ``<slug>-<job id>.out``."""
        return f"{self.slug}-{self.job_id}.out"

    @property
    def batch_stderr(self) -> str:
        return f"{self.slug}-{self.job_id}.err"

    @property
    def exit_code_file(self) -> str:
        return self.file(self.EXIT_CODE_FILE)

    @property
    def manifest(self) -> str:
        return self.file(self.ARCHIVE_MANIFEST)

    @property
    def submit_mark(self) -> str:
        return self.file(self.SUBMIT_MARK)

    @property
    def log_file(self) -> str:
        return self.file(self.LOG_FILE)


def stem(script: str) -> str:
    """``hello.ipcexe`` -> ``hello`` (a name without a suffix stays as it is)."""
    return script.rsplit(".", 1)[0] if "." in script.rsplit("/", 1)[-1] else script


EXIT_CODE_FILE = JobPaths.EXIT_CODE_FILE
ARCHIVE_MANIFEST = JobPaths.ARCHIVE_MANIFEST
SUBMIT_MARK = JobPaths.SUBMIT_MARK
LOG_FILE = JobPaths.LOG_FILE
