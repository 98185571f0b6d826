"""The state machine: the legal table, and transition() as the one writer of status and history."""

from __future__ import annotations

import pytest

from airjobs import store, submission
from airjobs.errors import IllegalTransition
from airjobs.lifecycle import fail, transition
from airjobs.statuses import LEGAL, TERMINAL, JobStatus, can_move

S = JobStatus


def test_eighteen_statuses_in_agave_order():
    assert [s.value for s in JobStatus] == [
        "PENDING",
        "PROCESSING_INPUTS",
        "STAGING_INPUTS",
        "STAGED",
        "STAGING_JOB",
        "SUBMITTING",
        "QUEUED",
        "RUNNING",
        "PAUSED",
        "CLEANING_UP",
        "ARCHIVING",
        "ARCHIVING_FINISHED",
        "ARCHIVING_FAILED",
        "FINISHED",
        "KILLED",
        "STOPPED",
        "FAILED",
        "HEARTBEAT",
    ]
    assert set(LEGAL) == set(JobStatus)


@pytest.mark.parametrize(
    "current,new,ok",
    [
        (S.PENDING, S.PROCESSING_INPUTS, True),
        (S.PENDING, S.STAGED, True),  # internal: no inputs
        (S.PENDING, S.RUNNING, False),
        (S.STAGED, S.SUBMITTING, True),
        (S.SUBMITTING, S.QUEUED, True),
        (S.QUEUED, S.RUNNING, True),
        (S.RUNNING, S.CLEANING_UP, True),
        (S.CLEANING_UP, S.FINISHED, True),
        (S.CLEANING_UP, S.ARCHIVING, True),
        (S.ARCHIVING, S.ARCHIVING_FINISHED, True),
        (S.ARCHIVING_FINISHED, S.FINISHED, True),
        (S.ARCHIVING_FAILED, S.FINISHED, True),  # internal
        (S.FINISHED, S.RUNNING, False),
        (S.FAILED, S.FINISHED, False),
        (S.STOPPED, S.FAILED, False),
        (S.KILLED, S.FAILED, True),  # internal: expiry
        (S.PAUSED, S.RUNNING, True),
    ],
)
def test_table(current, new, ok):
    assert can_move(current, new) is ok


def test_every_active_status_can_fail():
    for s in JobStatus:
        if s not in TERMINAL:
            assert can_move(s, S.FAILED), s


def _new_job(owner="carol"):
    job = submission.build_job(
        {"name": "t", "appId": "wc-1.0", "inputs": {"inputFile": "samples/zen-of-python.txt"}}, owner
    )
    job, _ = store.create_job(job, created_by=owner)
    return job


def test_transition_writes_status_and_history_together(pg):
    job = _new_job()
    transition(job.id, S.PROCESSING_INPUTS, "looking")
    after = store.get_job(job.id)
    assert after.status == "PROCESSING_INPUTS"
    events = store.history(job.id, limit=100, offset=0)
    assert [(e.status, e.description) for e in events] == [
        ("PENDING", "Job accepted and queued for submission."),
        ("PROCESSING_INPUTS", "looking"),
    ]
    assert after.last_updated >= after.created


def test_illegal_transition_is_refused_and_writes_nothing(pg):
    job = _new_job()
    with pytest.raises(IllegalTransition, match="from PENDING to RUNNING"):
        transition(job.id, S.RUNNING)
    assert store.get_job(job.id).status == "PENDING"
    assert len(store.history(job.id, limit=100, offset=0)) == 1


def test_fail_sets_end_time_and_is_a_no_op_on_terminal_jobs(pg):
    job = _new_job()
    failed = fail(job.id, "boom")
    assert failed.status == "FAILED" and failed.message == "boom" and failed.end_time is not None
    fail(job.id, "second")
    assert store.get_job(job.id).message == "boom"
    assert [e.status for e in store.history(job.id, limit=10, offset=0)] == ["PENDING", "FAILED"]
