"""The notification retry policy (spec §6.1; default EXPONENTIAL per D9)."""

from __future__ import annotations

import pytest

from airjobs.errors import BadRequest
from airjobs.notifications.retry import Policy, next_delay, with_retry_after


def schedule(policy: Policy) -> list[float]:
    """Every delay the policy gives, until it gives up."""
    out, n = [], 1
    while (d := next_delay(policy, n)) is not None:
        out.append(d)
        n += 1
        assert n < 2000
    return out


def test_defaults():
    p = Policy.from_json(None)
    assert p == Policy() == Policy.from_json({})
    assert p.to_json() == {
        "retryStrategy": "EXPONENTIAL",
        "retryLimit": 5,
        "retryRate": 5,
        "retryDelay": 0,
        "saveOnFailure": False,
    }


def test_round_trip_and_nulls():
    doc = {"retryStrategy": "DELAYED", "retryLimit": 3, "retryRate": 60, "retryDelay": 10, "saveOnFailure": True}
    assert Policy.from_json(doc).to_json() == doc
    assert Policy.from_json(Policy.from_json(doc).to_json()) == Policy.from_json(doc)
    assert Policy.from_json({"retryLimit": None, "retryStrategy": None}) == Policy()
    assert Policy.from_json({"retryStrategy": "immediate"}).retry_strategy == "IMMEDIATE"


def test_none_never_retries():
    assert schedule(Policy(retry_strategy="NONE", retry_limit=10)) == []


def test_immediate():
    assert schedule(Policy(retry_strategy="IMMEDIATE", retry_limit=3)) == [0.0, 0.0, 0.0]


def test_delayed():
    p = Policy(retry_strategy="DELAYED", retry_limit=4, retry_delay=30, retry_rate=7)
    assert schedule(p) == [30.0, 7.0, 7.0, 7.0]


def test_exponential_ladder():
    p = Policy(retry_strategy="EXPONENTIAL", retry_limit=20)
    assert schedule(p) == [5.0] * 4 + [15.0] * 4 + [60.0] * 5 + [900.0] * 4 + [3600.0] * 3
    assert next_delay(Policy(retry_limit=1440), 1440) == 3600.0
    assert schedule(Policy()) == [5.0, 5.0, 5.0, 5.0, 15.0]  # the default: 5 retries, 6 attempts


def test_limits():
    assert schedule(Policy(retry_strategy="IMMEDIATE", retry_limit=0)) == []
    assert next_delay(Policy(retry_limit=2), 2) == 5.0
    assert next_delay(Policy(retry_limit=2), 3) is None
    with pytest.raises(ValueError):
        next_delay(Policy(), 0)


def test_with_retry_after():
    assert with_retry_after(5.0, 7.0) == 7.0
    assert with_retry_after(60.0, 7.0) == 60.0
    assert with_retry_after(5.0, 86400.0) == 3600.0
    assert with_retry_after(5.0, None) == 5.0
    assert with_retry_after(5.0, -3.0) == 5.0
    assert with_retry_after(None, 7.0) is None  # no attempts left: Retry-After adds none
    assert with_retry_after(7200.0, 10.0) == 7200.0  # the policy's own delay is never shortened


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"retryStrategy": "SOMETIMES"}, "retryStrategy"),
        ({"retryStrategy": 3}, "retryStrategy"),
        ({"retryLimit": -1}, "retryLimit"),
        ({"retryLimit": 1441}, "retryLimit"),
        ({"retryLimit": True}, "retryLimit"),
        ({"retryLimit": "5"}, "retryLimit"),
        ({"retryLimit": 5.0}, "retryLimit"),
        ({"retryRate": 86401}, "retryRate"),
        ({"retryRate": False}, "retryRate"),
        ({"retryDelay": -5}, "retryDelay"),
        ({"retryDelay": [1]}, "retryDelay"),
        ({"saveOnFailure": "yes"}, "saveOnFailure"),
        ({"saveOnFailure": 1}, "saveOnFailure"),
        ({"retryLimt": 5}, "retryLimt"),
    ],
)
def test_bad_policies(doc, field):
    with pytest.raises(BadRequest) as e:
        Policy.from_json(doc)
    assert e.value.status_code == 400
    assert e.value.message.startswith(f"Invalid notification policy.{field}: "), e.value.message


def test_unknown_field_suggests():
    with pytest.raises(BadRequest, match="Did you mean retryLimit"):
        Policy.from_json({"retryLimt": 5})


def test_not_an_object():
    with pytest.raises(BadRequest, match="Invalid notification policy: expected an object"):
        Policy.from_json([1, 2])  # type: ignore[arg-type]


def test_bounds_accepted():
    p = Policy.from_json({"retryLimit": 1440, "retryRate": 86400, "retryDelay": 0})
    assert (p.retry_limit, p.retry_rate, p.retry_delay) == (1440, 86400, 0)
    assert Policy.from_json({"retryLimit": 0}).retry_limit == 0
