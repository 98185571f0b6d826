"""The pure batch-scheduler modules: directives, submit/status parsing of real output, quoting (spec §10.6, §10.7)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from airjobs.schedulers import base, condor, lsf, pbs, sge, slurm
from airjobs.schedulers.base import JobRequest
from airjobs.statuses import JobStatus

Q, R, P, D, F = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CLEANING_UP, JobStatus.FAILED
MODULES = [slurm, pbs, sge, lsf, condor]
JID = "1234-abcd-0001-007"


def req(custom: str | None = None, **kw) -> JobRequest:
    fields = dict(
        name="hello",
        job_id=JID,
        work_dir="/scratch/alice/job-1234-hello",
        queue="normal",
        node_count=2,
        processors_per_node=16,
        memory_gb=4,
        max_run_time="01:30:00",
        custom_directives=custom,
    )
    return JobRequest(**(fields | kw))


# ---------------------------------------------------------------------------------------------------- directives

SLURM_DIRECTIVES = f"""\
#SBATCH -J hello
#SBATCH -o hello-{JID}.out
#SBATCH -e hello-{JID}.err
#SBATCH -t 01:30:00
#SBATCH -p normal
#SBATCH -N 2
#SBATCH --ntasks-per-node=16
#SBATCH --mem=4096M
#SBATCH -A TG-MCB110022
#SBATCH --qos=debug
"""

PBS_DIRECTIVES = f"""\
#PBS -N hello
#PBS -o hello-{JID}.out
#PBS -e hello-{JID}.err
#PBS -S /bin/bash
#PBS -l walltime=01:30:00
#PBS -q normal
#PBS -l nodes=2:ppn=16
#PBS -l mem=8192mb
#PBS -A TG-MCB110022
"""

SGE_DIRECTIVES = f"""\
#$ -N hello
#$ -o hello-{JID}.out
#$ -e hello-{JID}.err
#$ -S /bin/bash
#$ -cwd
#$ -l h_rt=01:30:00
#$ -q normal
#$ -l h_vmem=4096M
#$ -pe mpi 32
"""

LSF_DIRECTIVES = f"""\
#BSUB -J hello
#BSUB -o hello-{JID}.out
#BSUB -e hello-{JID}.err
#BSUB -W 1:30
#BSUB -q normal
#BSUB -n 32
#BSUB -R "span[ptile=16]"
#BSUB -M 4096MB
#BSUB -P TG-MCB110022
"""

CONDOR_SUBMIT_FILE = f"""\
universe = vanilla
batch_name = hello
executable = hello.ipcexe
initialdir = /scratch/alice/job-1234-hello
output = hello-{JID}.out
error = hello-{JID}.err
request_cpus = 16
request_memory = 4096
periodic_remove = JobStatus == 2 && (time() - JobCurrentStartDate) > 5400
requirements = (OpSys == "LINUX")
queue
"""


@pytest.mark.parametrize(
    "module, custom, expected",
    [
        (slurm, "-A TG-MCB110022\n\n  #SBATCH --qos=debug  \n", SLURM_DIRECTIVES),
        (pbs, "-A TG-MCB110022", PBS_DIRECTIVES),
        (sge, "#$ -pe mpi 32", SGE_DIRECTIVES),
        (lsf, "-P TG-MCB110022", LSF_DIRECTIVES),
    ],
    ids=lambda v: getattr(v, "NAME", None),
)
def test_directives_exact(module, custom, expected):
    assert module.directives(req(custom)) == expected
    assert module.header(req(custom)) == "#!/bin/bash\n" + expected


def test_condor_submit_file_exact():
    r = req('requirements = (OpSys == "LINUX")')
    assert condor.submit_file(r, "hello.ipcexe") == CONDOR_SUBMIT_FILE
    assert condor.header(r) == "#!/bin/bash\n" and condor.directives(r) == ""
    assert condor.submit_file_name("hello.ipcexe") == "hello.submit"
    with pytest.raises(ValueError):
        condor.submit_file(r, "x\nqueue 100")


def test_directives_minimal_request_omits_unset_values():
    r = JobRequest(name="hello", job_id=JID, work_dir="/w")
    assert slurm.directives(r) == (
        f"#SBATCH -J hello\n#SBATCH -o hello-{JID}.out\n#SBATCH -e hello-{JID}.err\n"
        "#SBATCH -N 1\n#SBATCH --ntasks-per-node=1\n"
    )
    assert lsf.directives(r).endswith('#BSUB -n 1\n#BSUB -R "span[ptile=1]"\n')
    for module in MODULES:
        text = module.directives(r) + (condor.submit_file(r, "w.ipcexe") if module is condor else "")
        assert "mem" not in text.lower() and "normal" not in text and "h_rt" not in text and "-W" not in text


@pytest.mark.parametrize(
    "bad",
    [
        dict(name="a b"),
        dict(name="x\n#SBATCH --uid=0"),
        dict(job_id=""),
        dict(queue="q;rm"),
        dict(queue="a\nb"),
        dict(work_dir="/a\nqueue"),
        dict(node_count=0),
        dict(processors_per_node=0),
        dict(memory_gb=-1),
        dict(max_run_time="90 minutes"),
        dict(max_run_time="1:2"),
    ],
)
def test_job_request_rejects_values_that_would_break_a_directive(bad):
    with pytest.raises(ValueError):
        req(**bad)


def test_time_helpers():
    assert base.hms("1:05:00") == "01:05:00"
    assert base.hms("1-02:00:00") == "26:00:00"
    assert base.hms("999:59:59") == "999:59:59"
    assert base.hms_to_minutes("00:00:30") == 1
    assert lsf.directives(req(max_run_time="48:00:01")).count("#BSUB -W 48:01\n") == 1
    assert req(memory_gb=1.5).memory_mb == 1536


# ---------------------------------------------------------------------------------------------------- submission

SLURM_SUBMIT_OK = "Submitted batch job 12345\n"
SLURM_SUBMIT_PARSABLE = "12346;cluster1\n"
SLURM_SUBMIT_ERR = "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
PBS_SUBMIT_OK = "1234.pbs01\n"
TORQUE_SUBMIT_OK = "5678.torque.example.org\n"
PBS_SUBMIT_ERR = "qsub: Unknown queue\n"
PBS_SUBMIT_ERR2 = "qsub: Job exceeds queue resource limits MSG=cannot satisfy queue max walltime requirement\n"
SGE_SUBMIT_OK = 'Your job 123 ("hello") has been submitted\n'
SGE_SUBMIT_ARRAY = 'Your job-array 124.1-10:1 ("hello") has been submitted\n'
SGE_SUBMIT_ERR = 'Unable to run job: Job was rejected because job requests unknown queue "nope".\nExiting.\n'
LSF_SUBMIT_OK = "Job <123> is submitted to queue <normal>.\n"
LSF_SUBMIT_DEFAULT = "Job <124> is submitted to default queue <normal>.\n"
LSF_SUBMIT_ERR = "nope: No such queue. Job not submitted.\n"
CONDOR_SUBMIT_OK = "Submitting job(s).\n1 job(s) submitted to cluster 42.\n"
CONDOR_SUBMIT_ERR = "Submitting job(s)\nERROR: Executable file /scratch/alice/hello.ipcexe does not exist\n"


@pytest.mark.parametrize(
    "module, output, expected",
    [
        (slurm, SLURM_SUBMIT_OK, "12345"),
        (slurm, SLURM_SUBMIT_PARSABLE, "12346"),
        (pbs, PBS_SUBMIT_OK, "1234.pbs01"),
        (pbs, TORQUE_SUBMIT_OK, "5678.torque.example.org"),
        (pbs, "  \n1235[].pbs01\n", "1235[].pbs01"),
        (sge, SGE_SUBMIT_OK, "123"),
        (sge, SGE_SUBMIT_ARRAY, "124"),
        (sge, "125\n", "125"),
        (lsf, LSF_SUBMIT_OK, "123"),
        (lsf, LSF_SUBMIT_DEFAULT, "124"),
        (condor, CONDOR_SUBMIT_OK, "42"),
    ],
)
def test_parse_submit(module, output, expected):
    assert module.parse_submit(output) == expected


@pytest.mark.parametrize(
    "module, output, needle",
    [
        (slurm, SLURM_SUBMIT_ERR, "sbatch: error: Batch job submission failed: Invalid partition name specified"),
        (slurm, "", "(no output)"),
        (pbs, PBS_SUBMIT_ERR, "qsub: Unknown queue"),
        (pbs, PBS_SUBMIT_ERR2, "max walltime"),
        (sge, SGE_SUBMIT_ERR, 'unknown queue "nope"'),
        (lsf, LSF_SUBMIT_ERR, "nope: No such queue. Job not submitted."),
        (condor, CONDOR_SUBMIT_ERR, "ERROR: Executable file /scratch/alice/hello.ipcexe does not exist"),
    ],
)
def test_parse_submit_error_raises_with_scheduler_text(module, output, needle):
    with pytest.raises(ValueError) as e:
        module.parse_submit(output)
    assert needle in str(e.value) and module.NAME in str(e.value)


# ---------------------------------------------------------------------------------------------------- status

# squeue -h -o '%i|%T' -j ...; sacct -n -P -X -o JobID,State,ExitCode -j ...
SLURM_STATUS = """\
1010|PENDING
1003|RUNNING
1001|COMPLETED|0:0
1002|FAILED|1:0
1003|RUNNING|0:0
1004|PENDING|0:0
1005|CANCELLED by 1000|0:15
1006|TIMEOUT|0:0

1008|SUSPENDED|0:0
1009|POWER_UP_NODE|0:0
1011|WAITING_FOR_LICENSE|0:0
sacct: error: slurmdbd: some transient problem
|||
garbage line
"""
SLURM_EXPECTED = {
    "1001": (D, 0),
    "1002": (F, 1),
    "1003": (R, None),
    "1004": (Q, None),
    "1005": (F, 143),
    "1006": (F, 0),
    "1008": (P, None),
    "1009": (R, None),
    "1011": (Q, None),
    "1010": (Q, None),
}

# PBS Pro: qstat -x -f 1234.pbs01 ...
PBSPRO_STATUS = """\
Job Id: 1234.pbs01
    Job_Name = hello
    Job_Owner = alice@login01.example.org
    resources_used.cpupercent = 0
    resources_used.walltime = 00:00:05
    job_state = F
    queue = workq
    server = pbs01
    Variable_List = PBS_O_HOME=/home/alice,PBS_O_LANG=en_US.UTF-8,
\tPBS_O_LOGNAME=alice,PBS_O_PATH=/usr/bin:/bin,job_state=R
    comment = Job run at Mon Jan 08 at 10:00 on (node01:ncpus=1) and finished
    Exit_status = 0

Job Id: 1235.pbs01
    Job_Name = hello
    job_state = R
    queue = workq

Job Id: 1236.pbs01
    job_state = F
    Exit_status = 271

Job Id: 1237.pbs01
    job_state = F
    Exit_status = -1

Job Id: 1238.pbs01
    job_state = H

Job Id: 1239.pbs01
    job_state = F
    Exit_status = 3

Job Id: 1240.pbs01
    job_state = Z

Job Id: 1241.pbs01
    job_state = S
    Exit_status = 0
qstat: Unknown Job Id 9999.pbs01
"""
PBSPRO_EXPECTED = {
    "1234.pbs01": (D, 0),
    "1235.pbs01": (R, None),
    "1236.pbs01": (F, 271),
    "1237.pbs01": (F, -1),
    "1238.pbs01": (Q, None),
    "1239.pbs01": (D, 3),
    "1240.pbs01": (R, None),
    "1241.pbs01": (P, None),
}

# Torque: qstat -f 5678.torque.example.org 5679.torque.example.org
TORQUE_STATUS = """\
Job Id: 5678.torque.example.org
    Job_Name = hello
    Job_Owner = alice@login.example.org
    job_state = C
    queue = batch
    exit_status = 0
Job Id: 5679.torque.example.org
    Job_Name = hello
    job_state = Q
"""

# qstat -xml
SGE_STATUS = """\
<?xml version='1.0'?>
<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/qstat.xsd">
  <queue_info>
    <job_list state="running">
      <JB_job_number>123</JB_job_number>
      <JAT_prio>0.55500</JAT_prio>
      <JB_name>hello</JB_name>
      <JB_owner>alice</JB_owner>
      <state>r</state>
      <JAT_start_time>2024-01-08T10:00:00</JAT_start_time>
      <queue_name>all.q@node01</queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="running">
      <JB_job_number>127</JB_job_number>
      <JB_name>hello</JB_name>
      <state>dr</state>
      <slots>1</slots>
    </job_list>
    <job_list state="suspended">
      <JB_job_number>128</JB_job_number>
      <state>s</state>
    </job_list>
  </queue_info>
  <job_info>
    <job_list state="pending">
      <JB_job_number>124</JB_job_number>
      <JAT_prio>0.00000</JAT_prio>
      <JB_name>hello</JB_name>
      <JB_owner>alice</JB_owner>
      <state>qw</state>
      <JB_submission_time>2024-01-08T09:59:00</JB_submission_time>
      <queue_name></queue_name>
      <slots>1</slots>
    </job_list>
    <job_list state="pending">
      <JB_job_number>125</JB_job_number>
      <state>hqw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>126</JB_job_number>
      <state>Eqw</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>129</JB_job_number>
      <state>hRq</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>130</JB_job_number>
      <state>X</state>
    </job_list>
    <job_list state="pending">
      <JB_job_number>131</JB_job_number>
    </job_list>
  </job_info>
</job_info>
error: commlib error: got select error (Connection refused)
"""
SGE_EXPECTED = {
    "123": (R, None),
    "124": (Q, None),
    "125": (Q, None),
    "126": (F, None),
    "127": (F, None),
    "128": (P, None),
    "129": (Q, None),
    "130": (R, None),
}

# bjobs -a -noheader -o "jobid stat exit_code delimiter='|'" ...  (plus one plain ``bjobs -w`` line)
LSF_STATUS = """\
101|RUN|-
102|PEND|-
103|DONE|-
104|EXIT|2
105|USUSP|-
106|ZOMBI|-
107|NEWSTATE|-
108|PSUSP|-
Job <999> is not found

108x|RUN|-
109   alice   RUN   normal   login1   node01   hello   Jan  8 10:00
"""
LSF_EXPECTED = {
    "101": (R, None),
    "102": (Q, None),
    "103": (D, None),
    "104": (F, 2),
    "105": (P, None),
    "106": (F, None),
    "107": (R, None),
    "108": (P, None),
    "109": (R, None),
}

# condor_q ... -af ClusterId JobStatus ExitCode; condor_history ... -af ClusterId JobStatus ExitCode
CONDOR_STATUS = """\
42 2 undefined
43 1 undefined
45 5 undefined
46 7 undefined
48 9 undefined
-- Schedd: submit.example.org : <10.0.0.1:9618?... @ 01/08/24 10:00:00
44 4 0
47 4 2
42 4 0
49 3 undefined

"""
CONDOR_EXPECTED = {
    "42": (D, 0),
    "43": (Q, None),
    "44": (D, 0),
    "45": (Q, None),
    "46": (P, None),
    "47": (D, 2),
    "48": (R, None),
    "49": (F, None),
}


@pytest.mark.parametrize(
    "module, output, expected",
    [
        (slurm, SLURM_STATUS, SLURM_EXPECTED),
        (pbs, PBSPRO_STATUS, PBSPRO_EXPECTED),
        (pbs, TORQUE_STATUS, {"5678.torque.example.org": (D, 0), "5679.torque.example.org": (Q, None)}),
        (sge, SGE_STATUS, SGE_EXPECTED),
        (lsf, LSF_STATUS, LSF_EXPECTED),
        (condor, CONDOR_STATUS, CONDOR_EXPECTED),
    ],
)
def test_parse_status(module, output, expected):
    assert module.parse_status(output) == expected


GARBAGE = [
    "",
    "\n\n",
    "\x00\x01|||\n",
    "Job Id:\n = \n    job_state =\n",
    "<job_list><state></state></job_list>",
    "<job_list><JB_job_number>x</JB_job_number>",
    "| | |\n1|\n|RUN|\n",
    "abc def ghi\n42\n42 x y\n",
    "qstat: command not found\n",
    "Job Id: 1.s\n\tjob_state = R\n",
    "\ufffd" * 50,
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
@pytest.mark.parametrize("output", GARBAGE)
def test_parse_status_never_raises(module, output):
    result = module.parse_status(output)
    assert isinstance(result, dict)
    for status, code in result.values():
        assert isinstance(status, JobStatus) and (code is None or isinstance(code, int))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_state_maps_only_use_monitoring_statuses(module):
    assert module.STATE_MAP and set(module.STATE_MAP.values()) <= {Q, R, P, D, F}


def test_unknown_state_is_never_terminal():
    assert base.unknown_state("PENDING_REBOOT") is Q and base.unknown_state("HELD_BY_ADMIN") is Q
    assert base.unknown_state("SOMETHING_NEW") is R and base.unknown_state("") is R


# ---------------------------------------------------------------------------------------------------- quoting

EVIL_DIR = "/scratch/a b;touch pwned'$(id)"
EVIL_SCRIPT = "x y;z.ipcexe"
EVIL_IDS = ["1 2", "3;touch pwned", "$(id)"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_submit_command_quotes_every_value(module):
    cmd = module.submit_command(EVIL_DIR, EVIL_SCRIPT)
    words = _words(cmd)
    assert EVIL_DIR in words and "./" + EVIL_SCRIPT in words
    if module is condor:
        assert "./x y;z.submit" in words
    _bash_syntax_ok(cmd)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_status_and_kill_commands_quote_every_value(module):
    cmd = module.status_command(EVIL_IDS)
    words = _words(cmd)
    if module is slurm:
        assert ",".join(EVIL_IDS) in words
    elif module is not sge:  # SGE lists all the user's jobs, ids are not part of the command
        assert all(i in words for i in EVIL_IDS)
    assert "$(id)" not in cmd.replace(shlex.quote("$(id)"), "").replace(shlex.quote(",".join(EVIL_IDS)), "")
    _bash_syntax_ok(cmd)
    assert module.status_command([]) == "true"
    kill = module.kill_command("3;touch pwned")
    assert _words(kill)[-1] == "3;touch pwned"
    _bash_syntax_ok(kill)


def test_typical_commands():
    assert slurm.submit_command("/w", "hello.ipcexe") == (
        "cd /w || exit 1; chmod +x ./hello.ipcexe && sbatch ./hello.ipcexe"
    )
    assert lsf.submit_command("/w", "hello.ipcexe") == "cd /w || exit 1; bsub < ./hello.ipcexe"
    assert condor.submit_command("/w", "hello.ipcexe") == (
        "cd /w || exit 1; chmod +x ./hello.ipcexe && condor_submit ./hello.submit"
    )
    assert slurm.status_command(["1", "2"]) == (  # squeue's error kept: it tells a controller that is down
        "{ q=$(squeue -h -o '%i|%T' -j 1,2 2>&1 >&3); s=$?; } 3>&1; "
        "sacct -n -P -X -o JobID,State,ExitCode -j 1,2 2>/dev/null; "
        '[ "$s" -eq 0 ] || case "$q" in *"Invalid job id"*) true ;; '
        '*) printf "squeue: %s\\n" "${q:-exit status $s}" >&2; false ;; esac'
    )
    assert lsf.status_command(["1", "2"]) == (
        "bjobs -a -noheader -o 'jobid stat exit_code delimiter='\"'\"'|'\"'\"'' 1 2 2>/dev/null; true"
    )
    assert condor.status_command(["42"]) == (
        "condor_q 42 -af ClusterId JobStatus ExitCode 2>/dev/null; "
        "condor_history 42 -limit 1 -af ClusterId JobStatus ExitCode 2>/dev/null; true"
    )
    assert pbs.kill_command("1234.pbs01") == "qdel 1234.pbs01"


def _words(cmd: str) -> list[str]:
    """Shell words as bash would split them, with ``;``, ``|``, ``&&`` as words of their own."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def _bash_syntax_ok(cmd: str) -> None:
    p = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_sbatch_that_cannot_reach_its_controller_is_told_from_a_refusal():
    from airjobs.schedulers import slurm

    assert slurm.controller_unreachable(
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
    )
    assert not slurm.controller_unreachable("sbatch: error: Batch job submission failed: Invalid partition name")
