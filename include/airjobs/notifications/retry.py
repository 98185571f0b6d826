"""A notification's retry policy (spec §6.1 ``policy``) and the schedule it gives.

The default strategy is EXPONENTIAL, not Agave's IMMEDIATE: decision D9 makes the exponential ladder the
default (a receiver that is down is not hammered 5 times within a second). The other defaults are Agave's:
``retryLimit`` 5, ``retryRate`` 5 s, ``retryDelay`` 0 s, ``saveOnFailure`` false.

``retryLimit`` counts retries, not attempts: a policy with limit 5 makes at most 6 attempts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from airjobs.errors import BadRequest

STRATEGIES = ("NONE", "IMMEDIATE", "DELAYED", "EXPONENTIAL")
DEFAULT_STRATEGY = "EXPONENTIAL"
MAX_RETRY_AFTER = 3600.0

#: JSON field -> (attribute, maximum) of the integer fields
_INTS = {"retryLimit": ("retry_limit", 1440), "retryRate": ("retry_rate", 86400), "retryDelay": ("retry_delay", 86400)}
_FIELDS = ("retryStrategy", *_INTS, "saveOnFailure")

#: the EXPONENTIAL ladder (SRC NotificationAttemptBackoffCalculator): (attempts below, delay in seconds)
_LADDER = ((5, 5.0), (9, 15.0), (14, 60.0), (18, 900.0))
_LADDER_TOP = 3600.0


def _bad(field: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid notification policy.{field}: {why}")


@dataclass(frozen=True)
class Policy:
    retry_strategy: str = DEFAULT_STRATEGY
    retry_limit: int = 5
    retry_rate: int = 5
    retry_delay: int = 0
    save_on_failure: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Policy:
        """The policy of a notification's ``policy`` object; None (or absent fields, or fields that are
        null) take the defaults. BadRequest naming the field for an unknown field, a wrong type (a boolean is
        no integer), a value out of range or an unknown strategy (strategies are case-insensitive)."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise BadRequest(f"Invalid notification policy: expected an object, got {type(d).__name__}.")
        for key in d:
            if key not in _FIELDS:
                near = difflib.get_close_matches(str(key), _FIELDS, n=1)
                hint = f" Did you mean {near[0]}?" if near else f" Known fields: {', '.join(_FIELDS)}."
                raise _bad(str(key), f"unknown field.{hint}")
        values: dict[str, Any] = {}
        strategy = d.get("retryStrategy")
        if strategy is not None:
            if not isinstance(strategy, str) or strategy.strip().upper() not in STRATEGIES:
                raise _bad("retryStrategy", f"{strategy!r} is not one of {', '.join(STRATEGIES)}.")
            values["retry_strategy"] = strategy.strip().upper()
        for field, (attr, top) in _INTS.items():
            value = d.get(field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(field, f"expected an integer, got {value!r}.")
            if not 0 <= value <= top:
                raise _bad(field, f"{value} is not between 0 and {top}.")
            values[attr] = value
        save = d.get("saveOnFailure")
        if save is not None:
            if not isinstance(save, bool):
                raise _bad("saveOnFailure", f"expected true or false, got {save!r}.")
            values["save_on_failure"] = save
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "retryStrategy": self.retry_strategy,
            "retryLimit": self.retry_limit,
            "retryRate": self.retry_rate,
            "retryDelay": self.retry_delay,
            "saveOnFailure": self.save_on_failure,
        }


def next_delay(policy: Policy, failed_attempts: int) -> float | None:
    """Seconds from the failure of attempt number ``failed_attempts`` (1 = the first attempt failed) to the
    next attempt; None when there is none (strategy NONE, or ``failed_attempts > retry_limit``).

    IMMEDIATE: 0. DELAYED: ``retry_delay`` before the first retry, ``retry_rate`` before each later one.
    EXPONENTIAL: 5 s while fewer than 5 attempts failed, 15 s below 9, 60 s below 14, 900 s below 18, then
    3600 s."""
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be at least 1, got {failed_attempts}")
    if policy.retry_strategy == "NONE" or failed_attempts > policy.retry_limit:
        return None
    if policy.retry_strategy == "IMMEDIATE":
        return 0.0
    if policy.retry_strategy == "DELAYED":
        return float(policy.retry_delay if failed_attempts == 1 else policy.retry_rate)
    return next((delay for below, delay in _LADDER if failed_attempts < below), _LADDER_TOP)


def with_retry_after(delay: float | None, retry_after_seconds: float | None) -> float | None:
    """The delay to use when the receiver asked for ``Retry-After`` seconds: the larger of both, the
    receiver's wish capped at 3600 s (a policy delay above that is kept: the policy is never shortened).
    None stays None: a Retry-After does not add attempts the policy does not have."""
    if delay is None:
        return None
    if retry_after_seconds is None or retry_after_seconds != retry_after_seconds:  # None or NaN
        return delay
    return max(delay, min(max(retry_after_seconds, 0.0), MAX_RETRY_AFTER))
