"""What the fake batch schedulers (``tests/fakes/<sched>/bin``) share: per-user job state, the id counter, and the
detached runner that really executes a job and records how it ended.

Stdlib only: these run on the SSH test host as its unprivileged user with the system ``/usr/bin/python3``.

State lives in ``$HOME/.fake-<sched>/`` (or ``$FAKE_SCHED_HOME/.fake-<sched>/``):

* ``counter``      the last job number handed out (read and written under ``counter.lock``, an flock)
* ``jobs/<n>.json`` one file per job (replaced atomically; read-modify-write under ``jobs.lock``)
* ``spool/``       the job script as submitted (real schedulers copy it too), node files, spooled output
* ``queues``       optional: the queue names, whitespace-separated, the first is the default
* ``<setting>``    optional files holding a setting (see ``setting``)

A job goes ``queued`` -> ``running`` -> ``ended`` (or ``held``/``error`` when it cannot start). The runner is a
session leader of its own (``setsid``), detached from the submitting command; the job runs in a new process group
whose id is its pid, so killing the job kills everything it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = socket.gethostname().split(".")[0]
USER = pwd.getpwuid(os.getuid()).pw_name
HOME = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir

SIG = {name: getattr(signal, "SIG" + name) for name in ("INT", "TERM", "KILL", "USR1", "USR2", "HUP", "XCPU")}


def setting(sched: str, key: str, default: str) -> str:
    """``$FAKE_<SCHED>_<KEY>``, else ``$FAKE_<KEY>``, else the file ``~/.fake-<sched>/<key>``, else ``default``."""
    for var in (f"FAKE_{sched.upper()}_{key.upper()}", f"FAKE_{key.upper()}"):
        if os.environ.get(var, "").strip():
            return os.environ[var].strip()
    path = state_root(sched) / key
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    return default


def float_setting(sched: str, key: str, default: float) -> float:
    try:
        return float(setting(sched, key, str(default)))
    except ValueError:
        return default


def state_root(sched: str) -> Path:
    return Path(os.environ.get("FAKE_SCHED_HOME") or HOME) / f".fake-{sched}"


class Store:
    def __init__(self, sched: str, first_id: int = 1, root: Path | None = None):
        self.sched = sched
        self.first_id = first_id
        self.root = Path(root) if root else state_root(sched)
        self.jobs = self.root / "jobs"
        self.spool = self.root / "spool"
        for d in (self.root, self.jobs, self.spool):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        with open(self.root / name, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def next_id(self) -> int:
        with self._lock("counter.lock"):
            path = self.root / "counter"
            try:
                n = int(path.read_text().strip()) + 1
            except (OSError, ValueError):
                n = self.first_id
            _atomic_write(path, f"{n}\n")
            return n

    def load(self, n: int | str) -> dict[str, Any] | None:
        try:
            return json.loads((self.jobs / f"{int(n)}.json").read_text())
        except (OSError, ValueError):
            return None

    def save(self, job: dict[str, Any]) -> None:
        _atomic_write(self.jobs / f"{job['n']}.json", json.dumps(job, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def edit(self, n: int) -> Iterator[dict[str, Any] | None]:
        """The job, saved again when the block ends; ``None`` (nothing saved) when there is no such job."""
        with self._lock("jobs.lock"):
            job = self.load(n)
            yield job
            if job is not None:
                self.save(job)

    def numbers(self) -> list[int]:
        return sorted(int(p.stem) for p in self.jobs.glob("*.json") if p.stem.isdigit())

    def all(self) -> list[dict[str, Any]]:
        return [view(j) for j in (self.load(n) for n in self.numbers()) if j is not None]

    def queues(self, default: list[str]) -> list[str]:
        """The queue names: ``$FAKE_<SCHED>_QUEUES``/``$FAKE_QUEUES`` or the file ``queues``; the first is the
        default queue."""
        names = setting(self.sched, "queues", "").split()
        return names or default


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ processes


def proc_start(pid: int | None) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process, else None."""
    if not pid:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    now = proc_start(pid)
    return now is not None and (start is None or now == start)


def view(job: dict[str, Any]) -> dict[str, Any]:
    """The job as the scheduler would see it now: a job marked running whose process and runner are both gone
    (the runner was killed, the host rebooted) has ended, with no exit status."""
    if (
        job.get("state") == "running"
        and not alive(job.get("pid"), job.get("pid_start"))
        and not alive(job.get("runner_pid"), job.get("runner_start"))
    ):
        job = dict(job, state="ended", lost=True, ended=job.get("ended") or time.time())
    if (
        job.get("state") == "queued"
        and not alive(job.get("runner_pid"), job.get("runner_start"))
        and job.get("runner_pid")
        and time.time() - job.get("submitted", 0) > 30
    ):
        job = dict(job, state="ended", lost=True, ended=job.get("ended") or time.time())
    return job


def signal_group(pid: int | None, start: int | None, sig: int) -> bool:
    """Signal the job's process group (its id is the job's pid); False if it is gone."""
    if not pid or not alive(pid, start):
        return False
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int | None) -> bool:
    if not pgid:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


# ------------------------------------------------------------------------------------------------ submit / kill


def submit(store: Store, job: dict[str, Any], script_text: str | None) -> dict[str, Any]:
    """Record a new job (``job`` must carry ``n``) and start its runner, detached. ``script_text`` is spooled and
    becomes the job's ``argv[-1]`` placeholder ``{script}``."""
    n = job["n"]
    if script_text is not None:
        path = store.spool / f"{n}.script"
        path.write_text(script_text)
        path.chmod(0o700)
        job["script"] = str(path)
        job["argv"] = [str(path) if a == "{script}" else a for a in job["argv"]]
    job.setdefault("pending", float_setting(store.sched, "pending", 0.0))
    job.update(
        sched=store.sched,
        user=USER,
        host=HOST,
        submitted=time.time(),
        state="queued",
        killed=None,
        kill_sent=0,
        started=None,
        ended=None,
        exit_status=None,
        signal=None,
        pid=None,
        pid_start=None,
    )
    store.save(job)
    runner = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), "run", str(store.root), store.sched, str(n)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        cwd="/",
    )
    with store.edit(n) as j:
        if j is not None and not j.get("runner_pid"):
            j["runner_pid"] = runner.pid
            j["runner_start"] = proc_start(runner.pid)
    return job


def kill(store: Store, n: int, plan: list[list] | None = None) -> dict[str, Any] | None:
    """Mark the job killed and send the first signal of its kill plan (the runner sends the rest).
    Returns the job as it was before, or None if unknown."""
    with store.edit(n) as job:
        if job is None:
            return None
        before = view(dict(job))
        if before["state"] in ("ended",) or job.get("killed"):
            return before
        job["killed"] = time.time()
        if plan:
            job["kill_plan"] = plan
        if job["state"] in ("held", "error"):  # nothing runs: it is simply gone
            job.update(state="ended", ended=time.time())
    if before["state"] == "running":
        first = (job.get("kill_plan") or [[0, "TERM"]])[0][1]
        signal_group(job.get("pid"), job.get("pid_start"), SIG[first])
    return before


# ------------------------------------------------------------------------------------------------ the runner


def _hooks(job: dict[str, Any]):
    path = job.get("hooks")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location(f"fake_{job['sched']}_hooks", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    spec.loader.exec_module(module)
    return module


def _open(path: str | None, append: bool):
    if not path:
        return open(os.devnull, "wb")
    return open(path, "ab" if append else "wb")


def run(root: str, sched: str, n: int) -> None:
    store = Store(sched, root=Path(root))
    job = store.load(n)
    if job is None:
        return
    hooks = _hooks(job)
    # pending: the job stays queued for ``pending`` seconds (FAKE_PENDING), unless killed meanwhile
    deadline = job["submitted"] + float(job.get("pending") or 0)
    while time.time() < deadline:
        j = store.load(n)
        if j is None or j.get("killed"):
            break
        time.sleep(0.05)

    proc = None
    with store.edit(n) as job:
        if job is None:
            return
        job["runner_pid"], job["runner_start"] = os.getpid(), proc_start(os.getpid())
        if job.get("killed"):
            job.update(state="ended", ended=time.time())
            return
        try:
            out = _open(job.get("run_out"), job.get("append", False))
            append = job.get("append", False)
            err = subprocess.STDOUT if job.get("run_err") == "&1" else _open(job.get("run_err"), append)
        except OSError as e:
            policy = job.get("open_error", "ignore")
            reason = f'can\'t open output file "{e.filename}": {e.strerror}'
            if policy in ("error", "held"):
                job.update(state=policy, reason=reason)
                return
            out, err = _open(None, False), subprocess.STDOUT
            job["reason"] = reason
        try:
            proc = subprocess.Popen(
                job["argv"],
                cwd=job["cwd"],
                env=job["env"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as e:
            policy = job.get("exec_error", "ended")
            job["reason"] = f"Failed to execute '{job['argv'][0]}': (errno={e.errno}: '{e.strerror}')"
            if policy == "held":
                job["state"] = "held"
            else:
                job.update(state="ended", started=time.time(), ended=time.time(), exit_status=127)
        else:
            job.update(state="running", started=time.time(), pid=proc.pid, pid_start=proc_start(proc.pid))
        finally:
            out.close()
            if err is not subprocess.STDOUT:
                err.close()
    if proc is None:
        if hooks and hasattr(hooks, "finish") and job and job.get("state") == "ended":
            hooks.finish(store, store.load(n))
        return

    limit = job.get("limit")
    rc = None
    while rc is None:
        try:
            rc = proc.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        j = store.load(n) or job
        if limit and not j.get("killed") and now - j["started"] > float(limit):
            with store.edit(n) as j2:
                if j2 is not None and not j2.get("killed"):
                    j2.update(
                        killed=now,
                        kill_plan=j2.get("limit_plan") or [[0, "TERM"], [2, "KILL"]],
                        reason="walltime",
                        kill_sent=0,
                    )
            j = store.load(n) or j
        if j.get("killed"):
            plan, sent = j.get("kill_plan") or [[0, "TERM"]], j.get("_sent", 0)
            while sent < len(plan) and now >= j["killed"] + float(plan[sent][0]):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, SIG[plan[sent][1]])
                sent += 1
            if sent != j.get("_sent", 0):
                with store.edit(n) as j2:
                    if j2 is not None:
                        j2["_sent"] = sent
    # like a real scheduler, nothing the job started outlives it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    ended = time.time()
    with store.edit(n) as job:
        if job is None:
            return
        job.update(exit_status=rc if rc >= 0 else None, signal=-rc if rc < 0 else None, ended=ended)
    if hooks and hasattr(hooks, "finish"):
        with contextlib.suppress(Exception):
            hooks.finish(store, store.load(n))
    with store.edit(n) as job:
        if job is not None:
            job["state"] = "ended"


# ------------------------------------------------------------------------------------------------ helpers


def hms(seconds: float) -> str:
    s = max(int(seconds), 0)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def parse_seconds(value: str) -> int | None:
    """``[[H:]M:]S`` (or plain seconds) -> seconds."""
    try:
        parts = [float(p) for p in str(value).strip().split(":")]
    except ValueError:
        return None
    if not parts or len(parts) > 3:
        return None
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return int(total)


def elapsed(job: dict[str, Any]) -> float:
    if not job.get("started"):
        return 0.0
    return (job.get("ended") or time.time()) - job["started"]


def out(text: str = "") -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def directive_args(text: str, prefix: str, whole_script: bool = False) -> list[list[str]]:
    """The option words of each ``<prefix>`` line of a script, in order. Like qsub and bsub, reading stops at the
    first line that is neither blank nor a comment (unless ``whole_script``)."""
    import shlex

    found = []
    for i, line in enumerate(text.splitlines()):
        s = line.strip()
        if i == 0 and s.startswith("#!"):
            continue
        if s.startswith(prefix):
            rest = s[len(prefix) :]
            if rest[:1] in (" ", "\t"):
                try:
                    found.append(shlex.split(rest, comments=True))
                except ValueError:
                    found.append(rest.split())
            continue
        if s and not s.startswith("#") and not whole_script:
            break
    return found


def interpreter(text: str, default: str = "/bin/sh") -> list[str]:
    first = text.splitlines()[0] if text else ""
    if first.startswith("#!"):
        words = first[2:].strip().split(None, 1)
        if words:
            return words
    return [default]


def job_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = {
        "HOME": HOME,
        "USER": USER,
        "LOGNAME": USER,
        "SHELL": pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh",
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": "/tmp",
    }
    if os.environ.get("SLURM_CONF"):
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    env.update(base or {})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "run":
        run(argv[1], argv[2], int(argv[3]))
        return 0
    err("usage: fakesched.py run STATE_ROOT SCHED N")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
