"""The Agave response envelope (spec §1.2, §1.3): ``{status, message, version, result}``, and the query
parameters every answer honours: ``pretty`` (indented JSON), ``naked`` (the bare result, no envelope) and
``filter`` (only the named fields of each result object, dotted names reach into nested objects).

Every JSON answer of the facade is rendered here; the documented schemas (``airjobs.api.models``) describe
what this renders, they never re-validate it.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from airjobs import SERVICE_VERSION

TRUE_WORDS = ("1", "true", "yes", "on")
FIRST_ERROR = 400  # from this status on, the error envelope


def flag(request: Request, name: str) -> bool:
    return str(request.query_params.get(name, "")).lower() in TRUE_WORDS


def filtered(obj: Any, fields: list[str]) -> Any:
    """Only the named fields of every object (of a list's objects); ``a.b`` keeps ``b`` of the object ``a``.
    No value changes its type: fields are dropped, at any depth, never converted."""
    if isinstance(obj, list):
        return [filtered(o, fields) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for f in fields:
        head, _, rest = f.partition(".")
        if head in obj:
            out[head] = filtered(obj[head], [rest]) if rest and isinstance(obj[head], (dict, list)) else obj[head]
    return out


def envelope(
    request: Request,
    result: Any = None,
    *,
    status_code: int = 200,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    fields = [f.strip() for f in str(request.query_params.get("filter", "")).split(",") if f.strip()]
    if fields and result is not None:
        result = filtered(result, fields)
    if status_code >= FIRST_ERROR:
        body: Any = {"status": "error", "message": message, "version": SERVICE_VERSION}
    elif flag(request, "naked"):
        body = result
    else:
        body = {"status": "success", "message": message, "version": SERVICE_VERSION, "result": result}
    indent = 2 if flag(request, "pretty") else None
    text = json.dumps(body, indent=indent, default=str)
    return Response(text, status_code=status_code, media_type="application/json", headers=headers)


def error(request: Request, status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return envelope(request, status_code=status_code, message=message, headers=headers)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
