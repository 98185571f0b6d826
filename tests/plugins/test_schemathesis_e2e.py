"""Schemathesis against the live service (issue 12, part 2): the served ``/jobs/v2/openapi.json`` drives the
examples, coverage, fuzzing and stateful phases with a real bearer token, >= 3,000 requests, 0 failures.

Isolation: the run is the user ``fuzzer`` (role ``Agave User``, conftest ``USERS``), so it reaches only what a job
user reaches: its own jobs, apps, systems and grants, and the public demo ones read-only. Afterwards its active
jobs are killed, the grants on its jobs revoked and the apps and systems it owns deleted (``_clean_up``), so later
tests meet the service as before. Logins: ``POST /token`` is fuzzed in every phase, but ``fuzz/st_hooks.py``
sends each password login with the fuzzer's real credentials, so the login throttle (failures per user and per
address, 127.0.0.1 for every test) never counts one and no user is locked out.

The schemathesis CLI runs in a subprocess (``fuzz/schemathesis.toml`` has the checks and settings, with the
reason for each check left out); its verdict is read from its JSON report (failures, errors, test cases) and
from the hooks' count of the requests sent per phase, and its summary is printed to the terminal, also under
``pytest -q``. ``AIRJOBS_FUZZ_SEED`` replays a run (the seed is printed); ``AIRJOBS_FUZZ_MAX_EXAMPLES`` changes
the cases per operation and phase.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from conftest import USERS, VAR

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

FUZZ = Path(__file__).resolve().parent / "fuzz"
USER = "fuzzer"
MIN_REQUESTS = 3000
SEED = os.environ.get("AIRJOBS_FUZZ_SEED", "20261202")
#: checks that judge the document rather than the service, for a document from before issue 12 (no security
#: scheme, empty schemas, only 200 and 422 declared): every 4xx of the Agave contract is "undocumented", and the
#: 405 answers have no ``Allow`` header yet (/work/notes/api-fixes.md). With the full document they all run.
INCOMPLETE_DOCUMENT_EXCLUDES = ("status_code_conformance", "unsupported_method", "allow_header_conformance")


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        pytest.fail(f"schemathesis is not installed in {sys.prefix} (requirements.txt pins it)")
    return str(exe)


def _complete(document: dict) -> bool:
    """Does the served document describe the facade (issue 12, part 1): a security scheme, and a response schema
    for every operation?"""
    if not (document.get("components") or {}).get("securitySchemes"):
        return False
    for ops in document.get("paths", {}).values():
        for method, op in ops.items():
            if method in ("get", "put", "post", "delete", "head", "patch", "options") and not any(
                media.get("schema")
                for response in op.get("responses", {}).values()
                for media in (response.get("content") or {}).values()
            ):
                return False
    return True


def _clean_up(service) -> dict[str, int]:
    """Kill the fuzzer's active jobs, revoke the grants on its jobs, delete the apps and systems it owns."""
    done = {"killed": 0, "jobs": 0, "apps": 0, "systems": 0}
    with service.client(USER) as c:
        jobs, offset = [], 0
        while True:
            page = c.get("/jobs/v2", params={"limit": 1000, "offset": offset}).json()["result"]
            jobs += page
            if len(page) < 1000:
                break
            offset += 1000
        done["jobs"] = len(jobs)
        for job in jobs:
            if job["status"] not in ("FINISHED", "FAILED", "STOPPED", "KILLED"):
                r = c.post(f"/jobs/v2/{job['id']}", json={"action": "kill"})
                assert r.status_code == 200, r.text
                done["killed"] += 1
            r = c.delete(f"/jobs/v2/{job['id']}/pems")
            assert r.status_code == 200, r.text
        for kind in ("apps", "systems"):
            for summary in c.get(f"/{kind}/v2").json()["result"]:
                doc = c.get(f"/{kind}/v2/{summary['id']}").json()["result"]
                if doc.get("owner") == USER:
                    r = c.delete(f"/{kind}/v2/{summary['id']}")
                    assert r.status_code == 200, r.text
                    done[kind] += 1
        deadline = time.monotonic() + 60
        while True:  # a kill is a transition to STOPPED; one that raced with the job's own end leaves it ended
            active = [
                j["id"]
                for j in c.get("/jobs/v2", params={"limit": 1000}).json()["result"]
                if j["status"] not in ("FINISHED", "FAILED", "STOPPED", "KILLED")
            ]
            if not active or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert not active, f"jobs of {USER} still active after the clean-up: {active}"
    return done


def _errors(output: str) -> str:
    """The CLI's ERRORS section (what went wrong inside a phase, with its traceback), for the assertion message:
    CI shows the message, not the whole output."""
    start = output.find("=== ERRORS ===")
    if start < 0:
        return ""
    end = output.find("=== SUMMARY ===", start)
    return output[start : end if end > 0 else start + 8000][:8000]


def _summary(output: str) -> str:
    """The CLI's closing summary (operations, phases, failures, test cases, seed)."""
    start = output.rfind("=== SUMMARY ===")
    if start < 0:
        return output[-6000:]
    return output[output.rfind("\n", 0, start) + 1 :]


def test_schemathesis_against_the_live_service(service, tmp_path, capsys):
    assert USER in USERS and USERS[USER][1] == "Agave User"
    token = service.token(USER)
    document = httpx.get(
        f"{service.base}/jobs/v2/openapi.json", timeout=30, verify=getattr(service, "verify", True)
    ).json()
    complete = _complete(document)
    junit, report, counts = tmp_path / "junit.xml", tmp_path / "report.json", tmp_path / "counts.json"
    cmd = [
        _schemathesis(),
        "--config-file",
        str(FUZZ / "schemathesis.toml"),
        "run",
        f"{service.base}/jobs/v2/openapi.json",
        "--url",
        service.base,
        "--seed",
        SEED,
        "--no-color",
        "--report",
        "junit,json",
        "--report-junit-path",
        str(junit),
        "--report-json-path",
        str(report),
    ]
    if getattr(service, "ca", None):  # an HTTPS service with its own (self-signed) certificate
        cmd += ["--tls-verify", service.ca]
    if os.environ.get("AIRJOBS_FUZZ_MAX_EXAMPLES"):
        cmd += ["--max-examples", os.environ["AIRJOBS_FUZZ_MAX_EXAMPLES"]]
    if not complete:
        cmd += ["--exclude-checks", ",".join(INCOMPLETE_DOCUMENT_EXCLUDES)]
    env = {
        **os.environ,
        "AIRJOBS_FUZZ_TOKEN": token,
        "AIRJOBS_FUZZ_USER": USER,
        "AIRJOBS_FUZZ_PASSWORD": USERS[USER][0],
        "AIRJOBS_FUZZ_COUNTS": str(counts),
        "AIRJOBS_FUZZ_HOOKS": str(FUZZ / "st_hooks.py"),
        "NO_COLOR": "1",
        "COLUMNS": "120",
    }
    started = time.monotonic()
    try:
        # cwd: schemathesis and hypothesis keep their caches (.schemathesis, .hypothesis) in the working directory
        proc = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        cleaned = _clean_up(service)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    log = VAR / "schemathesis-output.txt"
    log.write_text(output)

    assert report.exists(), f"schemathesis wrote no report (exit {proc.returncode}):\n{output[-8000:]}"
    verdict = json.loads(report.read_text())
    sent = json.loads(counts.read_text()) if counts.exists() else {"requests": {}, "total": 0, "statuses": {}}
    failures = sum(f["count"] for f in verdict["failures"])
    errors = sum(e["count"] for e in verdict["errors"])
    cases = verdict["test_cases"]
    with capsys.disabled():
        print(
            f"\n---- schemathesis {verdict['schemathesis_version']}: {service.base}/jobs/v2/openapi.json "
            f"({'complete' if complete else 'INCOMPLETE: not checked: ' + ', '.join(INCOMPLETE_DOCUMENT_EXCLUDES)}"
            f"), seed {verdict['seed']}, {elapsed:.0f}s, full output in {log}"
        )
        print(_summary(output).rstrip() if failures == 0 and errors == 0 else output[-20000:].rstrip())
        print(
            f"---- requests sent per phase: {json.dumps(sent['requests'])}, total {sent['total']}; "
            f"statuses {json.dumps(sent['statuses'])}; slowest {json.dumps(sent.get('slowest'))}"
        )
        print(
            f"---- test cases: {cases['generated']} generated, {cases['with_failures']} with failures, "
            f"{cases['errored']} errored; failures {failures}, errors {errors}; phases "
            f"{json.dumps({p: v['status'] for p, v in (verdict['phases'] or {}).items()})}; "
            f"clean-up {json.dumps(cleaned)}"
        )

    assert verdict["complete"] and verdict["stop_reason"] == "completed", verdict["stop_reason"]
    assert failures == 0 and errors == 0 and cases["errored"] == 0, (
        f"{failures} failures, {errors} errors: {json.dumps(verdict['failures'] + verdict['errors'], indent=1)}\n"
        f"{_errors(output)}"
    )
    assert proc.returncode == 0, f"schemathesis exited {proc.returncode}"
    assert sent["total"] >= MIN_REQUESTS, f"only {sent['total']} requests sent (at least {MIN_REQUESTS} wanted)"
    assert not any(k.startswith("5") for k in sent["statuses"]), sent["statuses"]
    ran = {p for p, v in (verdict["phases"] or {}).items() if v["status"] != "skip"}
    assert {"coverage", "fuzzing", "stateful"} <= ran, verdict["phases"]
    if complete:  # the full document gives examples (the current one has none: the phase has nothing to send)
        assert "examples" in ran, verdict["phases"]
    suites = ElementTree.parse(junit).getroot()  # noqa: S314 (our own run's file) the verdict as CI tools read it
    assert (suites.get("failures"), suites.get("errors")) == ("0", "0"), ElementTree.tostring(suites)[:2000]
