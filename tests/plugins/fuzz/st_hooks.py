"""Schemathesis hooks for the fuzz test (tests/plugins/test_schemathesis_e2e.py), loaded by schemathesis.toml.

* ``POST /token`` never fails a password login: the service throttles failed logins per (user, address) and per
  address (``airjobs.api.throttle``, 5 and 20 a minute), and every test reaches it from 127.0.0.1, so fuzzed
  wrong passwords would lock other users out for a minute. A password grant with a user name and a password
  is sent with the fuzzer's own credentials (a successful login counts nothing); everything else of the
  request (the grant type, missing or extra fields, refresh tokens, the body's encoding) stays as generated.
* Every request sent is counted per phase and per status class (schemathesis's own report counts test cases,
  not requests: a stateful scenario or a check's probe sends several); the counts are written as JSON to
  ``$AIRJOBS_FUZZ_COUNTS`` when the run ends.
* A CPython 3.11 bug, not the service: Hypothesis describes the lambdas of a strategy by parsing their source
  with ``ast.parse``, and on CPython 3.11.7 that raises ``SystemError: AST constructor recursion depth mismatch``
  when it runs deep inside a recursive strategy (seen in the coverage phase, once per few runs: schemathesis
  then counts a "Runtime Error"). The description is only for messages; when parsing hits that bug the lambda is
  described as unknown, as Hypothesis does for any source it cannot parse.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import Counter
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _lambda_description(f: Any, *args: Any, **kwargs: Any) -> str:
    try:
        return str(_describe(f, *args, **kwargs))
    except SystemError as e:  # CPython 3.11: "AST constructor recursion depth mismatch"
        if "recursion depth mismatch" not in str(e):
            raise
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description

_lock = threading.Lock()
_requests: Counter[str] = Counter()
_statuses: Counter[str] = Counter()
_slowest = [0.0, ""]


def _is_login(case: Any) -> bool:
    return case.operation.method.upper() == "POST" and case.operation.path.rstrip("/") == "/token"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not _is_login(case):
        return
    if isinstance(case.body, dict):  # the body is serialized after this hook, whatever its media type
        _own_credentials(case.body)


def _own_credentials(fields: dict[str, Any]) -> None:
    if str(fields.get("grant_type", "password")) == "password" and fields.get("username") and fields.get("password"):
        fields["username"] = os.environ["AIRJOBS_FUZZ_USER"]
        fields["password"] = os.environ["AIRJOBS_FUZZ_PASSWORD"]


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    meta = getattr(case, "meta", None)
    phase = meta.phase.name.value if meta is not None else "probe"
    elapsed = float(getattr(response, "elapsed", 0.0) or 0.0)
    with _lock:
        _requests[phase] += 1
        _statuses[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            _statuses[f"{response.status_code} {case.operation.label}"] += 1
        if elapsed > _slowest[0]:
            _slowest[:] = [elapsed, case.operation.label]


@atexit.register
def _dump() -> None:
    path = os.environ.get("AIRJOBS_FUZZ_COUNTS")
    if path:
        with _lock:
            doc = {
                "requests": dict(_requests),
                "total": sum(_requests.values()),
                "statuses": dict(_statuses),
                "slowest": {"seconds": round(_slowest[0], 3), "operation": _slowest[1]},
            }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
