"""The Agave v2 REST facade (FastAPI): ``/jobs/v2``, ``/apps/v2``, ``/systems/v2`` and ``/token``.

Authentication, authorization and starting the lifecycle run are injected (``Backend``), so this module
knows nothing about Airflow; ``plugins/airjobs_airflow`` supplies the Airflow implementations.
"""

from __future__ import annotations

import json
import logging
from email.utils import formatdate
from urllib.parse import quote
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from airjobs import SERVICE_VERSION, access, control, db, outputs, registry, representation as rep, store, submission
from airjobs import validation
from airjobs.errors import AgaveError, BadRequest, Forbidden, NotFound, Unauthorized
from airjobs.api.limits import check_json_depth
from airjobs.api.throttle import LoginThrottle, client_address
from airjobs.models import Job

log = logging.getLogger(__name__)

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

    def connection_extra(self, conn_id: str) -> dict | None:
        """The entry's ``extra`` (``{}`` when it has none), None when there is no such entry."""

    def user_exists(self, username: str) -> str | None:
        """The user's own spelling of the name when such a user exists (a grant's target must exist)."""

    def delete_connection(self, conn_id: str) -> None:
        """Remove a credential store entry (no error when it is gone)."""

    def put_connection(self, conn_id: str, conn_type: str, host: str, port: int, login: str | None,
                       password: str | None, extra: dict) -> None:
        """Create or replace a credential store entry."""


# ---------------------------------------------------------------- envelopes


def _flag(request: Request, name: str) -> bool:
    return str(request.query_params.get(name, "")).lower() in ("1", "true", "yes", "on")


def _filter(obj: Any, fields: list[str]) -> Any:
    if isinstance(obj, list):
        return [_filter(o, fields) for o in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for f in fields:
        head, _, rest = f.partition(".")
        if head in obj:
            out[head] = _filter(obj[head], [rest]) if rest and isinstance(obj[head], (dict, list)) else obj[head]
    return out


def envelope(request: Request, result: Any = None, *, status_code: int = 200, message: str | None = None,
             headers: dict[str, str] | None = None) -> Response:
    fields = [f.strip() for f in str(request.query_params.get("filter", "")).split(",") if f.strip()]
    if fields and result is not None:
        result = _filter(result, fields)
    if status_code >= 400:
        body: Any = {"status": "error", "message": message, "version": SERVICE_VERSION}
    elif _flag(request, "naked"):
        body = result
    else:
        body = {"status": "success", "message": message, "version": SERVICE_VERSION, "result": result}
    indent = 2 if _flag(request, "pretty") else None
    text = json.dumps(body, indent=indent, default=str)
    return Response(text, status_code=status_code, media_type="application/json", headers=headers)


def error(request: Request, status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return envelope(request, status_code=status_code, message=message, headers=headers)


def _page(request: Request) -> tuple[int, int]:
    """D18: limit defaults to 100 and is clamped to 1000; offset defaults to 0 and is at most MAX_OFFSET; bad
    values (not a number, negative, too many digits for ``int``, an offset past MAX_OFFSET) are a 400."""
    out = []
    for name, default in (("limit", DEFAULT_LIMIT), ("offset", 0)):
        raw = request.query_params.get(name)
        if raw is None or raw == "":
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
    return out[0], out[1]


async def read(fn: Callable[..., Any], *args: Any) -> Any:
    """A read-only unit of work in a worker thread (retried once if the database connection dropped)."""
    return await to_thread.run_sync(db.retrying, fn, *args)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# ---------------------------------------------------------------- the app


def create_app(backend: Backend, logins: LoginThrottle | None = None) -> FastAPI:
    """The facade; ``logins`` throttles failed password logins (one per process by default)."""
    logins = logins if logins is not None else LoginThrottle.from_env()
    app = FastAPI(title="airjobs: Agave v2 Jobs", version=SERVICE_VERSION, redirect_slashes=False,
                  docs_url="/jobs/v2/docs", openapi_url="/jobs/v2/openapi.json")

    @app.exception_handler(AgaveError)
    async def _agave_error(request: Request, exc: AgaveError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error(request, exc.status_code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error(request, 400, f"Invalid request: {exc.errors()}")

    async def _database_away(request: Request, exc: Exception) -> Response:
        """The database went away (restarting) or is saturated: a 503 the client may retry, not a 500."""
        log.warning("database error on %s %s: %s", request.method, request.url.path, getattr(exc, "orig", exc))
        return error(request, 503, "The service's database is unavailable for a moment; retry shortly.",
                     headers={"Retry-After": "5"})

    for away in (DBAPIError, DisconnectionError, PendingRollbackError, PoolTimeout):
        app.add_exception_handler(away, _database_away)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(request, 500, f"Internal error: {type(exc).__name__}. The service log has the details.")

    async def current_user(request: Request, method: str, resource: str) -> User:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("No bearer token given. Log in at /token and send Authorization: Bearer <token>.")
        user = await backend.authenticate(token.strip())
        if not backend.authorize(user, method, resource):  # in memory: the permission set is loaded
            raise Forbidden(f"User {user.name} is not permitted to {method} {resource}.")
        return user

    def _usable_connection(user: User) -> Callable[[str], bool]:
        return lambda conn_id: access.may_use_connection(backend.connection_extra(conn_id), user.name, user.is_admin)

    def route(path: str, methods: list[str]) -> Callable:
        """Register ``path`` and ``path/`` (Agave routes every path with and without the slash)."""

        def deco(fn: Callable[..., Awaitable[Response]]) -> Callable:
            app.add_api_route(path, fn, methods=methods)
            app.add_api_route(path + "/", fn, methods=methods, include_in_schema=False)
            return fn

        return deco

    # ------------------------------------------------------------ login (D17)

    async def _oauth_fields(request: Request) -> dict[str, str]:
        """OAuth2 request fields: a form, or a JSON object."""
        try:
            form = await request.form()
        except Exception:
            form = {}
        fields = {k: str(v) for k, v in form.items()}
        if not fields and request.headers.get("content-type", "").startswith("application/json"):
            raw = await request.body()
            check_json_depth(raw, "token request")
            try:
                fields = {k: str(v) for k, v in json.loads(raw).items()}
            except Exception:
                raise BadRequest("Malformed token request.") from None
        return fields

    @app.post("/token")
    async def token(request: Request) -> Response:
        fields = await _oauth_fields(request)
        grant = fields.get("grant_type", "password")
        if grant == "password":
            if not fields.get("username") or not fields.get("password"):
                raise BadRequest("username and password are required for grant_type=password.")
            who = fields["username"]
            address = client_address(request.client.host if request.client else None,
                                     request.headers.get("x-forwarded-for"))
            wait = logins.retry_after(who, address)
            if wait is not None:
                return error(request, 429, f"Too many failed logins for this user name or from this address; retry "
                                           f"in {wait} seconds.", headers={"Retry-After": str(wait)})
            try:
                result = await to_thread.run_sync(backend.login, who, fields["password"])
            except Unauthorized:
                # FAB answers "no such user" when it cannot reach its database: a refusal counts only when the
                # database answers and a second try refuses too (the first may have met the database restarting)
                if not await to_thread.run_sync(db.alive):
                    return error(request, 503, "The service's database is unavailable for a moment; retry "
                                               "shortly.", headers={"Retry-After": "5"})
                try:
                    result = await to_thread.run_sync(backend.login, who, fields["password"])
                except Unauthorized:
                    logins.failure(who, address)
                    raise
            logins.success(who, address)
        elif grant == "refresh_token":
            if not fields.get("refresh_token"):
                raise BadRequest("refresh_token is required for grant_type=refresh_token.")
            result = await to_thread.run_sync(backend.refresh, fields["refresh_token"])
        else:
            raise BadRequest(f"Unsupported grant_type {grant!r}: use password or refresh_token.")
        return JSONResponse({"token_type": "bearer", "scope": "default", **result})

    @route("/revoke", ["POST"])
    async def revoke(request: Request) -> Response:
        """RFC 7009 / WSO2 ``/revoke``: ``token`` is a refresh or an access token; 200 with an empty body, also
        for a token that is unknown or invalid already (nothing to revoke)."""
        fields = await _oauth_fields(request)
        if not fields.get("token"):
            raise BadRequest("token is required: POST /revoke with token=<refresh or access token>.")
        await to_thread.run_sync(backend.revoke, fields["token"])
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------ jobs

    @route("/jobs/v2", ["POST"])
    async def submit_job(request: Request) -> Response:
        user = await current_user(request, "POST", JOBS)
        body = await _job_request(request)
        key = request.headers.get("idempotency-key")
        job, created = await to_thread.run_sync(_submit, body, user, key)
        base = base_url(request)
        headers = {"Location": f"{base}/jobs/v2/{job.id}"}
        return envelope(request, rep.job_json(job, base), status_code=201 if created else 200, headers=headers)

    def _submit(body: dict[str, Any], user: User, key: str | None) -> tuple[Job, bool]:
        job = submission.build_job(body, user.name, user.is_admin)
        submission.authorize(job)
        if key:
            if len(key) > 255:
                raise BadRequest("Idempotency-Key may be at most 255 characters.")
            job.idempotency_key = key
        job, created = store.create_job(job, created_by=user.name, system=registry.get_system(job.execution_system))
        if not created:
            return job, False
        try:
            backend.launch(job)
        except Exception:  # Airflow's database or scheduler side failed for a moment: the job is kept, PENDING,
            # and the reconciler starts its run after its launch grace (``airjobs_airflow.reconcile``)
            log.exception("could not start the lifecycle run of job %s now; the reconciler will", job.id)
        return store.get_job(job.id) or job, True

    @route("/jobs/v2", ["GET"])
    async def list_jobs(request: Request) -> Response:
        user = await current_user(request, "GET", JOBS)
        limit, offset = _page(request)
        full = bool(request.query_params.get("filter"))
        jobs = await read(lambda: store.list_jobs(user.name, user.is_admin, limit=limit, offset=offset))
        base = base_url(request)
        return envelope(request, [rep.job_json(j, base) if full else rep.job_summary(j, base) for j in jobs])

    async def _readable(request: Request, job_id: str) -> tuple[User, Job]:
        user = await current_user(request, "GET", JOBS)
        job = await read(store.readable_job, job_id, user.name, user.is_admin)
        return user, job

    async def _writable(request: Request, job_id: str) -> tuple[User, Job]:
        user = await current_user(request, "POST", JOBS)
        job = await read(store.writable_job, job_id, user.name, user.is_admin)
        return user, job

    @route("/jobs/v2/{job_id}", ["GET"])
    async def get_job(request: Request, job_id: str) -> Response:
        _, job = await _readable(request, job_id)
        return envelope(request, rep.job_json(job, base_url(request)))

    @route("/jobs/v2/{job_id}/status", ["GET"])
    async def job_status(request: Request, job_id: str) -> Response:
        _, job = await _readable(request, job_id)
        return envelope(request, rep.status_json(job, base_url(request)))

    @route("/jobs/v2/{job_id}/history", ["GET"])
    async def job_history(request: Request, job_id: str) -> Response:
        _, job = await _readable(request, job_id)
        limit, offset = _page(request)
        events = await read(lambda: store.history(job.id, limit=limit, offset=offset))
        return envelope(request, [rep.event_json(e) for e in events])

    @route("/jobs/v2/{job_id}", ["POST"])
    async def job_action(request: Request, job_id: str) -> Response:
        user = await current_user(request, "POST", JOBS)
        body = await _document(request, "job action") if await request.body() else {}
        action = str(body.get("action") or "").strip().lower()
        if not action:
            raise BadRequest("No action specified")
        if action not in control.KILL_ACTIONS:
            raise BadRequest(f"Invalid action {action}: this release supports stop, kill and cancel.")
        await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
        return envelope(request, None)

    @route("/jobs/v2/{job_id}/cancel", ["POST"])
    async def cancel_job(request: Request, job_id: str) -> Response:
        user = await current_user(request, "POST", JOBS)
        await to_thread.run_sync(control.kill, job_id, user.name, user.is_admin)
        return envelope(request, None)

    # ------------------------------------------------------------ outputs (spec §8)

    @route("/jobs/v2/{job_id}/outputs/listings", ["GET"])
    async def list_outputs_root(request: Request, job_id: str) -> Response:
        return await list_outputs(request, job_id, "")

    @route("/jobs/v2/{job_id}/outputs/listings/{path:path}", ["GET"])
    async def list_outputs(request: Request, job_id: str, path: str) -> Response:
        _, job = await _readable(request, job_id)
        limit, offset = _page(request)

        def work() -> tuple[outputs.Location, list]:
            loc = outputs.locate(job)
            host, rel = outputs.resolve(loc, path)
            return loc, outputs.listing(loc, host, rel)[offset:offset + limit]

        loc, entries = await read(work)
        base = base_url(request)
        return envelope(request, [rep.file_json(job, p, info, loc.system["id"], base) for p, info in entries])

    @route("/jobs/v2/{job_id}/outputs/media/{path:path}", ["GET", "HEAD"])
    async def download_output(request: Request, job_id: str, path: str) -> Response:
        _, job = await _readable(request, job_id)

        def work():
            loc = outputs.locate(job)
            host, rel = outputs.resolve(loc, path)
            return loc, host, rel, loc.transport.stat(host)

        loc, host, rel, info = await read(work)
        if info.is_dir:
            raise BadRequest(f"{rel} is a folder: list it with /jobs/v2/{job.id}/outputs/listings{rel}")
        try:
            span = outputs.parse_range(request.headers.get("range"), info.size)
        except outputs.RangeNotSatisfiable as e:
            return error(request, 416, e.message, headers={"Content-Range": f"bytes */{info.size}",
                                                           "Accept-Ranges": "bytes"})
        start, end = span if span else (0, info.size - 1)
        length = max(end - start + 1, 0)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(length),
            "Last-Modified": formatdate(info.mtime, usegmt=True),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(info.name)}",
            # bytes as they are on disk: the api-server's gzip layer would drop Content-Length and ranges
            "Content-Encoding": "identity",
        }
        if span:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        status = 206 if span else 200
        media = outputs.mime_type(info.name)
        if request.method == "HEAD" or length == 0:
            return Response(status_code=status, headers=headers, media_type=media)
        return StreamingResponse(outputs.read_range(loc, host, start, end), status_code=status, headers=headers,
                                 media_type=media)

    # ------------------------------------------------------------ sharing (spec §9)

    def _pem(request: Request, job: Job, username: str) -> dict[str, Any]:
        perm = store.permission_of(job, username, False)
        return rep.permission_json(job, username, perm, base_url(request))

    @route("/jobs/v2/{job_id}/pems", ["GET"])
    async def list_pems(request: Request, job_id: str) -> Response:
        _, job = await _readable(request, job_id)
        limit, offset = _page(request)
        # the owner is the listing's first entry (spec §9.2), then the grants
        rows = await read(lambda: store.grants(job.id, limit=max(limit - (offset == 0), 0),
                                                       offset=max(offset - 1, 0)))
        base = base_url(request)
        owner = [rep.permission_json(job, job.owner, access.ALL, base)] if offset == 0 else []
        return envelope(request, owner + [rep.permission_json(job, r.username, access.PERMISSIONS[r.permission], base)
                                          for r in rows if r.username != job.owner][:limit])

    @route("/jobs/v2/{job_id}/pems/{username}", ["GET"])
    async def get_pem(request: Request, job_id: str, username: str) -> Response:
        _, job = await _readable(request, job_id)
        return envelope(request, await read(_pem, request, job, username))

    async def _grant(request: Request, job_id: str, username: str | None) -> Response:
        user, job = await _writable(request, job_id)
        body = await _document(request, "permission") if await request.body() else {}
        target = username if username is not None else str(body.get("username") or "").strip()
        if not target:
            raise BadRequest("Missing username field.")
        if "permission" not in body:
            raise BadRequest("Missing permission field.")
        value = access.parse_permission(body.get("permission"))

        def work() -> Response:
            name = backend.user_exists(target)
            if name is None:
                raise NotFound(f"No user found matching {target}")
            if name == job.owner:  # the owner keeps ALL; changing it is silently ignored (spec §9.2)
                return envelope(request, _pem(request, job, name))
            store.set_grant(job, name, value, by=user.name)
            return envelope(request, _pem(request, job, name), status_code=200 if value == "NONE" else 201)

        return await to_thread.run_sync(work)

    @route("/jobs/v2/{job_id}/pems", ["POST"])
    async def add_pem(request: Request, job_id: str) -> Response:
        return await _grant(request, job_id, None)

    @route("/jobs/v2/{job_id}/pems/{username}", ["POST", "PUT"])
    async def update_pem(request: Request, job_id: str, username: str) -> Response:
        return await _grant(request, job_id, username)

    @route("/jobs/v2/{job_id}/pems/{username}", ["DELETE"])
    async def delete_pem(request: Request, job_id: str, username: str) -> Response:
        user, job = await _writable(request, job_id)

        def work() -> None:
            name = backend.user_exists(username) or username  # grants are kept under the user's own spelling
            if name != job.owner:
                store.set_grant(job, name, "NONE", by=user.name)

        await to_thread.run_sync(work)
        return envelope(request, None, message=f"Permissions of {username} on job {job.id} revoked.")

    @route("/jobs/v2/{job_id}/pems", ["DELETE"])
    async def delete_pems(request: Request, job_id: str) -> Response:
        user, job = await _writable(request, job_id)
        await to_thread.run_sync(lambda: store.revoke_all(job, by=user.name))
        return envelope(request, None, message=f"All permissions on job {job.id} revoked.")

    # ------------------------------------------------------------ apps and systems

    @route("/apps/v2", ["GET"])
    async def list_apps(request: Request) -> Response:
        user = await current_user(request, "GET", APPS)
        apps = await read(registry.list_apps, None if user.is_admin else user.name)
        base = base_url(request)
        return envelope(request, [_app_summary(a, base) for a in apps])

    @route("/apps/v2/{app_id}", ["GET"])
    async def get_app(request: Request, app_id: str) -> Response:
        user = await current_user(request, "GET", APPS)
        return envelope(request, await read(registry.visible_app, app_id, user.name, user.is_admin))

    @route("/apps/v2", ["POST"])
    async def register_app(request: Request) -> Response:
        user = await current_user(request, "POST", APPS)
        body = await _document(request, "app")

        def work() -> tuple[dict, bool]:
            given = f"{body.get('name')}-{body.get('version')}"
            registry.check_owner(registry.get_app(given), "app", given, user.name, user.is_admin)
            doc = validation.validate_app(body, owner=user.name, get_system=registry.get_system,
                                          default_storage=registry.default_storage, is_admin=user.is_admin,
                                          apps=registry.all_apps)
            return registry.register_app(doc, user.name, user.is_admin)

        doc, created = await to_thread.run_sync(work)
        headers = {"Location": f"{base_url(request)}/apps/v2/{doc['id']}"}
        return envelope(request, doc, status_code=201 if created else 200, headers=headers)

    @route("/apps/v2/{app_id}", ["PUT", "POST"])
    async def update_app(request: Request, app_id: str) -> Response:
        user = await current_user(request, "PUT", APPS)
        body = await _document(request, "app")

        def work() -> dict:
            existing = registry.visible_app(app_id, user.name, user.is_admin)
            # before validating: its answers would tell a stranger about the owner's systems
            registry.check_owner(existing, "app", app_id, user.name, user.is_admin)
            doc = validation.validate_app(body, owner=existing["owner"], get_system=registry.get_system,
                                          default_storage=registry.default_storage, is_admin=user.is_admin,
                                          apps=registry.all_apps,
                                          owner_is_admin=user.is_admin and existing["owner"] == user.name)
            if doc["id"] != app_id:
                raise BadRequest(f"Invalid name/version: this is app {app_id}, the description says {doc['id']}.")
            return registry.register_app(doc, user.name, user.is_admin)[0]

        return envelope(request, await to_thread.run_sync(work))

    @route("/apps/v2/{app_id}", ["DELETE"])
    async def delete_app(request: Request, app_id: str) -> Response:
        user = await current_user(request, "DELETE", APPS)
        await to_thread.run_sync(registry.delete_app, app_id, user.name, user.is_admin)
        return envelope(request, None, message=f"App {app_id} deleted.")

    @route("/systems/v2", ["GET"])
    async def list_systems(request: Request) -> Response:
        user = await current_user(request, "GET", SYSTEMS)
        wanted = request.query_params.get("type", "").upper()

        def work() -> tuple[list[dict], str | None]:
            default = registry.default_storage(user.name)
            return registry.list_systems(None if user.is_admin else user.name), default["id"] if default else None

        systems, default_id = await read(work)
        base = base_url(request)
        return envelope(request, [_system_summary(s, base, default_id) for s in systems
                                  if not wanted or s.get("type") == wanted])

    @route("/systems/v2/{system_id}", ["GET"])
    async def get_system(request: Request, system_id: str) -> Response:
        user = await current_user(request, "GET", SYSTEMS)
        return envelope(request, await read(registry.visible_system, system_id, user.name, user.is_admin))

    @route("/systems/v2", ["POST"])
    async def register_system(request: Request) -> Response:
        user = await current_user(request, "POST", SYSTEMS)
        body = await _document(request, "system")

        def work() -> tuple[dict, bool]:
            existing = registry.get_system(str(body.get("id") or ""))
            registry.check_owner(existing, "system", str(body.get("id")), user.name, user.is_admin)
            return _save_system(user, body, existing)

        doc, created = await to_thread.run_sync(work)
        headers = {"Location": f"{base_url(request)}/systems/v2/{doc['id']}"}
        return envelope(request, doc, status_code=201 if created else 200, headers=headers)

    @route("/systems/v2/{system_id}", ["PUT", "POST"])
    async def update_system(request: Request, system_id: str) -> Response:
        user = await current_user(request, "PUT", SYSTEMS)
        body = await _document(request, "system")
        action = str(body.get("action") or "").strip()

        def work() -> dict:
            if action:
                if action not in ("setDefault", "unsetDefault"):
                    raise BadRequest(f"Invalid action {action}: use setDefault or unsetDefault, or send a description.")
                return registry.set_default(system_id, user.name, user.is_admin, action == "setDefault")
            existing = registry.visible_system(system_id, user.name, user.is_admin)
            # before any Connection is written: only the owner (or an admin) changes a system
            registry.check_owner(existing, "system", system_id, user.name, user.is_admin)
            if str(body.get("id", system_id)) != system_id:
                raise BadRequest(f"Invalid id: this is system {system_id}, the description says {body.get('id')}.")
            return _save_system(user, {**body, "id": system_id}, existing)[0]

        return envelope(request, await to_thread.run_sync(work))

    def _save_system(user: User, body: dict[str, Any], existing: dict[str, Any] | None) -> tuple[dict, bool]:
        """Validate, then write the Connections made from inline credentials, then the system: a refused
        description writes nothing. The caller checked that ``user`` may change it."""
        owner = existing["owner"] if existing else user.name
        doc, pending = validation.extract_credentials(body, backend.connection_extra, owner=owner)
        made = {p[0] for p in pending}
        usable = _usable_connection(user)
        doc = validation.validate_system(doc, check=lambda c: c in made or usable(c), is_admin=user.is_admin,
                                         guard=not (user.is_admin and owner == user.name))
        registry.check_new_id(doc["id"], owner, existing)
        for conn in pending:
            backend.put_connection(*conn)
        return registry.register_system(doc, user.name, user.is_admin)

    @route("/systems/v2/{system_id}", ["DELETE"])
    async def delete_system(request: Request, system_id: str) -> Response:
        user = await current_user(request, "DELETE", SYSTEMS)

        def work() -> None:
            doc = registry.delete_system(system_id, user.name, user.is_admin)
            named = {(s.get(sec) or {}).get("connectionId") for s in registry.list_systems(None)
                     for sec in ("login", "storage")}
            for section in ("login", "storage"):  # the credentials the service made for it go with it
                conn_id = f"airjobs-{system_id}-{section}"
                extra = backend.connection_extra(conn_id)
                if extra is not None and extra.get("airjobs_owner") == doc["owner"] and conn_id not in named:
                    backend.delete_connection(conn_id)

        await to_thread.run_sync(work)
        return envelope(request, None, message=f"System {system_id} deleted.")

    return app


def _app_summary(app: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "id": app["id"], "name": app.get("name"), "version": app.get("version"),
        "executionSystem": app.get("executionSystem"), "label": app.get("label"),
        "shortDescription": app.get("shortDescription"), "isPublic": bool(app.get("isPublic")),
        "_links": {"self": {"href": f"{base}/apps/v2/{app['id']}"}},
    }


def _system_summary(system: dict[str, Any], base: str, default_id: str | None) -> dict[str, Any]:
    return {
        "id": system["id"], "name": system.get("name"), "type": system.get("type"),
        "description": system.get("description"), "status": system.get("status", "UP"),
        "public": bool(system.get("public")), "default": system["id"] == default_id,
        "_links": {"self": {"href": f"{base}/systems/v2/{system['id']}"}},
    }


async def _document(request: Request, what: str) -> dict[str, Any]:
    """A JSON description, or one uploaded as ``fileToUpload``, or (for actions) form fields."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form()
        except Exception as e:
            raise BadRequest(f"Unable to parse {what} description: malformed form data ({e}).") from None
        upload = form.get("fileToUpload")
        if upload is not None and hasattr(upload, "read"):
            raw = await upload.read()
        else:
            return _storable({k: v for k, v in form.items() if isinstance(v, str)}, what)
    else:
        raw = await request.body()
    check_json_depth(raw, f"{what} description")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadRequest(f"Unable to parse {what} description: malformed JSON ({e}).") from None
    if not isinstance(body, dict):
        raise BadRequest(f"Unable to parse {what} description: it must be a JSON object.")
    return _storable(body, what)


def _storable(doc: dict[str, Any], what: str) -> dict[str, Any]:
    """A description whose every key and string is text the database takes (``submission.check_strings``)."""
    submission.check_strings(doc, f"{what} description ")
    return doc


async def _job_request(request: Request) -> dict[str, Any]:
    """D3: a JSON body, HTML form fields, or a multipart upload of the job JSON as ``fileToUpload``."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
        try:
            form = await request.form()
        except Exception as e:
            raise BadRequest(f"Unable to parse job request: malformed form data ({e}).") from None
        upload = form.get("fileToUpload")
        if upload is not None and hasattr(upload, "read"):
            return submission.parse_body(await upload.read(), "application/json")
        return submission.from_form({k: v for k, v in form.items() if isinstance(v, str)})
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("Unable to parse job request: the request body is empty.")
    return submission.parse_body(raw, ctype)
