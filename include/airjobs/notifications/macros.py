"""Agave's notification template variables (spec §6.4 Table 3): ``${NAME}`` in a webhook URL or an email
body, resolved from the job JSON (``airjobs.representation.job_json``) at the time of the event.

* Every name of Table 3 (``KNOWN``) except the ``PERMISSION_*`` ones (they belong to permission events,
  whose payload is no job): a missing or null value resolves to ``""``; an unknown ``${X}`` stays as written.
* Substitution is one pass: a value that itself contains ``${...}`` is not resolved again.
* ``url=True`` (a webhook URL): the URL is split (RFC 3986) BEFORE anything is substituted, then

  - ``scheme://userinfo@host:port`` is left exactly as written, macros included: a substituted value can
    never change where the request goes (nor its credentials). A URL without ``//authority`` is left
    entirely literal up to its query (a value there could otherwise create an authority);
  - the path gets the values as they are (Agave's behaviour);
  - the query and the fragment get them URL-encoded (``urllib.parse.quote(value, safe="")``), so a value
    with ``&``, ``=``, ``#`` or spaces stays one parameter value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from airjobs.timeutil import hms_to_seconds

TENANT = "airjobs"

_MACRO = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
#: RFC 3986 appendix B: scheme, //authority, path, ?query, #fragment
_URL = re.compile(r"(?s)([A-Za-z][A-Za-z0-9+.\-]*:)?(//[^/?#]*)?([^?#]*)(\?[^#]*)?(#.*)?")


def _text(value: Any) -> str:
    """A JSON value as template text: null -> "", booleans as JSON, objects and arrays as JSON text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _millis(max_run_time: Any) -> str:
    if not isinstance(max_run_time, str) or not max_run_time:
        return ""
    try:
        return str(hms_to_seconds(max_run_time) * 1000)
    except ValueError:
        return ""


def _archive_url(job: Mapping[str, Any], job_url: str) -> str:
    links = job.get("_links")
    data = links.get("archiveData") if isinstance(links, dict) else None
    href = data.get("href") if isinstance(data, dict) else None
    return href if isinstance(href, str) and href else f"{job_url}/outputs/listings"


def variables(job: Mapping[str, Any], event: str, *, owner: str, jobs_base: str) -> dict[str, str]:
    """Every known variable's value for ``job`` (a job JSON dict) at ``event``, raised by ``owner``."""
    job_id = _text(job.get("id"))
    job_url = f"{jobs_base.rstrip('/')}/jobs/v2/{job_id}"
    archiving = job.get("archive") is True
    whole = json.dumps(dict(job), separators=(",", ":"), default=str)

    def get(key: str) -> str:
        return _text(job.get(key))

    out = {
        "UUID": job_id,
        "EVENT": event,
        "OWNER": owner,
        "JOB_STATUS": get("status") or event,
        "JOB_URL": job_url,
        "JOB_ID": job_id,
        "JOB_SYSTEM": get("executionSystem"),
        "JOB_EXECUTION_SYSTEM": get("executionSystem"),
        "JOB_NAME": get("name"),
        "JOB_START_TIME": get("startTime"),
        "JOB_END_TIME": get("endTime"),
        "JOB_SUBMIT_TIME": get("submitTime"),
        "JOB_ARCHIVE_PATH": get("archivePath") if archiving else "",
        "JOB_ARCHIVE_URL": _archive_url(job, job_url),
        "JOB_ERROR": get("message"),
        "JOB_APPID": get("appId"),
        "JOB_BATCH_QUEUE": get("batchQueue"),
        "JOB_CREATED": get("created"),
        "JOB_INPUTS": json.dumps(job.get("inputs") or {}, separators=(",", ":")),
        "JOB_PARAMETERS": json.dumps(job.get("parameters") or {}, separators=(",", ":")),
        "JOB_LOCAL_ID": get("localId"),
        "JOB_MAX_RUNTIME": get("maxRunTime"),
        "JOB_MAX_RUNTIME_MILLISECONDS": _millis(job.get("maxRunTime")),
        "JOB_MEMORY_PER_NODE": get("memoryPerNode"),
        "JOB_NODE_COUNT": get("nodeCount"),
        "JOB_PROCESSORS_PER_NODE": get("processorsPerNode"),
        "JOB_OWNER": get("owner"),
        "JOB_TENANT": TENANT,
        "JOB_OUTPUT_PATH": get("outputPath"),
        "JOB_ARCHIVE": "true" if archiving else "false",
        "JOB_ARCHIVE_SYSTEM": get("archiveSystem") if archiving else "",
        "JOB_JSON": whole,
        "RAW_JSON": whole,
    }
    for alias, name in _ALIASES.items():
        out[alias] = out[name]
    return out


_ALIASES = {
    "JOB_STARTTIME": "JOB_START_TIME",
    "JOB_ENDTIME": "JOB_END_TIME",
    "JOB_SUBMITTIME": "JOB_SUBMIT_TIME",
    "JOB_ARCHIVEPATH": "JOB_ARCHIVE_PATH",
    "JOB_ARCHIVEURL": "JOB_ARCHIVE_URL",
    "JOB_APP_ID": "JOB_APPID",
    "APP_ID": "JOB_APPID",
}

#: every variable name ``resolve`` knows
KNOWN: frozenset[str] = frozenset(variables({}, "", owner="", jobs_base=""))


def _substitute(text: str, values: Mapping[str, str], encode: bool = False) -> str:
    def one(m: re.Match[str]) -> str:
        value = values.get(m.group(1))
        if value is None:
            return m.group(0)
        return quote(value, safe="") if encode else value

    return _MACRO.sub(one, text)


def resolve(template: str, job: Mapping[str, Any], event: str, *, owner: str, jobs_base: str, url: bool = False) -> str:
    """``template`` with its ``${NAME}`` variables resolved for ``job`` at ``event`` (see the module doc; with
    ``url=True`` the template is a URL: its scheme, userinfo, host and port are never substituted, its query
    and fragment get URL-encoded values)."""
    if "${" not in template:
        return template
    values = variables(job, event, owner=owner, jobs_base=jobs_base)
    if not url:
        return _substitute(template, values)
    m = _URL.fullmatch(template)
    if m is None:  # cannot happen: every group is optional, so the pattern matches any string
        return template
    scheme, authority, path, query, fragment = (g or "" for g in m.groups())
    if authority:
        path = _substitute(path, values)
    return (
        scheme + authority + path + _substitute(query, values, encode=True) + _substitute(fragment, values, encode=True)
    )
