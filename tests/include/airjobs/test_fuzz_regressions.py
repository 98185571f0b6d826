"""Requests the fuzz run (tests/plugins/test_schemathesis_e2e.py, and a probe with the shapes its full schemas will
generate) answered with a 5xx: each is a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from airjobs import submission, validation
from airjobs.errors import BadRequest

GOOD = {"name": "wc", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}}


@pytest.mark.parametrize("queue", [["normal"], ["a", "b"], {"name": "normal"}, True])
def test_a_batch_queue_that_is_not_a_name_is_a_400(pg, queue):
    """Was a 500 (TypeError: unhashable type: 'list' in choose_queue), or a connection reset."""
    with pytest.raises(BadRequest, match="batchQueue"):
        submission.build_job({**GOOD, "batchQueue": queue}, "alice")


def test_a_numeric_batch_queue_is_looked_up_by_name(pg):
    with pytest.raises(BadRequest, match="No batch queue named 7"):
        submission.build_job({**GOOD, "batchQueue": 7}, "alice")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": Infinity, "appId": "wc-1.0"}',
        b'{"name": "x", "extra": NaN}',
        b'{"name": "x", "notifications": [-Infinity]}',
    ],
)
def test_non_finite_numbers_in_a_job_request_are_a_400(raw):
    """Python's JSON reader takes NaN and Infinity, PostgreSQL's json type does not: the job request (stored as
    the job's ``request``) was refused by the database, a 503 "database unavailable" that no retry cures."""
    with pytest.raises(BadRequest, match="not a finite number"):
        submission.check_strings(submission.parse_body(raw, "application/json"))


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), [1, float("inf")], {"a": {"b": float("nan")}}]
)
def test_check_strings_refuses_non_finite_numbers_anywhere(value):
    """App and system descriptions and job actions go through ``check_strings`` too (api ``_storable``)."""
    with pytest.raises(BadRequest, match="not a finite number"):
        submission.check_strings({"x": value}, "app description ")


def test_build_job_refuses_non_finite_numbers(pg):
    body = json.loads(
        '{"name": "wc", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}, "retries": Infinity}'
    )
    with pytest.raises(BadRequest, match="retries"):
        submission.build_job(body, "alice")


SYSTEM = {
    "id": "fz-sys",
    "type": "STORAGE",
    "storage": {
        "protocol": "SFTP",
        "host": "127.0.0.2",
        "port": 22,
        "rootDir": "/",
        "auth": {"type": "PASSWORD", "username": "u", "password": "p"},
    },
}


@pytest.mark.parametrize("field", ["username", "password", "privateKey", "publicKey"])
@pytest.mark.parametrize("value", [[1], {"a": 1}, 2**64, True])
def test_inline_credentials_must_be_text(field, value):
    """Were a 500 (TypeError in Airflow's Connection.set_password) or a 503 "database unavailable" (psycopg2
    cannot adapt a dict for the Connection's login), with the connection reset after it."""
    doc = {**SYSTEM, "storage": {**SYSTEM["storage"], "auth": {**SYSTEM["storage"]["auth"], field: value}}}
    with pytest.raises(BadRequest, match=f"storage.auth.{field}: must be a string"):
        validation.extract_credentials(doc, lambda conn_id: None, owner="alice")


def test_an_infinite_port_is_a_400():
    """Was a 500 (OverflowError: cannot convert float infinity to integer)."""
    doc = {**SYSTEM, "storage": {**SYSTEM["storage"], "port": float("inf")}}
    with pytest.raises(BadRequest, match=r"storage\.port"):
        validation.extract_credentials(doc, lambda conn_id: None, owner="alice")
