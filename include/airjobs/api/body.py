"""The one request-body reader: a JSON object, HTML form fields, or (D3) a multipart upload of the JSON as
``fileToUpload``, turned into a dict by the rules of its kind (``JOB``, ``TOKEN``, ``description(what)``).

Kinds differ only in how fields and JSON become the document and in their messages:

* a job request (``JOB``): form fields name job fields, any other field an app input or parameter
  (``submission.from_form``); an empty body is refused as such.
* a description (an app, a system, a permission, a job action): form fields are taken as they are; every
  key and string must be text the database takes (``submission.check_strings``).
* an OAuth2 request (``TOKEN``: ``/token``, ``/revoke``): a form whatever the content type (one that does
  not parse counts as no form), else a JSON object when the request says it is JSON; every value as text.

Bodies nested deeper than ``limits.MAX_JSON_DEPTH`` are refused before they are parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from airjobs import submission
from airjobs.errors import BadRequest
from airjobs.jsonlimits import check_json_depth

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
UPLOAD_FIELD = "fileToUpload"


def _text_fields(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _json_object(raw: bytes, label: str, not_object: str) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadRequest(f"Unable to parse {label}: malformed JSON ({e}).") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Unable to parse {label}: {not_object}.")
    return body


@dataclass(frozen=True)
class Kind:
    label: str  # "Unable to parse <label>: ..."
    from_form: Callable[[FormData], dict[str, Any]]
    from_json: Callable[[bytes], dict[str, Any]]
    empty: str | None = None  # the message for an empty (non-form) body; None: it is parsed (malformed JSON)
    lenient: bool = False  # OAuth2: a form whatever the content type, a broken one is no form, no uploads


def _job_json(raw: bytes) -> dict[str, Any]:
    return submission.parse_body(raw, "application/json")


JOB = Kind(
    "job request", lambda form: submission.from_form(_text_fields(form)), _job_json, empty="the request body is empty."
)


def _token_json(raw: bytes) -> dict[str, Any]:
    try:
        return {k: str(v) for k, v in json.loads(raw).items()}
    except Exception:
        raise BadRequest("Malformed token request.") from None


TOKEN = Kind("token request", lambda form: {k: str(v) for k, v in form.items()}, _token_json, lenient=True)


def description(what: str) -> Kind:
    """The kind of an app, system, permission or job-action description."""
    label = f"{what} description"

    def storable(doc: dict[str, Any]) -> dict[str, Any]:
        submission.check_strings(doc, f"{label} ")
        return doc

    return Kind(
        label,
        lambda form: storable(dict(_text_fields(form))),
        lambda raw: storable(_json_object(raw, label, "it must be a JSON object")),
    )


APP, SYSTEM = description("app"), description("system")
PERMISSION, ACTION = description("permission"), description("job action")


async def read_body(request: Request, kind: Kind) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if kind.lenient:
        try:
            form = await request.form()
        except Exception:
            form = FormData()
        fields = kind.from_form(form)
        if fields or not ctype.startswith("application/json"):
            return fields
        raw = await request.body()
    elif ctype.lower().startswith(FORM_TYPES):
        try:
            form = await request.form()
        except Exception as e:
            raise BadRequest(f"Unable to parse {kind.label}: malformed form data ({e}).") from None
        upload = form.get(UPLOAD_FIELD)
        if upload is None or isinstance(upload, str):
            return kind.from_form(form)
        raw = await upload.read()
    else:
        raw = await request.body()
        if kind.empty and not raw.strip():
            raise BadRequest(f"Unable to parse {kind.label}: {kind.empty}")
    check_json_depth(raw, kind.label)
    return kind.from_json(raw)
