"""Wrapper rendering: macros replaced, every user value shell-quoted, the exit code captured."""

from __future__ import annotations

import subprocess

from airjobs.jobpaths import EXIT_CODE_FILE
from airjobs.rendering import RenderContext, render_wrapper
from airjobs.schedulers import fork
from airjobs.schedulers.base import JobRequest

APP = {
    "id": "t-1.0",
    "inputs": [{"id": "data", "details": {"argument": "-i ", "showArgument": True}}],
    "parameters": [
        {"id": "label", "value": {"type": "string"}},
        {"id": "verbose", "value": {"type": "flag"}, "details": {"argument": "--verbose"}},
        {"id": "fast", "value": {"type": "bool"}},
        {
            "id": "n",
            "value": {"type": "number"},
            "details": {"argument": "-n", "showArgument": True, "repeatArgument": True},
        },
    ],
}


def ctx(work_dir, **params):
    job = {
        "id": "1-ab-0001-007",
        "name": "My job",
        "slug": "My-job",
        "owner": "alice",
        "appId": "t-1.0",
        "executionSystem": "sys",
        "inputs": {"data": ["agave://s/dir/in put.txt"]},
        "parameters": params,
        "nodeCount": 2,
        "processorsPerNode": 3,
    }
    return RenderContext(
        job=job,
        app=APP,
        system={"environment": "export FOO=bar"},
        work_dir=str(work_dir),
        header=fork.header(JobRequest(name="My-job", job_id=job["id"], work_dir=str(work_dir))),
    )


def _run(tmp_path, template, **params):
    script = render_wrapper(template, ctx(tmp_path, **params))
    (tmp_path / "w.sh").write_text(script)
    p = subprocess.run(["bash", str(tmp_path / "w.sh")], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return (tmp_path / "My-job.out").read_text() if (tmp_path / "My-job.out").exists() else p.stdout


def test_macros_and_rules(tmp_path):
    out = _run(
        tmp_path,
        "printf '[%s]' ${DATA} ${label} ${verbose} ${FAST} ${n} ${AGAVE_JOB_ID} ${IPLANT_CORES_REQUESTED}\n",
        label="a b",
        verbose=True,
        fast=False,
        n=[1, 2],
    )
    assert out == "[-i][in put.txt][a b][--verbose][0][-n1][-n2][1-ab-0001-007][6]"


def test_quoting_contexts(tmp_path):
    template = (
        'echo "label=${label}"\n'
        "echo 'single ${label} end'\n"
        "# a comment with ${label}\n"
        "cat <<EOF\nheredoc ${label}\nEOF\n"
        "cat <<'RAW'\nraw ${label}\nRAW\n"
        "echo n=${n}\n"
    )
    out = _run(tmp_path, template, label="it's $(x) a\nb", n=[1, 2])
    assert out.splitlines() == [
        "label=it's $(x) a",
        "b",
        "single it's $(x) a",
        "b end",
        "heredoc it's $(x) a",
        "b",
        "raw ${label}",
        "n=-n1 -n2",
    ]


def test_missing_optional_values_vanish(tmp_path):
    assert _run(tmp_path, "printf '[%s]' start ${label} ${verbose} end\n") == "[start][end]"
    out = _run(tmp_path, "set -- ${label} ${verbose}; echo $#\n")
    assert out.strip() == "0"


def test_injection_values_stay_literal(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"$(touch {marker}); `touch {marker}` && touch {marker} | x\nrm -rf / ; '\"${{IFS}}*"
    script = render_wrapper('printf "%s" ${label} > seen.txt\n', ctx(tmp_path, label=evil))
    (tmp_path / "w.sh").write_text(script)
    subprocess.run(["bash", str(tmp_path / "w.sh")], check=True, cwd=tmp_path)
    assert not marker.exists()
    assert (tmp_path / "seen.txt").read_text() == evil
    assert (tmp_path / EXIT_CODE_FILE).read_text().strip() == "0"


def test_exit_code_is_captured_even_on_exit(tmp_path):
    script = render_wrapper("exit 3\n", ctx(tmp_path))
    (tmp_path / "w.sh").write_text(script)
    assert subprocess.run(["bash", str(tmp_path / "w.sh")], cwd=tmp_path).returncode == 3
    assert (tmp_path / EXIT_CODE_FILE).read_text().strip() == "3"
    assert (tmp_path / "My-job.pid").read_text().strip().isdigit()


def test_fork_parsing():
    assert fork.parse_submit("noise\n12345\n") == "12345"
    assert fork.parse_ps("  12 S\n 13 Z\n") == {"12": "S"}
    assert fork.map_state(None).value == "CLEANING_UP"
    assert fork.map_state("R+").value == "RUNNING"
