"""Fake HTCondor: ``condor_submit``, ``condor_q``, ``condor_history``, ``condor_rm`` with the output of the real tools.

One job per cluster (``queue`` / ``queue 1``). The submit description is read as HTCondor does: ``key = value``
(keys case-insensitive), ``$(Cluster)``/``$(ClusterId)``/``$(Process)``/``$(ProcId)`` and other keys as macros,
``initialdir`` relative to the submit directory, ``executable``/``output``/``error`` relative to ``initialdir``,
``arguments`` (new double-quoted or old syntax), ``environment``, ``getenv``, ``+Attr = value``.
``periodic_remove`` is honoured for the form our module writes (``... (time() - JobCurrentStartDate) > N``).

The job runs in ``initialdir``, its executable exec'ed directly (so it must be executable), with HTCondor's small
environment (no ``HOME`` unless ``getenv = true``). An executable that cannot be exec'ed or an output file that
cannot be opened puts the job on hold (JobStatus 5, ``HoldReason``). ``condor_q`` shows jobs in the queue
(idle 1, running 2, held 5, removed 3 until its process is gone); finished and removed jobs move to
``condor_history`` (completed 4 with ``ExitCode``, or removed 3).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import fakesched as fs

SCHED = "condor"
KILL_PLAN = [[0, "TERM"], [2, "KILL"]]  # condor_rm: kill_sig (SIGTERM), SIGKILL after the grace period
UNIVERSES = {"vanilla", "scheduler", "local", "docker", "container", "parallel", "java", "grid", "vm"}
SCHEDD = f"<127.0.0.1:9618?addrs=127.0.0.1-9618&alias={fs.HOST}&noUDP&sock=schedd_1_a>"


def store() -> fs.Store:
    return fs.Store(SCHED, first_id=1)


def _parse_submit(text: str) -> tuple[dict[str, str], dict[str, str], str | None]:
    """(commands, +custom attributes, the queue statement's argument or None if there is none)."""
    cmds: dict[str, str] = {}
    custom: dict[str, str] = {}
    queue = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        while line.endswith("\\") and i + 1 < len(lines):  # continuation lines
            i += 1
            line = line[:-1] + lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(?i)queue\b\s*(.*)$", line)
        if m and "=" not in line.split()[0]:
            queue = m.group(1).strip()
            break
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f'Parse error: unrecognised command "{line}"')
        key = key.strip()
        if key.startswith("+") or key.upper().startswith("MY."):
            custom[key.lstrip("+").split(".", 1)[-1]] = value.strip()
        else:
            cmds[key.lower()] = value.strip()
    return cmds, custom, queue


def _expand(value: str, cmds: dict[str, str], cluster: int) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1).lower()
        if name in ("cluster", "clusterid"):
            return str(cluster)
        if name in ("process", "procid", "step", "item_index", "row"):
            return "0"
        return cmds.get(name, "")

    for _ in range(5):
        new = re.sub(r"\$\(([A-Za-z_][\w.]*)\)", sub, value)
        if new == value:
            break
        value = new
    return value


def _arguments(value: str) -> list[str]:
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):  # new syntax: "a 'b c' d", "" is a literal quote
        return shlex.split(value[1:-1].replace('""', '\\"'))
    return value.split()


def _environment(value: str) -> dict[str, str]:
    value = value.strip()
    env = {}
    if value.startswith('"') and value.endswith('"'):
        words = shlex.split(value[1:-1].replace('""', '\\"'))
    else:
        words = value.split(";")
    for w in words:
        k, sep, v = w.strip().partition("=")
        if k and sep:
            env[k] = v
    return env


def condor_submit(argv: list[str]) -> int:
    terse = "-terse" in argv
    batch = None
    files = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-batch-name", "-batch_name") and i + 1 < len(argv):
            batch, i = argv[i + 1], i + 1
        elif a in ("-terse", "-verbose", "-v", "-disable"):
            pass
        elif a.startswith("-"):
            fs.err(f'ERROR: unknown command line option "{a}"\nUsage: condor_submit [options] [submit-file]')
            return 1
        else:
            files.append(a)
        i += 1
    if files:
        try:
            text = open(files[0]).read()
        except OSError as e:
            fs.err(f'ERROR: Can\'t open "{files[0]}"  with flags 00 ({e.strerror})')
            return 1
    else:
        text = sys.stdin.read()
    if not terse:
        print("Submitting job(s)", end="", flush=True)
    try:
        cmds, custom, queue = _parse_submit(text)
    except ValueError as e:
        print()
        fs.err(f"\nERROR: {e}")
        return 1
    if queue is None:
        print()
        fs.err("\nERROR: Submit file has no queue statement")  # condor_submit then submits nothing
        return 1
    if queue not in ("", "1"):
        print()
        fs.err(f'\nERROR: this fake queues one job per cluster; "queue {queue}" is not supported')
        return 1
    universe = cmds.get("universe", "vanilla").lower()
    if universe not in UNIVERSES:
        print()
        fs.err(f"\nERROR: I don't know about the '{universe}' universe.")
        return 1
    st = store()
    # the cluster id is only used once the file is accepted; like the schedd, a refused submit burns no id
    submit_dir = os.getcwd()
    probe = {k: _expand(v, cmds, 0) for k, v in cmds.items()}
    iwd = os.path.normpath(os.path.join(submit_dir, probe.get("initialdir") or probe.get("iwd") or "."))
    if not os.path.isdir(iwd):
        print()
        fs.err(f"\nERROR: No such directory: {iwd}")
        return 1
    if "executable" not in probe:
        print()
        fs.err("\nERROR: No 'executable' parameter was provided")
        return 1
    exe = os.path.normpath(os.path.join(iwd, probe["executable"]))
    if not os.path.exists(exe):
        print()
        fs.err(f"\nERROR: Executable file {exe} does not exist")
        return 1
    n = st.next_id()
    c = {k: _expand(v, cmds, n) for k, v in cmds.items()}

    def path_of(key: str) -> str | None:
        value = c.get(key)
        return os.path.normpath(os.path.join(iwd, value)) if value else None

    out_path, err_path = path_of("output"), path_of("error")
    limit = None
    m = re.search(r"time\(\)\s*-\s*JobCurrentStartDate\s*\)?\s*>\s*(\d+)", c.get("periodic_remove", ""))
    if m:
        limit = int(m.group(1))
    if str(c.get("getenv", "false")).lower() in ("true", "1", "yes"):
        base = dict(os.environ)
    else:
        base = {}
    base.update(_environment(c.get("environment", "")))
    cpus = c.get("request_cpus", "1")
    env = dict(base)
    env.update(
        {
            "_CONDOR_SCRATCH_DIR": iwd,
            "_CONDOR_SLOT": "slot1_1",
            "_CONDOR_JOB_IWD": iwd,
            "_CONDOR_JOB_PIDS": "",
            "BATCH_SYSTEM": "HTCondor",
            "TMPDIR": "/tmp",
            "TEMP": "/tmp",
            "TMP": "/tmp",
            "OMP_NUM_THREADS": cpus,
            "CONDOR_CONFIG": "/etc/condor/condor_config",
        }
    )
    name = batch or c.get("batch_name") or f"ID: {n}"
    job = {
        "n": n,
        "jobid": f"{n}.0",
        "name": name,
        "queue": "-",
        "submit_dir": submit_dir,
        "cwd": iwd,
        "argv": [exe, *_arguments(c.get("arguments", c.get("args", "")))],
        "env": env,
        "limit": limit,
        "out": out_path,
        "err": err_path,
        "run_out": out_path,
        "run_err": err_path,
        "exe": exe,
        "open_error": "held",
        "exec_error": "held",
        "kill_plan": KILL_PLAN,
        "limit_plan": KILL_PLAN,
        "custom": custom,
        "cpus": cpus,
        "memory": c.get("request_memory"),
        "periodic_remove": c.get("periodic_remove"),
        "args": c.get("arguments", ""),
    }
    fs.submit(st, job, None)
    if terse:
        print(f"{n}.0 - {n}.0")
    else:
        print(".")
        print(f"1 job(s) submitted to cluster {n}.")
    return 0


# ------------------------------------------------------------------------------------------------ ClassAds


def status_of(job: dict[str, Any]) -> int:
    s = job["state"]
    if s == "queued":
        return 3 if job.get("killed") else 1
    if s in ("held", "error"):
        return 3 if job.get("killed") else 5
    if job.get("killed"):
        return 3  # condor_rm or periodic_remove: Removed
    return 2 if s == "running" else 4


def in_queue(job: dict[str, Any]) -> bool:
    """Completed and removed jobs leave the queue (for condor_history) once nothing of them runs any more."""
    return job["state"] != "ended"


def ad(job: dict[str, Any]) -> dict[str, Any]:
    st = status_of(job)
    ended = job["state"] == "ended"
    a: dict[str, Any] = {
        "ClusterId": job["n"],
        "ProcId": 0,
        "JobStatus": st,
        "Owner": job["user"],
        "User": f"{job['user']}@{fs.HOST}",
        "Cmd": job["exe"],
        "Args": job.get("args") or None,
        "Iwd": job["cwd"],
        "Out": job.get("out") or "/dev/null",
        "Err": job.get("err") or "/dev/null",
        "JobBatchName": None if job["name"].startswith("ID: ") else job["name"],
        "QDate": int(job["submitted"]),
        "GlobalJobId": f"{fs.HOST}#{job['n']}.0#{int(job['submitted'])}",
        "JobUniverse": 5,
        "RequestCpus": int(job.get("cpus") or 1),
        "NumJobStarts": 1 if job.get("started") else 0,
        "EnteredCurrentStatus": int(job.get("ended") or job.get("killed") or job.get("started") or job["submitted"]),
        "RemoteWallClockTime": float(int(fs.elapsed(job))),
    }
    if job.get("memory"):
        a["RequestMemory"] = int(float(job["memory"]))
    if job.get("started"):
        a["JobStartDate"] = a["JobCurrentStartDate"] = int(job["started"])
    if st == 5:
        a["HoldReason"] = f"Error from slot1_1@{fs.HOST}: {job.get('reason', '')}"
        a["HoldReasonCode"] = 6
    if ended and job.get("started") and not job.get("lost"):
        a["CompletionDate"] = int(job.get("ended") or 0)
        if job.get("signal"):
            a["ExitBySignal"] = True
            a["ExitSignal"] = job["signal"]
        elif job.get("exit_status") is not None:
            a["ExitBySignal"] = False
            a["ExitCode"] = a["ExitStatus"] = job["exit_status"]
    if st == 3:
        a["RemoveReason"] = (
            f"The job attribute PeriodicRemove expression '{job.get('periodic_remove')}' evaluated to TRUE"
            if job.get("reason") == "walltime"
            else f"via condor_rm (by user {job['user']})"
        )
    for key, value in (job.get("custom") or {}).items():
        a[key] = value
    return a


def _value(a: dict[str, Any], attr: str, quoted: bool) -> str:
    key = next((k for k in a if k.lower() == attr.lower()), None)
    value = a.get(key) if key else None
    if value is None:
        return "undefined"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, str) and quoted and not re.fullmatch(r"-?\d+(\.\d+)?|true|false|undefined", value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _long(a: dict[str, Any]) -> str:
    return "".join(f"{k} = {_value(a, k, True)}\n" for k in sorted(a)) + "\n"


def _selectors(args: list[str]) -> tuple[list[tuple[int, int | None]], list[str]] | None:
    ids, owners = [], []
    for arg in args:
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?", arg)
        if m:
            ids.append((int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None))
        elif re.fullmatch(r"[A-Za-z_][\w.-]*", arg):
            owners.append(arg)
        else:
            return None
    return ids, owners


def _matches(job: dict[str, Any], ids: list, owners: list[str]) -> bool:
    if not ids and not owners:
        return True
    if any(job["n"] == c and p in (None, 0) for c, p in ids):
        return True
    return job["user"] in owners


def _split_args(argv: list[str], tool: str, value_opts: set[str]) -> tuple[list[str], dict[str, Any]] | int:
    pos, opts, i = [], {"af": None, "l": False}, 0
    while i < len(argv):
        a = argv[i]
        if a.split(":")[0] in ("-af", "-autoformat"):
            attrs = []
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                attrs.append(argv[i])
                i += 1
            opts["af"] = attrs
            continue
        if a in ("-l", "-long"):
            opts["l"] = True
        elif a in value_opts and i + 1 < len(argv):
            opts[a.lstrip("-")] = argv[i + 1]
            i += 1
        elif a in ("-nobatch", "-allusers", "-all", "-totals", "-wide", "-backwards", "-forwards"):
            opts[a.lstrip("-")] = True
        elif a.startswith("-"):
            fs.err(f'Error: unrecognized argument {a}\nUse "{tool} -help" for details')
            return 1
        else:
            pos.append(a)
        i += 1
    return pos, opts


def _time(t: float | None) -> str:
    return time.strftime("%-m/%-d %H:%M", time.localtime(t)) if t else "???"


def _runtime(job: dict[str, Any]) -> str:
    s = int(fs.elapsed(job))
    return f"{s // 86400}+{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def condor_q(argv: list[str]) -> int:
    parsed = _split_args(argv, "condor_q", {"-constraint", "-format", "-name", "-pool"})
    if isinstance(parsed, int):
        return parsed
    pos, opts = parsed
    sel = _selectors(pos)
    if sel is None:
        fs.err(f"Error: unrecognized argument {pos[0]}")
        return 1
    if opts.get("constraint") or opts.get("format"):
        fs.err("Error: -constraint and -format are not faked")
        return 1
    jobs = [
        j
        for j in store().all()
        if in_queue(j) and _matches(j, *sel) and (sel[0] or sel[1] or opts.get("allusers") or j["user"] == fs.USER)
    ]
    if opts["af"] is not None:
        for j in jobs:
            a = ad(j)
            print(" ".join(_value(a, attr, False) for attr in opts["af"]))
        return 0
    if opts["l"]:
        sys.stdout.write("".join(_long(ad(j)) for j in jobs))
        return 0
    print()
    print(f"\n-- Schedd: {fs.HOST} : {SCHEDD} @ {time.strftime('%m/%d/%y %H:%M:%S')}")
    print(" ID      OWNER            SUBMITTED     RUN_TIME ST PRI SIZE CMD")
    letters = {1: "I", 2: "R", 3: "X", 4: "C", 5: "H", 6: ">", 7: "S"}
    for j in jobs:
        print(
            f"{j['n']:>4}.0   {j['user'][:14]:<14} {_time(j['submitted']):>11} {_runtime(j)} "
            f"{letters[status_of(j)]}  0    0.0 {os.path.basename(j['exe'])} {j.get('args') or ''}".rstrip()
        )
    counts = {s: sum(1 for j in jobs if status_of(j) == s) for s in range(1, 8)}
    print()
    print(
        f"Total for query: {len(jobs)} jobs; {counts[4]} completed, {counts[3]} removed, {counts[1]} idle, "
        f"{counts[2]} running, {counts[5]} held, {counts[7]} suspended "
    )
    return 0


def condor_history(argv: list[str]) -> int:
    parsed = _split_args(argv, "condor_history", {"-limit", "-match", "-constraint", "-file", "-name"})
    if isinstance(parsed, int):
        return parsed
    pos, opts = parsed
    sel = _selectors(pos)
    if sel is None:
        fs.err(f"Error: unrecognized argument {pos[0]}")
        return 1
    limit = opts.get("limit") or opts.get("match")
    try:
        limit_n = int(limit) if limit is not None else None
    except ValueError:
        fs.err(f"Error: -limit requires a number, not {limit}")
        return 1
    done = [j for j in store().all() if not in_queue(j) and _matches(j, *sel)]
    done.sort(key=lambda j: (j.get("ended") or 0, j["n"]), reverse=True)  # newest first, like the history file
    if limit_n is not None:
        done = done[:limit_n]
    if opts["af"] is not None:
        for j in done:
            a = ad(j)
            print(" ".join(_value(a, attr, False) for attr in opts["af"]))
        return 0
    if opts["l"]:
        sys.stdout.write("".join(_long(ad(j)) for j in done))
        return 0
    print(" ID     OWNER          SUBMITTED   RUN_TIME     ST COMPLETED   CMD")
    for j in done:
        letter = "X" if status_of(j) == 3 else "C"
        print(
            f"{j['n']:>4}.0   {j['user'][:14]:<14} {_time(j['submitted']):>11} {_runtime(j)} {letter}  "
            f"{_time(j.get('ended')):>11} {j['exe']} {j.get('args') or ''}".rstrip()
        )
    return 0


def condor_rm(argv: list[str]) -> int:
    targets = [a for a in argv if not a.startswith("-")]
    if not targets:
        fs.err(
            "Usage: condor_rm [options] [constraints]\n  where [constraints] is one or more of:\n"
            "    cluster.proc    Use the given cluster.proc\n    cluster         Use the given cluster"
        )
        return 1
    st, rc = store(), 0
    for t in targets:
        m = re.fullmatch(r"(\d+)(?:\.(\d+))?", t)
        job = st.load(m.group(1)) if m and m.group(2) in (None, "0") else None
        job = fs.view(job) if job else None
        what = f"cluster {t}" if m and m.group(2) is None else f"job {t}"
        if job is None or not in_queue(job) or job.get("killed"):
            fs.err(f"Couldn't find/remove all jobs in {what}.")
            rc = 1
            continue
        fs.kill(st, job["n"], KILL_PLAN)
        print(
            f"All jobs in cluster {t} have been marked for removal"
            if m.group(2) is None
            else f"Job {t} marked for removal"
        )
    return rc


COMMANDS = {
    "condor_submit": condor_submit,
    "condor_q": condor_q,
    "condor_history": condor_history,
    "condor_rm": condor_rm,
}


def main() -> int:
    return COMMANDS[os.path.basename(sys.argv[0])](sys.argv[1:])
