"""Submission rules of this release (the full rule set is issue 4): each refusal names the field."""

from __future__ import annotations

import pytest

from airjobs import submission
from airjobs.errors import BadRequest, Forbidden

GOOD = {"name": "wc", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}}


def build(**changes):
    body = {**GOOD, **changes}
    return submission.build_job({k: v for k, v in body.items() if v is not None}, "alice")


def test_defaults_come_from_app_and_system(pg):
    job = build()
    assert job.status == "PENDING"
    assert job.batch_queue == "normal" and job.node_count == 1 and job.processors_per_node == 1
    assert job.max_run_time == "00:10:00"
    assert job.archive is True and job.archive_system == "demo-storage"  # D4
    assert job.archive_path == f"alice/archive/jobs/job-{job.id}"
    assert job.inputs == {"inputFile": ["samples/zen-of-python.txt"]}
    assert job.parameters == {}


def test_aliases_and_value_syntaxes(pg):
    job = submission.build_job(
        {
            "jobName": "x",
            "softwareName": "wc-1.0",
            "inputs": {"INPUTFILE": ["a.txt"]},
            "parameters": {"topN": "7", "ignoreCase": "off"},
            "requestedTime": "01:00:00",
            "archive": "false",
        },
        "alice",
    )
    assert job.name == "x" and job.app_id == "wc-1.0" and job.max_run_time == "01:00:00"
    assert job.inputs == {"inputFile": ["a.txt"]}
    assert job.parameters == {"topN": 7, "ignoreCase": False}
    assert job.archive is False and job.archive_system is None


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"name": None}, "name"),
        ({"name": "x" * 65}, "64 characters"),
        ({"appId": None}, "appId"),
        ({"appId": "nope-1.0"}, "No app found matching nope-1.0"),
        ({"inputs": {}}, "No input specified for inputFile"),
        ({"inputs": {"inputFile": ["a", "b"]}}, "at most 1 values"),
        ({"inputs": {"inputFile": "gsiftp://h/x"}}, "gsiftp scheme"),
        ({"inputs": {"other": "a"}}, "Unknown input 'other'"),
        ({"parameters": {"topN": "many"}}, "topN must be a number"),
        ({"parameters": {"topN": -3}}, "topN"),
        ({"parameters": {"ignoreCase": "maybe"}}, "ignoreCase"),
        ({"parameters": {"nope": 1}}, "Unknown parameter 'nope'"),
        ({"nodeCount": 0}, "nodeCount"),
        ({"maxRunTime": "10 minutes"}, "maxRunTime"),
        ({"memoryPerNode": "lots"}, "memoryPerNode"),
        ({"batchQueue": "gpu"}, "No batch queue named gpu"),
        ({"archiveSystem": "demo-fork"}, "No storage system found matching demo-fork"),
        ({"dependencies": ["x"]}, "dependencies"),
    ],
)
def test_refusals(pg, changes, fragment):
    with pytest.raises(BadRequest) as e:
        build(**changes)
    assert fragment in e.value.message


def test_other_execution_system_is_forbidden(pg):
    with pytest.raises(Forbidden, match="Invalid execution system"):
        build(executionSystem="elsewhere")


def test_form_fields_map_to_inputs_and_parameters(pg):
    body = submission.from_form({"name": "f", "appId": "wc-1.0", "inputFile": "a.txt", "topN": "3"})
    job = submission.build_job(body, "alice")
    assert job.inputs == {"inputFile": ["a.txt"]} and job.parameters == {"topN": 3}
    with pytest.raises(BadRequest, match="Unknown field 'bogus'"):
        submission.build_job(
            submission.from_form({"name": "f", "appId": "wc-1.0", "inputFile": "a.txt", "bogus": "1"}), "alice"
        )


@pytest.mark.parametrize("raw", [b"{", b"[1,2]", b"\xff\xfe", b'"text"'])
def test_malformed_bodies(raw):
    with pytest.raises(BadRequest, match="Unable to parse job request"):
        submission.parse_body(raw, "application/json")


@pytest.mark.parametrize("text,gb", [("4GB", 4.0), ("512MB", 0.5), ("1.5 TB", 1536.0), (2, 2.0), ("1,024MB", 1.0)])
def test_memory(text, gb):
    assert submission.parse_memory_gb(text) == gb
