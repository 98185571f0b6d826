"""Fake PBS Professional / Torque: ``qsub``, ``qstat``, ``qdel`` with the output of the real tools.

Flavour: ``FAKE_PBS_FLAVOR=pro`` (default) or ``torque`` (or the file ``~/.fake-pbs/flavor``). It decides
``qstat --version``, the meaning of ``qstat -x`` (PBS Pro: include finished jobs; Torque: XML output), finished
jobs (PBS Pro: state ``F`` + ``Exit_status``, shown only with ``-x``; Torque: state ``C`` + ``exit_status``, shown
for ``FAKE_PBS_KEEP_COMPLETED`` seconds, default 300) and the error texts.

As on a real PBS server the job runs in ``$HOME`` (``$PBS_O_WORKDIR`` names the submission directory); relative
``-o``/``-e`` paths are relative to the directory ``qsub`` ran in, and ``-S`` picks the shell.
"""

from __future__ import annotations

import getopt
import os
import re
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import fakesched as fs

SCHED = "pbs"
QUEUES = ["workq", "normal", "debug", "batch"]
VERSION = {"pro": "pbs_version = 2022.1.1", "torque": "Version: 6.1.3\nCommit: 0a8d5d6a"}
KILL_PLAN = [[0, "TERM"], [2, "KILL"]]  # qdel: SIGTERM, SIGKILL after the server's kill_delay


def store() -> fs.Store:
    return fs.Store(SCHED, first_id=1000)


def flavor() -> str:
    return "torque" if fs.setting(SCHED, "flavor", "pro").lower().startswith("t") else "pro"


def find(st: fs.Store, ident: str) -> dict[str, Any] | None:
    """A job by ``1234`` or ``1234.server`` (like qstat, any server suffix of ours)."""
    m = re.fullmatch(r"(\d+)(?:\.[A-Za-z0-9._-]+)?", ident)
    if not m:
        return None
    job = st.load(int(m.group(1)))
    if job is None or not (
        ident in (m.group(1), job["jobid"])
        or job["jobid"].startswith(ident + ".")
        or ident.startswith(job["jobid"] + ".")
    ):
        return None
    job = fs.view(job)
    if flavor() == "torque" and job["state"] == "ended":
        keep = fs.float_setting(SCHED, "keep_completed", 300)
        if time.time() - (job.get("ended") or 0) > keep:
            return None  # purged from the server
    return job


# ------------------------------------------------------------------------------------------------ qsub


def qsub(argv: list[str]) -> int:
    short = "a:A:c:C:e:hIj:k:l:m:M:N:o:p:P:q:r:S:u:v:VW:zd:w:"
    try:
        opts, args = getopt.getopt(argv, short)
    except getopt.GetoptError as e:
        fs.err(
            f"qsub: {e.msg}\nusage: qsub [-a date_time] [-A account_string] [-e path] [-j oe|eo|n] "
            "[-l resource_list] [-N name] [-o path] [-q destination] [-S path_list] [-v variable_list] [-V] "
            "[script | -- command]"
        )
        return 2
    if args and args[0] != "-":
        path = args[0]
        try:
            text = open(path).read()
        except OSError as e:
            fs.err(f"qsub: script file:: {e.strerror}")
            return 1
        submit_args = " ".join(argv)
        base_name = os.path.basename(path)
    else:
        text = sys.stdin.read()
        submit_args = " ".join(argv)
        base_name = "STDIN"
    # directives first, then the command line (which wins)
    options: dict[str, Any] = {"l": []}
    for words in fs.directive_args(text, "#PBS"):
        try:
            dopts, _ = getopt.getopt(words, short)
        except getopt.GetoptError as e:
            fs.err(f"qsub: directive error: {e.msg}")
            return 2
        _collect(options, dopts)
    _collect(options, opts)

    st = store()
    queues = st.queues(QUEUES)
    queue = str(options.get("q") or queues[0]).split("@")[0]
    if queue not in queues:
        if flavor() == "pro":
            fs.err("qsub: Unknown queue")
        else:
            fs.err("qsub: submit error (Unknown queue MSG=requested queue not found)")
        return 170  # PBSE_UNKQUE 15018 & 0xff
    name = options.get("N") or base_name
    if not re.fullmatch(r"[A-Za-z][^\s@:/#]{0,235}", name):
        fs.err("qsub: illegal -N value")
        return 2
    resources: dict[str, str] = {}
    for spec in options["l"]:
        for item in re.split(r",(?=[A-Za-z_]+=)", spec):
            key, _, value = item.partition("=")
            if not key or not value:
                fs.err("qsub: illegal -l value")
                return 2
            resources[key] = value
    limit = fs.parse_seconds(resources["walltime"]) if "walltime" in resources else None
    if "walltime" in resources and limit is None:
        fs.err("qsub: Illegal attribute or resource value Resource_List.walltime")
        return 2

    submit_dir = os.getcwd()
    n = st.next_id()
    jobid = f"{n}.{fs.HOST}"

    def path_of(value: str | None, ext: str) -> str:
        value = re.sub(r"^[A-Za-z0-9._-]+:", "", value or "") or f"{name}.{ext}{n}"  # [host:]path
        path = os.path.join(submit_dir, value)
        if os.path.isdir(path):
            path = os.path.join(path, f"{name}.{ext}{n}")
        return os.path.normpath(path)

    out_path, err_path = path_of(options.get("o"), "o"), path_of(options.get("e"), "e")
    join = options.get("j", "n")
    shell = options.get("S") or fs.interpreter(text, "/bin/bash")[0]
    cwd = options.get("d") or options.get("w") or fs.HOME  # Torque -d/-w; PBS starts jobs in $HOME
    nodefile = str(st.spool / f"{n}.nodes")
    nodes = resources.get("nodes", "1")
    m = re.match(r"(\d+)(?::ppn=(\d+))?", nodes)
    node_count, ppn = (int(m.group(1)), int(m.group(2) or 1)) if m else (1, 1)
    with open(nodefile, "w") as f:
        f.write(f"{fs.HOST}\n" * (node_count * ppn))
    pbs_o = {
        "PBS_O_HOME": fs.HOME,
        "PBS_O_LANG": os.environ.get("LANG", "C"),
        "PBS_O_LOGNAME": fs.USER,
        "PBS_O_PATH": os.environ.get("PATH", ""),
        "PBS_O_MAIL": f"/var/mail/{fs.USER}",
        "PBS_O_SHELL": os.environ.get("SHELL", "/bin/bash"),
        "PBS_O_WORKDIR": submit_dir,
        "PBS_O_SYSTEM": "Linux",
        "PBS_O_QUEUE": queue,
        "PBS_O_HOST": fs.HOST,
    }
    base = dict(os.environ) if "V" in options else {}
    for item in (options.get("v") or "").split(","):
        if item:
            key, sep, value = item.partition("=")
            base[key] = value if sep else os.environ.get(key, "")
    env = fs.job_env(
        base,
        **pbs_o,
        PBS_JOBID=jobid,
        PBS_JOBNAME=name,
        PBS_QUEUE=queue,
        PBS_ENVIRONMENT="PBS_BATCH",
        PBS_NODEFILE=nodefile,
        PBS_JOBDIR=fs.HOME,
        PBS_TASKNUM="1",
        PBS_NODENUM="0",
        ENVIRONMENT="BATCH",
        PBS_NUM_NODES=str(node_count),
        PBS_NUM_PPN=str(ppn),
        PBS_NP=str(node_count * ppn),
    )
    job = {
        "n": n,
        "jobid": jobid,
        "name": name,
        "queue": queue,
        "submit_dir": submit_dir,
        "cwd": cwd,
        "argv": [shell, "{script}"],
        "env": env,
        "limit": limit,
        "resources": resources,
        "out": out_path,
        "err": err_path,
        "join": join,
        "submit_args": submit_args,
        "variables": pbs_o,
        "run_out": err_path if join == "eo" else out_path,
        "run_err": "&1" if join in ("oe", "eo") else err_path,
        "kill_plan": KILL_PLAN,
        "limit_plan": KILL_PLAN,
        "flavor": flavor(),
    }
    fs.submit(st, job, text)
    print(jobid)
    return 0


def _collect(options: dict[str, Any], opts: list[tuple[str, str]]) -> None:
    for flag, value in opts:
        key = flag.lstrip("-")
        if key == "l":
            options["l"].append(value)
        elif key == "V":
            options["V"] = True
        else:
            options[key] = value


# ------------------------------------------------------------------------------------------------ qstat


def state_letter(job: dict[str, Any], fl: str) -> str:
    if job["state"] in ("queued",):
        return "Q"
    if job["state"] in ("held", "error"):
        return "H"
    if job["state"] == "running":
        return "E" if job.get("killed") or job.get("exit_status") is not None or job.get("signal") else "R"
    return "F" if fl == "pro" else "C"


def exit_status(job: dict[str, Any]) -> int | None:
    if job["state"] != "ended" or not job.get("started"):
        return None  # deleted before it ran: no exit status
    if job.get("signal"):
        return 256 + job["signal"]  # killed by PBS (qdel, walltime): 256 + signal
    return job.get("exit_status")


def _ctime(t: float | None) -> str:
    return time.ctime(t or time.time())


def full_attrs(job: dict[str, Any], fl: str) -> list[tuple[str, str]]:
    letter = state_letter(job, fl)
    a: list[tuple[str, str]] = [("Job_Name", job["name"]), ("Job_Owner", f"{job['user']}@{fs.HOST}")]
    if job.get("started"):
        wall = fs.hms(fs.elapsed(job))
        a += [
            ("resources_used.cpupercent", "0"),
            ("resources_used.cput", "00:00:00"),
            ("resources_used.mem", "0kb"),
            ("resources_used.ncpus", "1"),
            ("resources_used.vmem", "0kb"),
            ("resources_used.walltime", wall),
        ]
    a += [
        ("job_state", letter),
        ("queue", job["queue"]),
        ("server", fs.HOST),
        ("Checkpoint", "u"),
        ("ctime", _ctime(job["submitted"])),
        ("Error_Path", f"{fs.HOST}:{job['err']}"),
    ]
    if job.get("started"):
        a.append(("exec_host", f"{fs.HOST}/0"))
        if fl == "pro":
            a.append(("exec_vnode", f"({fs.HOST}:ncpus=1)"))
    a += [
        ("Hold_Types", "n"),
        ("Join_Path", job["join"]),
        ("Keep_Files", "n"),
        ("Mail_Points", "a"),
        ("mtime", _ctime(job.get("ended") or job.get("started") or job["submitted"])),
        ("Output_Path", f"{fs.HOST}:{job['out']}"),
        ("Priority", "0"),
        ("qtime", _ctime(job["submitted"])),
        ("Rerunable", "True"),
    ]
    for key, value in sorted(job["resources"].items()):
        a.append((f"Resource_List.{key}", value))
    if job.get("started"):
        a += [("stime", _ctime(job["started"])), ("session_id", str(job.get("pid") or 0))]
        if fl == "pro":
            a.append(("jobdir", fs.HOME))
    a.append(("Variable_List", ",".join(f"{k}={v}" for k, v in job["variables"].items())))
    if job.get("started"):
        when = time.strftime("%a %b %d at %H:%M", time.localtime(job["started"]))
        done = " and finished" if letter in ("F", "C") else ""
        a.append(("comment", f"Job run at {when} on ({fs.HOST}:ncpus=1){done}"))
    elif letter in ("F", "C"):
        a.append(("comment", "Job deleted"))
    a.append(("etime", _ctime(job["submitted"])))
    if job.get("started"):
        a.append(("run_count", "1"))
    code = exit_status(job)
    if code is not None:
        a.append(("Exit_status" if fl == "pro" else "exit_status", str(code)))
    a.append(("Submit_arguments" if fl == "pro" else "submit_args", job["submit_args"]))
    if fl == "pro":
        a.append(("project", "_pbs_project_default"))
    else:
        a += [
            ("euser", job["user"]),
            ("queue_type", "E"),
            ("init_work_dir", job["submit_dir"]),
            ("submit_host", fs.HOST),
        ]
        if job.get("started"):
            a.append(("start_time", str(int(job["started"]))))
        if letter == "C":
            a.append(("comp_time", str(int(job.get("ended") or time.time()))))
    return a


def format_full(job: dict[str, Any], fl: str) -> str:
    lines = [f"Job Id: {job['jobid']}"]
    for key, value in full_attrs(job, fl):
        line = f"    {key} = {value}"
        if fl == "pro":  # PBS Pro wraps long values: continuation lines start with a tab
            first, rest = line[:79], line[79:]
            lines.append(first)
            while rest:
                lines.append("\t" + rest[:78])
                rest = rest[78:]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n\n"


def format_xml(jobs: list[dict[str, Any]]) -> str:
    from xml.sax.saxutils import escape

    parts = ["<Data>"]
    for job in jobs:
        parts.append(f"<Job><Job_Id>{escape(job['jobid'])}</Job_Id>")
        for key, value in full_attrs(job, "torque"):
            tag = key.replace(".", "_")
            parts.append(f"<{tag}>{escape(value)}</{tag}>")
        parts.append("</Job>")
    parts.append("</Data>")
    return "".join(parts) + "\n"


def format_table(jobs: list[dict[str, Any]], fl: str) -> str:
    if not jobs:
        return ""
    lines = [
        "Job id            Name             User              Time Use S Queue",
        "----------------  ---------------- ----------------  -------- - -----",
    ]
    for job in jobs:
        used = fs.hms(0) if job.get("started") else "0"
        lines.append(
            f"{job['jobid'][:16]:<17} {job['name'][:16]:<16} {job['user'][:16]:<16}  {used:>8} "
            f"{state_letter(job, fl)} {job['queue']}"
        )
    return "\n".join(lines) + "\n"


def qstat(argv: list[str]) -> int:
    fl = flavor()
    if "--version" in argv:
        print(VERSION[fl])
        return 0
    try:
        opts, args = getopt.getopt(argv, "afxHFQBu:wnst1:")
    except getopt.GetoptError as e:
        fs.err(f"qstat: {e.msg}\nusage: qstat [-f] [-x] [-w] [job_identifier... | destination...]")
        return 2
    flags = {f.lstrip("-") for f, _ in opts}
    if fl == "pro" and "F" in flags:
        fs.err("qstat: -F json is not supported by this fake")
        return 2
    history = fl == "pro" and ("x" in flags or "H" in flags)
    xml = fl == "torque" and "x" in flags
    full = "f" in flags or xml
    st = store()
    rc = 0
    jobs: list[dict[str, Any]] = []
    if args:
        for ident in args:
            job = find(st, ident)
            if job is None:
                fs.err(f"qstat: Unknown Job Id {ident}" if fl == "pro" else f"qstat: Unknown Job Id Error {ident}")
                rc = 153  # PBSE_UNKJOBID 15001 & 0xff
                continue
            if fl == "pro" and job["state"] == "ended" and not history:
                fs.err(f"qstat: {job['jobid']} Job has finished, use -x or -H to obtain historical job information")
                rc = 35  # PBSE_HISTJOBID 15139 & 0xff
                continue
            jobs.append(job)
    else:
        for n in st.numbers():
            job = find(st, str(n))
            if job is None or (fl == "pro" and job["state"] == "ended" and not history):
                continue
            if "H" in flags and job["state"] != "ended":
                continue
            jobs.append(job)
    if xml:
        if jobs:
            sys.stdout.write(format_xml(jobs))
    elif full:
        sys.stdout.write("".join(format_full(j, fl) for j in jobs))
    else:
        sys.stdout.write(format_table(jobs, fl))
    return rc


# ------------------------------------------------------------------------------------------------ qdel


def qdel(argv: list[str]) -> int:
    try:
        _opts, args = getopt.getopt(argv, "Wx:")
    except getopt.GetoptError as e:
        fs.err(f"qdel: {e.msg}\nusage: qdel [-W delay|force] [-x] job_identifier...")
        return 2
    if not args:
        fs.err("usage: qdel [-W delay|force] [-x] job_identifier...")
        return 2
    fl, st, rc = flavor(), store(), 0
    for ident in args:
        job = find(st, ident)
        if job is None:
            fs.err(f"qdel: Unknown Job Id {ident}")
            rc = 153
            continue
        if job["state"] == "ended":
            if fl == "pro":
                fs.err(f"qdel: Job has finished {ident}")
                rc = 35
            else:
                fs.err(f"qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE {ident}")
                rc = 168
            continue
        fs.kill(st, job["n"], KILL_PLAN)
    return rc


COMMANDS = {"qsub": qsub, "qstat": qstat, "qdel": qdel}


def main() -> int:
    name = os.path.basename(sys.argv[0])
    return COMMANDS[name](sys.argv[1:])
