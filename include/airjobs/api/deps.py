"""What the routers share: the injected ``Backend``, the caller as a typed dependency, paging, the job a
request names, worker-thread reads, and a router that serves every path with and without its trailing slash.

Dependencies run in the order an endpoint declares them, so each endpoint keeps the order of its checks:
who is calling (401/403) first, then the job (404/403), then paging or the body (400).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple, Protocol, cast

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from airjobs import db, store
from airjobs.errors import BadRequest, Forbidden, Unauthorized
from airjobs.models import Job

JOBS, APPS, SYSTEMS = "Agave Jobs", "Agave Apps", "Agave Systems"
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
MAX_OFFSET = 2**31 - 1  # what the database's integer takes; a larger offset is a 400, not a 500


@dataclass(frozen=True)
class User:
    name: str
    is_admin: bool = False
    native: Any = None  # the auth manager's own user object


class Backend(Protocol):
    async def authenticate(self, token: str) -> User:
        """The user a bearer token belongs to; raises ``Unauthorized``."""

    def login(self, username: str, password: str) -> dict[str, Any]:
        """``{access_token, expires_in}`` for valid credentials; raises ``Unauthorized``."""

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """A new access token for a refresh token; raises ``Unauthorized``."""

    def revoke(self, token: str) -> None:
        """Revoke a refresh or access token (RFC 7009: an unknown or invalid token is not an error)."""

    def authorize(self, user: User, method: str, resource: str) -> bool:
        """May ``user`` do ``method`` (GET/POST/PUT/DELETE) on ``resource``? Called in the event loop:
        it must not do I/O (``authenticate`` loads what it needs)."""

    def launch(self, job: Job) -> None:
        """Start the job's lifecycle run; raises on failure."""

    def connection_extra(self, conn_id: str) -> dict[str, Any] | None:
        """The entry's ``extra`` (``{}`` when it has none), None when there is no such entry."""

    def user_exists(self, username: str) -> str | None:
        """The user's own spelling of the name when such a user exists (a grant's target must exist)."""

    def delete_connection(self, conn_id: str) -> None:
        """Remove a credential store entry (no error when it is gone)."""

    def put_connection(
        self,
        conn_id: str,
        conn_type: str,
        host: str,
        port: int,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
    ) -> None:
        """Create or replace a credential store entry."""


async def backend(request: Request) -> Backend:
    """The Backend ``create_app`` was given."""
    return cast(Backend, request.app.state.backend)


BackendDep = Annotated[Backend, Depends(backend)]

#: documents the scheme; the header is read by ``caller`` itself (same rules and messages as ever)
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="An access token from POST /token (or the Airflow api-server's own).",
)

Caller = Callable[..., Awaitable[User]]


@functools.cache
def caller(method: str, resource: str) -> Caller:
    """A dependency: the authenticated user, permitted ``method`` on ``resource``; 401 without a usable
    bearer token, 403 when the auth manager says no. One function per (method, resource), so an endpoint
    and its other dependencies share one answer per request."""

    async def dependency(
        request: Request, backend: BackendDep, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> User:
        header = request.headers.get("authorization", "")
        scheme, _sep, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("No bearer token given. Log in at /token and send Authorization: Bearer <token>.")
        user = await backend.authenticate(token.strip())
        if not backend.authorize(user, method, resource):  # in memory: the permission set is loaded
            raise Forbidden(f"User {user.name} is not permitted to {method} {resource}.")
        return user

    dependency.__name__ = f"caller_{method.lower()}_{resource.rsplit(maxsplit=1)[-1].lower()}"
    return dependency


JobsReader = Annotated[User, Depends(caller("GET", JOBS))]
JobsWriter = Annotated[User, Depends(caller("POST", JOBS))]
AppsReader = Annotated[User, Depends(caller("GET", APPS))]
AppsCreator = Annotated[User, Depends(caller("POST", APPS))]
AppsWriter = Annotated[User, Depends(caller("PUT", APPS))]
AppsDeleter = Annotated[User, Depends(caller("DELETE", APPS))]
SystemsReader = Annotated[User, Depends(caller("GET", SYSTEMS))]
SystemsCreator = Annotated[User, Depends(caller("POST", SYSTEMS))]
SystemsWriter = Annotated[User, Depends(caller("PUT", SYSTEMS))]
SystemsDeleter = Annotated[User, Depends(caller("DELETE", SYSTEMS))]


async def read(fn: Callable[..., Any], *args: Any) -> Any:
    """A read-only unit of work in a worker thread (retried once if the database connection dropped)."""
    return await to_thread.run_sync(db.retrying, fn, *args)


#: documented, not validated: a value is one path segment (a "/" in it, even as %2F, routes elsewhere), and not
#: "." or ".." (clients resolve those away); what the route answers for any other value stays as it was
SEGMENT = {"pattern": r"^(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)$"}
JobId = Annotated[
    str,
    Path(
        alias="jobId", json_schema_extra=SEGMENT, description="The job's id, e.g. 0001414144065563-5056a550b8-0001-007"
    ),
]


async def readable_job(user: JobsReader, job_id: JobId) -> Job:
    """The job, when the caller may read it (404 as if it did not exist otherwise)."""
    return cast(Job, await read(store.readable_job, job_id, user.name, user.is_admin))


async def writable_job(user: JobsWriter, job_id: JobId) -> Job:
    """The job, when the caller may act on it (403 for one they may only read, 404 for one they may not see)."""
    return cast(Job, await read(store.writable_job, job_id, user.name, user.is_admin))


ReadableJob = Annotated[Job, Depends(readable_job)]
WritableJob = Annotated[Job, Depends(writable_job)]


class Page(NamedTuple):
    limit: int
    offset: int


async def page(request: Request) -> Page:
    """D18: limit defaults to 100 and is clamped to 1000; offset defaults to 0 and is at most MAX_OFFSET; bad
    values (empty, not a number, negative, too many digits for ``int``, an offset past MAX_OFFSET) are a 400."""
    out = []
    for name, default in (("limit", DEFAULT_LIMIT), ("offset", 0)):
        raw = request.query_params.get(name)
        if raw is None:
            out.append(default)
            continue
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"Invalid {name} value {raw[:40]!r}: must be a non-negative integer.") from None
        if value < 0:
            raise BadRequest(f"Invalid {name} value {raw!r}: must be a non-negative integer.")
        if name == "offset" and value > MAX_OFFSET:
            raise BadRequest(f"Invalid offset value {raw[:40]!r}: must be at most {MAX_OFFSET}.")
        out.append(min(value, MAX_LIMIT) if name == "limit" else value)
    return Page(out[0], out[1])


Paging = Annotated[Page, Depends(page)]


class AgaveRouter(APIRouter):
    """Every path is served with and without a trailing slash (as Agave routes them); the alias stays out of
    the OpenAPI document."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        alias = {**kwargs, "include_in_schema": False, "operation_id": None}
        super().add_api_route(path + "/", endpoint, **alias)
