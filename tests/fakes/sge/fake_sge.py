"""Fake (Son of) Grid Engine: ``qsub``, ``qstat`` (plain, ``-xml``, ``-j``), ``qdel``, ``qacct -j`` with the output
of the real tools.

As in Grid Engine: ``qstat`` lists only the user's jobs still in the system (pending ``qw``, running ``r``, being
deleted ``dr``, error ``Eqw``); a finished job is simply gone (``qacct -j`` has its exit status). With ``-cwd`` the
job runs in the submission directory, else in ``$HOME``; relative ``-o``/``-e`` paths are relative to that
directory, ``$JOB_ID``/``$JOB_NAME``/``$USER``/``$HOME``/``$HOSTNAME`` in them are expanded, and output is appended.
An output file that cannot be opened puts the job in the error state ``Eqw`` (as the real execd does).
``-q`` names are checked against the queue list, ``-pe`` against ``smp mpi orte`` (``FAKE_SGE_PES``).
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import fakesched as fs

SCHED = "sge"
QUEUES = ["all.q", "normal", "debug", "batch"]
XSD = "http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd"
KILL_PLAN = [[0, "KILL"]]  # qdel: SIGKILL (no -notify)
LIMIT_PLAN = [[0, "KILL"]]  # h_rt exceeded: SIGKILL
ARG_OPTS = {
    "N",
    "o",
    "e",
    "S",
    "wd",
    "q",
    "l",
    "pe",
    "j",
    "v",
    "b",
    "hold_jid",
    "M",
    "m",
    "A",
    "P",
    "t",
    "r",
    "a",
    "p",
    "ac",
    "c",
    "ckpt",
    "dl",
    "i",
    "js",
    "masterq",
    "R",
    "sc",
    "shell",
    "soft",
    "hard",
    "tc",
    "now",
    "w",
}
FLAG_OPTS = {"cwd", "V", "terse", "h", "notify", "sync", "verify", "clear"}
RESOURCES = {
    "h_rt",
    "s_rt",
    "h_vmem",
    "s_vmem",
    "mem_free",
    "h_cpu",
    "s_cpu",
    "h_data",
    "h_stack",
    "arch",
    "hostname",
    "exclusive",
    "virtual_free",
    "h_fsize",
    "slots",
    "num_proc",
    "mem_total",
    "gpu",
}


def store() -> fs.Store:
    return fs.Store(SCHED, first_id=100)


class Refused(Exception):
    pass


def _parse(words: list[str], options: dict[str, Any]) -> list[str]:
    """Options into ``options`` (lists for -l, -q, -v); returns the remaining words (script and arguments)."""
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
            raise Refused(f'qsub: ERROR! invalid option argument "{w}"\nUsage: qsub [options] [script | -- [args]]')
        if i + 1 >= len(words):
            raise Refused(f"qsub: ERROR! {w} option must have argument")
        value = words[i + 1]
        if key == "pe":  # -pe name slots
            if i + 2 >= len(words):
                raise Refused("qsub: ERROR! -pe option must have two arguments")
            options["pe"] = (value, words[i + 2])
            i += 3
            continue
        if key in ("l", "q", "v"):
            options.setdefault(key, []).append(value)
        else:
            options[key] = value
        i += 2
    return []


def qsub(argv: list[str]) -> int:
    options: dict[str, Any] = {}
    try:
        rest = _parse(argv, options)
    except Refused as e:
        fs.err(str(e))
        return 1
    if rest and rest[0] != "-":
        try:
            text = open(rest[0]).read()
        except OSError:
            fs.err(f"Unable to read script file because of error: error opening {rest[0]}: No such file or directory")
            return 1
        script_name, script_args = os.path.basename(rest[0]), rest[1:]
    else:
        text, script_name, script_args = sys.stdin.read(), "STDIN", []
    directives: dict[str, Any] = {}
    try:
        for words in fs.directive_args(text, "#$", whole_script=True):
            _parse(words, directives)
    except Refused as e:
        fs.err(str(e))
        return 1
    for key, value in options.items():  # the command line wins; list options add up
        if isinstance(value, list):
            directives.setdefault(key, []).extend(value)
        else:
            directives[key] = value
    o = directives
    st = store()
    queues = st.queues(QUEUES)
    for spec in o.get("q", []):
        for q in spec.split(","):
            if q.split("@")[0] not in queues:
                fs.err(f'Unable to run job: Job was rejected because job requests unknown queue "{q}".\nExiting.')
                return 1
    if "pe" in o:
        pes = fs.setting(SCHED, "pes", "smp mpi orte").split()
        if o["pe"][0] not in pes:
            fs.err(
                f'Unable to run job: job rejected: the requested parallel environment "{o["pe"][0]}" does not '
                "exist.\nExiting."
            )
            return 1
    resources: dict[str, str] = {}
    for spec in o.get("l", []):
        for item in spec.split(","):
            key, _, value = item.partition("=")
            if key not in RESOURCES:
                fs.err(f'Unable to run job: unknown resource "{key}".\nExiting.')
                return 1
            resources[key] = value
    limit = None
    if "h_rt" in resources:
        limit = fs.parse_seconds(resources["h_rt"])
        if limit is None:
            fs.err(f'Unable to run job: unable to parse time value "{resources["h_rt"]}".\nExiting.')
            return 1
    name = o.get("N") or script_name
    if re.search(r"[\s/:@\\*?]", name) or name[:1].isdigit():
        fs.err(
            f'Unable to run job: job rejected: "{name}" is not a valid object name (cannot start with a digit)'
            if name[:1].isdigit()
            else f'Unable to run job: job rejected: "{name}" is not a valid object name.'
        )
        return 1
    submit_dir = os.getcwd()
    cwd = o.get("wd") or (submit_dir if o.get("cwd") else fs.HOME)
    n = st.next_id()

    def path_of(value: str | None, ext: str) -> str:
        value = re.sub(r"^[A-Za-z0-9._-]*:", "", value or "")
        for var, v in (
            ("JOB_ID", str(n)),
            ("JOB_NAME", name),
            ("USER", fs.USER),
            ("HOME", fs.HOME),
            ("HOSTNAME", fs.HOST),
            ("TASK_ID", "undefined"),
        ):
            value = value.replace("$" + var, v)
        path = os.path.join(cwd, value) if value else cwd
        if os.path.isdir(path):
            path = os.path.join(path, f"{name}.{ext}{n}")
        return os.path.normpath(path)

    out_path, err_path = path_of(o.get("o"), "o"), path_of(o.get("e"), "e")
    join = str(o.get("j", "n")).lower() in ("y", "yes", "true")
    shell = o.get("S") or o.get("shell") or "/bin/sh"
    base = dict(os.environ) if o.get("V") else {}
    for spec in o.get("v", []):
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            base[key] = value if sep else os.environ.get(key, "")
    queue = (o.get("q") or [queues[0]])[0].split(",")[0].split("@")[0]
    env = fs.job_env(
        base,
        JOB_ID=n,
        JOB_NAME=name,
        QUEUE=queue,
        SGE_O_WORKDIR=submit_dir,
        SGE_O_HOME=fs.HOME,
        SGE_O_PATH=os.environ.get("PATH", ""),
        SGE_O_SHELL=os.environ.get("SHELL", "/bin/sh"),
        SGE_O_HOST=fs.HOST,
        SGE_O_LOGNAME=fs.USER,
        SGE_STDOUT_PATH=out_path,
        SGE_STDERR_PATH=out_path if join else err_path,
        NSLOTS=o["pe"][1] if "pe" in o else 1,
        SGE_TASK_ID="undefined",
        ENVIRONMENT="BATCH",
        REQUEST=name,
        HOSTNAME=fs.HOST,
        SHELL=shell,
    )
    binary = str(o.get("b", "n")).lower() in ("y", "yes")
    job = {
        "n": n,
        "jobid": str(n),
        "name": name,
        "queue": queue,
        "submit_dir": submit_dir,
        "cwd": cwd,
        "argv": (rest if binary else [shell, "{script}", *script_args]),
        "env": env,
        "limit": limit,
        "out": out_path,
        "err": err_path,
        "run_out": out_path,
        "run_err": "&1" if join else err_path,
        "append": True,
        "open_error": "error",
        "kill_plan": KILL_PLAN,
        "limit_plan": LIMIT_PLAN,
        "slots": int(o["pe"][1]) if "pe" in o else 1,
        "resources": resources,
    }
    fs.submit(st, job, None if binary else text)
    print(n if o.get("terse") else f'Your job {n} ("{name}") has been submitted')
    return 0


# ------------------------------------------------------------------------------------------------ qstat


def state_code(job: dict[str, Any]) -> str | None:
    """qstat's state string; None once the job has left the system."""
    s = job["state"]
    if s in ("queued", "held", "error") and job.get("killed"):
        return None  # qdel of a job that never ran: gone at once
    if s == "queued":
        return "qw"
    if s == "error":
        return "Eqw"
    if s == "held":
        return "hqw"
    if s == "running":
        return "dr" if job.get("killed") else "r"
    return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def live_jobs(st: fs.Store, user: str | None = fs.USER) -> list[dict[str, Any]]:
    return [j for j in st.all() if state_code(j) and (user in (None, "*") or j["user"] == user)]


def format_xml(jobs: list[dict[str, Any]]) -> str:
    running = [j for j in jobs if j["state"] == "running"]
    pending = [j for j in jobs if j["state"] != "running"]
    lines = ["<?xml version='1.0'?>", f'<job_info  xmlns:xsd="{XSD}">', "  <queue_info>"]
    for j in running:
        lines += [
            '    <job_list state="running">',
            f"      <JB_job_number>{j['n']}</JB_job_number>",
            "      <JAT_prio>0.55500</JAT_prio>",
            f"      <JB_name>{escape(j['name'])}</JB_name>",
            f"      <JB_owner>{escape(j['user'])}</JB_owner>",
            f"      <state>{state_code(j)}</state>",
            f"      <JAT_start_time>{_iso(j['started'])}</JAT_start_time>",
            f"      <queue_name>{escape(j['queue'])}@{fs.HOST}</queue_name>",
            f"      <slots>{j.get('slots', 1)}</slots>",
            "    </job_list>",
        ]
    lines += ["  </queue_info>", "  <job_info>"]
    for j in pending:
        lines += [
            '    <job_list state="pending">',
            f"      <JB_job_number>{j['n']}</JB_job_number>",
            "      <JAT_prio>0.00000</JAT_prio>",
            f"      <JB_name>{escape(j['name'])}</JB_name>",
            f"      <JB_owner>{escape(j['user'])}</JB_owner>",
            f"      <state>{state_code(j)}</state>",
            f"      <JB_submission_time>{_iso(j['submitted'])}</JB_submission_time>",
            "      <queue_name></queue_name>",
            f"      <slots>{j.get('slots', 1)}</slots>",
            "    </job_list>",
        ]
    lines += ["  </job_info>", "</job_info>"]
    return "\n".join(lines) + "\n"


def format_table(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return ""
    lines = [
        "job-ID  prior   name       user         state submit/start at     queue                          "
        "slots ja-task-ID ",
        "-" * 113,
    ]
    for j in jobs:
        running = j["state"] == "running"
        when = time.strftime("%m/%d/%Y %H:%M:%S", time.localtime(j["started"] if running else j["submitted"]))
        queue = f"{j['queue']}@{fs.HOST}" if running else ""
        prio = "0.55500" if running else "0.00000"
        lines.append(
            f"{j['n']:>7} {prio} {j['name'][:10]:<10} {j['user'][:12]:<12} {state_code(j):<5} {when} "
            f"{queue:<30} {j.get('slots', 1):>5}        "
        )
    return "\n".join(lines) + "\n"


def format_detail(j: dict[str, Any]) -> str:
    rows = [
        ("job_number", str(j["n"])),
        ("exec_file", f"job_scripts/{j['n']}"),
        ("submission_time", time.ctime(j["submitted"])),
        ("owner", j["user"]),
        ("sge_o_home", fs.HOME),
        ("sge_o_log_name", j["user"]),
        ("sge_o_path", j["env"].get("SGE_O_PATH", "")),
        ("sge_o_shell", j["env"].get("SGE_O_SHELL", "")),
        ("sge_o_workdir", j["submit_dir"]),
        ("sge_o_host", fs.HOST),
        ("account", "sge"),
        ("cwd", j["cwd"]),
        ("stderr_path_list", f"NONE:NONE:{j['err']}"),
        ("stdout_path_list", f"NONE:NONE:{j['out']}"),
        ("hard_queue_list", j["queue"]),
        ("job_name", j["name"]),
        ("jobshare", "0"),
        ("shell_list", f"NONE:{j['env'].get('SHELL', '/bin/sh')}"),
        ("env_list", ""),
        ("script_file", j.get("script") or "NONE"),
    ]
    if j.get("resources"):
        rows.append(("hard resource_list", ",".join(f"{k}={v}" for k, v in j["resources"].items())))
    if j["state"] == "error":
        rows.append(
            (
                "error reason    1",
                f"{time.strftime('%m/%d/%Y %H:%M:%S')} [{os.getuid()}:{j.get('pid') or 0}]: "
                f"error: {j.get('reason', '')}",
            )
        )
    lines = ["=" * 62] + [f"{k + ':':<28}{v}" for k, v in rows]
    return "\n".join(lines) + "\n"


def qstat(argv: list[str]) -> int:
    st = store()
    xml, user, detail, i = False, fs.USER, None, 0
    while i < len(argv):
        a = argv[i]
        if a == "-xml":
            xml = True
        elif a == "-u" and i + 1 < len(argv):
            user, i = argv[i + 1], i + 1
        elif a == "-j" and i + 1 < len(argv):
            detail, i = argv[i + 1], i + 1
        elif a in ("-s", "-q", "-l", "-pe") and i + 1 < len(argv):
            i += 1  # state/queue filters: accepted, not applied
        elif a in ("-f", "-r", "-t", "-ext", "-urg", "-pri", "-g"):
            pass
        else:
            fs.err(f'error: ERROR! invalid option argument "{a}"\nUsage: qstat [options]')
            return 1
        i += 1
    if detail is not None:
        found, missing = [], []
        for ident in detail.split(","):
            job = st.load(ident) if ident.isdigit() else None
            job = fs.view(job) if job else None
            if job and state_code(job):
                found.append(job)
            else:
                missing.append(ident)
        if missing:
            fs.err("Following jobs do not exist or permissions are not sufficient: \n" + ", ".join(missing))
        sys.stdout.write("".join(format_detail(j) for j in found))
        return 1 if missing else 0
    jobs = live_jobs(st, user)
    sys.stdout.write(format_xml(jobs) if xml else format_table(jobs))
    return 0


# ------------------------------------------------------------------------------------------------ qdel / qacct


def qdel(argv: list[str]) -> int:
    ids = [a for arg in argv if not arg.startswith("-") for a in arg.split(",") if a]
    if not ids:
        fs.err("usage: qdel [options] job_task_list")
        return 1
    st, rc = store(), 0
    for ident in ids:
        job = st.load(ident) if ident.isdigit() else None
        job = fs.view(job) if job else None
        if job is None or not state_code(job):
            fs.err(f'denied: job "{ident}" does not exist')
            rc = 1
            continue
        if job.get("killed"):
            print(f"{fs.USER} has already deleted job {ident}")
            continue
        before = fs.kill(st, job["n"], KILL_PLAN)
        if before and before["state"] == "running":
            print(f"{fs.USER} has registered the job {ident} for deletion")
        else:
            print(f"{fs.USER} has deleted job {ident}")
    return rc


def qacct(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "-j":
        fs.err("usage: qacct -j job_id (only this form is faked)")
        return 1
    ident = argv[1]
    job = store().load(ident) if ident.isdigit() else None
    job = fs.view(job) if job else None
    if job is None or job["state"] != "ended" or not job.get("started"):
        fs.err(f"error: job id {ident} not found")
        return 1
    code = 128 + job["signal"] if job.get("signal") else (job.get("exit_status") or 0)
    failed = "100 : assumedly after job" if job.get("signal") else "0"
    rows = [
        ("qname", job["queue"]),
        ("hostname", fs.HOST),
        ("group", fs.USER),
        ("owner", job["user"]),
        ("project", "NONE"),
        ("department", "defaultdepartment"),
        ("jobname", job["name"]),
        ("jobnumber", str(job["n"])),
        ("taskid", "undefined"),
        ("account", "sge"),
        ("priority", "0"),
        ("qsub_time", time.ctime(job["submitted"])),
        ("start_time", time.ctime(job["started"])),
        ("end_time", time.ctime(job["ended"])),
        ("granted_pe", "NONE"),
        ("slots", str(job.get("slots", 1))),
        ("failed", failed),
        ("exit_status", str(code)),
        ("ru_wallclock", f"{fs.elapsed(job):.3f}s"),
    ]
    print("=" * 62)
    for k, v in rows:
        print(f"{k:<13}{v}")
    return 0


COMMANDS = {"qsub": qsub, "qstat": qstat, "qdel": qdel, "qacct": qacct}


def main() -> int:
    return COMMANDS[os.path.basename(sys.argv[0])](sys.argv[1:])
