"""What the batch-scheduler modules share: the job request they render, and a few pure helpers (spec §10.6, §10.7)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from shlex import quote
from typing import Protocol

from airjobs.jobpaths import JobPaths
from airjobs.statuses import JobStatus
from airjobs.timeutil import hms_to_seconds

#: what a status answer says of one job: (status, the scheduler's exit code once it ended, the scheduler's word)
State = tuple[JobStatus, int | None, str]


class Scheduler(Protocol):
    """What every scheduler module (``airjobs.schedulers.<name>``) offers: pure functions that build commands
    and read their output, no I/O. FORK (``fork``) is one of them, like the batch schedulers.

    ``DETACHED`` says how the scheduler runs a job: False for a batch scheduler (the job waits in a queue; the
    submit command's exit status and its whole output are its answer; a job id it does not list in a status
    answer is unknown to it); True for FORK (the job runs at once as a detached process on the login host: its
    id is a process id, printed on standard output, which the system reuses once the process ended; a process
    the status answer does not list has ended, and a check is cheap enough to watch the job inline)."""

    NAME: str
    DETACHED: bool

    def header(self, req: JobRequest) -> str:
        """The first lines of the wrapper script (shebang, directives)."""
        ...

    def submit_command(self, work_dir: str, script: str) -> str:
        """The command that hands the wrapper ``script`` (in ``work_dir``) to the scheduler."""
        ...

    def parse_submit(self, output: str) -> str:
        """The remote id in the submit command's output; ``ValueError`` (the scheduler's words) without one."""
        ...

    def status_command(self, ids: list[str]) -> str:
        """One command asking about all of ``ids``."""
        ...

    def parse_status(self, output: str) -> dict[str, tuple[JobStatus, int | None]]:
        """remote id -> (status, exit code once it ended) for the jobs the status command listed."""
        ...

    def states(self, output: str, ids: list[str]) -> dict[str, State]:
        """remote id -> ``State`` for the ids of ``ids`` the answer tells something about."""
        ...

    def kill_command(self, remote_id: str) -> str: ...


def states_of(parsed: dict[str, tuple[JobStatus, int | None]]) -> dict[str, State]:
    """A batch scheduler's ``states``: what it listed, its word the status's name; an id it did not list is unknown."""
    return {rid: (status, code, status.value) for rid, (status, code) in parsed.items()}


SHEBANG = "#!/bin/bash\n"

_TOKEN = re.compile(r"[A-Za-z0-9._+-]+")  # slugs and Agave job ids
_QUEUE = re.compile(r"[A-Za-z0-9._@+:-]+")  # mapped queue names (SGE allows ``all.q@host``)


@dataclass(frozen=True)
class JobRequest:
    """One job's scheduler-relevant fields; validated so no value can break a directive line."""

    name: str  # slug of the job name (spec §10.6: prefixed ``agave-`` by the caller if it starts with a digit)
    job_id: str  # the Agave job id, used in the ``<name>-<job_id>.out/.err`` file names
    work_dir: str  # absolute remote work directory
    queue: str | None = None  # the queue's mappedName (or name)
    node_count: int = 1
    processors_per_node: int = 1
    memory_gb: float = 0.0  # per node; 0 = unset
    max_run_time: str | None = None  # "HH:MM:SS"
    custom_directives: str | None = None  # the queue's customDirectives, one directive per line

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("job_id", self.job_id)):
            if not _TOKEN.fullmatch(value or ""):
                raise ValueError(f"invalid {field} for a scheduler directive: {value!r}")
        if self.queue and not _QUEUE.fullmatch(self.queue):
            raise ValueError(f"invalid queue name: {self.queue!r}")
        if not self.work_dir or any(c in self.work_dir for c in "\n\r\0"):
            raise ValueError(f"invalid work directory: {self.work_dir!r}")
        if self.node_count < 1 or self.processors_per_node < 1 or self.memory_gb < 0:
            raise ValueError("node_count and processors_per_node must be >= 1 and memory_gb >= 0")
        if self.max_run_time:
            hms_to_seconds(self.max_run_time)

    @property
    def paths(self) -> JobPaths:
        return JobPaths.named(self.work_dir, self.name, self.job_id)

    @property
    def out(self) -> str:
        return self.paths.batch_stdout

    @property
    def err(self) -> str:
        return self.paths.batch_stderr

    @property
    def memory_mb(self) -> int:
        return math.ceil(self.memory_gb * 1024)


def hms_to_minutes(value: str) -> int:
    """Rounded up, so a limit is never shortened."""
    return math.ceil(hms_to_seconds(value) / 60)


def hms(value: str) -> str:
    """Normalised ``HH:MM:SS`` (hours not wrapped into days), as SLURM, PBS and SGE all accept."""
    s = hms_to_seconds(value)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def custom_lines(text: str | None, prefix: str) -> list[str]:
    """The queue's customDirectives, one per line: a line starting with ``#`` is kept verbatim, any other line gets
    the scheduler's prefix (Agave wrote ``#SBATCH `` + customDirectives, so ``-A TG-123`` keeps working)."""
    lines = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            lines.append(line if line.startswith("#") else prefix + line)
    return lines


def render(prefix: str, lines: list[str], custom: str | None) -> str:
    """Directive lines, then the custom ones, each ending in a newline."""
    return "".join(f"{prefix}{x}\n" for x in lines) + "".join(f"{x}\n" for x in custom_lines(custom, prefix))


def script_arg(script: str) -> str:
    """The wrapper path as a quoted shell word that can never be read as an option."""
    return quote(script if script.startswith("/") else "./" + script)


def cd(work_dir: str) -> str:
    return f"cd {quote(work_dir)} || exit 1; "


_PENDING_WORDS = ("PEND", "QUEU", "WAIT", "HOLD", "HELD", "IDLE", "CONFIG", "PROV", "SUBMIT")


def unknown_state(code: str) -> JobStatus:
    """A state missing from a module's ``STATE_MAP``: QUEUED if its name looks pending, else RUNNING.

    Never terminal and never an exception: the job stays polled, and the exit-code file or the expiry rule (spec §10.7)
    settles it, which is safer than failing a job on a state a newer scheduler release invented."""
    upper = code.upper()
    return JobStatus.QUEUED if any(w in upper for w in _PENDING_WORDS) else JobStatus.RUNNING


def to_int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def submit_error(name: str, output: str) -> ValueError:
    """The scheduler's own error lines (or its whole answer) as the message of a failed submission."""
    text = output.strip()
    errors = [ln.strip() for ln in text.splitlines() if re.search(r"error|not submitted|unable|invalid", ln, re.I)]
    return ValueError(f"{name} submission failed: {(chr(10).join(errors) or text or '(no output)')[:500]}")


def executable_submit(work_dir: str, script: str, command: str, target: str | None = None) -> str:
    """``cd <work dir> && chmod +x <script> && <command> <target or script>``, every value quoted."""
    return f"{cd(work_dir)}chmod +x {script_arg(script)} && {command} {script_arg(target or script)}"


def find_id(name: str, output: str, message: str | None = None, line: str | None = None) -> str:
    """The first group of ``message`` searched in the output, else of ``line`` matching a whole line;
    otherwise the scheduler's own words as a ``ValueError``."""
    if message:
        m = re.search(message, output)
        if m:
            return m.group(1)
    if line:
        for text in output.splitlines():
            m = re.fullmatch(line, text)
            if m:
                return m.group(1)
    raise submit_error(name, output)
