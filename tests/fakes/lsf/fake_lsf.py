"""Fake IBM Spectrum LSF: ``bsub`` (script on stdin or a command), ``bjobs`` (default table, ``-o`` fields,
``-a``/``-d``/``-noheader``/``-w``), ``bkill`` with the output of the real tools.

As in LSF: the job runs in the submission directory (or ``-cwd``) with the submitter's environment plus ``LSB_*``;
``#BSUB`` lines are read up to the first command line; ``%J``/``%I`` in ``-o``/``-e`` are expanded. Output is
spooled while the job runs and written at the end: the ``-o`` file (appended; ``-oo`` overwrites) gets LSF's job
report followed by the job's standard output, the ``-e`` file its standard error; without ``-o`` the output is
"mailed" (dropped). Finished jobs stay listed (DONE/EXIT) for ``FAKE_LSF_CLEAN_PERIOD`` seconds (default 3600).
``bkill`` sends SIGINT, SIGTERM, SIGKILL (``FAKE_LSF_TERMINATE_INTERVAL`` apart, default 1 s); such a job ends
EXIT with exit code 128 + signal (130), and ``-W`` run limits end a job with SIGUSR2 (140) like TERM_RUNLIMIT.
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

SCHED = "lsf"
QUEUES = ["normal", "debug", "batch"]
CLUSTER = "airjobs"
ARG_OPTS = {
    "J",
    "o",
    "oo",
    "e",
    "eo",
    "q",
    "W",
    "We",
    "n",
    "R",
    "M",
    "P",
    "G",
    "cwd",
    "i",
    "m",
    "w",
    "E",
    "Ep",
    "app",
    "sla",
    "u",
    "env",
    "L",
    "g",
    "Jd",
    "U",
    "b",
    "t",
    "k",
    "a",
    "ext",
    "gpu",
    "C",
    "c",
    "D",
    "F",
    "S",
    "v",
    "p",
    "s",
    "sp",
    "T",
    "f",
    "data",
    "outdir",
    "rnc",
    "Lp",
    "mig",
    "x_",
}
FLAG_OPTS = {"B", "N", "x", "K", "I", "Ip", "Is", "r", "rn", "H", "Ne", "ti", "hl", "h", "V", "ar"}


def store() -> fs.Store:
    return fs.Store(SCHED, first_id=100)


def interval() -> float:
    return fs.float_setting(SCHED, "terminate_interval", 1.0)


def kill_plan() -> list[list]:
    return [[0, "INT"], [interval(), "TERM"], [2 * interval(), "KILL"]]


class Refused(Exception):
    pass


def _parse(words: list[str], options: dict[str, Any]) -> list[str]:
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("-") or w == "-":
            return words[i:]
        key = w[1:]
        if key in FLAG_OPTS:
            options[key] = True
            i += 1
            continue
        if key not in ARG_OPTS:
            raise Refused(f"bsub: illegal option -- {key}\nUsage: bsub [options] command [arguments]")
        if i + 1 >= len(words):
            raise Refused(f"bsub: option requires an argument -- {key}")
        options[key] = words[i + 1]
        i += 2
    return []


def _minutes(value: str) -> int | None:
    m = re.fullmatch(r"(?:(\d+):)?(\d+)(?:/\S+)?", value.strip())
    if not m:
        return None
    return int(m.group(1) or 0) * 60 + int(m.group(2))


def bsub(argv: list[str]) -> int:
    options: dict[str, Any] = {}
    try:
        command = _parse(argv, options)
    except Refused as e:
        fs.err(str(e))
        return 255
    if command:
        text = "#!/bin/sh\n" + " ".join(shlex.quote(w) for w in command) + "\n"
        default_name = " ".join(command)
    else:
        if sys.stdin.isatty():
            fs.err("bsub: interactive job-file prompt (bsub>) is not faked; give a command or a script on stdin")
            return 255
        text = sys.stdin.read()
        first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
        default_name = first or "STDIN"
    directives: dict[str, Any] = {}
    try:
        for words in fs.directive_args(text, "#BSUB"):
            _parse(words, directives)
    except Refused as e:
        fs.err(str(e))
        return 255
    o = {**directives, **options}
    st = store()
    queues = st.queues(QUEUES)
    if o.get("q") and o["q"] not in queues:
        fs.err(f"{o['q']}: No such queue. Job not submitted.")
        return 255
    queue = o.get("q") or queues[0]
    limit = None
    if "W" in o:
        minutes = _minutes(o["W"])
        if minutes is None:
            fs.err(f"{o['W']}: Bad RUNLIMIT specification. Job not submitted.")
            return 255
        limit = minutes * 60
    slots = 1
    if "n" in o:
        if not re.fullmatch(r"\d+(,\d+)?", o["n"]):
            fs.err(f"{o['n']}: Bad argument for option -n. Job not submitted.")
            return 255
        slots = int(o["n"].split(",")[0])
    name = o.get("J") or default_name
    submit_dir = os.getcwd()
    cwd = os.path.join(submit_dir, o["cwd"]) if o.get("cwd") else submit_dir
    if not os.path.isdir(cwd):
        fs.err(f"{cwd}: No such file or directory. Job not submitted.")
        return 255
    n = st.next_id()

    def path_of(key: str) -> tuple[str | None, bool]:
        for k, append in ((key + "o", False), (key, True)):  # -oo/-eo overwrite, -o/-e append
            value = o.get(k)
            if value:
                value = value.replace("%J", str(n)).replace("%I", "0")
                path = os.path.join(cwd, value)
                if os.path.isdir(path) or value.endswith("/"):
                    path = os.path.join(path, f"{n}.{'out' if key == 'o' else 'err'}")
                return os.path.normpath(path), append
        return None, True

    out_path, out_append = path_of("o")
    err_path, err_append = path_of("e")
    env = fs.job_env(
        dict(os.environ),
        LSB_JOBID=n,
        LSB_JOBNAME=name,
        LSB_QUEUE=queue,
        LS_SUBCWD=submit_dir,
        LSB_SUBCWD=submit_dir,
        LSB_HOSTS=" ".join([fs.HOST] * slots),
        LSB_MCPU_HOSTS=f"{fs.HOST} {slots}",
        LSB_DJOB_NUMPROC=slots,
        LSB_MAX_NUM_PROCESSORS=slots,
        LSB_JOBINDEX=0,
        LSB_JOBFILENAME=str(st.spool / f"{n}.script"),
        LSB_OUTPUTFILE=out_path or "",
        LSB_ERRORFILE=err_path or "",
        LS_JOBPID="",
        LSFUSER=fs.USER,
    )
    spool_out, spool_err = str(st.spool / f"{n}.out"), str(st.spool / f"{n}.err")
    job = {
        "n": n,
        "jobid": str(n),
        "name": name,
        "queue": queue,
        "submit_dir": submit_dir,
        "cwd": cwd,
        "argv": [*fs.interpreter(text, "/bin/sh"), "{script}"],
        "env": env,
        "limit": limit,
        "slots": slots,
        "out": out_path,
        "err": err_path,
        "out_append": out_append,
        "err_append": err_append,
        "run_out": spool_out,
        "run_err": spool_err if err_path else "&1",
        "script_text": text,
        "kill_plan": kill_plan(),
        "limit_plan": [[0, "USR2"], [interval(), "KILL"]],
        "hooks": os.path.abspath(__file__),
        "default_queue": "q" not in o,
    }
    fs.submit(st, job, text)
    where = "default queue" if "q" not in o else "queue"
    print(f"Job <{n}> is submitted to {where} <{queue}>.")
    return 0


def _fmt(t: float | None) -> str:
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t or time.time()))


def finish(st: fs.Store, job: dict[str, Any] | None) -> None:
    """The runner's last step: the job report and the spooled output into the -o/-e files."""
    if job is None:
        return
    spool_out, spool_err = job["run_out"], job["run_err"]
    stdout = _read(spool_out)
    if job.get("err") and spool_err != "&1":
        with open(job["err"], "ab" if job.get("err_append") else "wb") as f:
            f.write(_read(spool_err))
    if not job.get("out"):
        return
    stat = stat_of(dict(job, state="ended"))
    if stat == "DONE":
        outcome, subject = "Successfully completed.", "Done"
    elif job.get("signal"):
        import signal as _s

        term = (
            "TERM_OWNER: job killed by owner.\n"
            if job.get("killed") and job.get("reason") != "walltime"
            else "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\n"
            if job.get("reason") == "walltime"
            else ""
        )
        outcome = f"{term}Exited with signal termination: {_s.Signals(job['signal']).name[3:].title()}."
        subject = "Exited"
    else:
        outcome, subject = f"Exited with exit code {job.get('exit_status')}.", "Exited"
    script = job.get("script_text", "")
    turnaround = int((job.get("ended") or time.time()) - job["submitted"])
    report = (
        f"Sender: LSF System <lsfadmin@{fs.HOST}>\n"
        f"Subject: Job {job['n']}: <{job['name']}> in cluster <{CLUSTER}> {subject}\n\n"
        f"Job <{job['name']}> was submitted from host <{fs.HOST}> by user <{job['user']}> in cluster <{CLUSTER}> "
        f"at {_fmt(job['submitted'])}\n"
        f"Job was executed on host(s) <{fs.HOST}>, in queue <{job['queue']}>, as user <{job['user']}> in cluster "
        f"<{CLUSTER}> at {_fmt(job.get('started'))}\n"
        f"<{fs.HOME}> was used as the home directory.\n"
        f"<{job['cwd']}> was used as the working directory.\n"
        f"Started at {_fmt(job.get('started'))}\n"
        f"Terminated at {_fmt(job.get('ended'))}\n"
        f"Results reported at {_fmt(time.time())}\n\n"
        "Your job looked like:\n\n"
        "------------------------------------------------------------\n"
        "# LSBATCH: User input\n"
        f"{script}{'' if script.endswith(chr(10)) else chr(10)}"
        "------------------------------------------------------------\n\n"
        f"{outcome}\n\n"
        "Resource usage summary:\n\n"
        "    CPU time :                                   0.01 sec.\n"
        "    Max Memory :                                 -\n"
        "    Average Memory :                             -\n"
        "    Total Requested Memory :                     -\n"
        "    Delta Memory :                               -\n"
        "    Max Swap :                                   -\n"
        "    Max Processes :                              -\n"
        "    Max Threads :                                -\n"
        f"    Run time :                                   {int(fs.elapsed(job))} sec.\n"
        f"    Turnaround time :                            {turnaround} sec.\n\n"
        "The output (if any) follows:\n\n"
    )
    tail = f"\n\nPS:\n\nRead file <{job['err']}> for stderr output of this job.\n\n" if job.get("err") else ""
    with open(job["out"], "ab" if job.get("out_append") else "wb") as f:
        f.write(b"\n------------------------------------------------------------\n")
        f.write(report.encode() + stdout + tail.encode())


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


# ------------------------------------------------------------------------------------------------ bjobs


def stat_of(job: dict[str, Any]) -> str:
    s = job["state"]
    if s == "queued":
        return "PEND"
    if s in ("held", "error"):
        return "PSUSP"
    if s == "running":
        return "RUN"
    if job.get("exit_status") == 0 and not job.get("signal") and not job.get("lost"):
        return "DONE"
    return "EXIT"


def exit_code(job: dict[str, Any]) -> str:
    if stat_of(job) != "EXIT":
        return "-"
    if job.get("signal"):
        return str(128 + job["signal"])
    return "-" if job.get("exit_status") is None else str(job["exit_status"])


def _t(t: float | None) -> str:
    return time.strftime("%b %e %H:%M", time.localtime(t)) if t else "-"


FIELDS = {
    "jobid": ("JOBID", lambda j: str(j["n"])),
    "id": ("JOBID", lambda j: str(j["n"])),
    "stat": ("STAT", stat_of),
    "exit_code": ("EXIT_CODE", exit_code),
    "job_name": ("JOB_NAME", lambda j: j["name"]),
    "name": ("JOB_NAME", lambda j: j["name"]),
    "queue": ("QUEUE", lambda j: j["queue"]),
    "user": ("USER", lambda j: j["user"]),
    "from_host": ("FROM_HOST", lambda j: fs.HOST),
    "exec_host": ("EXEC_HOST", lambda j: fs.HOST if j.get("started") else "-"),
    "submit_time": ("SUBMIT_TIME", lambda j: _t(j["submitted"])),
    "start_time": ("START_TIME", lambda j: _t(j.get("started"))),
    "finish_time": ("FINISH_TIME", lambda j: _t(j.get("ended")) if j["state"] == "ended" else "-"),
    "pids": ("PIDS", lambda j: str(j.get("pid") or "-") if j["state"] == "running" else "-"),
    "cwd": ("CWD", lambda j: j["cwd"]),
    "output_file": ("OUTPUT_FILE", lambda j: j.get("out") or "-"),
    "error_file": ("ERROR_FILE", lambda j: j.get("err") or "-"),
    "slots": ("SLOTS", lambda j: str(j.get("slots", 1))),
    "nreq_slot": ("NREQ_SLOT", lambda j: str(j.get("slots", 1))),
    "exit_reason": (
        "EXIT_REASON",
        lambda j: (
            "-"
            if not j.get("killed") or stat_of(j) != "EXIT"
            else "TERM_RUNLIMIT: job killed after reaching LSF run time limit"
            if j.get("reason") == "walltime"
            else "TERM_OWNER: job killed by owner"
        ),
    ),
}


def visible(job: dict[str, Any], explicit: bool, flags: set[str]) -> bool:
    if job["state"] != "ended":
        return "d" not in flags
    clean = fs.float_setting(SCHED, "clean_period", 3600)
    if time.time() - (job.get("ended") or 0) > clean:
        return False
    return explicit or "a" in flags or "d" in flags


def bjobs(argv: list[str]) -> int:
    flags: set[str] = set()
    fmt, user, name, ids, i = None, fs.USER, None, [], 0
    while i < len(argv):
        a = argv[i]
        if a in ("-a", "-d", "-p", "-r", "-s", "-w", "-W", "-noheader", "-A", "-X"):
            flags.add(a[1:])
        elif a in ("-o", "-u", "-J", "-q", "-m", "-P", "-g") and i + 1 < len(argv):
            val = argv[i + 1]
            if a == "-o":
                fmt = val
            elif a == "-u":
                user = val
            elif a == "-J":
                name = val
            i += 1
        elif a.startswith("-"):
            fs.err(
                f"bjobs: illegal option -- {a[1:]}\nUsage: bjobs [-a] [-d] [-p] [-r] [-w] [-noheader] "
                '[-o "field_name ..."] [-u user_name|-u all] [-J job_name] [jobId ...]'
            )
            return 255
        else:
            ids.append(a)
        i += 1
    columns: list[tuple[str, Any, int | None]] = []
    delimiter = None
    if fmt is not None:
        for word in shlex.split(fmt):
            if word.lower().startswith("delimiter="):
                delimiter = word.split("=", 1)[1]
                continue
            field, _, width = word.partition(":")
            spec = FIELDS.get(field.lower())
            if spec is None:
                fs.err(f"{field}: Illegal field name. Specify a valid field name for -o")
                return 255
            w = re.match(r"-?\d+", width)
            columns.append((spec[0], spec[1], int(w.group()) if w else None))
    st = store()
    rc, jobs = 0, []
    if ids:
        for ident in ids:
            m = re.fullmatch(r"(\d+)(?:\[\d+\])?", ident)
            job = st.load(m.group(1)) if m else None
            job = fs.view(job) if job else None
            if job is None or not visible(job, True, flags):
                fs.err(f"Job <{ident}> is not found")
                rc = 255
                continue
            jobs.append(job)
    else:
        for job in st.all():
            if (
                (user in ("all", job["user"]))
                and (name is None or job["name"] == name)
                and visible(job, False, flags)
                and not ("p" in flags and job["state"] != "queued")
                and not ("r" in flags and job["state"] != "running")
            ):
                jobs.append(job)
        if not jobs:
            fs.err("No job found" if flags & {"a", "d"} else "No unfinished job found")
            return 255
    if columns:
        out = []
        if "noheader" not in flags:
            out.append(_row([c[0] for c in columns], columns, delimiter))
        for job in jobs:
            out.append(_row([c[1](job) for c in columns], columns, delimiter))
        sys.stdout.write("".join(line + "\n" for line in out))
    elif jobs:
        wide = "w" in flags
        lines = (
            []
            if "noheader" in flags
            else ["JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME"]
        )
        for j in jobs:
            jn = j["name"] if wide or len(j["name"]) <= 10 else "*" + j["name"][-9:]
            ex = fs.HOST if j.get("started") else ""
            lines.append(
                f"{j['n']:<7} {j['user'][:7]:<7} {stat_of(j):<5} {j['queue'][:10]:<10} {fs.HOST[:11]:<11} "
                f"{ex[:11]:<11} {jn:<10} {_t(j['submitted'])}"
            )
        sys.stdout.write("".join(line + "\n" for line in lines))
    return rc


def _row(values: list[str], columns: list, delimiter: str | None) -> str:
    if delimiter is not None:
        return delimiter.join(values)
    cells = []
    for value, (_, _, width) in zip(values, columns, strict=False):
        w = abs(width) if width else max(len(value), 10)
        cells.append(value[:w].ljust(w))
    return " ".join(cells).rstrip()


# ------------------------------------------------------------------------------------------------ bkill


def bkill(argv: list[str]) -> int:
    ids = [a for a in argv if not a.startswith("-")]
    if not ids:
        fs.err("Usage: bkill [-s signal_value] jobId ...")
        return 255
    st, rc = store(), 0
    for ident in ids:
        m = re.fullmatch(r"(\d+)(?:\[\d+\])?", ident)
        job = st.load(m.group(1)) if m else None
        job = fs.view(job) if job else None
        if job is None or not visible(job, True, set()):
            fs.err(f"Job <{ident}>: No matching job found")
            rc = 255
            continue
        if job["state"] == "ended":
            fs.err(f"Job <{ident}>: Job has already finished")
            rc = 255
            continue
        fs.kill(st, job["n"], kill_plan())
        print(f"Job <{ident}> is being terminated")
    return rc


COMMANDS = {"bsub": bsub, "bjobs": bjobs, "bkill": bkill}


def main() -> int:
    return COMMANDS[os.path.basename(sys.argv[0])](sys.argv[1:])
