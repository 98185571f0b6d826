"""Golden files of rendered wrappers. After an intended change, accept the new text with
``AIRJOBS_UPDATE_GOLDEN=1 make test`` and review the diff of tests/include/airjobs/golden/ before committing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from airjobs.rendering import RenderContext, render_wrapper
from airjobs.schedulers import fork
from airjobs.schedulers.base import JobRequest

GOLDEN = Path(__file__).with_name("golden")

APP = {
    "id": "every-rule-1.0",
    "modules": ["purge", "load python/3.11"],
    "inputs": [
        {"id": "reads", "details": {"argument": "--reads=", "showArgument": True, "repeatArgument": True}},
        {"id": "reference", "details": {"argument": "-r ", "showArgument": True}},
        {"id": "extra"},
    ],
    "parameters": [
        {"id": "title", "value": {"type": "string", "enquote": True}},
        {"id": "threads", "value": {"type": "number"}, "details": {"argument": "-t", "showArgument": True}},
        {"id": "mode", "value": {"type": "enumeration", "enumValues": ["fast", "exact"]}},
        {"id": "paired", "value": {"type": "bool"}, "details": {"argument": "--paired=", "showArgument": True}},
        {"id": "verbose", "value": {"type": "flag"}, "details": {"argument": "--verbose"}},
        {"id": "quiet", "value": {"type": "flag"}, "details": {"argument": "--quiet"}},
        {"id": "secret", "value": {"type": "string", "visible": False, "default": "fixed value"}},
    ],
}
SYSTEM = {
    "id": "cluster",
    "environment": "export OMP_PROC_BIND=true",
    "startupScript": "~/.agave/${AGAVE_JOB_OWNER}.rc",
}
TEMPLATE = """\
# ${AGAVE_JOB_NAME} on ${AGAVE_JOB_EXECUTION_SYSTEM}
printf '<%s>' aligner ${READS} ${reference} ${extra} ${title} ${threads} ${mode} ${paired} ${verbose} ${quiet} ${secret}
echo
echo "title: ${title}; cores: ${IPLANT_CORES_REQUESTED}; walltime ${AGAVE_JOB_MAX_RUNTIME_SECONDS}s"
"""
JOB = {
    "id": "0001414144065563-5056a550b8-0001-007",
    "name": "Golden job #1",
    "slug": "Golden-job-1",
    "owner": "alice",
    "appId": "every-rule-1.0",
    "executionSystem": "cluster",
    "batchQueue": "normal",
    "nodeCount": 2,
    "processorsPerNode": 4,
    "memoryPerNode": 8.0,
    "maxRunTime": "01:30:00",
    "archive": True,
    "archiveSystem": "store",
    "archivePath": "alice/archive/jobs/job-1",
    "submitTime": "2026-01-01T00:00:00.000+00:00",
    "inputs": {"reads": ["agave://store/r1.fq", "agave://store/data/r 2.fq"], "reference": ["https://h/ref.fa"]},
    "parameters": {
        "title": 'it\'s a "test" $(id)',
        "threads": 8,
        "mode": "exact",
        "paired": True,
        "verbose": True,
        "quiet": False,
        "secret": "fixed value",
    },
}


def render(work_dir: str = "/scratch/alice/job-0001414144065563-5056a550b8-0001-007-Golden-job-1") -> str:
    ctx = RenderContext(
        job=JOB,
        app=APP,
        system=SYSTEM,
        work_dir=work_dir,
        header=fork.header(JobRequest(name=JOB["slug"], job_id=JOB["id"], work_dir=work_dir)),
    )
    return render_wrapper(TEMPLATE, ctx)


@pytest.mark.parametrize("name", ["fork_every_rule.ipcexe"])
def test_golden(name):
    text = render()
    path = GOLDEN / name
    if os.environ.get("AIRJOBS_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing {path}: run with AIRJOBS_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (
        f"{name} changed. If intended, accept it with AIRJOBS_UPDATE_GOLDEN=1 and review the git diff."
    )


def test_golden_wrapper_runs_and_prints_the_literal_values(tmp_path):
    script = tmp_path / "w.sh"
    script.write_text(render(str(tmp_path)).replace("module ", ": module "))  # no module system here
    p = subprocess.run(
        ["bash", str(script)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == (
        '<aligner><--reads=r1.fq><--reads=r 2.fq><-r><ref.fa><it\'s a "test" $(id)><-t8><exact>'
        "<--paired=1><--verbose><fixed value>"
    )
    assert lines[1] == 'title: it\'s a "test" $(id); cores: 8; walltime 5400s'
