"""OpenAPI declarations of the routes: their answers, the common query parameters, request bodies and links.

``operation(...)`` gives the keyword arguments of a route decorator. Nothing here changes what a route
does: ``response_model`` stays None (endpoints return ready ``Response`` objects), query parameters and
request bodies are declared in ``openapi_extra`` (the facade reads them itself, with the Agave rules and
messages, so FastAPI must not validate them), and ``document(app)`` adds the request-body schemas to the
document's components.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from airjobs.api import models as m
from airjobs.api.deps import MAX_LIMIT, MAX_OFFSET

REF = "#/components/schemas/"

ERRORS: dict[int | str, str] = {
    400: "Invalid request: a bad parameter, header or body (the message says which)",
    401: "No bearer token, or one that is invalid, expired or revoked",
    403: "The caller may not do this (the auth manager's permission, or the resource's owner says no)",
    404: "No such thing, or one the caller may not see (answered as if it did not exist)",
    408: "The request body stopped arriving",
    409: "The app or system has active jobs, or an app uses the system",
    413: "The request body is larger than AIRJOBS_MAX_BODY_BYTES",
    414: "The path or the query string is too long",
    416: "The byte range lies outside the file",
    429: "Too many failed logins for this user name or from this address, or too many open event streams",
    502: "The job's execution system could not be reached to kill it; try again",
    503: "The service's database is unavailable for a moment; retry shortly",
    405: "The path is served, not with this method (Allow names the methods it is served with)",
    "4XX": "Any other client error",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "required": True, "schema": {"type": "integer"}}}
ERROR_HEADERS: dict[int | str, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
    405: {
        "Allow": {"description": "The methods the path is served with", "required": True, "schema": {"type": "string"}}
    },
    416: {"Content-Range": {"description": "bytes */<size>", "required": True, "schema": {"type": "string"}}},
}
#: what any request may meet: a path or query the limits refuse (400, 414), another method of its path (405), a
#: body too large (413), the database away (503), and another client error (4XX)
ALWAYS = (400, 405, 413, 414, 503, "4XX")
AUTH = (401, 403)

TRUE_WORDS = "1, true, yes or on (any case); anything else is false"


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter of an operation (``operation(query=[...])``)."""
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PRETTY = query("pretty", {"type": "string", "examples": ["true"]}, f"Indent the JSON answer: {TRUE_WORDS}.")
NAKED = query(
    "naked",
    {"type": "string", "examples": ["true"]},
    f"Answer the bare result, without the envelope: {TRUE_WORDS}. Errors keep the envelope.",
)
FILTER = query(
    "filter",
    {"type": "string", "examples": ["id,status", "id,_links.self.href"]},
    "Comma-separated (dotted) names: keep only these fields of the result's objects.",
)
LIMIT = query(
    "limit",
    {"type": "integer", "minimum": 0, "default": 100},
    f"At most this many entries (D18); more than {MAX_LIMIT} is taken as {MAX_LIMIT}.",
)
OFFSET = query(
    "offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}, "Skip this many entries."
)
ENVELOPE_PARAMETERS = (PRETTY, NAKED, FILTER)

LOCATION = {
    "Location": {
        "description": "The URL of the created (or, with 200, the existing) resource",
        "required": True,
        "schema": {"type": "string", "format": "uri"},
    }
}

_request_models: dict[str, type[BaseModel]] = {}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    _request_models[model.__name__] = model
    return {"$ref": REF + model.__name__}


def body(
    json: type[BaseModel], *, form: type[BaseModel] | None = None, upload: bool = False, required: bool = True
) -> dict[str, Any]:
    """A request body: JSON, and where the route takes them an HTML form and a multipart upload of the JSON
    as ``fileToUpload``."""
    content: dict[str, Any] = {"application/json": {"schema": _ref(json)}}
    if form is not None:
        content["application/x-www-form-urlencoded"] = {"schema": _ref(form)}
    if upload:
        content["multipart/form-data"] = {
            "schema": _ref(m.Upload),
            "encoding": {"fileToUpload": {"contentType": "application/json"}},
        }
    return {"required": required, "content": content}


def either(*models: type[BaseModel]) -> dict[str, Any]:
    """A schema that is any of ``models``."""
    return {"anyOf": [_ref(model) for model in models]}


def _error(code: int | str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": m.ErrorEnvelope, "description": ERRORS[code]}
    if code in ERROR_HEADERS:
        out["headers"] = ERROR_HEADERS[code]
    return out


def operation(
    operation_id: str,
    summary: str,
    *,
    ok: Mapping[int, Any],
    errors: Iterable[int | str] = (),
    auth: bool = True,
    envelope: bool = True,
    page: bool = False,
    query: Sequence[dict[str, Any]] = (),
    request_body: dict[str, Any] | None = None,
    extra: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The decorator arguments of a route. ``ok``: status -> the documented type of the answer (a model,
    a union) or a ready OpenAPI response (a dict); ``extra``: status -> more of that response (headers,
    links)."""
    responses: dict[int | str, Any] = {}
    for status, what in ok.items():
        entry = dict(what) if isinstance(what, dict) else {"model": what}
        entry.setdefault("description", "The envelope, or with naked=true the bare result" if envelope else "OK")
        entry.update((extra or {}).get(status, {}))
        responses[status] = entry
    codes: list[int | str] = [*(AUTH if auth else ()), *errors, *ALWAYS, *((408,) if request_body else ())]
    for code in sorted(set(codes), key=str):
        responses[code] = _error(code)
    parameters = [*(ENVELOPE_PARAMETERS if envelope else ()), *((LIMIT, OFFSET) if page else ()), *query]
    openapi_extra: dict[str, Any] = {}
    if parameters:
        openapi_extra["parameters"] = parameters
    if request_body is not None:
        openapi_extra["requestBody"] = request_body
    return {
        "operation_id": operation_id,
        "summary": summary,
        "status_code": next(iter(ok)),
        "response_model": None,
        "responses": responses,
        "openapi_extra": openapi_extra or None,
    }


def job_links(pointer: str = "$response.body#/result/id") -> dict[str, Any]:
    """Links from an answer holding a job to what one does with it next."""
    target = {"jobId": pointer}
    return {
        "GetJob": {"operationId": "getJob", "parameters": target, "description": "The job"},
        "GetJobStatus": {"operationId": "getJobStatus", "parameters": target, "description": "Its status"},
        "GetJobHistory": {"operationId": "getJobHistory", "parameters": target, "description": "Its history"},
        "KillJob": {"operationId": "cancelJob", "parameters": target, "description": "Kill it (ends STOPPED)"},
        "ListJobOutputs": {"operationId": "listJobOutputs", "parameters": target, "description": "Its outputs"},
        "ListJobPermissions": {
            "operationId": "listJobPermissions",
            "parameters": target,
            "description": "Who may see it",
        },
    }


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, with the request-body schemas the routes name."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _, defs = models_json_schema(
        [(model, "validation") for model in _request_models.values()], ref_template=REF + "{model}"
    )
    for name, schema in defs.get("$defs", {}).items():
        if name in schemas and schemas[name] != schema:
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")
        schemas[name] = schema
    app.openapi_schema = doc
    return doc
