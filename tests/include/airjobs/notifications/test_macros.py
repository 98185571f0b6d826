"""Agave's ``${NAME}`` notification variables (spec §6.4 Table 3)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from airjobs.notifications import macros
from airjobs.notifications.macros import KNOWN, resolve

BASE = "https://jobs.example.org/"
JOB = {
    "id": "0001414144065563-5056a550b8-0001-007",
    "name": "wc & friends #1",
    "owner": "alice",
    "appId": "wc-1.00",
    "executionSystem": "demo.exec",
    "batchQueue": "normal",
    "status": "FINISHED",
    "submitTime": "2026-12-02T10:00:00.000+00:00",
    "startTime": "2026-12-02T10:00:05.000+00:00",
    "endTime": "2026-12-02T10:01:00.000+00:00",
    "created": "2026-12-02T09:59:59.000+00:00",
    "archive": True,
    "archiveSystem": "demo.storage",
    "archivePath": "alice/archive/jobs/job-1",
    "outputPath": "/scratch/alice/job-1",
    "localId": "4242",
    "maxRunTime": "01:30:00",
    "memoryPerNode": 2.5,
    "nodeCount": 2,
    "processorsPerNode": 4,
    "inputs": {"query1": ["agave://demo.storage/in.txt"]},
    "parameters": {"printLongest": True},
    "message": "Job completed",
    "_links": {
        "archiveData": {
            "href": "https://jobs.example.org/jobs/v2/0001414144065563-5056a550b8-0001-007/outputs/listings"
        }
    },
}

EXPECTED = {
    "UUID": JOB["id"],
    "EVENT": "FINISHED",
    "OWNER": "bob",
    "JOB_STATUS": "FINISHED",
    "JOB_URL": "https://jobs.example.org/jobs/v2/0001414144065563-5056a550b8-0001-007",
    "JOB_ID": JOB["id"],
    "JOB_SYSTEM": "demo.exec",
    "JOB_EXECUTION_SYSTEM": "demo.exec",
    "JOB_NAME": "wc & friends #1",
    "JOB_START_TIME": "2026-12-02T10:00:05.000+00:00",
    "JOB_STARTTIME": "2026-12-02T10:00:05.000+00:00",
    "JOB_END_TIME": "2026-12-02T10:01:00.000+00:00",
    "JOB_ENDTIME": "2026-12-02T10:01:00.000+00:00",
    "JOB_SUBMIT_TIME": "2026-12-02T10:00:00.000+00:00",
    "JOB_SUBMITTIME": "2026-12-02T10:00:00.000+00:00",
    "JOB_ARCHIVE_PATH": "alice/archive/jobs/job-1",
    "JOB_ARCHIVEPATH": "alice/archive/jobs/job-1",
    "JOB_ARCHIVE_URL": JOB["_links"]["archiveData"]["href"],
    "JOB_ARCHIVEURL": JOB["_links"]["archiveData"]["href"],
    "JOB_ERROR": "Job completed",
    "JOB_APPID": "wc-1.00",
    "JOB_APP_ID": "wc-1.00",
    "APP_ID": "wc-1.00",
    "JOB_BATCH_QUEUE": "normal",
    "JOB_CREATED": "2026-12-02T09:59:59.000+00:00",
    "JOB_LOCAL_ID": "4242",
    "JOB_MAX_RUNTIME": "01:30:00",
    "JOB_MAX_RUNTIME_MILLISECONDS": "5400000",
    "JOB_MEMORY_PER_NODE": "2.5",
    "JOB_NODE_COUNT": "2",
    "JOB_PROCESSORS_PER_NODE": "4",
    "JOB_OWNER": "alice",
    "JOB_TENANT": "airjobs",
    "JOB_OUTPUT_PATH": "/scratch/alice/job-1",
    "JOB_ARCHIVE": "true",
    "JOB_ARCHIVE_SYSTEM": "demo.storage",
}
JSON_VALUED = {"JOB_INPUTS": JOB["inputs"], "JOB_PARAMETERS": JOB["parameters"], "JOB_JSON": JOB, "RAW_JSON": JOB}


def _r(template: str, job: dict | None = None, event: str = "FINISHED", **kw) -> str:
    return resolve(template, JOB if job is None else job, event, owner="bob", jobs_base=BASE, **kw)


def test_known_is_every_documented_name():
    assert set(EXPECTED) | set(JSON_VALUED) == KNOWN


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_variable(name):
    assert _r(f"<${{{name}}}>") == f"<{EXPECTED[name]}>"


@pytest.mark.parametrize("name", sorted(JSON_VALUED))
def test_json_variables(name):
    assert json.loads(_r(f"${{{name}}}")) == JSON_VALUED[name]


def test_none_and_missing_resolve_to_empty():
    job = {"id": "j1", "name": None, "status": None}
    assert _r("[${JOB_NAME}][${JOB_ERROR}][${JOB_LOCAL_ID}][${JOB_START_TIME}]", job) == "[][][][]"
    assert _r("${JOB_INPUTS}${JOB_PARAMETERS}", job) == "{}{}"


def test_status_falls_back_to_the_event():
    assert _r("${JOB_STATUS}", {"id": "j1"}, "RUNNING") == "RUNNING"


def test_archive_url_falls_back_to_the_listing():
    assert _r("${JOB_ARCHIVE_URL}", {"id": "j1"}) == "https://jobs.example.org/jobs/v2/j1/outputs/listings"


def test_not_archiving():
    job = {**JOB, "archive": False}
    assert _r("[${JOB_ARCHIVE}][${JOB_ARCHIVE_PATH}][${JOB_ARCHIVE_SYSTEM}]", job) == "[false][][]"


def test_unparseable_max_run_time():
    assert _r("[${JOB_MAX_RUNTIME_MILLISECONDS}]", {**JOB, "maxRunTime": "soon"}) == "[]"


def test_unknown_macro_kept_and_plain_text_untouched():
    assert _r("${NOPE} ${job_id} $JOB_ID ${JOB_ID") == "${NOPE} ${job_id} $JOB_ID ${JOB_ID"
    assert _r("${PERMISSION_ID}") == "${PERMISSION_ID}"


def test_one_pass_only():
    job = {**JOB, "name": "${JOB_ID}"}
    assert _r("${JOB_NAME}", job) == "${JOB_ID}"
    assert _r("http://h/x?n=${JOB_NAME}", job, url=True) == "http://h/x?n=%24%7BJOB_ID%7D"


def test_url_query_values_are_encoded():
    out = _r("http://h/x?job=${JOB_NAME}&id=${JOB_ID}", url=True)
    assert out == f"http://h/x?job=wc%20%26%20friends%20%231&id={JOB['id']}"
    assert parse_qs(urlsplit(out).query) == {"job": ["wc & friends #1"], "id": [JOB["id"]]}
    assert urlsplit(out).fragment == ""


def test_url_fragment_values_are_encoded():
    assert _r("http://h/x#${JOB_NAME}", url=True) == "http://h/x#wc%20%26%20friends%20%231"


def test_url_path_values_as_they_are():
    assert _r("http://h/jobs/${JOB_ID}/${JOB_SYSTEM}", url=True) == f"http://h/jobs/{JOB['id']}/demo.exec"
    # without url=True nothing is encoded anywhere
    assert _r("http://h/x?job=${JOB_NAME}") == "http://h/x?job=wc & friends #1"


@pytest.mark.parametrize(
    "template",
    [
        "http://${JOB_NAME}/x",
        "http://h${JOB_NAME}/x",
        "https://${OWNER}:${JOB_ID}@h:443/x",
        "http://h:${JOB_LOCAL_ID}/x",
        "http://${JOB_ID}.example.org",
    ],
)
def test_url_authority_never_substituted(template):
    out = _r(template, url=True)
    assert urlsplit(out).netloc == urlsplit(template).netloc


def test_url_path_value_cannot_change_the_host():
    job = {**JOB, "name": "/evil.example/x", "executionSystem": "@evil.example"}
    for template in ("http://good.example/${JOB_NAME}", "http://good.example${JOB_SYSTEM}", "http:${JOB_NAME}"):
        out = _r(template, job, url=True)
        assert "evil" not in (urlsplit(out).hostname or ""), out
    assert _r("http:${JOB_NAME}", job, url=True) == "http:${JOB_NAME}"  # no authority: the path stays literal


def test_url_with_query_only_macros_and_userinfo():
    out = _r("https://u:p@h.example:8443/cb/${JOB_ID}?s=${JOB_STATUS}&e=${EVENT}", url=True)
    assert out == f"https://u:p@h.example:8443/cb/{JOB['id']}?s=FINISHED&e=FINISHED"


def test_jobs_base_without_trailing_slash_and_variables():
    assert resolve("${JOB_URL}", {"id": "x"}, "E", owner="o", jobs_base="http://a:1") == "http://a:1/jobs/v2/x"
    assert macros.variables({"id": "x"}, "E", owner="o", jobs_base="http://a:1")["OWNER"] == "o"
