"""The Agave v2 REST facade (FastAPI): ``/jobs/v2``, ``/notifications/v2``, ``/apps/v2``, ``/systems/v2``,
``/token`` and ``/revoke``.

One router per resource (``jobs``, ``outputs``, ``pems``, ``notifications``, ``apps``, ``systems``, ``token``);
what they share is in ``deps`` (the caller as a dependency, paging, the job a request names), ``body`` (the one
request-body reader), ``envelope`` (rendering) and ``models``/``docs`` (the OpenAPI document at /jobs/v2/openapi.json).

Authentication, authorization and starting the lifecycle run are injected (``Backend``), so this package
knows nothing about Airflow; ``plugins/airjobs_airflow`` supplies the Airflow implementations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError, DisconnectionError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from airjobs import SERVICE_VERSION
from airjobs.api import apps, docs, events, jobs, notifications, outputs, pems, search, systems, token
from airjobs.api.deps import APPS, JOBS, SYSTEMS, Backend, User
from airjobs.api.envelope import envelope, error
from airjobs.api.throttle import LoginThrottle
from airjobs.errors import AgaveError, Unauthorized

__all__ = ["APPS", "JOBS", "SYSTEMS", "Backend", "User", "create_app", "envelope", "error"]

log = logging.getLogger(__name__)

DESCRIPTION = """The Agave v2 Jobs service (with the apps and systems it needs) on Apache Airflow.

Every JSON answer is the envelope `{status, message, version, result}`; `naked=true` answers the bare result,
`filter=a,b.c` keeps only those fields of the result's objects, `pretty=true` indents. Errors always keep the
envelope (`status: error`). Every path is also served with a trailing slash.
"""


METHOD_NOT_ALLOWED = 405
#: the Agave CLI builds some URLs as ``${hosturl}/${id}`` with a host URL that ends in a slash (``jobs-unhide``
#: sends ``/jobs/v2//<id>/unhide``): the slashes right after a service's prefix are one
_DOUBLE_SLASH = re.compile(r"^(/(?:jobs|notifications|apps|systems)/v2)//+")


class CollapseSlashes:
    """Pure ASGI middleware: ``/jobs/v2//x`` is routed as ``/jobs/v2/x``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and _DOUBLE_SLASH.match(scope.get("path", "")):
            scope = dict(scope)
            scope["path"] = _DOUBLE_SLASH.sub(r"\1/", scope["path"])
            if isinstance(scope.get("raw_path"), bytes):
                scope["raw_path"] = re.sub(
                    rb"^(/(?:jobs|notifications|apps|systems)/v2)//+", rb"\1/", scope["raw_path"]
                )
        await self.app(scope, receive, send)


def allowed_methods(app: FastAPI, scope: MutableMapping[str, Any]) -> str:
    """Every method some route of the request's path answers (RFC 9110: a 405 names them all; Starlette's
    names only those of the first route of the path, and each method is a route of its own here)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE and isinstance(route, APIRoute):
            methods |= route.methods
    return ", ".join(sorted(methods))


def create_app(backend: Backend, logins: LoginThrottle | None = None) -> FastAPI:
    """The facade; ``logins`` throttles failed password logins (one per process by default)."""
    app = FastAPI(
        title="airjobs: Agave v2 Jobs",
        version=SERVICE_VERSION,
        redirect_slashes=False,
        docs_url="/jobs/v2/docs",
        openapi_url="/jobs/v2/openapi.json",
        description=DESCRIPTION,
    )
    app.state.backend = backend
    app.state.logins = logins if logins is not None else LoginThrottle.from_env()

    @app.exception_handler(AgaveError)
    async def _agave_error(request: Request, exc: AgaveError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == Unauthorized.status_code else None
        return error(request, exc.status_code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == METHOD_NOT_ALLOWED:
            headers["Allow"] = allowed_methods(app, request.scope)
        return error(request, exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(request, 400, f"Invalid request: {exc.errors()}")

    async def _database_away(request: Request, exc: Exception) -> Response:
        """The database went away (restarting) or is saturated: a 503 the client may retry, not a 500."""
        log.warning("database error on %s %s: %s", request.method, request.url.path, getattr(exc, "orig", exc))
        return error(
            request,
            503,
            "The service's database is unavailable for a moment; retry shortly.",
            headers={"Retry-After": "5"},
        )

    for away in (DBAPIError, DisconnectionError, PendingRollbackError, PoolTimeout):
        app.add_exception_handler(away, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(request, 500, f"Internal error: {type(exc).__name__}. The service log has the details.")

    # events: before /jobs/v2/{id}; search (the legacy /jobs/v2/{attribute}/{value}) last: it never shadows one
    for module in (token, events, jobs, outputs, pems, notifications, apps, systems, search):
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        return docs.document(app)

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(CollapseSlashes)
    return app
